//! The `latchkey` command: `init`, `serve`, `token`, `admin`, `backup`,
//! `restore`, `config`, `completions` and `man`.
#![allow(clippy::print_stdout)]

mod admin_cmd;
mod cli;
mod config_file;
mod fd_limit;
mod log_fields;
mod log_time;
mod log_writer;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::CommandFactory;
use latchkey_core::secret::{KEY_SECRET_PREFIX, check_format};
use latchkey_core::{Clock, SecretString, SystemClock, TargetRoutes, jwt};
use latchkey_server::config::GatewayConfig;
use latchkey_server::throttle::ThrottleConfig;
use latchkey_server::{Config, InitReport, TlsFiles};

use crate::cli::{
    Cli, Command, ConfigCommand, LogFormat, ServeArgs, StoreArgs, TokenArgs, TokenScope,
};
use serde_json::json;

/// Requests allocate and free many small objects (header maps, futures,
/// JSON); mimalloc does that in a fraction of glibc malloc's time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let result = config_file::parse().and_then(|(cli, effective)| dispatch(cli, &effective));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_text(&e));
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli, effective: &config_file::Effective) -> anyhow::Result<()> {
    match cli.command {
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
        Command::Admin { command } => {
            runtime(None).and_then(|rt| rt.block_on(admin_cmd::admin(command)))
        }
        Command::Backup { store, to, json } => {
            runtime(None).and_then(|rt| rt.block_on(admin_cmd::backup(store, &to, json)))
        }
        Command::Restore {
            store,
            from,
            force,
            json,
        } => {
            runtime(None).and_then(|rt| rt.block_on(admin_cmd::restore(store, &from, force, json)))
        }
        Command::Config {
            command: ConfigCommand::Check { store, serve },
        } => {
            // Every check `serve` makes before it opens the store.
            server_config(store, *serve)?;
            let mut out = std::io::stdout().lock();
            write!(out, "{}", effective.render())?;
            out.flush()?;
            Ok(())
        }
        Command::Completions { shell } => {
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "latchkey", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => {
            let page = clap_mangen::Man::new(Cli::command());
            let mut out = std::io::stdout().lock();
            page.render(&mut out)?;
            for sub in Cli::command().get_subcommands() {
                if sub.get_name() == "help" {
                    continue;
                }
                let name = format!("latchkey-{}", sub.get_name());
                clap_mangen::Man::new(sub.clone().display_name(name)).render(&mut out)?;
            }
            out.flush()?;
            Ok(())
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

/// The store's settings: the data directory or database URL (read from
/// its file with --database-url-file), the master key, the owner's email.
pub(crate) fn config(store: StoreArgs) -> anyhow::Result<Config> {
    let mut config = Config::new(store.data_dir);
    config.master_key_file = store.master_key_file;
    config.master_key = store
        .master_key
        .filter(|v| !v.is_empty())
        .map(SecretString::new);
    config.owner_email = store.owner_email;
    let url = match store.database_url_file {
        Some(file) => Some(
            std::fs::read_to_string(&file)
                .with_context(|| format!("reading the database URL from {}", file.display()))?
                .trim()
                .to_string(),
        ),
        None => store.database_url,
    };
    config.database_url = url.filter(|u| !u.is_empty()).map(SecretString::new);
    Ok(config)
}

pub(crate) fn clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

async fn init(store: StoreArgs, as_json: bool) -> anyhow::Result<()> {
    let config = config(store)?;
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

/// `serve`'s settings, checked (also by `config check`).
fn server_config(store: StoreArgs, serve: ServeArgs) -> anyhow::Result<Config> {
    let mut config = config(store)?;
    config.listen = serve.listen;
    config.metrics_listen = serve.metrics_listen;
    config.public_url = serve
        .public_url
        .as_deref()
        .map(latchkey_server::config::public_url)
        .transpose()
        .map_err(|why| anyhow::anyhow!("--public-url: {why}"))?;
    let tls_key = serve.tls_key.or(serve.tls_key_file);
    config.tls = match (serve.tls_cert, tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        (None, None) => None,
        (Some(_), None) => anyhow::bail!("--tls-cert needs --tls-key (or --tls-key-file)"),
        (None, Some(_)) => anyhow::bail!("--tls-key needs --tls-cert"),
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
        gateway.max_signed_body_bytes =
            usize::try_from(serve.gateway_max_signed_body_bytes).unwrap_or(usize::MAX);
        config.gateway = Some(gateway);
    }
    Ok(config)
}

async fn run(store: StoreArgs, serve: ServeArgs) -> anyhow::Result<()> {
    let open_files = raise_open_files();
    let data_dir = store.data_dir.clone();
    let mut config = server_config(store, serve)?;
    if let Some(open_files) = open_files {
        fit_connections(open_files, &mut config);
    }
    let opened = latchkey_server::open(config, clock(), true).await?;
    // One server per SQLite data directory; `restore` checks this lock.
    // Taken once the store is open, so that a data directory the server
    // cannot use is reported as such (a read-only one: the database, not
    // the lock file, is what needs writing).
    let _dir_lock = if opened.state.config.database_url.is_some() {
        None
    } else {
        Some(latchkey_server::admin::lock_data_dir(&data_dir)?)
    };
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
        if let Some(addr) = server.metrics_addr {
            writeln!(out, "latchkey metrics listening on http://{addr}")?;
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
