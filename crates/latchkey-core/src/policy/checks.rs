//! The checks a verification runs after the credential and its reach,
//! one piece per policy, composed by [`run`] in the order given:
//!
//! ```text
//! run(&subject, &[&Permissions(..), &IpAllowed(..), &OriginAllowed(..),
//!                 &Limited { .. }, &Credits { .. }])
//! ```
//!
//! A check that refuses leaves nothing spent: the checks before it that
//! spent something (a rate-limit count) give it back. A new policy is one
//! more [`Check`] in that list.

use std::net::IpAddr;

use super::LivePolicy;
use super::ratelimit::{LimitState, RateLimit, RateLimiter};

/// The credential being checked: its key, the user an appUser JWT speaks
/// for, the key's policy if it has one, and the time.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub key_id: &'a str,
    pub user: Option<&'a str>,
    pub policy: Option<&'a LivePolicy>,
    pub now: i64,
}

/// What a verification request asks beyond the credential's reach.
#[derive(Debug, Clone, Copy, Default)]
pub struct Demand<'a> {
    /// Permission names, all of which the key must carry.
    pub permissions: &'a [String],
    /// The address the request came from.
    pub ip: Option<IpAddr>,
    /// The request's `Origin`, when from a browser.
    pub origin: Option<&'a str>,
    /// Credits to spend (default 1).
    pub cost: i64,
}

/// Why a check refused. Each has a documented code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The first permission asked for that the key does not carry.
    InsufficientPermissions(String),
    /// The key allows only certain addresses; `None` when the address was
    /// not given.
    IpNotAllowed(Option<IpAddr>),
    OriginNotAllowed(String),
    RateLimited(LimitState),
    /// The balance (what was left) is below the cost; `want_lease`: with a
    /// shared store, this node has spent what it leased and the store may
    /// have more (ask for a lease, then try again).
    UsageExceeded {
        remaining: i64,
        cost: i64,
        want_lease: bool,
    },
}

impl Refusal {
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::InsufficientPermissions(_) => "insufficient_permissions",
            Refusal::IpNotAllowed(_) => "ip_not_allowed",
            Refusal::OriginNotAllowed(_) => "origin_not_allowed",
            Refusal::RateLimited(_) => "rate_limited",
            Refusal::UsageExceeded { .. } => "usage_exceeded",
        }
    }

    /// What the caller can do about it, without echoing the credential.
    pub fn title(&self, now: i64) -> String {
        match self {
            Refusal::InsufficientPermissions(name) => {
                format!("the key does not carry the permission {name:?}")
            }
            Refusal::IpNotAllowed(Some(ip)) => {
                format!("the key may not be used from {ip} (restrictions.allowedIps)")
            }
            Refusal::IpNotAllowed(None) => {
                "the key may be used only from certain addresses (restrictions.allowedIps): send the request's ip".to_string()
            }
            Refusal::OriginNotAllowed(origin) => {
                format!("the key may not be used from the origin {origin:?} (restrictions.allowedOrigins)")
            }
            Refusal::RateLimited(state) => format!(
                "the key's rate limit ({} per window) is used up; retry after {} seconds",
                state.limit,
                state.retry_after(now)
            ),
            Refusal::UsageExceeded {
                remaining, cost, ..
            } => format!(
                "the key has {remaining} credits left, fewer than this request costs ({cost})"
            ),
        }
    }
}

/// What an admitted check spent, to give back if a later one refuses, and
/// to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    Nothing,
    Limit(LimitState),
    Credits {
        remaining: i64,
        cost: i64,
        before: i64,
    },
}

/// One policy.
pub trait Check {
    /// Admits the subject (spending what the policy counts) or refuses it.
    fn admit(&self, subject: &Subject<'_>) -> Result<Admitted, Refusal>;

    /// Gives back what `admit` spent, when a later check refused.
    fn undo(&self, _subject: &Subject<'_>, _admitted: &Admitted) {}
}

/// What the checks admitted, for the answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    pub ratelimit: Option<LimitState>,
    /// The balance left, and what it was before this request.
    pub credits: Option<(i64, i64)>,
}

/// Runs `checks` in order; on the first refusal gives back what the
/// earlier ones spent and returns it.
pub fn run(subject: &Subject<'_>, checks: &[&dyn Check]) -> Result<Outcome, Refusal> {
    let mut admitted: [Admitted; 8] = [Admitted::Nothing; 8];
    let mut outcome = Outcome::default();
    for (i, check) in checks.iter().enumerate() {
        match check.admit(subject) {
            Ok(a) => {
                match a {
                    Admitted::Limit(state) => outcome.ratelimit = Some(state),
                    Admitted::Credits {
                        remaining, before, ..
                    } => outcome.credits = Some((remaining, before)),
                    Admitted::Nothing => {}
                }
                if let Some(slot) = admitted.get_mut(i) {
                    *slot = a;
                }
            }
            Err(refusal) => {
                for (check, a) in checks[..i].iter().zip(admitted.iter()).rev() {
                    check.undo(subject, a);
                }
                return Err(refusal);
            }
        }
    }
    Ok(outcome)
}

/// The key must carry every one of these permissions.
#[derive(Debug, Clone, Copy)]
pub struct Permissions<'a>(pub &'a [String]);

