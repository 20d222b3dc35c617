//! Server settings. The binary fills them from flags and `LATCHKEY_*`
//! environment variables; tests build them directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use latchkey_core::{SecretString, TargetRoutes};

/// Where the TLS certificate chain and private key are (PEM files).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Holds `latchkey.db` and `master.key`.
    pub data_dir: PathBuf,
    /// A `postgres://` URL: store everything in that PostgreSQL database
    /// (shared by every node of a cluster) instead of `latchkey.db`. A
    /// secret, as it may hold a password.
    pub database_url: Option<SecretString>,
    /// How long a node that cannot reach PostgreSQL keeps verifying from
    /// its index before it refuses every credential.
    pub staleness_window: Duration,
    /// How often a node reads the change feed even without a notification.
    pub resync_interval: Duration,
    pub listen: SocketAddr,
    /// Serve `GET /metrics` on this address only (plain HTTP, no
    /// authentication: meant for a private interface), and not on
    /// `listen`. `None`: on `listen`.
    pub metrics_listen: Option<SocketAddr>,
    pub tls: Option<TlsFiles>,
    /// A new connection to `listen` must complete its TLS handshake (if
    /// any) and send its first request head within this time.
    pub header_timeout: Duration,
    /// A keep-alive connection to `listen` with no request in flight is
    /// closed after this time.
    pub idle_timeout: Duration,
    /// Open client connections to `listen` at most; when full, the
    /// connection idle the longest is closed to make room (and a new one
    /// refused if none is idle).
    pub max_connections: usize,
    /// The master key as base64 text, instead of `master.key`.
    pub master_key: Option<SecretString>,
    /// A file holding the master key as base64 text, instead of `master.key`.
    pub master_key_file: Option<PathBuf>,
    /// Clock skew tolerated on JWT `exp` and `nbf`.
    pub jwt_leeway_seconds: i64,
    /// Live keys allowed per app and per service account.
    pub max_keys_per_owner: u32,
    /// How often `lastUsedAt` values are written to the store.
    pub last_used_flush_interval: Duration,
    /// How often keys' credit balances are written to the store (what a
    /// crash can lose: the spending of at most this long).
    pub credits_flush_interval: Duration,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// How often key notices (expiring, expired, rotation due) are checked.
    pub maintenance_interval: Duration,
    /// Deliver webhooks to loopback, private and link-local addresses too
    /// (off by default: a customer's webhook must not reach the operator's
    /// own network).
    pub allow_private_webhook_targets: bool,
    /// How often the webhook dispatcher looks for due deliveries.
    pub webhook_poll_interval: Duration,
    /// How long in-flight requests get to finish on shutdown.
    pub shutdown_grace: Duration,
    /// Email of the owner user account that `init` creates.
    pub owner_email: String,
    /// Which app and user a request to the operator's API targets, for
    /// forward-auth and the gateway (see `crate::front`).
    pub target_routes: TargetRoutes,
    /// The gateway listener, when Latchkey itself stands in front of the
    /// operator's API.
    pub gateway: Option<GatewayConfig>,
    /// Bounds on failed credentials presented to the API (see
    /// [`crate::throttle`]).
    pub auth_throttle: crate::throttle::ThrottleConfig,
    /// The URL clients reach Latchkey at, without a trailing slash
    /// ([`public_url`]): the issuer of minted EdDSA tokens.
    pub public_url: Option<String>,
}

/// Checks `--public-url`: an absolute `http` or `https` URL, without user
/// name, query or fragment; returned without a trailing slash.
pub fn public_url(text: &str) -> Result<String, &'static str> {
    let uri: axum::http::Uri = text
        .parse()
        .map_err(|_| "not a URL; give https://host[:port][/path]")?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err("must start with https:// (or http://)");
    }
    let Some(authority) = uri.authority() else {
        return Err("no host; give https://host[:port][/path]");
    };
    if authority.as_str().contains('@') {
        return Err("must not carry a user name or password");
    }
    if uri.query().is_some() || text.contains('#') {
        return Err("must not carry a query or a fragment");
    }
    Ok(text.trim_end_matches('/').to_string())
}

