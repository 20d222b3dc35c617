//! The gateway's connections to the upstream: a keep-alive pool of
//! HTTP/1.1 connections, each driven by hyper's client connection in a task
//! of its own.
//!
//! A connection is taken from the pool for one request and goes back once
//! the response body has been read to its end; a response whose body is
//! dropped half-read (the client went away) takes its connection with it,
//! since HTTP/1.1 cannot reuse a connection in the middle of a message.
//! Connections idle longer than [`IDLE_TIMEOUT`] are closed instead of
//! used, and at most [`MAX_IDLE`] are kept.
//!
//! hyper-util's pooling client does the same for any number of hosts and
//! protocols; this one knows a single upstream and HTTP/1.1, and costs less
//! per request (no pool key, no task spawned per request to wait for the
//! connection to be reusable): docs/BENCHMARKS.md, "The front door".

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{Request, Response};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{Builder, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long a connection may wait in the pool before it is closed rather
/// than used (upstreams commonly close keep-alive connections after 60 s
/// to 5 min; a connection closed by the upstream while idle is noticed
/// and skipped, this bounds the rest).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The most idle connections kept.
pub const MAX_IDLE: usize = 512;

/// Why a request could not be forwarded.
#[derive(Debug)]
pub enum Failure {
    /// No connection could be made, or the upstream closed it or answered
    /// with something that is not HTTP/1.
    Unreachable(String),
}

/// A request body on its way to the upstream: the client's, streamed as it
/// arrives, or one the gateway has read whole (a signed request's, held to
/// its `Content-Digest` before it is sent on).
#[derive(Debug)]
pub enum Outgoing {
    Streamed(Incoming),
    /// `None` once sent.
    Read(Option<Bytes>),
}

impl HttpBody for Outgoing {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Self::Streamed(body) => Pin::new(body).poll_frame(cx),
            Self::Read(bytes) => Poll::Ready(
                bytes
                    .take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Streamed(body) => body.is_end_stream(),
            Self::Read(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Streamed(body) => body.size_hint(),
            Self::Read(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

/// The upstream's address and the idle connections to it.
#[derive(Debug)]
pub struct Pool {
    /// `host:port`, resolved on every new connection.
    address: String,
    connect_timeout: Duration,
    idle: Mutex<Vec<Idle>>,
}

#[derive(Debug)]
struct Idle {
    sender: SendRequest<Outgoing>,
    since: Instant,
}

impl Pool {
    pub fn new(address: String, connect_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            address,
            connect_timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Sends `request` (origin-form URI, `Host` set) on a pooled
    /// connection, or a new one. A request that a pooled connection closed
    /// before it was sent is sent again on another; one that was sent is
    /// never sent twice.
    pub async fn send(
        self: &Arc<Self>,
        mut request: Request<Outgoing>,
    ) -> Result<Response<Relay>, Failure> {
        loop {
            let (mut sender, fresh) = match self.take_idle() {
                Some(sender) => (sender, false),
                None => (self.connect().await?, true),
            };
            // A connection just given back may not have finished its last
            // exchange yet: this waits for it (a moment, in the same runtime).
            if sender.ready().await.is_err() {
                if fresh {
                    return Err(Failure::Unreachable(
                        "the upstream closed a new connection".to_string(),
                    ));
                }
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let (parts, body) = response.into_parts();
                    let relay = Relay {
                        inner: body,
                        sender: Some(sender),
                        pool: Arc::clone(self),
                    };
                    return Ok(Response::from_parts(parts, relay));
                }
                Err(mut e) => match e.take_message() {
                    // Not sent: the pooled connection had been closed.
                    Some(unsent) if !fresh => request = unsent,
                    _ => return Err(Failure::Unreachable(e.into_error().to_string())),
                },
            }
        }
    }

    fn take_idle(&self) -> Option<SendRequest<Outgoing>> {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some(entry) = idle.pop() {
            if !entry.sender.is_closed() && entry.since.elapsed() < IDLE_TIMEOUT {
                return Some(entry.sender);
            }
        }
        None
    }

    fn give_back(&self, sender: SendRequest<Outgoing>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() >= MAX_IDLE {
            // Keep the most recently used ones: the oldest are the likeliest
            // to have been closed by the upstream.
            idle.remove(0);
        }
        idle.push(Idle {
            sender,
            since: Instant::now(),
        });
    }

    async fn connect(&self) -> Result<SendRequest<Outgoing>, Failure> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.address))
            .await
            .map_err(|_| Failure::Unreachable("connecting to the upstream timed out".to_string()))?
            .map_err(|e| Failure::Unreachable(format!("connecting to the upstream: {e}")))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Failure::Unreachable(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "gateway: upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
}

/// An upstream response body on its way to the client; its connection goes
/// back to the pool when the body has been read to its end.
#[derive(Debug)]
pub struct Relay {
    inner: Incoming,
    sender: Option<SendRequest<Outgoing>>,
    pool: Arc<Pool>,
}

impl Relay {
    fn release(&mut self) {
        if let Some(sender) = self.sender.take() {
            self.pool.give_back(sender);
        }
    }
}

impl HttpBody for Relay {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.release();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // A body that was empty from the start (HEAD, 204, 304) may never be
        // polled: its connection is reusable all the same.
        if self.inner.is_end_stream() {
            self.release();
        }
    }
}
