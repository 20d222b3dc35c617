//! Running the server: HTTP or HTTPS (rustls) on the main listener
//! ([`crate::listener`]), the gateway when configured, the `lastUsedAt`
//! flusher, and graceful shutdown that finishes in-flight requests and
//! flushes.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;
use crate::router::router;
use crate::state::AppState;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Gateway(#[from] crate::front::gateway::GatewayError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
}

/// A started server. Dropping it does not stop it; call
/// [`RunningServer::shutdown`].
#[derive(Debug)]
pub struct RunningServer {
    pub local_addr: SocketAddr,
    /// The gateway listener's address, when one runs.
    pub gateway_addr: Option<SocketAddr>,
    /// The separate metrics listener's address, when one runs.
    pub metrics_addr: Option<SocketAddr>,
    metrics: Option<crate::metrics::MetricsListener>,
    gateway: Option<crate::front::gateway::Gateway>,
    pub tls: bool,
    pub state: AppState,
    listener: crate::listener::Listener,
    stop_flusher: watch::Sender<bool>,
    flusher: JoinHandle<()>,
    dispatcher: crate::webhooks::Dispatcher,
    follower: Option<crate::sync::Follower>,
}

impl RunningServer {
    /// Open client connections on the main listener.
    pub fn connections(&self) -> usize {
        self.listener.connections()
    }

    /// `http://addr` or `https://addr`.
    pub fn base_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.local_addr)
    }

    /// Stops accepting connections, lets in-flight requests finish (up to
    /// the configured grace), then writes pending `lastUsedAt` values.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        let grace = self.state.config.shutdown_grace;
        self.state.begin_closing();
        let gateway = async {
            if let Some(gateway) = self.gateway {
                gateway.shutdown(grace).await;
            }
        };
        let metrics = async {
            if let Some(metrics) = self.metrics {
                metrics.shutdown().await;
            }
        };
        let (served, (), ()) = tokio::join!(self.listener.shutdown(), gateway, metrics);
        self.dispatcher.stop().await;
        if let Some(follower) = self.follower {
            follower.stop().await;
        }
        let _ = self.stop_flusher.send(true);
        let _ = self.flusher.await;
        flush_last_used(&self.state).await;
        crate::usage::flush(&self.state).await;
        flush_credits(&self.state).await;
        return_leased_credits(&self.state).await;
        served.map_err(ServeError::from)
    }
}

