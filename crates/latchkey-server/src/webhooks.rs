//! Webhook delivery: a background task that claims due deliveries from the
//! store's durable queue and POSTs each one to its webhook's target.
//!
//! Every request carries `Latchkey-Delivery` (the delivery id, the same on
//! every attempt: the receiver's idempotency key), `Latchkey-Event` (the
//! trigger) and `Latchkey-Signature: t=<unix seconds>,v1=<hex>`, where
//! `v1` is the lowercase hex HMAC-SHA256 of `"<t>.<raw body>"` keyed with
//! the webhook's secret (the `lkwh_…` string, as UTF-8 bytes).
//!
//! A 2xx answer delivers. 400, 401, 403, 404 and 406 are final. Anything
//! else (another status, no connection, no answer within 10 s) is retried
//! after 30 s, 2 min, 5 min and 8 min: 5 attempts over about 15 minutes,
//! then the delivery has failed. Every scheduling decision reads the
//! injected clock; only the polling interval is real time.
//!
//! Deliveries are claimed with a lease, so two dispatchers (or a pass that
//! outlives its lease) never send one at the same time; a dispatcher that
//! stops mid-attempt leaves a lease that runs out, and the delivery is sent
//! again. Delivery is therefore at least once, never lost.
//!
//! The dispatcher is a pool of [`CONCURRENCY`] attempts in flight: an
//! attempt that ends frees its slot at once, and the dispatcher claims more
//! whenever a slot frees (and at every poll), never waiting for a whole
//! batch. Claims are fair across webhooks: at most [`PER_WEBHOOK`] attempts
//! of one webhook are in flight at a time (counted through the leases, so
//! across dispatchers too), each webhook's oldest due delivery first. A
//! receiver that accepts connections and never answers therefore holds one
//! slot, not the queue.

use std::time::Duration;

use latchkey_store::{Attempt, AttemptOutcome, ClaimedDelivery, StoreError};
use ring::hmac;
use tokio::sync::watch;
use tokio::task::{JoinError, JoinHandle, JoinSet};

use crate::state::AppState;

/// Seconds to wait after attempt 1, 2, 3 and 4 failed with a retryable
/// answer (15.5 minutes in all).
pub const RETRY_AFTER: [i64; 4] = [30, 120, 300, 480];
/// Attempts per delivery, the first included.
pub const MAX_ATTEMPTS: u32 = RETRY_AFTER.len() as u32 + 1;
/// Answers from the receiver that end a delivery at once.
pub const FINAL_STATUSES: [u16; 5] = [400, 401, 403, 404, 406];
/// How long one attempt may take, connection included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a claim holds a delivery (clock seconds); longer than any
/// attempt.
pub const LEASE_SECONDS: i64 = 60;
/// Attempts a dispatcher has in flight at once, across all webhooks.
pub const CONCURRENCY: usize = 32;
/// Attempts of one webhook in flight at once, across all dispatchers: a
/// slow receiver holds no more slots than this.
pub const PER_WEBHOOK: u32 = 1;
/// How often the server looks for due deliveries, in real time.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);

pub const DELIVERY_HEADER: &str = "Latchkey-Delivery";
pub const EVENT_HEADER: &str = "Latchkey-Event";
pub const SIGNATURE_HEADER: &str = "Latchkey-Signature";

const MAX_ERROR_LEN: usize = 300;

/// The `Latchkey-Signature` value for `body` sent at `t`.
pub fn signature(secret: &[u8], t: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(t.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    let mut hex = String::with_capacity(64);
    for b in tag.as_ref() {
        hex.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        hex.push(char::from(b"0123456789abcdef"[usize::from(b & 0x0f)]));
    }
    format!("t={t},v1={hex}")
}

/// What an answer from the receiver means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Delivered,
    Final,
    Retry,
}

fn verdict(status: u16) -> Verdict {
    if (200..300).contains(&status) {
        Verdict::Delivered
    } else if FINAL_STATUSES.contains(&status) {
        Verdict::Final
    } else {
        Verdict::Retry
    }
}

