//! Verification in process through a replica (issue 21), against the
//! server's own index in the same run.
//!
//! A real server on loopback (SQLite in a temporary directory), an app
//! with 10 keys (the default most per owner), a replica connected to it
//! over its feed; then, on one
//! core:
//! - `server_index/*`: `KeyIndex::verify_authorization` on the server's
//!   index, the work `/v1/verify` does before its policy checks;
//! - `replica/*`: `Replica::verify`, everything a replica does for a
//!   request (freshness, the same verification, reach, the key's policy,
//!   the `Verification` it returns).
//!
//! ```text
//! taskset -c 1 cargo bench -p latchkey-server --bench replica -- --warm-up-time 1 --measurement-time 3
//! ```

use std::hint::black_box;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use criterion::{Criterion, criterion_group, criterion_main};
use latchkey_core::{Clock, ManualClock, SystemClock, VerifyOptions};
use latchkey_replica::{Replica, Target};
use serde_json::{Value, json};

struct Setup {
    state: latchkey_server::AppState,
    replica: Replica,
    app_id: String,
    basic: String,
    jwt_app: String,
    jwt_app_user: String,
    _dir: tempfile::TempDir,
    _server: latchkey_server::RunningServer,
}

fn hs256(kid: &str, secret: &str, claims: &Value) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header =
        URL_SAFE_NO_PAD.encode(json!({"alg": "HS256", "typ": "JWT", "kid": kid}).to_string());
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let input = format!("{header}.{body}");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(ring::hmac::sign(&key, input.as_bytes()).as_ref());
    format!("Bearer {input}.{sig}")
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = latchkey_server::Config::new(dir.path().join("data"));
    config.listen = "127.0.0.1:0".parse().expect("addr");
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    let mut opened = latchkey_server::open(config, clock.clone(), true)
        .await
        .expect("open");
    let init = opened.init_report.take().expect("init");
    let state = opened.state.clone();
    let server = latchkey_server::start(opened.state).await.expect("start");
    let base = server.base_url();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let owner = format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", init.key.id, init.key.secret.expose()))
    );
    let post = async |path: &str, auth: &str, body: Value| -> Value {
        http.post(format!("{base}{path}"))
            .header("authorization", auth)
            .json(&body)
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json")
    };
    let app = post("/v1/apps", &owner, json!({"displayName": "bench"})).await;
    let app_id = app["app"]["id"].as_str().expect("app").to_string();
    let mut key = Value::Null;
    for _ in 0..10 {
        key = post(
            &format!("/v1/apps/{app_id}/keys"),
            &owner,
            json!({"displayName": "k"}),
        )
        .await;
    }
    let (id, secret) = (
        key["key"]["id"].as_str().expect("id").to_string(),
        key["key"]["secret"].as_str().expect("secret").to_string(),
    );
    let operator = format!("Bearer {}", init.operator_token.expose());
    let token = post(
        "/v1/replicaTokens",
        &operator,
        json!({"displayName": "bench"}),
    )
    .await;
    let token = token["replicaToken"]["token"]
        .as_str()
        .expect("token")
        .to_string();
    let replica = Replica::builder(&base, &token)
        .clock(clock.clone())
        .connect()
        .await
        .expect("replica");
    let now = clock.unix();
    Setup {
        state,
        replica,
        basic: format!("Basic {}", STANDARD.encode(format!("{id}:{secret}"))),
        jwt_app: hs256(
            &id,
            &secret,
            &json!({"scope": "app", "iat": now, "exp": now + 3600}),
        ),
        jwt_app_user: hs256(
            &id,
            &secret,
            &json!({"scope": "appUser", "userId": "user-8c1f2e@example.com", "iat": now, "exp": now + 3600}),
        ),
        app_id,
        _dir: dir,
        _server: server,
    }
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let s = runtime.block_on(setup());
    let now = s.state.clock.unix();
    let options = VerifyOptions::default();
    let cases = [
        ("basic", &s.basic),
        ("jwt_app", &s.jwt_app),
        ("jwt_app_user", &s.jwt_app_user),
    ];
    let mut group = c.benchmark_group("server_index");
    for (name, header) in cases {
        group.bench_function(name, |b| {
            b.iter(|| {
                black_box(s.state.index.verify_authorization(
                    Some(black_box(header.as_bytes())),
                    now,
                    options,
                ))
            });
        });
    }
    group.finish();
    let mut group = c.benchmark_group("replica");
    let target = Target::app(&s.app_id);
    for (name, header) in cases {
        assert!(s.replica.verify(Some(header), &target).is_ok(), "{name}");
        group.bench_function(name, |b| {
            b.iter(|| black_box(s.replica.verify(Some(black_box(header)), &target)));
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