/// The gateway: a second listener that verifies every request and forwards
/// it to the operator's API.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    /// `http://host:port` (optionally with a path prefix) of the operator's
    /// API.
    pub upstream: String,
    /// Forward the client's `Authorization` header to the upstream.
    pub keep_authorization: bool,
    /// A new connection must send its first request head within this time.
    pub header_timeout: Duration,
    /// A keep-alive connection with no request in flight is closed after
    /// this time.
    pub idle_timeout: Duration,
    /// Open client connections at most; when full, the connection idle the
    /// longest is closed to make room (and a new one refused if none is).
    pub max_connections: usize,
    /// How long the upstream may take to answer with its response head
    /// (and a client to send a signed request's body).
    pub upstream_timeout: Duration,
    /// The largest body of a signed request (RFC 9421) the gateway reads
    /// to check its `Content-Digest`; a larger one is refused with 413.
    pub max_signed_body_bytes: usize,
}

impl GatewayConfig {
    pub fn new(listen: SocketAddr, upstream: &str) -> Self {
        Self {
            listen,
            upstream: upstream.to_string(),
            keep_authorization: false,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            upstream_timeout: Duration::from_secs(30),
            max_signed_body_bytes: DEFAULT_MAX_SIGNED_BODY_BYTES,
        }
    }
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7400";
/// Both listeners' defaults: a new connection's first request head, an
/// idle keep-alive connection, open connections at most.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// The gateway's default limit on a signed request's body, which it holds
/// in memory to check: 1 MiB.
pub const DEFAULT_MAX_SIGNED_BODY_BYTES: usize = 1024 * 1024;
pub const DEFAULT_DATA_DIR: &str = "./latchkey-data";

impl Config {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            database_url: None,
            staleness_window: Duration::from_secs(10),
            resync_interval: Duration::from_secs(2),
            listen: SocketAddr::from(([127, 0, 0, 1], 7400)),
            metrics_listen: None,
            tls: None,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            master_key: None,
            master_key_file: None,
            jwt_leeway_seconds: 30,
            max_keys_per_owner: 10,
            last_used_flush_interval: Duration::from_secs(10),
            credits_flush_interval: Duration::from_secs(1),
            max_body_bytes: 64 * 1024,
            maintenance_interval: Duration::from_secs(60),
            allow_private_webhook_targets: false,
            webhook_poll_interval: crate::webhooks::DEFAULT_POLL_INTERVAL,
            shutdown_grace: Duration::from_secs(10),
            owner_email: "owner@localhost".into(),
            target_routes: TargetRoutes::default(),
            gateway: None,
            auth_throttle: crate::throttle::ThrottleConfig::default(),
            public_url: None,
        }
    }

    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("latchkey.db")
    }

    pub fn master_key_path(&self) -> PathBuf {
        self.data_dir.join("master.key")
    }
}

#[cfg(test)]
mod tests {
    use super::public_url;

    #[test]
    fn public_urls_are_absolute_http_urls_without_a_trailing_slash() {
        assert_eq!(
            public_url("https://auth.example.com/").as_deref(),
            Ok("https://auth.example.com")
        );
        assert_eq!(
            public_url("http://127.0.0.1:7400/latchkey").as_deref(),
            Ok("http://127.0.0.1:7400/latchkey")
        );
        for bad in [
            "auth.example.com",
            "/v1",
            "ftp://auth.example.com",
            "https://user:pw@auth.example.com",
            "https://auth.example.com/?a=1",
            "https://auth.example.com/#top",
            "https://",
            "",
        ] {
            assert!(public_url(bad).is_err(), "{bad:?} was taken");
        }
    }
}
