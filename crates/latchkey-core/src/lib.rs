//! Latchkey's domain and verification logic.
//!
//! This crate owns everything that decides whether a credential is good and
//! what it may reach: identifier and secret formats, the master-key AEAD, the
//! Authorization header and JWT parsers, the `/v1/verify` body, the scope
//! model and the in-memory index of live keys that the verification path
//! reads instead of the store.
//! It performs no I/O and has no async code; time comes in through [`Clock`].

mod b64;
pub mod clock;
pub mod crypto;
mod flat;
pub mod hs256;
pub mod http_sig;
pub mod ids;
pub mod index;
pub mod jwt;
pub mod password;
pub mod policy;
pub mod principal;
pub mod replica;
pub mod route;
pub mod secret;
mod table;
pub mod verify;
pub mod verify_request;

/// Internal readers exposed to the fuzz targets (`fuzz/`); compiled only
/// when cargo-fuzz builds them (it sets `cfg(fuzzing)`).
#[cfg(fuzzing)]
pub mod fuzzing;

pub use clock::{Clock, ManualClock, SystemClock};
pub use crypto::MasterKey;
pub use index::{AppPolicy, KeyIndex, KeyOwner, LiveKey};
pub use principal::{Access, Principal, Scope};
pub use route::{RouteMatch, TargetRoutes};
pub use secret::SecretString;
pub use verify::{AuthError, Verified, VerifyOptions};
