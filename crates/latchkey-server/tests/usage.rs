//! Usage analytics over real HTTP: a known number of valid and refused
//! checks of keys' credentials, on each way in, read back exactly from
//! `GET /v1/apps/{appId}/usage` and `GET /v1/usage` once the flush
//! interval has passed; counts kept across a restart; who may read them;
//! what a bad query gets; retention.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Key, StatusCode, TestApp};
use latchkey_store::{DAY, HOUR, MINUTE, UsageFilter};
use serde_json::{Value, json};

async fn verify(app: &TestApp, authorization: &str) -> Value {
    let r = app
        .post(
            "/v1/verify",
            &app.operator(),
            json!({ "authorization": authorization }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body
}

/// What a list of verification answers adds up to: valid, and refusals by
/// code.
#[derive(Debug, Default, PartialEq, Eq, Clone)]
struct Tally {
    valid: i64,
    refused: BTreeMap<String, i64>,
}

impl Tally {
    fn add(&mut self, answer: &Value) {
        if answer["valid"] == true {
            self.valid += 1;
        } else {
            let code = answer["code"].as_str().expect("a refusal's code");
            *self.refused.entry(code.to_string()).or_default() += 1;
        }
    }

    fn of(counts: &Value) -> Self {
        Tally {
            valid: counts["valid"].as_i64().expect("valid"),
            refused: counts["refused"]
                .as_object()
                .expect("refused")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_i64().expect("count")))
                .collect(),
        }
    }
}

async fn usage(app: &TestApp, auth: &str, path: &str) -> Value {
    let r = app.get(path, auth).await;
    assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
    r.body
}

/// Reads `path` until its totals are `want` (the flush interval has to
/// pass first), then once more a few intervals later: still `want`, so
/// nothing was counted twice.
async fn totals_become(app: &TestApp, auth: &str, path: &str, want: &Tally) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = usage(app, auth, path).await;
        if Tally::of(&body["totals"]) == *want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{path}: totals {} never became {want:?}",
            body["totals"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let body = usage(app, auth, path).await;
    assert_eq!(Tally::of(&body["totals"]), *want, "{path}: {body}");
    body
}

fn fast_flush(config: &mut latchkey_server::Config) {
    config.last_used_flush_interval = Duration::from_millis(100);
}

