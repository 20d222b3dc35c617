//! A key's policy checks with rate limits that hold across nodes: when
//! nodes share a store, the limiter admits only counts this node leased
//! (`latchkey_core::policy::RateLimiter::leased`), and asks the store for
//! another lease when it has used them. The lease is the only store access
//! on the verification path, once per slice of a window (a tenth of the
//! limit); on one node nothing is leased.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use latchkey_core::Verified;
use latchkey_core::policy::checks::{Outcome, Refusal, Subject};
use latchkey_core::policy::{RateLimit, RateLimiter};

use crate::state::AppState;

/// One lease at a time per window on a node: requests that find the
/// node's counts used up while a lease is on its way wait for it instead
/// of each leasing a slice (which would strand the cluster's budget on
/// this node).
#[derive(Debug, Default)]
pub struct Leases {
    locks: Mutex<HashMap<LeaseOf, WindowLock>>,
}

/// A window's end and its lock.
type WindowLock = (i64, Arc<tokio::sync::Mutex<()>>);

/// What a lease is of: key id, subject, window start (with, in the map,
/// the window's end and its lock).
type LeaseOf = (String, String, i64);

impl Leases {
    fn lock_for(
        &self,
        key_id: &str,
        subject: &str,
        start: i64,
        end: i64,
    ) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = match self.locks.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        locks
            .entry((key_id.to_string(), subject.to_string(), start))
            .or_insert_with(|| (end, Arc::default()))
            .1
            .clone()
    }

    /// Forgets the locks of windows that ended.
    pub fn prune(&self, now: i64) {
        if let Ok(mut locks) = self.locks.lock() {
            locks.retain(|_, (end, _)| *end > now);
        }
    }
}

/// A verified credential's key policy, checked as `compose` composes the
/// checks (each way in composes its own: `/v1/verify` all of them, the
/// management API address, origin and limit), with leases when nodes
/// share a store, and the notices the outcome calls for. Nothing to do for
/// a credential without a key, or a key without a policy or a limit.
pub async fn check_key(
    state: &AppState,
    verified: &Verified,
    compose: impl Fn(&Subject<'_>) -> Result<Outcome, Refusal>,
) -> Result<Outcome, Refusal> {
    if verified.policy.is_none() && verified.ratelimit.is_none() {
        return Ok(Outcome::default());
    }
    let Some(key_id) = verified.principal.key_id() else {
        return Ok(Outcome::default());
    };
    let user = match &verified.principal {
        latchkey_core::Principal::AppUser { external_id, .. } => Some(external_id.as_str()),
        _ => None,
    };
    let subject = Subject {
        key_id,
        user,
        policy: verified.policy.as_deref(),
        now: state.now(),
    };
    let result = run_with_lease(state, &subject, verified.ratelimit, || compose(&subject)).await;
    crate::notices::after_checks(
        state,
        key_id,
        user,
        verified.policy.as_deref(),
        verified.ratelimit.map(|l| l.window_seconds),
        &result,
    );
    result
}

/// How long a verification waits for a lease before the refusal stands.
const LEASE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// Runs `checks` (one composition of policy checks over `subject`); when
/// the rate limit or the credits want a lease, takes one from the store
/// and runs them again (at most once for each). A node that cannot reach
/// the store admits only what it holds: the refusal stands.
pub async fn run_with_lease(
    state: &AppState,
    subject: &Subject<'_>,
    limit: Option<RateLimit>,
    checks: impl Fn() -> Result<Outcome, Refusal>,
) -> Result<Outcome, Refusal> {
    let mut result = checks();
    let (mut limit_leased, mut credits_leased) = (false, false);
    loop {
        match &result {
            Err(Refusal::RateLimited(held)) if held.want_lease && !limit_leased => {
                limit_leased = true;
                let Some(limit) = limit else {
                    return result;
                };
                let held = *held;
                result = lease_limit(state, subject, limit, &held, &checks).await;
            }
            Err(Refusal::UsageExceeded {
                cost,
                want_lease: true,
                ..
            }) if !credits_leased => {
                credits_leased = true;
                let cost = *cost;
                result = lease_credits(state, subject, cost, &checks).await;
            }
            _ => return result,
        }
    }
}

async fn lease_limit(
    state: &AppState,
    subject: &Subject<'_>,
    limit: RateLimit,
    held: &latchkey_core::policy::LimitState,
    checks: &impl Fn() -> Result<Outcome, Refusal>,
) -> Result<Outcome, Refusal> {
    let subject_name = subject.user.unwrap_or("");
    let lock = state.leases.lock_for(
        subject.key_id,
        subject_name,
        held.window_start,
        held.reset_at,
    );
    let _one_at_a_time = lock.lock().await;
    // A lease that came while this request waited may cover it.
    let again = checks();
    match &again {
        Err(Refusal::RateLimited(l)) if l.want_lease => {}
        _ => return again,
    }
    // The lease runs as its own task, which a slow store cannot cancel
    // half-way (a write transaction dropped unfinished would hold the
    // store's write lock until its connection is used again); one that
    // ends after this request gave up still adds its counts.
    let lease = {
        let (state, key_id, user) = (
            state.clone(),
            subject.key_id.to_string(),
            subject.user.map(str::to_string),
        );
        let (window_start, reset_at) = (held.window_start, held.reset_at);
        tokio::spawn(async move {
            let leased = state
                .store
                .lease_ratelimit(
                    &key_id,
                    user.as_deref().unwrap_or(""),
                    window_start,
                    reset_at,
                    limit.limit,
                    RateLimiter::lease_slice(limit),
                )
                .await;
            if let Ok((granted, taken)) = leased {
                state.limiter.grant(
                    &key_id,
                    user.as_deref(),
                    limit,
                    window_start,
                    granted,
                    taken,
                );
            }
            leased.map(|_| ())
        })
    };
    match tokio::time::timeout(LEASE_TIMEOUT, lease).await {
        Ok(Ok(Ok(()))) => checks(),
        Ok(Ok(Err(e))) => {
            tracing::warn!(error = %e, request_id = crate::request_id::for_log(), "could not lease rate-limit counts; refusing what this node does not hold");
            again
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, request_id = crate::request_id::for_log(), "a rate-limit lease failed");
            again
        }
        Err(_) => {
            tracing::warn!(
                request_id = crate::request_id::for_log(),
                "no rate-limit lease within {LEASE_TIMEOUT:?}; refusing what this node does not hold"
            );
            again
        }
    }
}

