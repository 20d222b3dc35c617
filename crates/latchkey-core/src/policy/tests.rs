use std::net::IpAddr;
use std::sync::Arc;

use proptest::prelude::*;

use super::checks::{self, Demand, Subject};
use super::*;

fn live(policy: &KeyPolicy, remaining: i64) -> LivePolicy {
    let cell = policy.credits.as_ref().map(|_| {
        Arc::new(CreditCell::new(
            CreditState {
                remaining,
                period: 0,
            },
            0,
        ))
    });
    LivePolicy::new(policy, cell)
}

fn subject<'a>(policy: Option<&'a LivePolicy>, now: i64) -> Subject<'a> {
    Subject {
        key_id: "app_key",
        user: None,
        policy,
        now,
    }
}

fn demand<'a>(permissions: &'a [String]) -> Demand<'a> {
    Demand {
        permissions,
        ip: None,
        origin: None,
        cost: 1,
    }
}

#[test]
fn permission_names_follow_the_pattern_and_reserve_latchkeys_prefix() {
    assert!(permissions::is_valid_name("messages:write"));
    assert!(permissions::is_valid_name("a"));
    assert!(permissions::is_valid_name(&format!("a{}", "b".repeat(63))));
    for bad in [
        "",
        "Messages",
        "1abc",
        "a b",
        "a/b",
        &format!("a{}", "b".repeat(64)),
    ] {
        assert!(!permissions::is_valid_name(bad), "{bad:?}");
    }
    let ok = normalize_permissions(vec![
        "b".into(),
        "latchkey:users.read".into(),
        "a".into(),
        "b".into(),
    ])
    .expect("valid");
    assert_eq!(ok, ["a", "b", "latchkey:users.read"]);
    let err = normalize_permissions(vec!["latchkey:everything".into()]).expect_err("reserved");
    assert!(err.0.contains("latchkey:users.read"), "{}", err.0);
    assert!(normalize_permissions(vec!["x".into(); 101]).is_err());
    for p in Permission::ALL {
        assert!(permissions::is_valid_name(p.as_str()));
        assert_eq!(Permission::parse(p.as_str()), Some(p));
    }
}

#[test]
fn cidrs_are_normalized_and_match_both_families() {
    assert_eq!(
        normalize_ips(vec![
            "10.1.2.3/8".into(),
            "192.0.2.7".into(),
            "2001:db8::1/32".into()
        ])
        .expect("valid"),
        ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"]
    );
    assert_eq!(
        normalize_ips(vec!["::ffff:10.1.0.0/112".into()]).expect("mapped"),
        ["10.1.0.0/16"]
    );
    assert!(normalize_ips(vec!["10.0.0.0/33".into()]).is_err());
    assert!(normalize_ips(vec!["example.com".into()]).is_err());
    assert!(normalize_ips(vec![]).is_err());
    let policy = KeyPolicy {
        restrictions: Restrictions {
            allowed_ips: Some(vec!["10.0.0.0/8".into(), "2001:db8::/32".into()]),
            allowed_origins: None,
        },
        ..KeyPolicy::default()
    };
    let p = live(&policy, 0);
    let ip = |s: &str| Some(s.parse::<IpAddr>().expect("ip"));
    assert!(p.allows_ip(ip("10.200.0.1")));
    assert!(
        p.allows_ip(ip("::ffff:10.0.0.1")),
        "IPv4-mapped IPv6 is the IPv4 address"
    );
    assert!(p.allows_ip(ip("2001:db8:1::5")));
    assert!(!p.allows_ip(ip("11.0.0.1")));
    assert!(!p.allows_ip(ip("2001:db9::1")));
    assert!(!p.allows_ip(None), "an unknown address is refused");
}

#[test]
fn a_key_without_a_policy_passes_every_check_and_spends_nothing() {
    let limiter = RateLimiter::new();
    let asked = vec!["messages:write".to_string()];
    let out = checks::verification(&subject(None, 100), &demand(&asked), &limiter, None)
        .expect("no policy");
    assert_eq!(out, checks::Outcome::default());
    assert_eq!(limiter.tracked_keys(), 0);
}

