//! A key's policy as the API reads and writes it: `permissions`,
//! `restrictions`, `ratelimit`, `credits` and `meta` on create (absent or
//! null: none) and on `PATCH …/keys/{keyId}` (absent: unchanged, null:
//! removed), checked member by member with messages that say what to send.

use latchkey_core::policy::{
    self, CreditsPolicy, KeyPolicy, Refill, RefillInterval, Restrictions, credits::MAX_CREDITS,
};
use latchkey_store::StoredCredits;
use serde_json::{Map, Value};

use super::policy::{is_origin, ratelimit_of};
use crate::error::{ApiError, ApiResult};
use crate::json_values;

/// The members of a key's policy, as the API names them.
pub const MEMBERS: [&str; 5] = [
    "permissions",
    "restrictions",
    "ratelimit",
    "credits",
    "meta",
];

/// A policy and its credit balance, being built or changed.
#[derive(Debug, Clone, Default)]
pub struct Draft {
    pub policy: KeyPolicy,
    pub credits: Option<StoredCredits>,
    /// The balance was set by this request (audited; nodes take it over
    /// the balance they hold).
    pub credits_set: bool,
}

impl Draft {
    /// Applies one member (`null` removes it) at time `now`.
    pub fn apply(&mut self, member: &str, value: &Value, now: i64) -> ApiResult<()> {
        match member {
            "permissions" => {
                self.policy.permissions = match value {
                    Value::Null => None,
                    v => Some(permissions(v)?),
                }
            }
            "restrictions" => {
                self.policy.restrictions = restrictions(&self.policy.restrictions, value)?
            }
            "ratelimit" => self.policy.ratelimit = match value {
                Value::Null => None,
                v => Some(ratelimit_of(v).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "ratelimit must be {{\"limit\": N, \"windowSeconds\": S}} with N from 1 \
                             to {} and S from 1 to {} (or null for none)",
                        u32::MAX,
                        policy::MAX_WINDOW_SECONDS
                    ))
                })?),
            },
            "credits" => self.apply_credits(value, now)?,
            "meta" => {
                self.policy.meta = match value {
                    Value::Null => None,
                    Value::Object(m) => {
                        policy::check_meta(m).map_err(|e| ApiError::bad_request(e.0))?;
                        Some(m.clone())
                    }
                    _ => {
                        return Err(ApiError::bad_request(
                            "meta must be a JSON object (or null)",
                        ));
                    }
                }
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown member {other:?} of a key"
                )));
            }
        }
        Ok(())
    }

    fn apply_credits(&mut self, value: &Value, now: i64) -> ApiResult<()> {
        if let Some(successor) = self
            .policy
            .credits
            .as_ref()
            .and_then(|c| c.balance_of.as_deref())
        {
            return Err(ApiError::conflict(format!(
                "this key was rotated and spends the credits of its successor {successor}; \
                 change them there"
            )));
        }
        const SHAPE: &str = "credits must be {\"remaining\": N, \"refill\": {\"amount\": N, \
             \"interval\": \"day\" or \"month\"}} (refill optional), or null for none";
        let obj = match value {
            Value::Null => {
                self.policy.credits = None;
                self.credits = None;
                self.credits_set = true;
                return Ok(());
            }
            Value::Object(obj) => obj,
            _ => return Err(ApiError::bad_request(SHAPE)),
        };
        if let Some(k) = obj.keys().find(|k| *k != "remaining" && *k != "refill") {
            return Err(ApiError::bad_request(format!(
                "unknown member {k:?} of credits; {SHAPE}"
            )));
        }
        let refill = match obj.get("refill") {
            None => self.policy.credits.as_ref().and_then(|c| c.refill),
            Some(Value::Null) => None,
            Some(v) => Some(refill(v)?),
        };
        let remaining = match obj.get("remaining") {
            Some(v) => Some(amount(v, "credits.remaining")?),
            None => None,
        };
        let period = refill.map_or(0, |r| r.interval.period(now));
        match (remaining, self.credits) {
            (Some(remaining), current) => {
                self.credits = Some(StoredCredits {
                    remaining,
                    period,
                    version: current.map_or(0, |c| c.version),
                });
                self.credits_set = true;
            }
            (None, Some(current)) => {
                // Only the refill changes: the balance is kept, and counts
                // from the current period of the new interval (periods of
                // days and of months are numbered differently).
                let before = self.policy.credits.as_ref().and_then(|c| c.refill);
                if refill != before {
                    self.credits = Some(StoredCredits { period, ..current });
                    self.credits_set = true;
                }
            }
            (None, None) => {
                return Err(ApiError::bad_request(
                    "credits.remaining is required to give a key credits",
                ));
            }
        }
        let initial = match remaining {
            Some(n) => Some(n),
            None => self.policy.credits.as_ref().and_then(|c| c.initial),
        };
        self.policy.credits = Some(CreditsPolicy {
            refill,
            initial,
            balance_of: None,
        });
        Ok(())
    }
}

