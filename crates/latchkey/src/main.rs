//! The `latchkey` command: `init`, `serve` and `token`.
#![allow(clippy::print_stdout)]

mod fd_limit;
mod log_fields;
mod log_time;
mod log_writer;

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use latchkey_core::secret::{KEY_SECRET_PREFIX, check_format};
use latchkey_core::{Clock, SecretString, SystemClock, TargetRoutes, jwt};
use latchkey_server::config::{DEFAULT_DATA_DIR, DEFAULT_LISTEN, GatewayConfig};
use latchkey_server::throttle::{DEFAULT_THROTTLE, ThrottleConfig};
use latchkey_server::{Config, InitReport, TlsFiles};
use serde_json::json;

/// Requests allocate and free many small objects (header maps, futures,
/// JSON); mimalloc does that in a fraction of glibc malloc's time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "latchkey",
    version,
    about = "A scoped API credential authority"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
}

#[derive(Debug, Args)]
struct StoreArgs {
    /// Directory holding latchkey.db and master.key.
    #[arg(long, env = "LATCHKEY_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// File holding the master key (base64), instead of DATA_DIR/master.key.
    #[arg(long, env = "LATCHKEY_MASTER_KEY_FILE")]
    master_key_file: Option<PathBuf>,
    /// Store everything in this PostgreSQL database (postgres://...)
    /// instead of DATA_DIR/latchkey.db, so that several nodes can share it.
    /// Prefer the environment variable: a flag is visible in the process
    /// list.
    #[arg(long, env = "LATCHKEY_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Email of the owner user account created on first start.
    #[arg(long, env = "LATCHKEY_OWNER_EMAIL", default_value = "owner@localhost")]
    owner_email: String,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "LATCHKEY_LISTEN", default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// PEM certificate chain; with --tls-key, serve HTTPS.
    #[arg(long, env = "LATCHKEY_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "LATCHKEY_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Seconds a new connection has to complete its TLS handshake (if any)
    /// and send its first request head.
    #[arg(long, env = "LATCHKEY_HEADER_TIMEOUT_SECONDS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=300))]
    header_timeout_seconds: u64,
    /// Seconds after which a keep-alive connection with no request in
    /// flight is closed.
    #[arg(long, env = "LATCHKEY_IDLE_TIMEOUT_SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    idle_timeout_seconds: u64,
    /// Open connections at most; when full, the longest-idle one is closed
    /// to make room. Lowered at start if the limit on open files cannot
    /// hold it.
    #[arg(long, env = "LATCHKEY_MAX_CONNECTIONS", default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(2..=1_000_000))]
    max_connections: u64,
    /// Failed credentials (wrong secret, unknown key or token) from one
    /// client address within a window, after which its requests to the API
    /// are answered 429 until the window ends.
    #[arg(long, env = "LATCHKEY_AUTH_FAILURES_PER_ADDRESS", default_value_t = DEFAULT_THROTTLE.per_address,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    auth_failures_per_address: u32,
    /// Failed credentials naming one key id, over all addresses, within a
    /// window, after which that key id is refused (429) from addresses
    /// that failed themselves; never from an address that did not.
    #[arg(long, env = "LATCHKEY_AUTH_FAILURES_PER_KEY", default_value_t = DEFAULT_THROTTLE.per_key,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    auth_failures_per_key: u32,
    /// The window over which failed credentials are counted, in seconds.
    #[arg(long, env = "LATCHKEY_AUTH_FAILURE_WINDOW_SECONDS", default_value_t = DEFAULT_THROTTLE.window_seconds,
          value_parser = clap::value_parser!(u32).range(1..=86_400))]
    auth_failure_window_seconds: u32,
    /// Seconds of clock skew tolerated on JWT exp and nbf.
    #[arg(long, env = "LATCHKEY_JWT_LEEWAY_SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(i64).range(0..=300))]
    jwt_leeway_seconds: i64,
    /// Live keys allowed per app and per service account.
    #[arg(long, env = "LATCHKEY_MAX_KEYS_PER_OWNER", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    max_keys_per_owner: u32,
    /// How often lastUsedAt is written to the store, in seconds.
    #[arg(long, env = "LATCHKEY_LAST_USED_FLUSH_SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    last_used_flush_seconds: u64,
    /// How often key notices (expiring, expired, rotation due) are checked,
    /// in seconds.
    #[arg(long, env = "LATCHKEY_MAINTENANCE_SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    maintenance_seconds: u64,
    /// Deliver webhooks to loopback, private and link-local addresses too.
    #[arg(long, env = "LATCHKEY_ALLOW_PRIVATE_WEBHOOK_TARGETS")]
    allow_private_webhook_targets: bool,
    /// With --database-url: how long a node that cannot reach PostgreSQL
    /// keeps verifying credentials from its index before refusing them all
    /// (503), in milliseconds.
    #[arg(long, env = "LATCHKEY_STALENESS_WINDOW_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    staleness_window_ms: u64,
    /// With --database-url: how often the change feed is read even without
    /// a notification, in milliseconds (must be shorter than the staleness
    /// window).
    #[arg(long, env = "LATCHKEY_RESYNC_INTERVAL_MS", default_value_t = 2_000,
          value_parser = clap::value_parser!(u64).range(10..=600_000))]
    resync_interval_ms: u64,
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
    target_routes: Vec<String>,
    /// Also listen here as a gateway: verify every request and forward it
    /// to --gateway-upstream.
    #[arg(long, env = "LATCHKEY_GATEWAY_LISTEN", requires = "gateway_upstream")]
    gateway_listen: Option<SocketAddr>,
    /// The API the gateway forwards to: http://host:port, optionally with a
    /// path prefix.
    #[arg(long, env = "LATCHKEY_GATEWAY_UPSTREAM", requires = "gateway_listen")]
    gateway_upstream: Option<String>,
    /// Forward the client's Authorization header to the upstream (removed
    /// by default).
    #[arg(long, env = "LATCHKEY_GATEWAY_KEEP_AUTHORIZATION")]
    gateway_keep_authorization: bool,
    /// Seconds a new gateway connection has to send its first request head.
    #[arg(long, env = "LATCHKEY_GATEWAY_HEADER_TIMEOUT_SECONDS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=300))]
    gateway_header_timeout_seconds: u64,
    /// Seconds after which a keep-alive gateway connection with no request
    /// in flight is closed.
    #[arg(long, env = "LATCHKEY_GATEWAY_IDLE_TIMEOUT_SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    gateway_idle_timeout_seconds: u64,
    /// Open gateway connections at most; when full, the longest-idle one is
    /// closed to make room. Lowered at start if the limit on open files
    /// cannot hold it.
    #[arg(long, env = "LATCHKEY_GATEWAY_MAX_CONNECTIONS", default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(2..=1_000_000))]
    gateway_max_connections: u64,
    /// Seconds the upstream has to answer with its response head (then
    /// 504).
    #[arg(long, env = "LATCHKEY_GATEWAY_UPSTREAM_TIMEOUT_SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    gateway_upstream_timeout_seconds: u64,
    /// Log format.
    #[arg(long, env = "LATCHKEY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TokenScope {
    #[value(name = "appUser")]
    AppUser,
    App,
    Account,
}

