//! What a key may do within its scope (issue 18): the permissions it
//! carries, where it may be used from, how often, how many times in all,
//! and the metadata returned with every verification of it.
//!
//! [`KeyPolicy`] is the policy as stored and as the API shows it;
//! [`LivePolicy`] is what the index holds for a key that has one (keys
//! without a policy carry nothing and cost nothing). The checks a
//! verification runs are composed in [`checks`], one piece per policy.

pub mod checks;
pub mod credits;
pub mod permissions;
pub mod ratelimit;
pub mod roles;

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

pub use checks::{Demand, Refusal};
pub use credits::{CreditCell, CreditSeed, CreditState, Refill, RefillInterval, Shortfall};
pub use permissions::Permission;
pub use ratelimit::{LimitState, RateLimit, RateLimiter};
pub use roles::Role;

/// Most permission names a key may carry.
pub const MAX_PERMISSIONS: usize = 100;
/// Most entries of `allowedIps` and of `allowedOrigins`.
pub const MAX_RESTRICTION_ENTRIES: usize = 100;
/// Largest `meta` object, serialized as compact JSON.
pub const MAX_META_BYTES: usize = 4096;
/// Longest rate-limit window: a day.
pub const MAX_WINDOW_SECONDS: u32 = 86_400;

/// A key's policy as stored (JSON in the key's row) and as the API shows
/// it, except the credits' running balance, which the store keeps in its
/// own column (it changes with use).
/// Read without `deny_unknown_fields`: a member a later version stores is
/// ignored by an earlier one instead of stopping it from loading its keys
/// (the API's own input is read member by member, and refuses unknown ones).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyPolicy {
    /// `None`: the key has every permission of its scope (keys made before
    /// permissions existed, and keys made without them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Restrictions::is_empty")]
    pub restrictions: Restrictions,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratelimit: Option<RateLimit>,
    /// Present when the key has credits; the balance is kept apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credits: Option<CreditsPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Map<String, Value>>,
}

/// Where a key may be used from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Restrictions {
    /// CIDRs (a bare address is a /32 or /128), normalized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_ips: Option<Vec<String>>,
    /// Exact origins (`scheme://host[:port]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_origins: Option<Vec<String>>,
}

impl Restrictions {
    pub fn is_empty(&self) -> bool {
        self.allowed_ips.is_none() && self.allowed_origins.is_none()
    }
}

/// A key's credits, without the balance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreditsPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refill: Option<Refill>,
    /// The balance last set through the API: the full amount of a key
    /// without a refill, for the `key:credits-low` notice. Stored, not
    /// shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial: Option<i64>,
    /// The key whose balance this key spends: a key replaced by rotation
    /// spends its successor's, so that rotating does not double a balance.
    /// Stored, not shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance_of: Option<String>,
}

impl KeyPolicy {
    /// Whether the key is as powerful as a key without a policy.
    pub fn is_empty(&self) -> bool {
        *self == KeyPolicy::default()
    }
}

/// Why a policy as given cannot be taken. The message names the member
/// and what to send instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(pub String);

fn bad(msg: impl Into<String>) -> PolicyError {
    PolicyError(msg.into())
}