#[test]
fn checks_refuse_in_the_documented_order_and_a_refusal_spends_nothing() {
    let policy = KeyPolicy {
        permissions: Some(vec!["messages:read".into()]),
        restrictions: Restrictions {
            allowed_ips: Some(vec!["10.0.0.0/8".into()]),
            allowed_origins: Some(vec!["https://a.example".into()]),
        },
        ratelimit: Some(RateLimit {
            limit: 2,
            window_seconds: 60,
        }),
        credits: Some(CreditsPolicy {
            refill: None,
            initial: Some(1),
            balance_of: None,
        }),
        meta: None,
    };
    let p = live(&policy, 1);
    let limiter = RateLimiter::new();
    let limit = p.ratelimit();
    let run = |perms: &[String], ip: Option<&str>, origin: Option<&str>, now: i64| {
        let d = Demand {
            permissions: perms,
            ip: ip.map(|s| s.parse().expect("ip")),
            origin,
            cost: 1,
        };
        checks::verification(&subject(Some(&p), now), &d, &limiter, limit)
    };
    let read = vec!["messages:read".to_string()];
    let write = vec!["messages:write".to_string()];
    let code = |r: Result<checks::Outcome, Refusal>| r.expect_err("refused").code();
    // Every refusal below comes before the rate limit and credits.
    assert_eq!(
        code(run(&write, Some("10.0.0.1"), None, 0)),
        "insufficient_permissions"
    );
    assert_eq!(
        code(run(&read, Some("11.0.0.1"), None, 0)),
        "ip_not_allowed"
    );
    assert_eq!(code(run(&read, None, None, 0)), "ip_not_allowed");
    assert_eq!(
        code(run(&read, Some("10.0.0.1"), Some("https://b.example"), 0)),
        "origin_not_allowed"
    );
    // The one credit is spent by the first admitted request.
    let ok = run(&read, Some("10.0.0.1"), Some("https://a.example"), 0).expect("admitted");
    assert_eq!(ok.credits, Some((0, 1)));
    assert_eq!(ok.ratelimit.map(|l| l.remaining), Some(1));
    // No credits left: refused, and the rate-limit count it took is given back.
    assert_eq!(
        code(run(&read, Some("10.0.0.1"), None, 1)),
        "usage_exceeded"
    );
    assert_eq!(
        code(run(&read, Some("10.0.0.1"), None, 2)),
        "usage_exceeded"
    );
    p.credits().expect("cell").set(
        CreditState {
            remaining: 5,
            period: 0,
        },
        1,
    );
    let ok = run(&read, Some("10.0.0.1"), None, 3).expect("one count left");
    assert_eq!(ok.ratelimit.map(|l| l.remaining), Some(0));
    assert_eq!(code(run(&read, Some("10.0.0.1"), None, 4)), "rate_limited");
    assert_eq!(
        p.credits().expect("cell").remaining(None, 4),
        4,
        "the refused request spent no credit"
    );
    // The next window admits again.
    assert!(run(&read, Some("10.0.0.1"), None, 60).is_ok());
}

#[test]
fn windows_are_aligned_and_app_users_are_counted_apart() {
    let limiter = RateLimiter::new();
    let limit = RateLimit {
        limit: 1,
        window_seconds: 10,
    };
    let a = limiter
        .try_acquire("k", Some("alice"), limit, 15)
        .expect("alice");
    assert_eq!((a.window_start, a.reset_at), (10, 20));
    assert!(limiter.try_acquire("k", Some("bob"), limit, 15).is_ok());
    let refused = limiter
        .try_acquire("k", Some("alice"), limit, 19)
        .expect_err("full");
    assert!(refused.first_refusal);
    assert_eq!(refused.retry_after(19), 1);
    let again = limiter
        .try_acquire("k", Some("alice"), limit, 19)
        .expect_err("full");
    assert!(!again.first_refusal, "one notice per window");
    assert!(
        limiter.try_acquire("k", None, limit, 19).is_ok(),
        "the key's own count is apart"
    );
    assert!(limiter.try_acquire("k", Some("alice"), limit, 20).is_ok());
    limiter.prune(10_000);
    assert_eq!(limiter.tracked_keys(), 0);
}