#[derive(Args)]
struct TokenArgs {
    /// The signing key's id (app_, act_ or svc_).
    #[arg(long)]
    key_id: String,
    /// The signing key's secret. Prefer the LATCHKEY_SECRET environment
    /// variable: a flag is visible in the process list and shell history.
    #[arg(long, env = "LATCHKEY_SECRET", hide_env_values = true)]
    secret: String,
    #[arg(long, value_enum)]
    scope: TokenScope,
    /// The app user's externalId (required for --scope appUser).
    #[arg(long)]
    user_id: Option<String>,
    /// Lifetime in seconds (0: no exp claim).
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Token(args) => mint_token(&args),
        Command::Init { store, json } => {
            runtime(None).and_then(|rt| rt.block_on(init(store, json)))
        }
        Command::Serve { store, serve } => {
            let log = log_writer::LogWriter::stderr();
            // Writes out what is gathered when this ends, also by a panic.
            let _flush = FlushOnDrop(log.clone());
            runtime(Some(&log)).and_then(|rt| {
                init_logging(serve.log_format, &log)?;
                rt.block_on(run(store, *serve))
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_text(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, leaving out a cause whose text the message
/// before it already contains (our error types include their source's
/// text, so `{:#}` would print it twice).
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
    }
    text
}

/// Writes out the log's gathered lines when dropped.
struct FlushOnDrop(log_writer::LogWriter);

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        self.0.flush();
    }
}

/// The async runtime; with `log`, a worker about to go idle first writes
/// out the log lines it gathered (see `log_writer`).
fn runtime(log: Option<&log_writer::LogWriter>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(log) = log {
        let on_park = log.clone();
        builder.on_thread_park(move || on_park.flush_if_waiting());
    }
    builder.build().context("starting the async runtime")
}

fn config(store: StoreArgs) -> Config {
    let mut config = Config::new(store.data_dir);
    config.master_key_file = store.master_key_file;
    config.master_key = std::env::var("LATCHKEY_MASTER_KEY")
        .ok()
        .filter(|v| !v.is_empty())
        .map(SecretString::new);
    config.owner_email = store.owner_email;
    config.database_url = store
        .database_url
        .filter(|u| !u.is_empty())
        .map(SecretString::new);
    config
}

fn clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

async fn init(store: StoreArgs, as_json: bool) -> anyhow::Result<()> {
    let config = config(store);
    let place = where_initialized(&config);
    let report = latchkey_server::bootstrap::init(config, clock()).await?;
    print_report(&report, &place, as_json)
}

/// Where `init` put the store, for its message (never the database URL,
/// which may hold a password).
fn where_initialized(config: &Config) -> String {
    let key = match (&config.master_key, &config.master_key_file) {
        (Some(_), _) => "the master key from LATCHKEY_MASTER_KEY".to_string(),
        (None, Some(file)) => format!("the master key in {}", file.display()),
        (None, None) => format!("the master key in {}", config.master_key_path().display()),
    };
    match &config.database_url {
        Some(_) => format!(
            "the PostgreSQL database of --database-url ({key}: give every node the same one)"
        ),
        None => config.data_dir.display().to_string(),
    }
}

fn print_report(report: &InitReport, place: &str, as_json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if as_json {
        writeln!(out, "{}", serde_json::to_string(report)?)?;
    } else {
        writeln!(
            out,
            "Latchkey initialized in {}.\nThese secrets are shown once; store them now.\n\n\
             operator token:    {}\n\
             account id:        {}\n\
             owner user id:     {}\n\
             owner email:       {}\n\
             owner password:    {}\n\
             owner key id:      {}\n\
             owner key secret:  {}\n",
            place,
            report.operator_token.expose(),
            report.account.id,
            report.user.id,
            report.user.email,
            report.user.password.expose(),
            report.key.id,
            report.key.secret.expose(),
        )?;
    }
    out.flush()?;
    Ok(())
}

fn init_logging(format: LogFormat, log: &log_writer::LogWriter) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LATCHKEY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_timer(log_time::LogTime)
        .with_writer(log.clone());
    match format {
        LogFormat::Text => builder.fmt_fields(log_fields::LogFields).init(),
        LogFormat::Json => builder.json().init(),
    }
    log.spawn_flusher()
        .context("starting the log's flusher thread")?;
    // A panic's message comes after the lines logged before it (unless
    // another thread is writing them at that moment).
    let before_panic = log.clone();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        before_panic.flush_if_waiting();
        default_hook(info);
    }));
    Ok(())
}