impl Check for Permissions<'_> {
    fn admit(&self, s: &Subject<'_>) -> Result<Admitted, Refusal> {
        let Some(policy) = s.policy else {
            return Ok(Admitted::Nothing);
        };
        match self.0.iter().find(|p| !policy.has_permission(p)) {
            Some(missing) => Err(Refusal::InsufficientPermissions(missing.clone())),
            None => Ok(Admitted::Nothing),
        }
    }
}

/// The key's `allowedIps` must hold the address.
#[derive(Debug, Clone, Copy)]
pub struct IpAllowed(pub Option<IpAddr>);

impl Check for IpAllowed {
    fn admit(&self, s: &Subject<'_>) -> Result<Admitted, Refusal> {
        match s.policy {
            Some(p) if !p.allows_ip(self.0) => Err(Refusal::IpNotAllowed(self.0)),
            _ => Ok(Admitted::Nothing),
        }
    }
}

/// The key's `allowedOrigins` must hold a browser's origin.
#[derive(Debug, Clone, Copy)]
pub struct OriginAllowed<'a>(pub Option<&'a str>);

impl Check for OriginAllowed<'_> {
    fn admit(&self, s: &Subject<'_>) -> Result<Admitted, Refusal> {
        match (s.policy, self.0) {
            (Some(p), Some(origin)) if !p.allows_origin(Some(origin)) => {
                Err(Refusal::OriginNotAllowed(origin.to_string()))
            }
            _ => Ok(Admitted::Nothing),
        }
    }
}

/// The rate limit that applies (the key's own, or its app's default):
/// one count per admitted request.
#[derive(Debug, Clone, Copy)]
pub struct Limited<'a> {
    pub limiter: &'a RateLimiter,
    pub limit: Option<RateLimit>,
}

impl Check for Limited<'_> {
    fn admit(&self, s: &Subject<'_>) -> Result<Admitted, Refusal> {
        let Some(limit) = self.limit else {
            return Ok(Admitted::Nothing);
        };
        let own = s
            .policy
            .and_then(|p| p.own_window_for(limit, s.user, self.limiter.is_leased(), s.now));
        match own {
            Some(window) => window.try_acquire(limit, s.now),
            None => self.limiter.try_acquire(s.key_id, s.user, limit, s.now),
        }
        .map(Admitted::Limit)
        .map_err(Refusal::RateLimited)
    }

    fn undo(&self, s: &Subject<'_>, admitted: &Admitted) {
        let (Admitted::Limit(state), Some(limit)) = (admitted, self.limit) else {
            return;
        };
        let own = s
            .policy
            .and_then(|p| p.own_window_for(limit, s.user, self.limiter.is_leased(), s.now));
        match own {
            Some(window) => window.release(state, limit),
            None => self.limiter.release(s.key_id, s.user, state),
        }
    }
}

/// The key's credits must cover `cost`, which is spent.
#[derive(Debug, Clone, Copy)]
pub struct Credits(pub i64);

impl Check for Credits {
    fn admit(&self, s: &Subject<'_>) -> Result<Admitted, Refusal> {
        let Some((cell, refill)) = s.policy.and_then(|p| p.credits().map(|c| (c, p.refill())))
        else {
            return Ok(Admitted::Nothing);
        };
        match cell.spend(self.0, refill, s.now) {
            Ok(spent) => Ok(Admitted::Credits {
                remaining: spent.remaining,
                cost: self.0,
                before: spent.before,
            }),
            Err(short) => Err(Refusal::UsageExceeded {
                remaining: short.remaining,
                cost: self.0,
                want_lease: short.want_lease,
            }),
        }
    }

    fn undo(&self, s: &Subject<'_>, admitted: &Admitted) {
        if let (Admitted::Credits { cost, .. }, Some(cell)) =
            (admitted, s.policy.and_then(|p| p.credits()))
        {
            cell.refund(*cost);
        }
    }
}

/// The checks of a verification in their documented order: permissions,
/// address, origin, rate limit, credits. Nothing to do (and nothing run)
/// for a key without a policy and without a limit.
pub fn verification(
    subject: &Subject<'_>,
    demand: &Demand<'_>,
    limiter: &RateLimiter,
    limit: Option<RateLimit>,
) -> Result<Outcome, Refusal> {
    if subject.policy.is_none() && limit.is_none() {
        return Ok(Outcome::default());
    }
    // The same pieces `run` composes, called in their order directly: this
    // is the path of every verification, and the direct calls cost less
    // than the list of trait objects (`benches/verify.rs`, group `policy`).
    // Only the rate limit and the credits spend; a refusal by the credits
    // gives the rate limit's count back.
    Permissions(demand.permissions).admit(subject)?;
    IpAllowed(demand.ip).admit(subject)?;
    OriginAllowed(demand.origin).admit(subject)?;
    let limited = Limited { limiter, limit };
    let counted = limited.admit(subject)?;
    let mut outcome = Outcome::default();
    if let Admitted::Limit(state) = counted {
        outcome.ratelimit = Some(state);
    }
    match Credits(demand.cost).admit(subject) {
        Ok(Admitted::Credits {
            remaining, before, ..
        }) => outcome.credits = Some((remaining, before)),
        Ok(_) => {}
        Err(refusal) => {
            limited.undo(subject, &counted);
            return Err(refusal);
        }
    }
    Ok(outcome)
}
