//! The scope matrix over real HTTP: every kind of credential against every
//! class of endpoint, with the status the access rules require.
//!
//! Every cell runs, every mismatch is collected, and the test fails once at
//! the end with the whole list, so one run shows every wrong cell.
//! Destructive cells (deleting an app, a key or a user; creating keys;
//! granting apps) act on throwaway copies of the fixtures made for that cell
//! alone, so no cell depends on another.

mod common;

use std::fmt::Write as _;

use common::{Key, Reply, StatusCode, TestApp};
use latchkey_core::Clock;
use reqwest::Method;
use serde_json::{Value, json};

/// The kinds of credential, in the column order of [`EXPECTED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cred {
    Operator,
    Verifier,
    ActBasic,
    ActJwt,
    ActOtherAccount,
    SvcGranted,
    SvcNotGranted,
    AppBasic,
    AppJwt,
    OtherAppKey,
    AppUserAlice,
    AppUserBob,
    DeletedKey,
    ExpiredJwt,
    NoCredential,
    Garbage,
}

const CREDS: [Cred; 16] = [
    Cred::Operator,
    Cred::Verifier,
    Cred::ActBasic,
    Cred::ActJwt,
    Cred::ActOtherAccount,
    Cred::SvcGranted,
    Cred::SvcNotGranted,
    Cred::AppBasic,
    Cred::AppJwt,
    Cred::OtherAppKey,
    Cred::AppUserAlice,
    Cred::AppUserBob,
    Cred::DeletedKey,
    Cred::ExpiredJwt,
    Cred::NoCredential,
    Cred::Garbage,
];

impl Cred {
    fn label(self) -> &'static str {
        match self {
            Cred::Operator => "operator token",
            Cred::Verifier => "verifier token",
            Cred::ActBasic => "act_ of A (Basic)",
            Cred::ActJwt => "act_ of A (JWT account)",
            Cred::ActOtherAccount => "act_ of account B",
            Cred::SvcGranted => "svc_ granted ap1",
            Cred::SvcNotGranted => "svc_ without grants",
            Cred::AppBasic => "app key of ap1 (Basic)",
            Cred::AppJwt => "app key of ap1 (JWT app)",
            Cred::OtherAppKey => "app key of ap2",
            Cred::AppUserAlice => "appUser alice of ap1",
            Cred::AppUserBob => "appUser bob of ap1",
            Cred::DeletedKey => "deleted app key",
            Cred::ExpiredJwt => "expired appUser JWT",
            Cred::NoCredential => "no credential",
            Cred::Garbage => "garbage header",
        }
    }

    /// The error code a 401 must carry for this credential.
    fn unauthorized_code(self) -> &'static str {
        match self {
            Cred::ExpiredJwt => "token_expired",
            _ => "unauthorized",
        }
    }
}

/// The classes of endpoint, one row of [`EXPECTED`] each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ep {
    ListAccounts,
    ListVerifierTokens,
    CreateVerifierToken,
    Verify,
    WhoAmI,
    ListApps,
    CreateApp,
    GetApp,
    PatchApp,
    ListKeys,
    CreateKey,
    GetKey,
    ListUsers,
    CreateUser,
    GetUser,
    PatchUser,
    ListServiceAccounts,
    CreateServiceAccount,
    GetServiceAccount,
    ListServiceAccountKeys,
    CreateServiceAccountKey,
    GrantApp,
    DeleteKey,
    DeleteUser,
    DeleteApp,
}