/// Credits leased at once: a twentieth of the full amount (at least the
/// cost, at least 1, at most 10,000), so a key's balance spread over nodes
/// strands at most that much on each.
fn credit_slice(full: i64, cost: i64) -> i64 {
    (full / 20).clamp(1, 10_000).max(cost)
}

async fn lease_credits(
    state: &AppState,
    subject: &Subject<'_>,
    cost: i64,
    checks: &impl Fn() -> Result<Outcome, Refusal>,
) -> Result<Outcome, Refusal> {
    let Some(policy) = subject.policy else {
        return checks();
    };
    let Some(cell) = policy.credits() else {
        return checks();
    };
    let balance_id = policy.balance_of().unwrap_or(subject.key_id);
    let lock = state
        .leases
        .lock_for(balance_id, "\0credits", 0, subject.now + 3600);
    let _one_at_a_time = lock.lock().await;
    let again = checks();
    match &again {
        Err(Refusal::UsageExceeded {
            want_lease: true, ..
        }) => {}
        _ => return again,
    }
    let refill = policy.refill();
    let period = refill.map_or(cell.state().period, |r| r.interval.period(subject.now));
    // Its own task, as for rate limits (see `lease_limit`): credits leased
    // after this request gave up still reach the cell.
    let lease = {
        let (state, cell, balance_id) = (state.clone(), cell.clone(), balance_id.to_string());
        let want = credit_slice(policy.credits_full(), cost);
        let amount = refill.map(|r| r.amount);
        tokio::spawn(async move {
            let leased = state
                .store
                .lease_credits(&balance_id, want, amount, period)
                .await;
            if let Ok((granted, left, period)) = leased {
                cell.grant(granted, left, period);
            }
            leased.map(|_| ())
        })
    };
    match tokio::time::timeout(LEASE_TIMEOUT, lease).await {
        Ok(Ok(Ok(()))) => checks(),
        Ok(Ok(Err(e))) => {
            tracing::warn!(error = %e, request_id = crate::request_id::for_log(), "could not lease credits; refusing what this node does not hold");
            again
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, request_id = crate::request_id::for_log(), "a credit lease failed");
            again
        }
        Err(_) => {
            tracing::warn!(
                request_id = crate::request_id::for_log(),
                "no credit lease within {LEASE_TIMEOUT:?}; refusing what this node does not hold"
            );
            again
        }
    }
}