#[test]
fn credits_refill_at_the_start_of_each_period() {
    let refill = Some(Refill {
        amount: 3,
        interval: RefillInterval::Day,
    });
    let cell = CreditCell::new(
        CreditState {
            remaining: 1,
            period: 0,
        },
        0,
    );
    assert_eq!(cell.spend(1, refill, 10).map(|s| s.remaining), Ok(0));
    assert_eq!(
        cell.spend(1, refill, 20),
        Err(Shortfall {
            remaining: 0,
            want_lease: false
        })
    );
    assert_eq!(cell.spend(2, refill, 86_400).map(|s| s.remaining), Ok(1));
    assert_eq!(
        cell.take_dirty().map(|(s, _)| (s.remaining, s.period)),
        Some((1, 1))
    );
    assert_eq!(cell.take_dirty(), None);
    // 2026-01-31 then 2026-02-01, UTC.
    assert_ne!(
        RefillInterval::Month.period(1_769_817_600),
        RefillInterval::Month.period(1_769_904_000)
    );
    assert_eq!(
        RefillInterval::Month.period(1_769_817_600),
        RefillInterval::Month.period(1_767_225_600)
    );
}

#[test]
fn a_reloaded_key_keeps_its_balance_unless_the_store_set_a_newer_one() {
    let held = CreditCell::new(
        CreditState {
            remaining: 10,
            period: 0,
        },
        1,
    );
    held.spend(4, None, 0).expect("spend");
    let reloaded_same = CreditCell::new(
        CreditState {
            remaining: 10,
            period: 0,
        },
        1,
    );
    held.take_newer(&reloaded_same);
    assert_eq!(
        held.remaining(None, 0),
        6,
        "spending not yet written is kept"
    );
    let set_through_api = CreditCell::new(
        CreditState {
            remaining: 100,
            period: 0,
        },
        2,
    );
    held.take_newer(&set_through_api);
    assert_eq!(held.remaining(None, 0), 100);
}

#[test]
fn meta_is_bounded_and_answered_as_compact_json() {
    let mut meta = serde_json::Map::new();
    meta.insert("plan".into(), serde_json::json!("pro"));
    assert!(check_meta(&meta).is_ok());
    let p = live(
        &KeyPolicy {
            meta: Some(meta),
            ..KeyPolicy::default()
        },
        0,
    );
    assert_eq!(p.meta().map(|m| m.get()), Some(r#"{"plan":"pro"}"#));
    let mut big = serde_json::Map::new();
    big.insert("x".into(), serde_json::json!("y".repeat(MAX_META_BYTES)));
    assert!(check_meta(&big).is_err());
}

#[derive(Debug, Clone)]
enum Step {
    Verify(i64),
    Set(i64),
    Refund(i64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0i64..20).prop_map(Step::Verify),
        (0i64..50).prop_map(Step::Set),
        (0i64..5).prop_map(Step::Refund),
    ]
}

proptest! {
    /// No sequence of verifications (each spending its cost, refused when
    /// the balance does not cover it), balance changes and refunds of
    /// what was spent drives a balance below zero, and a refused
    /// verification changes nothing.
    #[test]
    fn credits_never_go_negative(start in 0i64..30, steps in prop::collection::vec(step(), 0..60)) {
        let cell = CreditCell::new(CreditState { remaining: start, period: 0 }, 0);
        let mut spent_total: Vec<i64> = Vec::new();
        let mut version = 0;
        for s in steps {
            match s {
                Step::Verify(cost) => {
                    let before = cell.remaining(None, 0);
                    match cell.spend(cost, None, 0) {
                        Ok(spent) => {
                            prop_assert_eq!(spent.before, before);
                            prop_assert_eq!(spent.remaining, before - cost);
                            spent_total.push(cost);
                        }
                        Err(left) => {
                            prop_assert!(before == 0 || before < cost);
                            prop_assert_eq!(left.remaining, before);
                            prop_assert!(!left.want_lease);
                            prop_assert_eq!(cell.remaining(None, 0), before);
                        }
                    }
                }
                Step::Set(n) => {
                    version += 1;
                    cell.set(CreditState { remaining: n, period: 0 }, version);
                    spent_total.clear();
                }
                Step::Refund(i) => {
                    let idx = usize::try_from(i).unwrap_or(0);
                    if idx < spent_total.len() {
                        let cost = spent_total.remove(idx);
                        cell.refund(cost);
                    }
                }
            }
            prop_assert!(cell.remaining(None, 0) >= 0);
        }
    }
}