impl Ep {
    fn label(self) -> &'static str {
        match self {
            Ep::ListAccounts => "GET /v1/accounts",
            Ep::ListVerifierTokens => "GET /v1/verifierTokens",
            Ep::CreateVerifierToken => "POST /v1/verifierTokens",
            Ep::Verify => "POST /v1/verify",
            Ep::WhoAmI => "GET /v1/account",
            Ep::ListApps => "GET /v1/apps",
            Ep::CreateApp => "POST /v1/apps",
            Ep::GetApp => "GET /v1/apps/{ap1}",
            Ep::PatchApp => "PATCH /v1/apps/{ap1}",
            Ep::ListKeys => "GET /v1/apps/{ap1}/keys",
            Ep::CreateKey => "POST /v1/apps/{ap1*}/keys",
            Ep::GetKey => "GET /v1/apps/{ap1}/keys/{key}",
            Ep::ListUsers => "GET /v1/apps/{ap1}/users",
            Ep::CreateUser => "POST /v1/apps/{ap1}/users",
            Ep::GetUser => "GET /v1/apps/{ap1}/users/alice",
            Ep::PatchUser => "PATCH /v1/apps/{ap1}/users/alice",
            Ep::ListServiceAccounts => "GET /v1/serviceAccounts",
            Ep::CreateServiceAccount => "POST /v1/serviceAccounts",
            Ep::GetServiceAccount => "GET /v1/serviceAccounts/{sa}",
            Ep::ListServiceAccountKeys => "GET /v1/serviceAccounts/{sa}/keys",
            Ep::CreateServiceAccountKey => "POST /v1/serviceAccounts/{sa*}/keys",
            Ep::GrantApp => "PUT /v1/serviceAccounts/{sa*}/apps/{ap1}",
            Ep::DeleteKey => "DELETE /v1/apps/{ap1*}/keys/{key}",
            Ep::DeleteUser => "DELETE /v1/apps/{ap1*}/users/alice",
            Ep::DeleteApp => "DELETE /v1/apps/{ap1*}",
        }
    }

    /// Cells that change the app they act on get a fresh copy of ap1
    /// (same account, same service-account grant, own key, own alice).
    fn needs_fresh_app(self) -> bool {
        matches!(
            self,
            Ep::CreateKey | Ep::DeleteKey | Ep::DeleteUser | Ep::DeleteApp
        )
    }

    /// Cells that change a service account get a fresh one of account A.
    fn needs_fresh_service_account(self) -> bool {
        matches!(self, Ep::CreateServiceAccountKey | Ep::GrantApp)
    }
}

// Columns, in the order of CREDS:
//  op   vf   act  actJ actB svcG svcN app1 appJ app2 alice bob  del  exp  none garb
#[rustfmt::skip]
const EXPECTED: &[(Ep, [u16; 16])] = &[
    (Ep::ListAccounts,            [200, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 401, 401, 401, 401]),
    (Ep::ListVerifierTokens,      [200, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 401, 401, 401, 401]),
    (Ep::CreateVerifierToken,     [201, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 401, 401, 401, 401]),
    (Ep::Verify,                  [200, 200, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 401, 401, 401, 401]),
    (Ep::WhoAmI,                  [200, 403, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 401, 401, 401, 401]),
    (Ep::ListApps,                [403, 403, 200, 200, 200, 200, 200, 403, 403, 403, 403, 403, 401, 401, 401, 401]),
    (Ep::CreateApp,               [403, 403, 201, 201, 201, 201, 201, 403, 403, 403, 403, 403, 401, 401, 401, 401]),
    (Ep::GetApp,                  [403, 403, 200, 200, 404, 200, 404, 200, 200, 404, 403, 403, 401, 401, 401, 401]),
    (Ep::PatchApp,                [403, 403, 200, 200, 404, 200, 404, 200, 200, 404, 403, 403, 401, 401, 401, 401]),
    (Ep::ListKeys,                [403, 403, 200, 200, 404, 200, 404, 403, 403, 404, 403, 403, 401, 401, 401, 401]),
    (Ep::CreateKey,               [403, 403, 201, 201, 404, 201, 404, 403, 403, 404, 403, 403, 401, 401, 401, 401]),
    (Ep::GetKey,                  [403, 403, 200, 200, 404, 200, 404, 403, 403, 404, 403, 403, 401, 401, 401, 401]),
    (Ep::ListUsers,               [403, 403, 200, 200, 404, 200, 404, 200, 200, 404, 403, 403, 401, 401, 401, 401]),
    (Ep::CreateUser,              [403, 403, 201, 201, 404, 201, 404, 201, 201, 404, 403, 403, 401, 401, 401, 401]),
    (Ep::GetUser,                 [403, 403, 200, 200, 404, 200, 404, 200, 200, 404, 200, 404, 401, 401, 401, 401]),
    (Ep::PatchUser,               [403, 403, 200, 200, 404, 200, 404, 200, 200, 404, 200, 404, 401, 401, 401, 401]),
    (Ep::ListServiceAccounts,     [403, 403, 200, 200, 200, 403, 403, 403, 403, 403, 403, 403, 401, 401, 401, 401]),
    (Ep::CreateServiceAccount,    [403, 403, 201, 201, 201, 403, 403, 403, 403, 403, 403, 403, 401, 401, 401, 401]),
    (Ep::GetServiceAccount,       [403, 403, 200, 200, 404, 403, 403, 403, 403, 403, 403, 403, 401, 401, 401, 401]),
    (Ep::ListServiceAccountKeys,  [403, 403, 200, 200, 404, 403, 403, 403, 403, 403, 403, 403, 401, 401, 401, 401]),
    (Ep::CreateServiceAccountKey, [403, 403, 201, 201, 404, 403, 403, 403, 403, 403, 403, 403, 401, 401, 401, 401]),
    (Ep::GrantApp,                [403, 403, 204, 204, 404, 403, 403, 403, 403, 403, 403, 403, 401, 401, 401, 401]),
    (Ep::DeleteKey,               [403, 403, 204, 204, 404, 204, 404, 403, 403, 404, 403, 403, 401, 401, 401, 401]),
    (Ep::DeleteUser,              [403, 403, 204, 204, 404, 204, 404, 204, 204, 404, 403, 404, 401, 401, 401, 401]),
    (Ep::DeleteApp,               [403, 403, 204, 204, 404, 204, 404, 403, 403, 404, 403, 403, 401, 401, 401, 401]),
];