#[tokio::test]
async fn every_check_is_counted_once_by_key_minute_and_outcome() {
    let app = TestApp::spawn_with(fast_flush).await;
    let owner = app.owner();
    let a = app.create_app(&owner, "counted").await;
    let b = app.create_app(&owner, "other").await;
    let k1 = app.create_app_key(&owner, &a).await;
    let k2 = app.create_app_key(&owner, &a).await;
    let k3 = app.create_app_key(&owner, &b).await;

    let mut t1 = Tally::default();
    for _ in 0..7 {
        t1.add(&verify(&app, &k1.basic()).await);
    }
    for _ in 0..2 {
        t1.add(&verify(&app, &k1.jwt(json!({"scope": "app"}))).await);
    }
    let wrong = common::basic(&k1.id, "lksk_not_the_secret");
    for _ in 0..3 {
        t1.add(&verify(&app, &wrong).await);
    }
    let expired = k1.jwt(json!({"scope": "app", "exp": 1_000}));
    t1.add(&verify(&app, &expired).await);
    assert_eq!(t1.valid, 9, "{t1:?}");
    assert_eq!(t1.refused.values().sum::<i64>(), 4, "{t1:?}");
    // The management API counts too (k2 reads its own app).
    let mut t2 = Tally::default();
    for _ in 0..4 {
        let r = app.get(&format!("/v1/apps/{a}"), &k2.basic()).await;
        assert_eq!(r.status, StatusCode::OK);
        t2.valid += 1;
    }
    let mut t3 = Tally::default();
    for _ in 0..5 {
        t3.add(&verify(&app, &k3.basic()).await);
    }
    // A made-up key id is nobody's usage.
    for _ in 0..6 {
        let answer = verify(&app, &common::basic("app_000000000000000000000", "x")).await;
        assert_eq!(answer["valid"], false);
    }

    let mut both = t1.clone();
    both.valid += t2.valid;
    let minute = format!("/v1/apps/{a}/usage?granularity=minute");
    let body = totals_become(&app, &owner, &minute, &both).await;
    assert_eq!(body["appId"], a.as_str());
    assert_eq!(body["granularity"], "minute");
    let buckets = body["buckets"].as_array().expect("buckets");
    // The last hour of minutes, every one listed, the counts in the
    // current one (the clock stands at 2026-01-01T00:00:00Z).
    assert_eq!(buckets.len(), 61, "{body}");
    let last = buckets.last().expect("a bucket");
    assert_eq!(last["start"], "2026-01-01T00:00:00Z");
    assert_eq!(Tally::of(last), both);
    assert!(
        buckets[..60]
            .iter()
            .all(|b| b["valid"] == 0 && b["refused"] == json!({})),
        "{body}"
    );
    for granularity in ["hour", "day"] {
        let body = usage(
            &app,
            &owner,
            &format!("/v1/apps/{a}/usage?granularity={granularity}"),
        )
        .await;
        assert_eq!(Tally::of(&body["totals"]), both, "{granularity}: {body}");
    }
    let per_key = |key: &Key| format!("/v1/apps/{a}/usage?keyId={}", key.id);
    assert_eq!(
        Tally::of(&usage(&app, &owner, &per_key(&k1)).await["totals"]),
        t1
    );
    assert_eq!(
        Tally::of(&usage(&app, &owner, &per_key(&k2)).await["totals"]),
        t2
    );
    // A key of another app is not in this app's usage.
    assert_eq!(
        Tally::of(&usage(&app, &owner, &per_key(&k3)).await["totals"]),
        Tally::default()
    );
    totals_become(&app, &owner, &format!("/v1/apps/{b}/usage"), &t3).await;

    // The account's summary: each app's totals, and the account's own keys
    // (the owner's reads above) under appId null.
    let summary = usage(&app, &owner, "/v1/usage").await;
    let apps = summary["apps"].as_array().expect("apps");
    let of_app = |id: Option<&str>| {
        apps.iter()
            .find(|e| e["appId"].as_str() == id)
            .map(Tally::of)
            .unwrap_or_default()
    };
    assert_eq!(of_app(Some(&a)), both, "{summary}");
    assert_eq!(of_app(Some(&b)), t3, "{summary}");
    assert!(of_app(None).valid > 0, "{summary}");
    let total = Tally::of(&summary["totals"]);
    assert_eq!(
        total.valid,
        both.valid + t3.valid + of_app(None).valid,
        "{summary}"
    );
}

#[tokio::test]
async fn counts_survive_a_restart_and_land_in_their_minutes() {
    // A flush interval longer than the test: only the stop writes.
    let mut app =
        TestApp::spawn_with(|c| c.last_used_flush_interval = Duration::from_secs(3600)).await;
    let owner = app.owner();
    let a = app.create_app(&owner, "restarted").await;
    let key = app.create_app_key(&owner, &a).await;
    for _ in 0..3 {
        assert_eq!(verify(&app, &key.basic()).await["valid"], true);
    }
    app.restart().await;
    app.clock.advance(time::Duration::minutes(2));
    for _ in 0..2 {
        assert_eq!(verify(&app, &key.basic()).await["valid"], true);
    }
    app.restart().await;
    let body = usage(
        &app,
        &owner,
        &format!(
            "/v1/apps/{a}/usage?granularity=minute&since=2026-01-01T00:00:00Z&until=2026-01-01T00:03:00Z"
        ),
    )
    .await;
    let buckets = body["buckets"].as_array().expect("buckets");
    let valid: Vec<(String, i64)> = buckets
        .iter()
        .map(|b| {
            (
                b["start"].as_str().expect("start").to_string(),
                b["valid"].as_i64().expect("valid"),
            )
        })
        .collect();
    assert_eq!(
        valid,
        [
            ("2026-01-01T00:00:00Z".to_string(), 3),
            ("2026-01-01T00:01:00Z".to_string(), 0),
            ("2026-01-01T00:02:00Z".to_string(), 2),
        ],
        "{body}"
    );
}