/// The outcome of attempt number `attempt` (1-based) ending at `now`.
fn outcome(verdict: Verdict, attempt: u32, now: i64) -> AttemptOutcome {
    match verdict {
        Verdict::Delivered => AttemptOutcome::Delivered,
        Verdict::Final => AttemptOutcome::Failed,
        // After attempt n, wait RETRY_AFTER[n - 1]; after the last, stop.
        Verdict::Retry => match attempt
            .checked_sub(1)
            .and_then(|i| RETRY_AFTER.get(i as usize))
        {
            Some(after) => AttemptOutcome::Retry { at: now + after },
            None => AttemptOutcome::Failed,
        },
    }
}

/// Whether an address is on the public internet: not loopback, private,
/// link-local, carrier-grade NAT, unique-local, unspecified, multicast or
/// broadcast (IPv4-mapped IPv6 addresses judged as their IPv4 address).
/// Webhook targets must be public unless the operator allows otherwise, so
/// a customer cannot make Latchkey post into the operator's network.
pub fn is_public_ip(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_ip(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// Resolves names to public addresses only.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| is_public_ip(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err("the target resolves to no public address".into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// The HTTP client deliveries use: no redirects followed (a 3xx is
/// retried like any other non-final answer), 10 s per attempt, and (unless
/// `allow_private`) connections to public addresses only.
pub fn client_for(allow_private: bool) -> Result<reqwest::Client, reqwest::Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("Latchkey-Webhooks/", env!("CARGO_PKG_VERSION")));
    if !allow_private {
        builder = builder.dns_resolver(std::sync::Arc::new(PublicOnly));
    }
    builder.build()
}

/// Why an attempt got no answer, without the URL (its path or query may
/// carry a token of the receiver).
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return format!(
            "the receiver did not answer within {} s",
            REQUEST_TIMEOUT.as_secs()
        );
    }
    let mut text = if e.is_connect() {
        "could not connect to the receiver".to_string()
    } else {
        "the request failed".to_string()
    };
    // The innermost cause says the most ("Connection refused", a TLS alert).
    let mut cause = std::error::Error::source(e);
    let mut innermost = None;
    while let Some(c) = cause {
        innermost = Some(c.to_string());
        cause = c.source();
    }
    if let Some(c) = innermost {
        text.push_str(": ");
        text.push_str(&c);
    }
    text.chars().take(MAX_ERROR_LEN).collect()
}

/// Sends one claimed delivery: the receiver's status, or why there was none
/// and whether trying again could help.
async fn send(
    state: &AppState,
    client: &reqwest::Client,
    claim: &ClaimedDelivery,
) -> Result<u16, (Verdict, String)> {
    let d = &claim.delivery;
    let secret = state
        .master
        .open(&d.webhook_id, &claim.secret_sealed)
        .map_err(|e| {
            tracing::error!(error = %e, webhook = %d.webhook_id, "opening a webhook secret");
            (
                Verdict::Final,
                "the webhook's secret cannot be opened with this master key".to_string(),
            )
        })?;
    let url = reqwest::Url::parse(&claim.target)
        .map_err(|_| (Verdict::Final, "the target is not a valid URL".to_string()))?;
    // An IP literal bypasses the resolver's check.
    if !state.config.allow_private_webhook_targets
        && let Some(ip) = literal_ip(&url)
        && !is_public_ip(ip)
    {
        return Err((
            Verdict::Final,
            "the target is a private address, which this server does not deliver to".into(),
        ));
    }
    let t = state.now();
    let response = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(DELIVERY_HEADER, &d.id)
        .header(EVENT_HEADER, &d.trigger)
        .header(
            SIGNATURE_HEADER,
            signature(&secret, t, d.payload.as_bytes()),
        )
        .body(d.payload.clone())
        .send()
        .await
        .map_err(|e| (Verdict::Retry, describe(&e.without_url())))?;
    Ok(response.status().as_u16())
}

