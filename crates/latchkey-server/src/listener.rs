//! The main listener (`--listen`): accepts connections, registers each in
//! a connection registry ([`crate::conns`]: header and idle timeouts, a
//! limit that closes the longest-idle connection to make room), completes
//! TLS when configured, and serves HTTP/1.1 or HTTP/2 with the
//! connection's [`Lane`].
//!
//! Without a registry, clients that open connections and send nothing
//! hold a file descriptor each for as long as they like; a thousand of
//! them under the usual limit of 1024 descriptors and nobody else is
//! served. Here a connection that has not sent a whole request head
//! within the header timeout (the TLS handshake included), or that has
//! had no request in flight for the idle timeout, is closed; and when the
//! limit is reached, a new connection takes the place of the one idle the
//! longest. A request in flight is never cut: a connection asked to close
//! finishes the request it is serving first. Request bodies have their
//! own timeout (the router's, and the direct path's in [`crate::lane`]).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::conns::{Active, Admitted, Conns, SWEEP_INTERVAL, Slot};
use crate::lane::{BoxFuture, Lane};
use crate::state::AppState;

/// Connections the kernel completes before they are accepted. The usual
/// 128 overflows under a burst of new connections, whose handshakes are
/// then retried only after a second.
const BACKLOG: u32 = 1024;

/// How long the accept loop waits after a failed accept (out of file
/// descriptors, most likely) before it tries again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How long a connection asked to close, with no request in flight, may
/// take to close before it is dropped.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// At most one warning per this interval about connections refused or
/// accepts failing, so that a flood does not also flood the log.
const WARN_EVERY: Duration = Duration::from_secs(1);

/// A running main listener.
#[derive(Debug)]
pub struct Listener {
    pub local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    conns: Arc<Conns>,
}

impl Listener {
    /// Stops accepting, lets the requests in flight finish (up to the
    /// configured grace), then closes every connection left.
    pub async fn shutdown(self) -> std::io::Result<()> {
        let _ = self.stop.send(true);
        self.task.await.map_err(std::io::Error::other)
    }

    /// Open client connections.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }
}

/// What every connection shares.
struct Shared {
    state: AppState,
    router: Router,
    tls: Option<TlsAcceptor>,
    http: auto::Builder<TokioExecutor>,
}

/// Binds `addr` (with `SO_REUSEADDR`, as the standard library does).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Starts serving on `listener` (from [`bind`]) in the background.
pub fn start(
    state: AppState,
    router: Router,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
) -> std::io::Result<Listener> {
    let local_addr = listener.local_addr()?;
    let config = &state.config;
    let conns = Conns::new(
        config.max_connections,
        config.header_timeout,
        config.idle_timeout,
    );
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        // Also bounds a request head trickled in slowly on a connection
        // that already served one (the sweeper sees only whole requests).
        .header_read_timeout(config.idle_timeout)
        .keep_alive(true);
    http.http2().timer(TokioTimer::new());
    let grace = config.shutdown_grace;
    let shared = Arc::new(Shared {
        state,
        router,
        tls,
        http,
    });
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(accept_loop(
        listener,
        shared,
        Arc::clone(&conns),
        grace,
        stopped,
    ));
    Ok(Listener {
        local_addr,
        stop,
        task,
        conns,
    })
}

/// Logs a warning unless one was logged less than [`WARN_EVERY`] ago.
#[derive(Default)]
struct Throttled(Option<Instant>);

impl Throttled {
    fn due(&mut self) -> bool {
        let now = Instant::now();
        let due = self
            .0
            .is_none_or(|then| now.duration_since(then) >= WARN_EVERY);
        if due {
            self.0 = Some(now);
        }
        due
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    conns: Arc<Conns>,
    grace: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    let mut tasks = JoinSet::new();
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut refusals = Throttled::default();
    let mut failures = Throttled::default();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors, or a connection reset
                        // before it was accepted: wait a moment, go on.
                        if failures.due() {
                            tracing::warn!(error = %e, "accept failed");
                        }
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                let Some(admitted) = conns.admit() else {
                    if refusals.due() {
                        tracing::warn!(
                            max_connections = conns.max(),
                            "every connection has a request in flight; refusing new ones"
                        );
                    }
                    drop(stream);
                    continue;
                };
                tasks.spawn(serve_connection(stream, peer, Arc::clone(&shared), admitted));
            }
            _ = sweep.tick() => conns.sweep(),
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = stopped.changed() => break,
        }
    }
    // New connections are refused from here on.
    drop(listener);
    conns.close_all();
    let drained =
        tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            connections = tasks.len(),
            "requests still in flight after the shutdown grace; closing their connections"
        );
        tasks.shutdown().await;
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    admitted: Admitted,
) {
    let slot = Arc::clone(&admitted.slot);
    let service = Connection {
        lane: Lane::new(shared.state.clone(), shared.router.clone(), peer),
        admitted,
    };
    let Some(tls) = &shared.tls else {
        serve_io(&shared.http, TokioIo::new(stream), service, &slot).await;
        return;
    };
    // The handshake counts against the header timeout: the registry asks
    // a connection that has sent no request head in time to close.
    let handshake = tokio::select! {
        handshake = tls.accept(stream) => handshake,
        () = slot.closed() => return,
    };
    match handshake {
        Ok(stream) => serve_io(&shared.http, TokioIo::new(stream), service, &slot).await,
        Err(e) => tracing::debug!(error = %e, "TLS handshake failed"),
    }
}

/// Serves HTTP on `io` until the client closes it or the registry asks for
/// it to be closed; then the requests in flight, if any, are finished
/// first.
async fn serve_io<I>(http: &auto::Builder<TokioExecutor>, io: I, service: Connection, slot: &Slot)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let conn = http.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            return;
        }
        () = slot.closed() => {}
    }
    // Requests begin only while this task polls the connection, so what
    // the slot says now holds until it is polled again.
    if !slot.served() {
        // No request ever began: nothing to finish. (hyper would wait for
        // the first request head to complete, however slowly it comes.)
        return;
    }
    conn.as_mut().graceful_shutdown();
    // hyper closes an idle HTTP/1.1 connection at once and finishes one
    // with a request in flight; an HTTP/2 client is given a moment to
    // acknowledge. A connection with nothing in flight that is still open
    // a moment later is dropped.
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            () = tokio::time::sleep(CLOSE_LINGER) => {
                if slot.in_flight() == 0 {
                    return;
                }
            }
        }
    }
}

/// The service hyper calls for each request of one connection: the
/// connection's [`Lane`], with each request counted as in flight until its
/// response has been sent.
struct Connection {
    lane: Lane,
    admitted: Admitted,
}

impl hyper::service::Service<Request<Incoming>> for Connection {
    type Response = Response<Tracked>;
    type Error = Infallible;
    type Future = Tracking;

    fn call(&self, req: Request<Incoming>) -> Tracking {
        let active = self.admitted.begin();
        Tracking {
            inner: self.lane.respond(req),
            active: Some(active),
        }
    }
}

/// A request's answer being made; the request stays in flight while its
/// response body is sent.
struct Tracking {
    inner: BoxFuture,
    active: Option<Active>,
}

impl Future for Tracking {
    type Output = Result<Response<Tracked>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Ok(response) = std::task::ready!(self.inner.as_mut().poll(cx));
        let active = self.active.take();
        Poll::Ready(Ok(response.map(|inner| Tracked {
            inner,
            _active: active,
        })))
    }
}

/// A response body that keeps its request counted as in flight until it
/// ends (or is dropped with the connection).
#[derive(Debug)]
struct Tracked {
    inner: Body,
    _active: Option<Active>,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
