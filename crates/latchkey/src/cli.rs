//! The command line: every subcommand and its arguments. Each argument's
//! id (its field name) is also its key in the configuration file
//! (`config_file.rs`), and its `LATCHKEY_…` variable is given here.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use latchkey_server::config::{DEFAULT_DATA_DIR, DEFAULT_LISTEN};
use latchkey_server::throttle::DEFAULT_THROTTLE;

#[derive(Debug, Parser)]
#[command(
    name = "latchkey",
    version,
    about = "A scoped API credential authority"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the store, master key, operator token and a first account,
    /// and print them once.
    Init {
        #[command(flatten)]
        store: StoreArgs,
        /// Print what was created as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the server (initializing an empty store first).
    Serve {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        serve: Box<ServeArgs>,
    },
    /// Mint an HS256 JWT signed with an API key's secret.
    Token(TokenArgs),
    /// Recovery on a running or stopped node's store: operator tokens and
    /// passwords.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Write a consistent copy of the SQLite store to a file, while the
    /// server runs (for PostgreSQL, use pg_dump).
    Backup {
        #[command(flatten)]
        store: StoreArgs,
        /// The file to write (it must not exist).
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
        /// Print what was done as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Put a backup back as the store of a stopped node.
    Restore {
        #[command(flatten)]
        store: StoreArgs,
        /// The backup to restore (written by `latchkey backup`).
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// Replace an existing store (it is kept beside, renamed), and
        /// restore a backup made under another master key.
        #[arg(long)]
        force: bool,
        /// Print what was done as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The configuration: `latchkey config check` prints the effective
    /// settings (defaults, then the file, then LATCHKEY_… variables, then
    /// flags), secrets redacted.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print a shell completion script (e.g. `latchkey completions bash >
    /// /etc/bash_completion.d/latchkey`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `latchkey man > latchkey.1`.
    Man,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check the configuration and print the effective settings, each
    /// with where it came from; secrets are redacted.
    Check {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        serve: Box<ServeArgs>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Operator tokens: create one (the old ones keep working until
    /// revoked), list them, revoke one.
    #[command(name = "operator-token")]
    OperatorToken {
        #[command(subcommand)]
        command: OperatorTokenCommand,
    },
    /// Give a user account a new one-time password (printed once) and end
    /// its dashboard sessions.
    ResetPassword {
        #[command(flatten)]
        store: StoreArgs,
        /// The user account's email.
        #[arg(long)]
        email: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum OperatorTokenCommand {
    /// Create an operator token and print it once.
    Create {
        #[command(flatten)]
        store: StoreArgs,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the operator tokens (ids and creation times; never the tokens).
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke an operator token: it stops working on every node within a
    /// second.
    Revoke {
        #[command(flatten)]
        store: StoreArgs,
        /// The token's id (op_…).
        id: String,
        /// Revoke it even if it is the last one.
        #[arg(long)]
        force: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct StoreArgs {
    /// A TOML configuration file: its keys are these flags' names with
    /// underscores (listen, data_dir, header_timeout_seconds, ...);
    /// LATCHKEY_… variables and flags override it.
    #[arg(long, env = "LATCHKEY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory holding latchkey.db and master.key.
    #[arg(long, env = "LATCHKEY_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// File holding the master key (base64), instead of DATA_DIR/master.key.
    #[arg(long, env = "LATCHKEY_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
    /// Store everything in this PostgreSQL database (postgres://...)
    /// instead of DATA_DIR/latchkey.db, so that several nodes can share it.
    /// Prefer the environment variable: a flag is visible in the process
    /// list.
    #[arg(long, env = "LATCHKEY_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// A file holding the database URL (for secrets mounted as files).
    #[arg(
        long,
        env = "LATCHKEY_DATABASE_URL_FILE",
        value_name = "FILE",
        conflicts_with = "database_url"
    )]
    pub database_url_file: Option<PathBuf>,
    /// The master key as base64 text, instead of DATA_DIR/master.key.
    /// Prefer the environment variable or --master-key-file: a flag is
    /// visible in the process list.
    #[arg(
        long,
        env = "LATCHKEY_MASTER_KEY",
        hide_env_values = true,
        conflicts_with = "master_key_file"
    )]
    pub master_key: Option<String>,
    /// Email of the owner user account created on first start.
    #[arg(long, env = "LATCHKEY_OWNER_EMAIL", default_value = "owner@localhost")]
    pub owner_email: String,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "LATCHKEY_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Serve GET /metrics (Prometheus) on this address instead of on
    /// --listen, which then answers 404 there. Plain HTTP and no
    /// authentication: give it a private interface.
    #[arg(long, env = "LATCHKEY_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// The URL clients reach Latchkey at (https://auth.example.com, with a
    /// path if it is served under one). The EdDSA tokens Latchkey mints
    /// name {public-url}/v1/apps/{appId} as their issuer (iss); without it,
    /// latchkey:{appId}.
    #[arg(long, env = "LATCHKEY_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// PEM certificate chain; with --tls-key, serve HTTPS.
    #[arg(long, env = "LATCHKEY_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "LATCHKEY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The same as --tls-key (a file, as every secret-bearing setting has
    /// a …_FILE form).
    #[arg(
        long,
        env = "LATCHKEY_TLS_KEY_FILE",
        value_name = "FILE",
        conflicts_with = "tls_key",
        requires = "tls_cert"
    )]
    pub tls_key_file: Option<PathBuf>,
    /// Seconds a new connection has to complete its TLS handshake (if any)
    /// and send its first request head.
    #[arg(long, env = "LATCHKEY_HEADER_TIMEOUT_SECONDS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=300))]
    pub header_timeout_seconds: u64,
    /// Seconds after which a keep-alive connection with no request in
    /// flight is closed.
    #[arg(long, env = "LATCHKEY_IDLE_TIMEOUT_SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub idle_timeout_seconds: u64,
    /// Open connections at most; when full, the longest-idle one is closed
    /// to make room. Lowered at start if the limit on open files cannot
    /// hold it.
    #[arg(long, env = "LATCHKEY_MAX_CONNECTIONS", default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(2..=1_000_000))]
    pub max_connections: u64,
    /// Failed credentials (wrong secret, unknown key or token) from one
    /// client address within a window, after which its requests to the API
    /// are answered 429 until the window ends.
    #[arg(long, env = "LATCHKEY_AUTH_FAILURES_PER_ADDRESS", default_value_t = DEFAULT_THROTTLE.per_address,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub auth_failures_per_address: u32,
    /// Failed credentials naming one key id, over all addresses, within a
    /// window, after which that key id is refused (429) from addresses
    /// that failed themselves; never from an address that did not.
    #[arg(long, env = "LATCHKEY_AUTH_FAILURES_PER_KEY", default_value_t = DEFAULT_THROTTLE.per_key,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub auth_failures_per_key: u32,
    /// The window over which failed credentials are counted, in seconds.
    #[arg(long, env = "LATCHKEY_AUTH_FAILURE_WINDOW_SECONDS", default_value_t = DEFAULT_THROTTLE.window_seconds,
          value_parser = clap::value_parser!(u32).range(1..=86_400))]
    pub auth_failure_window_seconds: u32,
    /// Seconds of clock skew tolerated on JWT exp and nbf.
    #[arg(long, env = "LATCHKEY_JWT_LEEWAY_SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(i64).range(0..=300))]
    pub jwt_leeway_seconds: i64,
    /// Live keys allowed per app and per service account.
    #[arg(long, env = "LATCHKEY_MAX_KEYS_PER_OWNER", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_keys_per_owner: u32,
    /// How often lastUsedAt and usage counts are written to the store, in
    /// seconds.
    #[arg(long, env = "LATCHKEY_LAST_USED_FLUSH_SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub last_used_flush_seconds: u64,
    /// How often key notices (expiring, expired, rotation due) are checked,
    /// in seconds.
    #[arg(long, env = "LATCHKEY_MAINTENANCE_SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub maintenance_seconds: u64,
    /// Deliver webhooks to loopback, private and link-local addresses too.
    #[arg(long, env = "LATCHKEY_ALLOW_PRIVATE_WEBHOOK_TARGETS")]
    pub allow_private_webhook_targets: bool,
    /// With --database-url: how long a node that cannot reach PostgreSQL
    /// keeps verifying credentials from its index before refusing them all
    /// (503), in milliseconds.
    #[arg(long, env = "LATCHKEY_STALENESS_WINDOW_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub staleness_window_ms: u64,
    /// With --database-url: how often the change feed is read even without
    /// a notification, in milliseconds (must be shorter than the staleness
    /// window).
    #[arg(long, env = "LATCHKEY_RESYNC_INTERVAL_MS", default_value_t = 2_000,
          value_parser = clap::value_parser!(u64).range(10..=600_000))]
    pub resync_interval_ms: u64,
    /// A path of your API whose segments {appId} and {userId} name the app
    /// and app user a request targets, for forward-auth and the gateway
    /// (e.g. /v2/apps/{appId}/users/{userId}). Repeatable; the first that
    /// matches wins. The environment variable takes them comma-separated.
    #[arg(
        long = "target-route",
        value_name = "TEMPLATE",
        env = "LATCHKEY_TARGET_ROUTES",
        value_delimiter = ','
    )]
    pub target_routes: Vec<String>,
    /// Also listen here as a gateway: verify every request and forward it
    /// to --gateway-upstream.
    #[arg(long, env = "LATCHKEY_GATEWAY_LISTEN", requires = "gateway_upstream")]
    pub gateway_listen: Option<SocketAddr>,
    /// The API the gateway forwards to: http://host:port, optionally with a
    /// path prefix.
    #[arg(long, env = "LATCHKEY_GATEWAY_UPSTREAM", requires = "gateway_listen")]
    pub gateway_upstream: Option<String>,
    /// Forward the client's Authorization header to the upstream (removed
    /// by default).
    #[arg(long, env = "LATCHKEY_GATEWAY_KEEP_AUTHORIZATION")]
    pub gateway_keep_authorization: bool,
    /// Seconds a new gateway connection has to send its first request head.
    #[arg(long, env = "LATCHKEY_GATEWAY_HEADER_TIMEOUT_SECONDS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=300))]
    pub gateway_header_timeout_seconds: u64,
    /// Seconds after which a keep-alive gateway connection with no request
    /// in flight is closed.
    #[arg(long, env = "LATCHKEY_GATEWAY_IDLE_TIMEOUT_SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub gateway_idle_timeout_seconds: u64,
    /// Open gateway connections at most; when full, the longest-idle one is
    /// closed to make room. Lowered at start if the limit on open files
    /// cannot hold it.
    #[arg(long, env = "LATCHKEY_GATEWAY_MAX_CONNECTIONS", default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(2..=1_000_000))]
    pub gateway_max_connections: u64,
    /// Seconds the upstream has to answer with its response head (then
    /// 504).
    #[arg(long, env = "LATCHKEY_GATEWAY_UPSTREAM_TIMEOUT_SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub gateway_upstream_timeout_seconds: u64,
    /// The largest body of a signed request (RFC 9421) the gateway reads
    /// to check it against its Content-Digest before forwarding (then
    /// 413); other bodies are streamed, whatever their size. Signed bodies
    /// held at once take at most 64 MiB, or four times this if more (then
    /// 503).
    #[arg(long, env = "LATCHKEY_GATEWAY_MAX_SIGNED_BODY_BYTES", default_value_t = 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..=64 * 1024 * 1024))]
    pub gateway_max_signed_body_bytes: u64,
    /// Log format.
    #[arg(long, env = "LATCHKEY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TokenScope {
    #[value(name = "appUser")]
    AppUser,
    App,
    Account,
}