/// The address in a URL whose host is an IP literal.
pub fn literal_ip(url: &reqwest::Url) -> Option<std::net::IpAddr> {
    let host = url.host_str()?;
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Makes one attempt and records its outcome.
async fn attempt(state: AppState, client: reqwest::Client, claim: ClaimedDelivery) {
    let d = &claim.delivery;
    let number = d.attempts + 1;
    let sent = send(&state, &client, &claim).await;
    let now = state.now();
    let record = match sent {
        Ok(status) => {
            let v = verdict(status);
            Attempt {
                outcome: outcome(v, number, now),
                http_status: Some(status),
                error: match v {
                    Verdict::Delivered => None,
                    Verdict::Final => {
                        Some(format!("the receiver answered {status}, which is final"))
                    }
                    Verdict::Retry => Some(format!("the receiver answered {status}")),
                },
                at: now,
            }
        }
        Err((v, error)) => Attempt {
            outcome: outcome(v, number, now),
            http_status: None,
            error: Some(error),
            at: now,
        },
    };
    state.metrics.webhook_delivery(match record.outcome {
        AttemptOutcome::Delivered => "delivered",
        AttemptOutcome::Retry { .. } => "retry",
        AttemptOutcome::Failed => "failed",
    });
    match record.outcome {
        AttemptOutcome::Delivered => {
            tracing::debug!(delivery = %d.id, webhook = %d.webhook_id, attempt = number, "webhook delivered");
        }
        AttemptOutcome::Retry { at } => tracing::info!(
            delivery = %d.id,
            webhook = %d.webhook_id,
            attempt = number,
            retry_in_seconds = at - now,
            error = record.error.as_deref().unwrap_or(""),
            "webhook not delivered; will retry"
        ),
        AttemptOutcome::Failed => tracing::warn!(
            delivery = %d.id,
            webhook = %d.webhook_id,
            attempt = number,
            error = record.error.as_deref().unwrap_or(""),
            "webhook delivery failed; giving up"
        ),
    }
    match state
        .store
        .record_attempt(&d.id, &claim.lease, &record)
        .await
    {
        Ok(true) => {}
        // The webhook was deleted meanwhile, or the lease ran out and
        // another pass owns the delivery now.
        Ok(false) => {
            tracing::debug!(delivery = %d.id, "attempt outcome not recorded: lease lost");
        }
        Err(e) => tracing::warn!(
            error = %e,
            delivery = %d.id,
            "could not record a webhook attempt; it will be retried when its lease runs out"
        ),
    }
}

/// Attempts in flight: at most [`CONCURRENCY`], each a task that sends one
/// claimed delivery and records its outcome (releasing the lease) before it
/// ends.
struct Pool {
    state: AppState,
    client: reqwest::Client,
    running: JoinSet<()>,
}

impl Pool {
    fn new(state: AppState, client: reqwest::Client) -> Self {
        Self {
            state,
            client,
            running: JoinSet::new(),
        }
    }

    fn is_idle(&self) -> bool {
        self.running.is_empty()
    }

    /// Claims due deliveries into the free slots and starts an attempt for
    /// each; returns how many were started.
    async fn fill(&mut self) -> Result<usize, StoreError> {
        while let Some(done) = self.running.try_join_next() {
            finished(done);
        }
        let free = CONCURRENCY.saturating_sub(self.running.len());
        if free == 0 {
            return Ok(0);
        }
        let now = self.state.now();
        let claimed = self
            .state
            .store
            .claim_deliveries(
                now,
                now + LEASE_SECONDS,
                u32::try_from(free).unwrap_or(u32::MAX),
                PER_WEBHOOK,
            )
            .await?;
        let started = claimed.len();
        for claim in claimed {
            self.running
                .spawn(attempt(self.state.clone(), self.client.clone(), claim));
        }
        Ok(started)
    }

    /// Waits for the next attempt to end (forever if none is in flight).
    async fn next_finished(&mut self) {
        match self.running.join_next().await {
            Some(done) => finished(done),
            None => std::future::pending().await,
        }
    }
}

/// Logs an attempt task that did not end normally.
fn finished(done: Result<(), JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        tracing::error!(error = %e, "a webhook attempt panicked; it will be retried when its lease runs out");
    }
}

/// One pass with `client`: claims what is due now into a pool of
/// [`CONCURRENCY`] attempts, claiming more as attempts end, until nothing
/// claimable is left and every attempt it started has ended with its
/// outcome recorded. Returns how many attempts were made.
pub async fn dispatch_due_with(state: &AppState, client: &reqwest::Client) -> usize {
    let mut pool = Pool::new(state.clone(), client.clone());
    let mut attempted = 0;
    loop {
        match pool.fill().await {
            Ok(started) => attempted += started,
            Err(e) => {
                tracing::warn!(error = %e, "could not claim webhook deliveries; will retry");
            }
        }
        if pool.is_idle() {
            return attempted;
        }
        // A slot frees: the webhook it belonged to may have more due.
        pool.next_finished().await;
    }
}