/// An app of account A as the app-bound credentials see it: ap1 itself, or
/// a throwaway copy with the same relations.
#[derive(Debug, Clone)]
struct Target {
    app_id: String,
    /// The app key that the app and appUser credentials use.
    key: Key,
    /// A second key of the app, for deleting.
    spare_key_id: String,
    /// An appUser JWT for alice signed by `key`, expired beyond the leeway.
    expired: String,
}

struct World {
    app: TestApp,
    owner: Key,
    owner_b: Key,
    sa_granted: String,
    svc_granted: Key,
    svc_plain: Key,
    ap2_key: Key,
    deleted: Key,
    /// A verifier token.
    verifier: String,
    ap1: Target,
}

impl World {
    async fn build() -> Self {
        let app = TestApp::spawn().await;
        let owner = app.owner_key();
        let auth = owner.basic();

        let ap1 = app.create_app(&auth, "ap1").await;
        let ap2 = app.create_app(&auth, "ap2").await;
        let ap1_key = app.create_app_key(&auth, &ap1).await;
        let ap1_spare = app.create_app_key(&auth, &ap1).await;
        let ap2_key = app.create_app_key(&auth, &ap2).await;
        create_alice(&app, &auth, &ap1).await;

        let sa_granted = app.create_service_account(&auth).await;
        let svc_granted = app.create_service_account_key(&auth, &sa_granted).await;
        grant(&app, &auth, &sa_granted, &ap1).await;
        let sa_plain = app.create_service_account(&auth).await;
        let svc_plain = app.create_service_account_key(&auth, &sa_plain).await;

        let owner_b = app.create_account("owner-b@example.com").await;

        let deleted = app.create_app_key(&auth, &ap1).await;
        let r = app
            .delete(&format!("/v1/apps/{ap1}/keys/{}", deleted.id), &auth)
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);

