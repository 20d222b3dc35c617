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

use std::time::Duration;

use latchkey_store::{Attempt, AttemptOutcome, ClaimedDelivery};
use ring::hmac;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

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
/// Deliveries claimed (and sent concurrently) at a time.
pub const BATCH: u32 = 32;
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

/// One pass with `client`: claims what is due now, sends it all
/// concurrently and records each outcome; repeats while whole batches were
/// due. Returns how many attempts were made.
pub async fn dispatch_due_with(state: &AppState, client: &reqwest::Client) -> usize {
    let mut attempted = 0;
    loop {
        let now = state.now();
        let claimed = match state
            .store
            .claim_deliveries(now, now + LEASE_SECONDS, BATCH)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "could not claim webhook deliveries; will retry");
                return attempted;
            }
        };
        let full = claimed.len() == BATCH as usize;
        attempted += claimed.len();
        let mut running = JoinSet::new();
        for claim in claimed {
            running.spawn(attempt(state.clone(), client.clone(), claim));
        }
        while running.join_next().await.is_some() {}
        if !full {
            return attempted;
        }
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
    /// Stops polling; a pass in progress gets up to the configured
    /// shutdown grace to finish (what it cannot finish is sent again after
    /// its lease runs out).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Starts the dispatcher: a pass every `poll` (real time).
pub fn spawn_dispatcher(state: AppState, poll: Duration) -> Dispatcher {
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(run(state, poll, stopped));
    Dispatcher { stop, task }
}

async fn run(state: AppState, poll: Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut client = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if client.is_none() {
            match client_for(state.config.allow_private_webhook_targets) {
                Ok(c) => client = Some(c),
                Err(e) => {
                    tracing::error!(error = %e, "cannot build the webhook HTTP client; will retry");
                    continue;
                }
            }
        }
        let Some(c) = &client else { continue };
        let pass = dispatch_due_with(&state, c);
        tokio::pin!(pass);
        tokio::select! {
            _ = &mut pass => {}
            _ = stop.changed() => {
                let _ = tokio::time::timeout(state.config.shutdown_grace, &mut pass).await;
                return;
            }
        }
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