async fn run(store: StoreArgs, serve: ServeArgs) -> anyhow::Result<()> {
    let open_files = raise_open_files();
    let data_dir = store.data_dir.clone();
    let mut config = config(store);
    config.listen = serve.listen;
    config.tls = match (serve.tls_cert, serve.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        _ => None,
    };
    config.header_timeout = Duration::from_secs(serve.header_timeout_seconds);
    config.idle_timeout = Duration::from_secs(serve.idle_timeout_seconds);
    config.max_connections = usize::try_from(serve.max_connections).unwrap_or(usize::MAX);
    config.jwt_leeway_seconds = serve.jwt_leeway_seconds;
    config.auth_throttle = ThrottleConfig {
        window_seconds: serve.auth_failure_window_seconds,
        per_address: serve.auth_failures_per_address,
        per_key: serve.auth_failures_per_key,
    };
    config.max_keys_per_owner = serve.max_keys_per_owner;
    config.last_used_flush_interval = Duration::from_secs(serve.last_used_flush_seconds);
    config.maintenance_interval = Duration::from_secs(serve.maintenance_seconds);
    config.allow_private_webhook_targets = serve.allow_private_webhook_targets;
    if serve.resync_interval_ms >= serve.staleness_window_ms {
        anyhow::bail!(
            "--resync-interval-ms ({}) must be shorter than --staleness-window-ms ({}), or a healthy node would count as stale",
            serve.resync_interval_ms,
            serve.staleness_window_ms
        );
    }
    config.staleness_window = Duration::from_millis(serve.staleness_window_ms);
    config.resync_interval = Duration::from_millis(serve.resync_interval_ms);
    config.target_routes = TargetRoutes::parse(&serve.target_routes)?;
    if let (Some(listen), Some(upstream)) = (serve.gateway_listen, &serve.gateway_upstream) {
        let mut gateway = GatewayConfig::new(listen, upstream);
        gateway.keep_authorization = serve.gateway_keep_authorization;
        gateway.header_timeout = Duration::from_secs(serve.gateway_header_timeout_seconds);
        gateway.idle_timeout = Duration::from_secs(serve.gateway_idle_timeout_seconds);
        gateway.max_connections =
            usize::try_from(serve.gateway_max_connections).unwrap_or(usize::MAX);
        gateway.upstream_timeout = Duration::from_secs(serve.gateway_upstream_timeout_seconds);
        config.gateway = Some(gateway);
    }
    if let Some(open_files) = open_files {
        fit_connections(open_files, &mut config);
    }
    let opened = latchkey_server::open(config, clock(), true).await?;
    if let Some(report) = &opened.init_report {
        print_report(report, &data_dir.display().to_string(), false)?;
    }
    // Installed before the listener opens: a SIGTERM that came between the
    // listening line and the handlers would have killed the process with
    // requests in flight instead of stopping it gracefully.
    let mut signals = ShutdownSignals::install()?;
    let server = latchkey_server::start(opened.state).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "latchkey listening on {}", server.base_url())?;
        if let Some(addr) = server.gateway_addr {
            writeln!(out, "latchkey gateway listening on http://{addr}")?;
        }
        out.flush()?;
    }
    tracing::info!(
        url = %server.base_url(),
        keys = server.state.index.key_count(),
        store = server.state.store.backend_name(),
        "serving"
    );
    signals.recv().await;
    tracing::info!("shutting down");
    server.shutdown().await?;
    tracing::info!("stopped");
    Ok(())
}

