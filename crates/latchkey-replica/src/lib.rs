//! Verify Latchkey credentials inside your own process.
//!
//! A [`Replica`] loads a snapshot of a Latchkey server's key index
//! (`GET /v1/replica/snapshot`), then follows its replication feed
//! (`GET /v1/replica/changes`), and answers [`Replica::verify`] from
//! memory with the same code the server runs (`latchkey-core`): the same
//! [`Principal`] for a good credential, the same refusal code for a bad
//! one. A key deleted through the API is refused here within milliseconds.
//!
//! It fails closed: when nothing (not even a heartbeat) has come from the
//! server for the staleness window, every verification is refused with
//! `index_stale`, as a node of a cluster does, until the feed is back.
//!
//! ```no_run
//! # async fn run() -> Result<(), latchkey_replica::ConnectError> {
//! use latchkey_replica::{Replica, Target};
//! let replica = Replica::connect("http://127.0.0.1:8080", "lkrp_…").await?;
//! match replica.verify(Some("Basic YXBwXzEyMzpsa3NrXzQ1Ng=="), &Target::app("ap_1")) {
//!     Ok(verified) => println!("{:?}", verified.principal),
//!     Err(refusal) => println!("{} {}", refusal.status, refusal.code),
//! }
//! # Ok(()) }
//! ```
//!
//! [`ReplicaLayer`] puts a replica in front of an axum or hyper service.
//!
//! What a replica does differently from the server: rate limits are
//! counted per replica process (as on one node), and keys with credits are
//! refused (`credits_not_replicated`): a balance can only be spent where
//! it is kept, through `POST /v1/verify`.

#![deny(missing_docs)]

mod feed;
mod layer;
mod replica;

pub use latchkey_core::{Principal, Scope, TargetRoutes};
pub use layer::{ClientIp, ReplicaLayer, ReplicaService};
pub use replica::{
    ConnectError, Refusal, Replica, ReplicaBuilder, SignedRequest, Target, Verification,
};
