//! Loading the snapshot and following the changes over HTTP.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use latchkey_core::KeyIndex;
use latchkey_core::SecretString;
use latchkey_core::replica::{self, FeedLine, SnapshotLine, TransportKey};

use crate::replica::{ConnectError, State};

/// Keys added to the index under one lock while a snapshot loads.
const INSERT_BATCH: usize = 1024;
/// The longest line the feed may send (an account with very many members
/// in a change; snapshot lines hold one thing each).
const MAX_LINE: usize = 16 << 20;
/// Backoff between reconnections: from the first to the longest.
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long reloading the snapshot may take once following.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(120);

/// The server and the token.
#[derive(Debug)]
pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    token: SecretString,
}

/// Splits a response body into lines.
struct Lines {
    response: reqwest::Response,
    buf: BytesMut,
}

impl Lines {
    fn new(response: reqwest::Response) -> Self {
        Self {
            response,
            buf: BytesMut::new(),
        }
    }

    /// The next line; `None` at the end of the body. A line longer than
    /// [`MAX_LINE`] is an error.
    async fn next(&mut self) -> Result<Option<BytesMut>, String> {
        loop {
            if let Some(at) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line = self.buf.split_to(at + 1);
                line.truncate(at);
                return Ok(Some(line));
            }
            if self.buf.len() > MAX_LINE {
                return Err(format!("a line longer than {MAX_LINE} bytes"));
            }
            match self.response.chunk().await.map_err(|e| describe(&e))? {
                Some(chunk) => self.buf.extend_from_slice(chunk.chunk()),
                None if self.buf.is_empty() => return Ok(None),
                None => return Err("the response ended in the middle of a line".into()),
            }
        }
    }
}

/// Whether a URL names this machine (`localhost`, 127.0.0.0/8, `::1`).
fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text = format!("{text}: {c}");
        cause = c.source();
    }
    text
}

impl Client {
    pub(crate) fn new(
        url: &str,
        token: SecretString,
        plain_http: bool,
    ) -> Result<Self, ConnectError> {
        let base = url.trim_end_matches('/').to_string();
        let parsed =
            reqwest::Url::parse(&base).map_err(|e| ConnectError::Url(format!("{url:?}: {e}")))?;
        match parsed.scheme() {
            "https" => {}
            "http" if plain_http || is_loopback(&parsed) => {}
            "http" => {
                return Err(ConnectError::Url(format!(
                    "{url:?}: plain http:// only to a loopback address; use https:// (over plain HTTP the \
                     replica token, and with it every key secret, could be read on the way), \
                     or allow it with ReplicaBuilder::allow_plain_http on a network you trust"
                )));
            }
            _ => {
                return Err(ConnectError::Url(format!(
                    "{url:?}: give the server's https:// URL"
                )));
            }
        }
        // reqwest is built without a default crypto provider; ring is the
        // one the workspace uses (a provider installed already stays).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .user_agent(concat!("latchkey-replica/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConnectError::Url(describe(&e)))?;
        Ok(Self { http, base, token })
    }

    async fn get(&self, path_and_query: &str) -> Result<reqwest::Response, ConnectError> {
        let response = self
            .http
            .get(format!("{}{path_and_query}", self.base))
            .bearer_auth(self.token.expose())
            .send()
            .await
            .map_err(|e| ConnectError::Transport(describe(&e)))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(ConnectError::Refused {
                status: status.as_u16(),
                body,
            });
        }
        Ok(response)
    }

    /// Loads a whole snapshot into a new index; returns it and the change
    /// it is current to.
    pub(crate) async fn snapshot(&self) -> Result<(KeyIndex, i64), ConnectError> {
        let bad = |why: String| ConnectError::Snapshot(why);
        let mut lines = Lines::new(self.get("/v1/replica/snapshot").await?);
        let index = KeyIndex::new();
        let mut transport = None;
        let mut seq = 0;
        let mut batch = Vec::with_capacity(INSERT_BATCH);
        let mut received: u64 = 0;
        loop {
            let line = lines
                .next()
                .await
                .map_err(ConnectError::Transport)?
                .ok_or_else(|| {
                    ConnectError::Transport("the snapshot was cut short (no end line)".into())
                })?;
            let parsed: SnapshotLine =
                serde_json::from_slice(&line).map_err(|e| bad(e.to_string()))?;
            match parsed {
                SnapshotLine::Head(head) => {
                    let salt = TransportKey::decode_salt(&head.salt)
                        .map_err(|e| bad(format!("salt: {e}")))?;
                    transport = Some(
                        TransportKey::derive(self.token.expose(), &salt)
                            .map_err(|e| bad(e.to_string()))?,
                    );
                    index.reserve_keys(usize::try_from(head.key_count).unwrap_or(0));
                    seq = head.seq;
                }
                SnapshotLine::Key(record) => {
                    let Some(transport) = &transport else {
                        return Err(bad("a key before the head".into()));
                    };
                    batch.push(
                        replica::live_key(&record, transport).map_err(|e| bad(e.to_string()))?,
                    );
                    received += 1;
                    if batch.len() == INSERT_BATCH {
                        index.insert_keys(batch.drain(..));
                    }
                }
                SnapshotLine::End { keys } => {
                    if transport.is_none() {
                        return Err(bad("no head".into()));
                    }
                    if keys != received {
                        return Err(bad(format!("{received} keys received of {keys}")));
                    }
                    index.insert_keys(batch.drain(..));
                    return Ok((index, seq));
                }
                owner => {
                    if transport.is_none() {
                        return Err(bad("a line before the head".into()));
                    }
                    replica::apply_owner(&index, &owner).map_err(|e| bad(e.to_string()))?;
                }
            }
        }
    }
}

