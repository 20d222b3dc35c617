//! Latchkey's HTTP layer.
//!
//! [`bootstrap`] opens the store, the master key and the key index
//! (built by [`indexing`]); [`ops`] holds every operation (access check,
//! audit event, store write, index update), which the `/v1` handlers in
//! [`api`], the dashboard's pages and the front doors call; [`router`]
//! assembles the routes; [`serve`] runs the
//! server (HTTP or HTTPS, its connections served by [`listener`]) with
//! graceful shutdown and the `lastUsedAt` flusher.

pub mod access_log;
pub mod admin;
pub mod api;
pub mod audit;
pub mod bootstrap;
pub mod config;
pub(crate) mod conns;
pub mod cors;
pub mod dashboard;
pub mod error;
pub mod extract;
pub mod front;
pub mod indexing;
pub mod json_values;
pub mod lane;
pub mod limits;
pub mod listener;
pub mod maintenance;
pub mod metrics;
pub mod notices;
pub mod ops;
pub mod refusals;
pub mod request_id;
pub mod router;
pub mod routes;
pub mod serve;
pub mod signed_requests;
pub mod state;
pub mod sync;
pub mod throttle;
pub mod usage;
pub mod views;
pub mod webhooks;

pub use bootstrap::{InitReport, Opened, open};
pub use config::{Config, TlsFiles};
pub use serve::{RunningServer, start};
pub use state::AppState;