/// Checks a permission list: at most [`MAX_PERMISSIONS`] names, each
/// `^[a-z][a-z0-9_.:-]{0,63}$`, and names under Latchkey's own prefix
/// only those it defines. Sorted, duplicates removed.
pub fn normalize_permissions(names: Vec<String>) -> Result<Vec<String>, PolicyError> {
    if names.len() > MAX_PERMISSIONS {
        return Err(bad(format!(
            "permissions may hold at most {MAX_PERMISSIONS} names"
        )));
    }
    for name in &names {
        if !permissions::is_valid_name(name) {
            return Err(bad(format!(
                "permission {name:?} is not a valid name: a lower-case letter, then up to 63 of a-z 0-9 _ . : -"
            )));
        }
        if name.starts_with(permissions::BUILTIN_PREFIX) && Permission::parse(name).is_none() {
            return Err(bad(format!(
                "{name:?} is not one of Latchkey's own permissions ({}); names starting with {:?} are reserved",
                Permission::ALL
                    .iter()
                    .map(|p| p.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                permissions::BUILTIN_PREFIX
            )));
        }
    }
    let mut names = names;
    names.sort();
    names.dedup();
    Ok(names)
}

/// Parses one `allowedIps` entry: a CIDR or a bare address; the network
/// is normalized (host bits cleared), so `10.1.2.3/8` reads `10.0.0.0/8`.
pub fn parse_cidr(text: &str) -> Result<IpNet, PolicyError> {
    let net = match text.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => match text.parse::<IpAddr>() {
            Ok(ip) => IpNet::from(ip),
            Err(_) => {
                return Err(bad(format!(
                    "restrictions.allowedIps: {text:?} is not an IPv4 or IPv6 address or CIDR (such as 203.0.113.0/24 or 2001:db8::/32)"
                )));
            }
        },
    };
    // Peers are compared as IPv4 when they are IPv4-mapped IPv6
    // (`canonical_ip`), so an IPv4-mapped network is kept as IPv4 too.
    if let IpNet::V6(v6) = net
        && v6.prefix_len() >= 96
        && let Some(v4) = v6.addr().to_ipv4_mapped()
        && let Ok(v4net) = ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
    {
        return Ok(IpNet::V4(v4net).trunc());
    }
    Ok(net.trunc())
}