/// Raises the soft limit on open files to the hard limit and logs both;
/// the soft limit now in force, if it could be read.
fn raise_open_files() -> Option<u64> {
    match fd_limit::raise() {
        Ok(limit) => {
            if limit.after > limit.before {
                tracing::info!(
                    old = limit.before,
                    new = limit.after,
                    hard = limit.hard,
                    "raised the soft limit on open files (RLIMIT_NOFILE) to the hard limit"
                );
            } else {
                tracing::info!(
                    old = limit.before,
                    new = limit.after,
                    hard = limit.hard,
                    "the soft limit on open files (RLIMIT_NOFILE) is already at the hard limit"
                );
            }
            Some(limit.after)
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not raise the soft limit on open files (RLIMIT_NOFILE)");
            rlimit::Resource::NOFILE.get_soft().ok()
        }
    }
}

/// Lowers the connection limits (with a warning) where the limit on open
/// files cannot hold them.
fn fit_connections(open_files: u64, config: &mut Config) {
    let limits = fd_limit::Limits {
        main: config.max_connections,
        gateway: config.gateway.as_ref().map(|g| g.max_connections),
    };
    let Some(fitted) = fd_limit::fit(open_files, limits) else {
        return;
    };
    tracing::warn!(
        open_files,
        max_connections = fitted.main,
        configured = limits.main,
        gateway_max_connections = fitted.gateway,
        gateway_configured = limits.gateway,
        "lowered the connection limits to fit the limit on open files; raise the hard limit (LimitNOFILE= under systemd, ulimit -Hn) to allow more"
    );
    config.max_connections = fitted.main;
    if let (Some(gateway), Some(max)) = (config.gateway.as_mut(), fitted.gateway) {
        gateway.max_connections = max;
    }
}

/// SIGTERM and SIGINT, which stop `serve` gracefully.
struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    /// Waits for either signal (one that came since `install` counts).
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

fn mint_token(args: &TokenArgs) -> anyhow::Result<()> {
    let expected = match args.scope {
        TokenScope::AppUser | TokenScope::App => "app_",
        TokenScope::Account => "act_ or svc_",
    };
    let kind_ok = match args.scope {
        TokenScope::AppUser | TokenScope::App => args.key_id.starts_with("app_"),
        TokenScope::Account => args.key_id.starts_with("act_") || args.key_id.starts_with("svc_"),
    };
    if !kind_ok {
        bail!("scope {:?} must be signed by an {expected} key", args.scope);
    }
    check_format(KEY_SECRET_PREFIX, &args.secret).map_err(|e| anyhow::anyhow!("--secret: {e}"))?;
    let now = SystemClock.unix();
    let mut claims = match args.scope {
        TokenScope::AppUser => {
            let Some(user) = args.user_id.as_deref().filter(|u| !u.is_empty()) else {
                bail!("--scope appUser needs --user-id (the app user's externalId)");
            };
            json!({"scope": "appUser", "userId": user})
        }
        TokenScope::App => json!({"scope": "app"}),
        TokenScope::Account => json!({"scope": "account"}),
    };
    claims["iat"] = json!(now);
    if args.ttl > 0 {
        let ttl = i64::try_from(args.ttl).context("--ttl is too large")?;
        claims["exp"] = json!(now.saturating_add(ttl));
    }
    println!(
        "{}",
        jwt::sign_hs256(args.secret.as_bytes(), &args.key_id, &claims)
    );
    Ok(())
}