fn permissions(v: &Value) -> ApiResult<Vec<String>> {
    let list = v
        .as_array()
        .and_then(|l| {
            l.iter()
                .map(|n| n.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
        })
        .ok_or_else(|| {
            ApiError::bad_request(
                "permissions must be a list of names such as \"messages:write\" (or null for \
                 the full power of the key's scope)",
            )
        })?;
    policy::normalize_permissions(list).map_err(|e| ApiError::bad_request(e.0))
}

fn restrictions(current: &Restrictions, v: &Value) -> ApiResult<Restrictions> {
    const SHAPE: &str = "restrictions must be {\"allowedIps\": [CIDR, …], \"allowedOrigins\": \
         [origin, …]} (each optional, null to lift it), or null for none";
    let obj = match v {
        Value::Null => return Ok(Restrictions::default()),
        Value::Object(obj) => obj,
        _ => return Err(ApiError::bad_request(SHAPE)),
    };
    if let Some(k) = obj
        .keys()
        .find(|k| *k != "allowedIps" && *k != "allowedOrigins")
    {
        return Err(ApiError::bad_request(format!(
            "unknown member {k:?} of restrictions; {SHAPE}"
        )));
    }
    let mut out = current.clone();
    if let Some(v) = obj.get("allowedIps") {
        out.allowed_ips = match v {
            Value::Null => None,
            v => Some(
                policy::normalize_ips(strings(v, "restrictions.allowedIps")?)
                    .map_err(|e| ApiError::bad_request(e.0))?,
            ),
        };
    }
    if let Some(v) = obj.get("allowedOrigins") {
        out.allowed_origins = match v {
            Value::Null => None,
            v => {
                let mut list = strings(v, "restrictions.allowedOrigins")?;
                if list.is_empty()
                    || list.len() > policy::MAX_RESTRICTION_ENTRIES
                    || !list.iter().all(|o| is_origin(o))
                {
                    return Err(ApiError::bad_request(format!(
                        "restrictions.allowedOrigins must hold 1 to {} exact origins such as \
                         \"https://app.example.com\" (scheme and host in lower case, no path)",
                        policy::MAX_RESTRICTION_ENTRIES
                    )));
                }
                list.sort();
                list.dedup();
                Some(list)
            }
        };
    }
    Ok(out)
}

fn strings(v: &Value, what: &str) -> ApiResult<Vec<String>> {
    v.as_array()
        .and_then(|l| {
            l.iter()
                .map(|s| s.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
        })
        .ok_or_else(|| ApiError::bad_request(format!("{what} must be a list of strings")))
}

fn amount(v: &Value, what: &str) -> ApiResult<i64> {
    json_values::integer_value(v)
        .filter(|n| (0..=MAX_CREDITS).contains(n))
        .ok_or_else(|| {
            ApiError::bad_request(format!("{what} must be an integer from 0 to {MAX_CREDITS}"))
        })
}

fn refill(v: &Value) -> ApiResult<Refill> {
    const SHAPE: &str =
        "credits.refill must be {\"amount\": N, \"interval\": \"day\" or \"month\"} (or null)";
    let obj = v.as_object().ok_or_else(|| ApiError::bad_request(SHAPE))?;
    if obj.keys().any(|k| k != "amount" && k != "interval") {
        return Err(ApiError::bad_request(SHAPE));
    }
    let amount = amount(
        obj.get("amount")
            .ok_or_else(|| ApiError::bad_request(SHAPE))?,
        "credits.refill.amount",
    )?;
    let interval = match obj.get("interval").and_then(Value::as_str) {
        Some("day") => RefillInterval::Day,
        Some("month") => RefillInterval::Month,
        _ => return Err(ApiError::bad_request(SHAPE)),
    };
    Ok(Refill { amount, interval })
}

/// The policy members of a create body (absent and null alike: none).
pub fn of_create(members: &Map<String, Value>, now: i64) -> ApiResult<Draft> {
    let mut draft = Draft::default();
    for name in MEMBERS {
        if let Some(v) = members.get(name).filter(|v| !v.is_null()) {
            draft.apply(name, v, now)?;
        }
    }
    draft.credits_set = false;
    Ok(draft)
}