/// Checks `allowedIps` and writes each entry in its normal form.
pub fn normalize_ips(list: Vec<String>) -> Result<Vec<String>, PolicyError> {
    if list.is_empty() || list.len() > MAX_RESTRICTION_ENTRIES {
        return Err(bad(format!(
            "restrictions.allowedIps must hold 1 to {MAX_RESTRICTION_ENTRIES} entries (null to lift the restriction)"
        )));
    }
    let mut out = list
        .iter()
        .map(|t| parse_cidr(t).map(|n| n.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    out.sort();
    out.dedup();
    Ok(out)
}

/// Checks a rate limit.
pub fn check_ratelimit(limit: &RateLimit) -> Result<(), PolicyError> {
    if limit.limit == 0 {
        return Err(bad("ratelimit.limit must be at least 1"));
    }
    if !(1..=MAX_WINDOW_SECONDS).contains(&limit.window_seconds) {
        return Err(bad(format!(
            "ratelimit.windowSeconds must be from 1 to {MAX_WINDOW_SECONDS}"
        )));
    }
    Ok(())
}

/// Checks `meta`: at most [`MAX_META_BYTES`] as compact JSON.
pub fn check_meta(meta: &Map<String, Value>) -> Result<(), PolicyError> {
    let size = serde_json::to_vec(meta)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_META_BYTES {
        return Err(bad(format!(
            "meta is {size} bytes as JSON; at most {MAX_META_BYTES} are kept"
        )));
    }
    Ok(())
}

/// A key's policy as the verification path holds it: parsed once when the
/// key enters the index. Shared (`Arc`) by the key's index slot and every
/// verification of it.
#[derive(Debug)]
pub struct LivePolicy {
    /// Sorted; `None` for every permission of the scope.
    permissions: Option<Box<[Box<str>]>>,
    allowed_ips: Option<Box<[IpNet]>>,
    allowed_origins: Option<Box<[Box<str>]>>,
    ratelimit: Option<RateLimit>,
    /// The count of the key's own window, for one node (see
    /// [`ratelimit::OwnWindow`]).
    own_window: ratelimit::OwnWindow,
    /// The balance, shared with the index's cell for this key so that
    /// spending survives the key being loaded again.
    credits: Option<Arc<CreditCell>>,
    refill: Option<Refill>,
    /// The key whose balance this key spends (see
    /// [`CreditsPolicy::balance_of`]).
    balance_of: Option<String>,
    /// What the balance counts down from: the refill's amount, else the
    /// balance last set through the API.
    credits_full: i64,
    /// `meta` as compact JSON, written into every answer as it is.
    meta: Option<Box<RawValue>>,
}

impl LivePolicy {
    /// The live form of a stored policy; `credits` is the key's balance
    /// cell when the policy has credits. Entries that do not parse (the
    /// API never stores such) are dropped, which only narrows the key.
    pub fn new(policy: &KeyPolicy, credits: Option<Arc<CreditCell>>) -> Self {
        let permissions = policy.permissions.as_ref().map(|names| {
            let mut list: Vec<Box<str>> = names.iter().map(|n| Box::from(n.as_str())).collect();
            list.sort();
            list.into_boxed_slice()
        });
        let allowed_ips = policy.restrictions.allowed_ips.as_ref().map(|list| {
            list.iter()
                .filter_map(|t| parse_cidr(t).ok())
                .collect::<Vec<_>>()
                .into_boxed_slice()
        });
        let allowed_origins = policy.restrictions.allowed_origins.as_ref().map(|list| {
            list.iter()
                .map(|o| Box::from(o.as_str()))
                .collect::<Vec<_>>()
                .into_boxed_slice()
        });
        let meta = policy
            .meta
            .as_ref()
            .and_then(|m| serde_json::to_string(m).ok())
            .and_then(|text| RawValue::from_string(text).ok());
        Self {
            permissions,
            allowed_ips,
            allowed_origins,
            ratelimit: policy.ratelimit,
            own_window: ratelimit::OwnWindow::default(),
            credits: policy.credits.as_ref().and(credits),
            refill: policy.credits.as_ref().and_then(|c| c.refill),
            balance_of: policy.credits.as_ref().and_then(|c| c.balance_of.clone()),
            credits_full: policy
                .credits
                .as_ref()
                .map_or(0, |c| c.refill.map_or(c.initial.unwrap_or(0), |r| r.amount)),
            meta,
        }
    }

    /// Whether the key carries `name` (always, for a key without a
    /// permission list).
    pub fn has_permission(&self, name: &str) -> bool {
        match &self.permissions {
            None => true,
            Some(list) => list.binary_search_by(|p| (**p).cmp(name)).is_ok(),
        }
    }

    /// The key's permission list, if it has one.
    pub fn permissions(&self) -> Option<&[Box<str>]> {
        self.permissions.as_deref()
    }

    /// Whether a request from `ip` may use the key (`None`: the address
    /// is not known, which passes only a key without the restriction).
    pub fn allows_ip(&self, ip: Option<IpAddr>) -> bool {
        match (&self.allowed_ips, ip) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(list), Some(ip)) => {
                let ip = canonical_ip(ip);
                list.iter().any(|net| net.contains(&ip))
            }
        }
    }

    pub fn restricts_ips(&self) -> bool {
        self.allowed_ips.is_some()
    }

    /// Whether a browser at `origin` may use the key; a request without an
    /// `Origin` (a server's) always may.
    pub fn allows_origin(&self, origin: Option<&str>) -> bool {
        match (&self.allowed_origins, origin) {
            (Some(list), Some(origin)) => list.iter().any(|o| **o == *origin),
            _ => true,
        }
    }

    pub fn ratelimit(&self) -> Option<RateLimit> {
        self.ratelimit
    }

    /// The key's own window, when `limit` is the key's own and counted on
    /// this node alone, not per user, and fits the packed form.
    pub(crate) fn own_window_for(
        &self,
        limit: RateLimit,
        user: Option<&str>,
        leased: bool,
        now: i64,
    ) -> Option<&ratelimit::OwnWindow> {
        let _ = now;
        (!leased
            && user.is_none()
            && self.ratelimit == Some(limit)
            && ratelimit::OwnWindow::fits(limit))
        .then_some(&self.own_window)
    }

    /// The key whose balance this key spends, when not its own.
    pub fn balance_of(&self) -> Option<&str> {
        self.balance_of.as_deref()
    }

    /// Takes the count of `older`'s own window (the key changed; its
    /// count goes on).
    pub(crate) fn carry_own_window(&mut self, older: &LivePolicy) {
        self.own_window.carry_from(&older.own_window);
    }

    pub(crate) fn set_credit_cell(&mut self, cell: Arc<CreditCell>) {
        if self.credits.is_some() {
            self.credits = Some(cell);
        }
    }

    pub fn credits(&self) -> Option<&Arc<CreditCell>> {
        self.credits.as_ref()
    }

    /// What the balance counts down from (see `key:credits-low`).
    pub fn credits_full(&self) -> i64 {
        self.credits_full
    }

    pub fn refill(&self) -> Option<Refill> {
        self.refill
    }

    pub fn meta(&self) -> Option<&RawValue> {
        self.meta.as_deref()
    }
}

/// An IPv4 address written as IPv6 (`::ffff:a.b.c.d`, as a dual-stack
/// socket reports IPv4 peers) is the IPv4 address.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests;