#[tokio::test]
async fn usage_is_read_with_app_or_account_scope_and_usage_read_only() {
    let app = TestApp::spawn_with(fast_flush).await;
    let owner = app.owner();
    let a = app.create_app(&owner, "mine").await;
    let b = app.create_app(&owner, "sibling").await;
    let key_a = app.create_app_key(&owner, &a).await;
    let key_b = app.create_app_key(&owner, &b).await;
    let path = format!("/v1/apps/{a}/usage");
    assert_eq!(app.get(&path, &owner).await.status, StatusCode::OK);
    assert_eq!(app.get(&path, &key_a.basic()).await.status, StatusCode::OK);
    // Another app's key, and another account, do not see the app at all.
    assert_eq!(
        app.get(&path, &key_b.basic()).await.status,
        StatusCode::NOT_FOUND
    );
    let stranger = app.create_account("stranger@example.com").await;
    let r = app.get(&path, &stranger.basic()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    // An app key cannot read the account's summary.
    let r = app.get("/v1/usage", &key_a.basic()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    // A key with a permission list needs latchkey:usage.read.
    let limited = app
        .post(
            &format!("/v1/apps/{a}/keys"),
            &owner,
            json!({"displayName": "keys only", "permissions": ["latchkey:keys.read"]}),
        )
        .await;
    assert_eq!(limited.status, StatusCode::CREATED, "{}", limited.body);
    let limited = Key::from_reply(&limited);
    let r = app.get(&path, &limited.basic()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(
        r.body.to_string().contains("latchkey:usage.read"),
        "{}",
        r.body
    );
    let reader = app
        .post(
            &format!("/v1/apps/{a}/keys"),
            &owner,
            json!({"displayName": "usage", "permissions": ["latchkey:usage.read"]}),
        )
        .await;
    let reader = Key::from_reply(&reader);
    assert_eq!(app.get(&path, &reader.basic()).await.status, StatusCode::OK);
    // The operator names the account.
    let r = app.get("/v1/usage", &app.operator()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let r = app
        .get(
            &format!("/v1/usage?accountId={}", app.account_id()),
            &app.operator(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = app
        .get("/v1/usage?accountId=acc_nobody", &app.operator())
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
}

#[tokio::test]
async fn bad_queries_are_refused_with_what_to_fix() {
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let a = app.create_app(&owner, "queries").await;
    let cases = [
        ("granularity=week", "minute, hour or day"),
        ("since=yesterday", "RFC 3339"),
        (
            "since=2026-01-01T00:00:00Z&until=2025-12-31T00:00:00Z",
            "before",
        ),
        (
            "granularity=minute&since=2025-12-25T00:00:00Z",
            "granularity=hour",
        ),
        (
            "granularity=hour&since=2025-01-01T00:00:00Z",
            "granularity=day",
        ),
        ("until=2026-02-01T00:00:00Z", "future"),
        ("color=blue", "bad query"),
        ("accountId=acc_x", "accountId"),
    ];
    for (query, says) in cases {
        let r = app
            .get(&format!("/v1/apps/{a}/usage?{query}"), &owner)
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}: {}", r.body);
        assert_eq!(r.body["errors"][0]["code"], "bad_request", "{query}");
        let title = r.body["errors"][0]["title"].as_str().expect("title");
        assert!(title.contains(says), "{query}: {title}");
    }
    let r = app.get("/v1/usage?keyId=app_x", &owner).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let r = app.get("/v1/apps/app_nothere/usage", &owner).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
}

#[tokio::test]
async fn minutes_go_after_48_hours_and_hours_and_days_stay() {
    let app = TestApp::spawn_with(fast_flush).await;
    let owner = app.owner();
    let a = app.create_app(&owner, "kept").await;
    let key = app.create_app_key(&owner, &a).await;
    for _ in 0..4 {
        assert_eq!(verify(&app, &key.basic()).await["valid"], true);
    }
    let want = Tally {
        valid: 4,
        refused: BTreeMap::new(),
    };
    totals_become(
        &app,
        &owner,
        &format!("/v1/apps/{a}/usage?granularity=minute"),
        &want,
    )
    .await;
    let state = &app.server.as_ref().expect("running").state;
    let t0 = state.now();
    let filter = |granularity| UsageFilter {
        account_id: app.account_id(),
        app_id: Some(a.clone()),
        key_id: None,
        reachable_by: None,
        granularity,
        since: t0 - DAY,
        until: t0 + DAY,
    };
    let sum = |rows: Vec<latchkey_store::UsageRow>| rows.iter().map(|r| r.count).sum::<i64>();
    // 47 hours on, nothing goes; 49 hours on, the minutes go.
    let gone = state
        .store
        .prune_usage(t0 + 47 * HOUR)
        .await
        .expect("prune");
    assert_eq!(gone, 0);
    let gone = state
        .store
        .prune_usage(t0 + 49 * HOUR)
        .await
        .expect("prune");
    // The key's minute, and the owner's (its reads of the usage).
    assert_eq!(gone, 2, "two minute rows");
    assert_eq!(
        sum(state.store.usage(&filter(MINUTE)).await.expect("minutes")),
        0
    );
    assert_eq!(
        sum(state.store.usage(&filter(HOUR)).await.expect("hours")),
        4
    );
    assert_eq!(sum(state.store.usage(&filter(DAY)).await.expect("days")), 4);
    // 91 days on, the hour goes; the day stays two years.
    state.store.prune_usage(t0 + 91 * DAY).await.expect("prune");
    assert_eq!(
        sum(state.store.usage(&filter(HOUR)).await.expect("hours")),
        0
    );
    assert_eq!(sum(state.store.usage(&filter(DAY)).await.expect("days")), 4);
    state
        .store
        .prune_usage(t0 + 731 * DAY)
        .await
        .expect("prune");
    assert_eq!(sum(state.store.usage(&filter(DAY)).await.expect("days")), 0);
}

/// What usage costs the store: keys checked every minute for two days
/// (one outcome), written as the flusher writes them (one batch per key
/// and hour), then the bytes of `key_usage` and its index, per row and
/// per key and day. Figures in docs/BENCHMARKS.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run with --run-ignored only --no-capture"]
async fn measure_storage_per_active_key() {
    const KEYS: usize = 10;
    const HOURS: i64 = 48;
    // Nothing of the owner's own calls is flushed meanwhile.
    let app = TestApp::spawn_with(|c| c.last_used_flush_interval = Duration::from_secs(3600)).await;
    let owner = app.owner();
    let a = app.create_app(&owner, "measured").await;
    let mut keys = Vec::new();
    for _ in 0..KEYS {
        keys.push(app.create_app_key(&owner, &a).await.id);
    }
    let state = app.server.as_ref().expect("running").state.clone();
    let size = async || -> (i64, i64) {
        if common::on_postgres() {
            let url = state
                .config
                .database_url
                .as_ref()
                .expect("url")
                .expose()
                .to_string();
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
                .await
                .expect("connect");
            let bytes: i64 = sqlx::query_scalar(
                "SELECT pg_total_relation_size('key_usage') + pg_total_relation_size('usage_keys')",
            )
            .fetch_one(&mut conn)
            .await
            .expect("size");
            let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM key_usage")
                .fetch_one(&mut conn)
                .await
                .expect("rows");
            (bytes, rows)
        } else {
            let path = state.config.data_dir.join("latchkey.db");
            let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
                "sqlite://{}?mode=ro",
                path.display()
            ))
            .await
            .expect("connect");
            let bytes: i64 = sqlx::query_scalar(
                "SELECT COALESCE(SUM(pgsize), 0) FROM dbstat \
                 WHERE name IN ('key_usage', 'key_usage_age', 'usage_keys', 'usage_keys_app', \
                 'usage_keys_account', 'sqlite_autoindex_usage_keys_1')",
            )
            .fetch_one(&mut conn)
            .await
            .expect("dbstat");
            let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM key_usage")
                .fetch_one(&mut conn)
                .await
                .expect("rows");
            (bytes, rows)
        }
    };
    let (before, _) = size().await;
    let t0 = state.now() - state.now() % HOUR;
    for hour in 0..HOURS {
        for key in &keys {
            let batch: Vec<latchkey_store::UsageCount> = (0..60)
                .map(|m| latchkey_store::UsageCount {
                    key_id: key.clone(),
                    minute: t0 + hour * HOUR + m * MINUTE,
                    outcome: "valid".into(),
                    count: 17,
                })
                .collect();
            state.store.record_usage(&batch).await.expect("record");
        }
    }
    let (after, rows) = size().await;
    let bytes = after - before;
    let per_row = bytes as f64 / rows as f64;
    let per_key_day = bytes as f64 / KEYS as f64 / (HOURS as f64 / 24.0);
    let kept = per_row * (2_880.0 + 2_160.0 + 730.0);
    eprintln!(
        "usage storage ({}): {rows} rows, {bytes} bytes: {per_row:.1} bytes per row, \
         {:.1} KiB per key and active day (1,465 rows), {:.1} KiB kept per key active all the time \
         (2,880 minute + 2,160 hour + 730 day rows)",
        if common::on_postgres() {
            "postgres"
        } else {
            "sqlite"
        },
        per_key_day / 1024.0,
        kept / 1024.0
    );
    assert_eq!(rows, KEYS as i64 * (HOURS * 60 + HOURS + 2));
}