        let r = app
            .post(
                "/v1/verifierTokens",
                &app.operator(),
                json!({"displayName": "api server"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        let verifier = format!(
            "Bearer {}",
            r.body["verifierToken"]["token"].as_str().expect("token")
        );

        // An appUser JWT that is good now and expires once the clock moves.
        let exp = app.clock.unix() + 60;
        let expiring = ap1_key.jwt(json!({"scope": "appUser", "userId": "alice", "exp": exp}));
        let r = app
            .get(&format!("/v1/apps/{ap1}/users/alice"), &expiring)
            .await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "the soon-expired JWT must work before the clock moves: {:?}",
            r.body
        );
        app.clock.advance(time::Duration::hours(1));

        Self {
            app,
            owner,
            owner_b,
            sa_granted,
            svc_granted,
            svc_plain,
            ap2_key,
            deleted,
            verifier,
            ap1: Target {
                app_id: ap1,
                key: ap1_key,
                spare_key_id: ap1_spare.id,
                expired: expiring,
            },
        }
    }

    /// A throwaway copy of ap1: same account, granted to the same service
    /// account, with its own app key, spare key and user alice.
    async fn fresh_target(&self) -> Target {
        let auth = self.owner.basic();
        let app_id = self.app.create_app(&auth, "throwaway").await;
        let key = self.app.create_app_key(&auth, &app_id).await;
        let spare = self.app.create_app_key(&auth, &app_id).await;
        create_alice(&self.app, &auth, &app_id).await;
        grant(&self.app, &auth, &self.sa_granted, &app_id).await;
        let exp = self.app.clock.unix() - 3600;
        let expired = key.jwt(json!({"scope": "appUser", "userId": "alice", "exp": exp}));
        Target {
            app_id,
            key,
            spare_key_id: spare.id,
            expired,
        }
    }

    /// The Authorization header of `cred`, with app-bound credentials bound
    /// to `target`.
    fn auth(&self, cred: Cred, target: &Target) -> Option<String> {
        Some(match cred {
            Cred::Operator => self.app.operator(),
            Cred::Verifier => self.verifier.clone(),
            Cred::ActBasic => self.owner.basic(),
            Cred::ActJwt => self.owner.jwt(json!({"scope": "account"})),
            Cred::ActOtherAccount => self.owner_b.basic(),
            Cred::SvcGranted => self.svc_granted.basic(),
            Cred::SvcNotGranted => self.svc_plain.basic(),
            Cred::AppBasic => target.key.basic(),
            Cred::AppJwt => target.key.jwt(json!({"scope": "app"})),
            Cred::OtherAppKey => self.ap2_key.basic(),
            Cred::AppUserAlice => target
                .key
                .jwt(json!({"scope": "appUser", "userId": "alice"})),
            Cred::AppUserBob => target.key.jwt(json!({"scope": "appUser", "userId": "bob"})),
            Cred::DeletedKey => self.deleted.basic(),
            Cred::ExpiredJwt => target.expired.clone(),
            Cred::NoCredential => return None,
            Cred::Garbage => "Garbage !!not*a*credential!!".to_string(),
        })
    }

    /// Runs one cell: its own fixtures if it needs them, then one request.
    async fn run(&self, ep: Ep, cred: Cred, column: usize) -> Reply {
        let target = if ep.needs_fresh_app() {
            self.fresh_target().await
        } else {
            self.ap1.clone()
        };
        let sa = if ep.needs_fresh_service_account() {
            self.app.create_service_account(&self.owner.basic()).await
        } else {
            self.sa_granted.clone()
        };
        let auth = self.auth(cred, &target);
        let tag = cred.label();
        let app_id = &target.app_id;
        let name = json!({"displayName": "matrix"});
        let (method, path, body): (Method, String, Option<Value>) = match ep {
            Ep::ListAccounts => (Method::GET, "/v1/accounts".into(), None),
            Ep::ListVerifierTokens => (Method::GET, "/v1/verifierTokens".into(), None),
            Ep::CreateVerifierToken => (Method::POST, "/v1/verifierTokens".into(), Some(name)),
            Ep::Verify => (
                Method::POST,
                "/v1/verify".into(),
                Some(json!({"authorization": self.owner.basic()})),
            ),
            Ep::WhoAmI => (Method::GET, "/v1/account".into(), None),
            Ep::ListApps => (Method::GET, "/v1/apps".into(), None),
            Ep::CreateApp => (Method::POST, "/v1/apps".into(), Some(name)),
            Ep::GetApp => (Method::GET, format!("/v1/apps/{app_id}"), None),
            Ep::PatchApp => (
                Method::PATCH,
                format!("/v1/apps/{app_id}"),
                Some(json!({"settings": {"lastPatchedBy": tag}})),
            ),
            Ep::DeleteApp => (Method::DELETE, format!("/v1/apps/{app_id}"), None),
            Ep::ListKeys => (Method::GET, format!("/v1/apps/{app_id}/keys"), None),
            Ep::CreateKey => (Method::POST, format!("/v1/apps/{app_id}/keys"), Some(name)),
            Ep::GetKey => (
                Method::GET,
                format!("/v1/apps/{app_id}/keys/{}", target.key.id),
                None,
            ),
            Ep::DeleteKey => (
                Method::DELETE,
                format!("/v1/apps/{app_id}/keys/{}", target.spare_key_id),
                None,
            ),
            Ep::ListUsers => (Method::GET, format!("/v1/apps/{app_id}/users"), None),
            Ep::CreateUser => (
                Method::POST,
                format!("/v1/apps/{app_id}/users"),
                Some(json!({"externalId": format!("new-user-{column}")})),
            ),
            Ep::GetUser => (Method::GET, format!("/v1/apps/{app_id}/users/alice"), None),
            Ep::PatchUser => (
                Method::PATCH,
                format!("/v1/apps/{app_id}/users/alice"),
                Some(json!({"metadata": {"lastPatchedBy": tag}})),
            ),
            Ep::DeleteUser => (
                Method::DELETE,
                format!("/v1/apps/{app_id}/users/alice"),
                None,
            ),
            Ep::ListServiceAccounts => (Method::GET, "/v1/serviceAccounts".into(), None),
            Ep::CreateServiceAccount => (Method::POST, "/v1/serviceAccounts".into(), Some(name)),
            Ep::GetServiceAccount => (Method::GET, format!("/v1/serviceAccounts/{sa}"), None),
            Ep::ListServiceAccountKeys => {
                (Method::GET, format!("/v1/serviceAccounts/{sa}/keys"), None)
            }
            Ep::CreateServiceAccountKey => (
                Method::POST,
                format!("/v1/serviceAccounts/{sa}/keys"),
                Some(name),
            ),
            Ep::GrantApp => (
                Method::PUT,
                format!("/v1/serviceAccounts/{sa}/apps/{app_id}"),
                None,
            ),
        };
        self.app.call(method, &path, auth.as_deref(), body).await
    }
}

async fn create_alice(app: &TestApp, auth: &str, app_id: &str) {
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/users"),
            auth,
            json!({"externalId": "alice"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
}

async fn grant(app: &TestApp, auth: &str, sa_id: &str, app_id: &str) {
    let r = app
        .put(&format!("/v1/serviceAccounts/{sa_id}/apps/{app_id}"), auth)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
}

/// What is wrong with one reply, if anything.
fn check(cred: Cred, want: u16, r: &Reply) -> Option<String> {
    let got = r.status.as_u16();
    let summary = || {
        if r.status.is_success() {
            String::new()
        } else {
            format!(
                " ({}: {})",
                r.code(),
                r.body["errors"][0]["title"].as_str().unwrap_or("no title")
            )
        }
    };
    if got != want {
        return Some(format!("expected {want}, got {got}{}", summary()));
    }
    let want_code = match want {
        401 => cred.unauthorized_code(),
        403 => "forbidden",
        404 => "not_found",
        _ => return None,
    };
    let mut wrong = Vec::new();
    if r.code() != want_code {
        wrong.push(format!("code {want_code:?}, got {:?}", r.code()));
    }
    if !r.body["errors"][0]["title"].is_string() {
        wrong.push(format!("an errors[0].title string, body {}", r.body));
    }
    if want == 401 && r.headers.get("www-authenticate").is_none() {
        wrong.push("a WWW-Authenticate header".to_string());
    }
    if wrong.is_empty() {
        None
    } else {
        Some(format!(
            "{want} as expected, but wanted {}",
            wrong.join("; ")
        ))
    }
}

#[tokio::test]
async fn every_credential_against_every_endpoint() {
    let world = World::build().await;
    let mut failures: Vec<(Ep, Cred, String)> = Vec::new();
    let mut cells = 0;
    for (ep, row) in EXPECTED {
        for (column, (cred, want)) in CREDS.iter().zip(row.iter()).enumerate() {
            let reply = world.run(*ep, *cred, column).await;
            cells += 1;
            if let Some(problem) = check(*cred, *want, &reply) {
                failures.push((*ep, *cred, problem));
            }
        }
    }
    assert_eq!(cells, 25 * 16, "the table must cover every cell");

    // The server still answers normally after the whole matrix.
    let r = world
        .app
        .get(
            &format!("/v1/apps/{}", world.ap1.app_id),
            &world.owner.basic(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);

    let mut report = String::new();
    for (ep, cred, problem) in &failures {
        let _ = writeln!(
            report,
            "  {:<44} {:<26} {problem}",
            ep.label(),
            cred.label()
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {cells} cells differ from the access rules \
         ({{ap1*}}/{{sa*}}: a fresh copy made for the cell):\n  {:<44} {:<26} problem\n{report}",
        failures.len(),
        "endpoint",
        "credential",
    );
}

// ---------------------------------------------------------------------------
// Another tenant's ids against ids that name nothing.

/// An id of the same kind and shape as `id` that names nothing.
fn missing_like(id: &str) -> String {
    let prefix = &id[..id.find('_').expect("an id has a prefix") + 1];
    format!("{prefix}0Missing0Missing0Missi")
}

/// Status, content type and body bytes of one request.
async fn raw_answer(
    app: &TestApp,
    method: &Method,
    path: &str,
    auth: &str,
    body: Option<&Value>,
) -> (StatusCode, String, Vec<u8>) {
    let mut req = app
        .http
        .request(method.clone(), app.url(path))
        .header("authorization", auth);
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let kind = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = resp.bytes().await.expect("body").to_vec();
    (status, kind, bytes)
}

/// A body each write accepts, so that a probe gets past the body's checks
/// to the lookups.
fn probe_body(method: &Method, template: &str) -> Option<Value> {
    if *method != Method::POST && *method != Method::PATCH || template.ends_with("/redeliver") {
        return None;
    }
    Some(match template {
        t if t.ends_with("/rotate") => json!({"graceSeconds": 0}),
        t if t.ends_with("/keys") => json!({"displayName": "probe"}),
        t if t.ends_with("/keys/{key_id}") => json!({"displayName": "probe"}),
        t if t.ends_with("/tokens") => json!({}),
        t if t.ends_with("/users") => json!({"externalId": "probe"}),
        t if t.ends_with("/users/{user}") => json!({"profile": {"givenName": "Probe"}}),
        t if t.ends_with("/webhooks") => {
            json!({"target": "https://example.com/probe", "triggers": ["key:created"]})
        }
        t if t.ends_with("/webhooks/{webhook_id}") => json!({"triggers": ["key:deleted"]}),
        "/v1/apps/{app_id}" => json!({"displayName": "probe"}),
        "/v1/account/members/{user_id}" => json!({"role": "viewer"}),
        other => panic!("no probe body for {method} {other}"),
    })
}

/// The ids of one tenant's objects, by the path parameter that names them.
#[derive(Debug, Clone)]
struct TenantIds {
    app: String,
    app_key: String,
    user: String,
    webhook: String,
    /// A delivery of that webhook.
    delivery: String,
    sa: String,
    sa_key: String,
    own_key: String,
    account: String,
    verifier_token: String,
    /// The owner's user account (a member).
    member: String,
    /// An open invite.
    invite: String,
}

impl TenantIds {
    fn param(&self, template: &str, name: &str) -> String {
        match name {
            "app_id" => &self.app,
            "key_id" if template.starts_with("/v1/serviceAccounts") => &self.sa_key,
            "key_id" if template.starts_with("/v1/account/") => &self.own_key,
            "key_id" => &self.app_key,
            "user" => &self.user,
            "webhook_id" => &self.webhook,
            "delivery_id" => &self.delivery,
            "sa_id" => &self.sa,
            "account_id" => &self.account,
            "token_id" => &self.verifier_token,
            "user_id" => &self.member,
            "invite_id" => &self.invite,
            other => panic!("no value for {{{other}}} in {template}"),
        }
        .clone()
    }

    fn missing(&self) -> TenantIds {
        TenantIds {
            app: missing_like(&self.app),
            app_key: missing_like(&self.app_key),
            user: missing_like(&self.user),
            webhook: missing_like(&self.webhook),
            delivery: missing_like(&self.delivery),
            sa: missing_like(&self.sa),
            sa_key: missing_like(&self.sa_key),
            own_key: missing_like(&self.own_key),
            account: missing_like(&self.account),
            verifier_token: missing_like(&self.verifier_token),
            member: missing_like(&self.member),
            invite: missing_like(&self.invite),
        }
    }
}

/// One tenant: an app with a key, a user and a webhook, and a service
/// account with a key that is granted the app, in the account of `owner`.
/// Also the app key and service-account key themselves.
async fn tenant(app: &TestApp, owner: &Key, verifier_token: &str) -> (TenantIds, Key, Key) {
    let auth = owner.basic();
    let r = app.get("/v1/account", &auth).await;
    let account = r.body["account"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("account id: {:?}", r.body))
        .to_string();
    let member = r.body["userAccountId"]
        .as_str()
        .expect("user account id")
        .to_string();
    let app_id = app.create_app(&auth, "tenant app").await;
    let app_key = app.create_app_key(&auth, &app_id).await;
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/users"),
            &auth,
            json!({"externalId": "alice"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let user = r.body["user"]["id"].as_str().expect("user id").to_string();
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/webhooks"),
            &auth,
            json!({"target": "https://example.com/hook", "triggers": ["key:created"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let webhook = r.body["webhook"]["id"].as_str().expect("id").to_string();
    let sa = app.create_service_account(&auth).await;
    let sa_key = app.create_service_account_key(&auth, &sa).await;
    grant(app, &auth, &sa, &app_id).await;
    // A key created after the webhook: a `key:created` delivery.
    app.create_app_key(&auth, &app_id).await;
    let r = app
        .get(
            &format!("/v1/apps/{app_id}/webhooks/{webhook}/deliveries"),
            &auth,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let delivery = r.body["deliveries"][0]["id"]
        .as_str()
        .expect("a delivery")
        .to_string();
    let r = app
        .post(
            "/v1/account/invites",
            &auth,
            json!({"email": format!("invitee-{}@example.com", account), "role": "viewer"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let invite = r.body["invite"]["id"].as_str().expect("id").to_string();
    let ids = TenantIds {
        member,
        invite,
        app: app_id,
        app_key: app_key.id.clone(),
        user,
        webhook,
        delivery,
        sa,
        sa_key: sa_key.id.clone(),
        own_key: owner.id.clone(),
        account,
        verifier_token: verifier_token.to_string(),
    };
    (ids, app_key, sa_key)
}

/// Everything of B's that A's probes might change, as B reads it.
async fn tenant_state(app: &TestApp, owner: &Key, ids: &TenantIds) -> Vec<(String, Reply)> {
    let mut out = Vec::new();
    for path in [
        format!("/v1/apps/{}", ids.app),
        format!("/v1/apps/{}/keys", ids.app),
        format!("/v1/apps/{}/users", ids.app),
        format!("/v1/apps/{}/webhooks", ids.app),
        format!("/v1/apps/{}/audit", ids.app),
        format!("/v1/serviceAccounts/{}", ids.sa),
        format!("/v1/serviceAccounts/{}/keys", ids.sa),
        "/v1/account/keys".to_string(),
        "/v1/account/members".to_string(),
        "/v1/account/invites".to_string(),
        "/v1/audit".to_string(),
    ] {
        let r = app.get(&path, &owner.basic()).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {:?}", r.body);
        out.push((path, r));
    }
    out
}

/// The path templates of docs/openapi.json that name an object by id, with
/// their methods.
/// The documented operations that take no credential (`security: []`).
fn public_templates() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("read"))
        .expect("docs/openapi.json is JSON");
    let mut out = Vec::new();
    for (template, item) in doc["paths"].as_object().expect("paths") {
        for op in item.as_object().expect("path item").values() {
            if op["security"].as_array().is_some_and(Vec::is_empty) {
                out.push(template.clone());
            }
        }
    }
    out
}

/// Every documented operation with an id in its path. A public one
/// (`security: []`, an app's JWKS) may succeed for any id, but must answer
/// another tenant's id exactly as an id that names nothing: it is listed
/// in [`public_templates`].
fn templates_with_ids() -> Vec<(Method, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("read"))
        .expect("docs/openapi.json is JSON");
    let mut out = Vec::new();
    for (template, item) in doc["paths"].as_object().expect("paths") {
        if !template.contains('{') {
            continue;
        }
        for method in item.as_object().expect("path item").keys() {
            if let Ok(m) = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
                && [
                    Method::GET,
                    Method::POST,
                    Method::PUT,
                    Method::PATCH,
                    Method::DELETE,
                ]
                .contains(&m)
            {
                out.push((m, template.clone()));
            }
        }
    }
    out
}

/// The `{param}` names of a template, in order.
fn template_params(template: &str) -> Vec<&str> {
    template
        .split('/')
        .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        .collect()
}

/// `template` with each parameter taken from the matching set of ids.
fn filled(template: &str, sources: &[&TenantIds]) -> String {
    let mut params = sources.iter();
    template
        .split('/')
        .map(
            |segment| match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => params
                    .next()
                    .expect("a source for every parameter")
                    .param(template, name),
                None => segment.to_string(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

/// Another tenant's app, key, user, webhook, service account or account
/// must be indistinguishable from one that does not exist: the same
/// status, content type and body, byte for byte. Every operation of the
/// OpenAPI document whose path names an object by id is probed with every
/// kind of tenant credential of account A (user-account key, app key,
/// appUser JWT, service-account key): each parameter in turn is account
/// B's id or an id that names nothing, those before it A's own (so the
/// caller reaches them) and those after it B's; then all of B's ids
/// against ids that all name nothing. Nothing of B's may change.
#[tokio::test]
async fn another_tenants_ids_look_exactly_like_ids_that_do_not_exist() {
    let app = TestApp::spawn().await;
    let (verifier_token, _) = app.create_verifier_token("probe").await;
    let owner_a = app.owner_key();
    let (mine, app_key_a, sa_key_a) = tenant(&app, &owner_a, &verifier_token).await;
    let owner_b = app.create_account("tenant-b@example.com").await;
    let (theirs, _, _) = tenant(&app, &owner_b, &verifier_token).await;
    let nothing = theirs.missing();
    let before = tenant_state(&app, &owner_b, &theirs).await;

    let credentials = [
        ("A's user-account key", owner_a.basic()),
        ("A's app key", app_key_a.basic()),
        (
            "A's appUser JWT",
            app_key_a.jwt(json!({"scope": "appUser", "userId": "alice"})),
        ),
        ("A's service-account key", sa_key_a.basic()),
    ];
    let templates = templates_with_ids();
    let public = public_templates();
    assert!(templates.len() >= 30, "{templates:?}");
    let mut compared = 0;
    let mut differences = Vec::new();
    for (method, template) in &templates {
        let params = template_params(template);
        let body = probe_body(method, template);
        // (B's ids, missing ids) for each parameter in turn, and all.
        let mut probes: Vec<(Vec<&TenantIds>, Vec<&TenantIds>)> = Vec::new();
        for i in 0..params.len() {
            let mut other = vec![&mine; i];
            let mut none = vec![&mine; i];
            other.push(&theirs);
            none.push(&nothing);
            other.extend(std::iter::repeat_n(&theirs, params.len() - i - 1));
            none.extend(std::iter::repeat_n(&theirs, params.len() - i - 1));
            probes.push((other, none));
        }
        probes.push((vec![&theirs; params.len()], vec![&nothing; params.len()]));
        for (label, auth) in &credentials {
            for (other, none) in &probes {
                let other_path = filled(template, other);
                let none_path = filled(template, none);
                let a = raw_answer(&app, method, &other_path, auth, body.as_ref()).await;
                let b = raw_answer(&app, method, &none_path, auth, body.as_ref()).await;
                compared += 1;
                if a.0.is_success() && !public.contains(template) {
                    differences.push(format!(
                        "{label}: {method} {other_path} succeeded: {}",
                        String::from_utf8_lossy(&a.2)
                    ));
                }
                if a != b {
                    differences.push(format!(
                        "{label}: {method} {other_path} -> {} {}\n    \
                         but {none_path} -> {} {}",
                        a.0,
                        String::from_utf8_lossy(&a.2),
                        b.0,
                        String::from_utf8_lossy(&b.2)
                    ));
                }
            }
        }
    }
    assert!(compared >= 200, "only {compared} comparisons");
    assert!(
        differences.is_empty(),
        "{} of {compared} probes tell another tenant's ids from missing ones:\n{}",
        differences.len(),
        differences.join("\n")
    );
    let after = tenant_state(&app, &owner_b, &theirs).await;
    for ((path, b), (_, a)) in before.iter().zip(&after) {
        assert_eq!(
            (b.status, &b.body),
            (a.status, &a.body),
            "{path} changed under another tenant's probes"
        );
    }
}