#[derive(Args)]
pub struct TokenArgs {
    /// The signing key's id (app_, act_ or svc_).
    #[arg(long)]
    pub key_id: String,
    /// The signing key's secret. Prefer the LATCHKEY_SECRET environment
    /// variable: a flag is visible in the process list and shell history.
    #[arg(long, env = "LATCHKEY_SECRET", hide_env_values = true)]
    pub secret: String,
    #[arg(long, value_enum)]
    pub scope: TokenScope,
    /// The app user's externalId (required for --scope appUser).
    #[arg(long)]
    pub user_id: Option<String>,
    /// Lifetime in seconds (0: no exp claim).
    #[arg(long, default_value_t = 3600)]
    pub ttl: u64,
}

/// Debug without the secrets: the database URL (which may hold a
/// password) and the master key.
impl std::fmt::Debug for StoreArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |set: bool| if set { Some("<redacted>") } else { None };
        f.debug_struct("StoreArgs")
            .field("config", &self.config)
            .field("data_dir", &self.data_dir)
            .field("master_key_file", &self.master_key_file)
            .field("database_url", &redacted(self.database_url.is_some()))
            .field("database_url_file", &self.database_url_file)
            .field("master_key", &redacted(self.master_key.is_some()))
            .field("owner_email", &self.owner_email)
            .finish()
    }
}

impl std::fmt::Debug for TokenArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenArgs")
            .field("key_id", &self.key_id)
            .field("secret", &"<redacted>")
            .field("scope", &self.scope)
            .field("user_id", &self.user_id)
            .field("ttl", &self.ttl)
            .finish()
    }
}