/// One pass (see [`dispatch_due_with`]) with a client of its own.
pub async fn dispatch_due(state: &AppState) -> usize {
    match client_for(state.config.allow_private_webhook_targets) {
        Ok(client) => dispatch_due_with(state, &client).await,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook HTTP client");
            0
        }
    }
}

/// The running dispatcher task.
#[derive(Debug)]
pub struct Dispatcher {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Dispatcher {
    /// Stops claiming; attempts in flight get up to the configured
    /// shutdown grace to finish (what they cannot finish is sent again
    /// after its lease runs out).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Starts the dispatcher: a pool of attempts that claims due deliveries at
/// every `poll` (real time) and whenever an attempt ends.
pub fn spawn_dispatcher(state: AppState, poll: Duration) -> Dispatcher {
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(run(state, poll, stopped));
    Dispatcher { stop, task }
}

/// What woke the dispatcher.
enum Wake {
    Tick,
    SlotFreed,
    Stop,
}

async fn run(state: AppState, poll: Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let client = loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        match client_for(state.config.allow_private_webhook_targets) {
            Ok(c) => break c,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the webhook HTTP client; will retry");
            }
        }
    };
    let grace = state.config.shutdown_grace;
    let mut pool = Pool::new(state, client);
    let mut wake = Wake::Tick;
    loop {
        match wake {
            Wake::Tick | Wake::SlotFreed => {
                if let Err(e) = pool.fill().await {
                    tracing::warn!(error = %e, "could not claim webhook deliveries; will retry");
                }
            }
            Wake::Stop => {
                // What does not end within the grace is aborted when the
                // pool is dropped; its lease runs out and it is sent again.
                let _ = tokio::time::timeout(grace, async {
                    while !pool.is_idle() {
                        pool.next_finished().await;
                    }
                })
                .await;
                return;
            }
        }
        wake = tokio::select! {
            _ = tick.tick() => Wake::Tick,
            () = pool.next_finished() => Wake::SlotFreed,
            _ = stop.changed() => Wake::Stop,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // HMAC-SHA256("lkwh_test", "1700000000.{}"), computed independently
        // with `printf '1700000000.{}' | openssl dgst -sha256 -hmac lkwh_test`.
        let sig = signature(b"lkwh_test", 1_700_000_000, b"{}");
        let (t, v1) = sig.split_once(",v1=").expect("two parts");
        assert_eq!(t, "t=1700000000");
        assert_eq!(v1.len(), 64);
        assert!(
            v1.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_eq!(v1, OPENSSL_REFERENCE);
        // Bound to the timestamp, the body and the secret.
        assert_ne!(signature(b"lkwh_test", 1_700_000_001, b"{}"), sig);
        assert_ne!(signature(b"lkwh_test", 1_700_000_000, b"{ }"), sig);
        assert_ne!(signature(b"lkwh_tesT", 1_700_000_000, b"{}"), sig);
    }

    const OPENSSL_REFERENCE: &str =
        "f3db18b0f4ee82fc72a392ee3b5d6a50e86fb978aa992042a078b89ee72a2172";

    #[test]
    fn answers_are_delivered_final_or_retried() {
        for s in [200, 201, 202, 204, 299] {
            assert_eq!(verdict(s), Verdict::Delivered, "{s}");
        }
        for s in [400, 401, 403, 404, 406] {
            assert_eq!(verdict(s), Verdict::Final, "{s}");
        }
        for s in [100, 301, 302, 405, 408, 409, 410, 429, 500, 502, 503] {
            assert_eq!(verdict(s), Verdict::Retry, "{s}");
        }
    }

    #[test]
    fn five_attempts_over_about_fifteen_minutes() {
        let mut now = 1_000;
        let start = now;
        for n in 1..MAX_ATTEMPTS {
            match outcome(Verdict::Retry, n, now) {
                AttemptOutcome::Retry { at } => now = at,
                other => panic!("attempt {n}: {other:?}"),
            }
        }
        assert_eq!(
            outcome(Verdict::Retry, MAX_ATTEMPTS, now),
            AttemptOutcome::Failed
        );
        assert_eq!(now - start, 930);
        assert_eq!(outcome(Verdict::Final, 1, now), AttemptOutcome::Failed);
        assert_eq!(
            outcome(Verdict::Delivered, 5, now),
            AttemptOutcome::Delivered
        );
    }
}