fn tls_config(files: &TlsFiles) -> Result<TlsAcceptor, ServeError> {
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ServeError::Tls(format!("{}: {e}", files.cert.display())))?;
    if certs.is_empty() {
        return Err(ServeError::Tls(format!(
            "{}: no certificate found",
            files.cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| ServeError::Tls(format!("{}: {e}", files.key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServeError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Binds the configured address and starts serving in the background.
pub async fn start(state: AppState) -> Result<RunningServer, ServeError> {
    let addr = state.config.listen;
    let listener =
        crate::listener::bind(addr).map_err(|source| ServeError::Listen { addr, source })?;
    let local_addr = listener.local_addr()?;
    // Before serving: a node answers only once it follows the change feed.
    let follower = crate::sync::spawn_follower(&state).await;
    let gateway = match &state.config.gateway {
        Some(config) => Some(crate::front::gateway::start(state.clone(), config).await?),
        None => None,
    };
    let metrics = match state.config.metrics_listen {
        Some(addr) => Some(
            crate::metrics::start(state.clone(), addr)
                .await
                .map_err(|source| ServeError::Listen { addr, source })?,
        ),
        None => None,
    };
    let tls = state.config.tls.as_ref().map(tls_config).transpose()?;
    let is_tls = tls.is_some();
    // Each connection's service answers POST /v1/verify directly and hands
    // everything else to the router (see crate::lane).
    let listener = crate::listener::start(state.clone(), router(state.clone()), listener, tls)?;
    let (stop_flusher, stop) = watch::channel(false);
    let flusher = tokio::spawn(run_flusher(state.clone(), stop));
    let dispatcher =
        crate::webhooks::spawn_dispatcher(state.clone(), state.config.webhook_poll_interval);
    Ok(RunningServer {
        local_addr,
        gateway_addr: gateway.as_ref().map(|g| g.local_addr),
        gateway,
        metrics_addr: metrics.as_ref().map(|m| m.local_addr),
        metrics,
        tls: is_tls,
        state,
        listener,
        stop_flusher,
        flusher,
        dispatcher,
        follower,
    })
}

/// Writes `lastUsedAt` values every `last_used_flush_interval`.
async fn run_flusher(state: AppState, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(state.config.last_used_flush_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut notices = tokio::time::interval(state.config.maintenance_interval);
    notices.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut credits = tokio::time::interval(state.config.credits_flush_interval);
    credits.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut usage_notices = state.notices.take_receiver();
    loop {
        tokio::select! {
            Some(notice) = async { match usage_notices.as_mut() {
                Some(r) => r.recv().await,
                None => std::future::pending().await,
            } } => crate::notices::record(&state, notice).await,
            _ = tick.tick() => {
                flush_last_used(&state).await;
                crate::usage::flush(&state).await;
            }
            _ = credits.tick() => {
                flush_credits(&state).await;
                state.limiter.prune(state.now());
                state.leases.prune(state.now());
            }
            _ = notices.tick() => {
                if let Err(e) = crate::maintenance::run_key_notices(&state).await {
                    tracing::warn!(error = %e, "key notices failed; will retry");
                }
                if let Err(e) = crate::maintenance::prune_deliveries(&state).await {
                    tracing::warn!(error = %e, "pruning old webhook deliveries failed; will retry");
                }
                if let Err(e) = state.store.prune_usage(state.now()).await {
                    tracing::warn!(error = %e, "pruning old usage counts failed; will retry");
                }
                let before = state.now() - crate::sync::CHANGE_RETENTION_SECONDS;
                if let Err(e) = state.store.prune_changes(before).await {
                    tracing::warn!(error = %e, "pruning old changes failed; will retry");
                }
                if state.limiter.is_leased()
                    && let Err(e) = state.store.prune_ratelimit_leases(state.now() - 60).await
                {
                    tracing::warn!(error = %e, "pruning ended rate-limit leases failed; will retry");
                }
            }
            _ = stop.changed() => {
                // What verification raised before the stop is recorded.
                if let Some(r) = usage_notices.as_mut() {
                    while let Ok(notice) = r.try_recv() {
                        crate::notices::record(&state, notice).await;
                    }
                }
                return;
            }
        }
    }
}

/// Writes the credit balances spent since the last flush. Holds the write
/// lock meanwhile, so that a balance set through the API in between is
/// not overwritten by an older one. (Nodes that share a store keep their
/// balances there and lease from them: nothing to write.)
pub async fn flush_credits(state: &AppState) {
    if state.limiter.is_leased() {
        return;
    }
    let _write = match crate::ops::WriteGuard::for_session(state).await {
        Ok(write) => write,
        Err(e) => {
            tracing::warn!(
                code = e.code,
                "could not write credit balances (no write lock); will retry"
            );
            return;
        }
    };
    let dirty = state.index.dirty_credits();
    if dirty.is_empty() {
        return;
    }
    let batch: Vec<(String, i64, i64, i64)> = dirty
        .iter()
        .map(|(id, _, s, version)| (id.clone(), s.remaining, s.period, *version))
        .collect();
    if let Err(e) = state.store.record_credits(&batch).await {
        tracing::warn!(error = %e, keys = batch.len(), "could not store credit balances; will retry");
        for (_, cell, _, _) in &dirty {
            cell.mark_dirty();
        }
    }
}

/// Gives the credits this node leased and did not spend back to the store
/// (nodes that share a store), so that a stopped node strands none.
pub async fn return_leased_credits(state: &AppState) {
    let batch: Vec<(String, i64, i64, i64)> = state
        .index
        .credit_cells()
        .into_iter()
        .filter_map(|(id, cell)| {
            cell.take_unused()
                .map(|(amount, period, version)| (id, amount, period, version))
        })
        .collect();
    if let Err(e) = state.store.return_credits(&batch).await {
        tracing::warn!(error = %e, keys = batch.len(), "could not give leased credits back; they are lost");
    }
}

/// Writes the `lastUsedAt` values that moved since the last flush.
pub async fn flush_last_used(state: &AppState) {
    let batch = state.index.take_unflushed_last_used();
    if batch.is_empty() {
        return;
    }
    let started = std::time::Instant::now();
    let recorded = state.store.record_last_used(&batch).await;
    state.metrics.last_used_flushed(started.elapsed());
    if let Err(e) = recorded {
        tracing::warn!(error = %e, keys = batch.len(), "could not store lastUsedAt; will retry");
        state.index.unflush(&batch);
    }
}