/// How one connection to the changes ended.
enum Ended {
    /// The server no longer has the changes after ours.
    Reset,
    /// Anything else: reconnect after a pause.
    Lost(String),
}

/// Follows the changes after `state.seq` over one connection, applying
/// each; returns when the connection ends.
async fn follow_once(client: &Client, state: &State) -> Ended {
    let after = state.seq.load(Ordering::Acquire);
    // Heartbeats come every 500 ms: a connection silent for this long is
    // stalled, even if TCP has not noticed.
    let silence = (state.window() / 2).max(Duration::from_millis(1500));
    let path = format!("/v1/replica/changes?after={after}");
    let asked = client.get(&path);
    let response = match tokio::time::timeout(silence, asked).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Ended::Lost(e.to_string()),
        Err(_) => return Ended::Lost(format!("no answer within {silence:?}")),
    };
    let mut lines = Lines::new(response);
    let mut transport = None;
    loop {
        let line = match tokio::time::timeout(silence, lines.next()).await {
            Err(_) => return Ended::Lost(format!("nothing received for {silence:?}")),
            Ok(Err(e)) => return Ended::Lost(e),
            Ok(Ok(None)) => return Ended::Lost("the server ended the feed".into()),
            Ok(Ok(Some(line))) => line,
        };
        let parsed: FeedLine = match serde_json::from_slice(&line) {
            Ok(p) => p,
            Err(e) => return Ended::Lost(format!("an unreadable line: {e}")),
        };
        match parsed {
            FeedLine::Hello { salt, .. } => {
                let key = TransportKey::decode_salt(&salt)
                    .and_then(|salt| TransportKey::derive(client.token.expose(), &salt));
                match key {
                    Ok(key) => transport = Some(key),
                    Err(e) => return Ended::Lost(format!("salt: {e}")),
                }
            }
            FeedLine::Change { seq, entity } => {
                let Some(transport) = &transport else {
                    return Ended::Lost("a change before the hello".into());
                };
                if let Err(e) = replica::apply(&state.index, &entity, transport) {
                    return Ended::Lost(e.to_string());
                }
                state.seq.fetch_max(seq, Ordering::AcqRel);
            }
            FeedLine::Heartbeat { seq } => {
                state.seq.fetch_max(seq, Ordering::AcqRel);
                state.heard();
            }
            FeedLine::Reset { .. } => return Ended::Reset,
        }
    }
}

/// The feed task: follows the changes for as long as the replica lives,
/// reconnecting with backoff, and reloading the snapshot when the server
/// no longer has the changes after ours.
pub(crate) async fn follow(client: Client, state: Arc<State>) {
    let mut backoff = BACKOFF_FIRST;
    loop {
        let outcome = follow_once(&client, &state).await;
        let asked = std::time::Instant::now();
        match outcome {
            Ended::Reset => match tokio::time::timeout(SNAPSHOT_TIMEOUT, client.snapshot())
                .await
                .map(|r| r.map(|loaded| (loaded, asked)))
            {
                Err(_) => {
                    tracing::warn!("the replica could not reload the snapshot in time; retrying");
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "the replica could not reload the snapshot; retrying");
                }
                Ok(Ok(((index, seq), asked))) => {
                    state.index.replace_with(index);
                    state.seq.store(seq, Ordering::Release);
                    // As fresh as the moment the snapshot was asked for.
                    state.heard_at(asked);
                    backoff = BACKOFF_FIRST;
                    continue;
                }
            },
            Ended::Lost(why) => {
                tracing::warn!(reason = %why, "the replica lost the feed; reconnecting");
            }
        }
        // A connection that was working a moment ago starts the backoff
        // over: the first retry comes at once.
        if state.age() < Duration::from_secs(1) {
            backoff = BACKOFF_FIRST;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}
