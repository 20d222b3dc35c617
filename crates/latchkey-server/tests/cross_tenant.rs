//! Cross-tenant probes generated from `docs/openapi.json` (issue 16,
//! attack suite).
//!
//! Tenant B (an account of its own: its owner's key, the key of its app, an
//! appUser JWT of that app, its service account's key) calls every
//! documented operation whose path names an object, on tenant A's real ids
//! and on ids of the same kind that name nothing. For each probe:
//!
//! - no leak: the answer is not a success, and its body holds none of A's
//!   ids, names or secrets;
//! - no existence difference: the answer for A's id is byte for byte the
//!   answer for the id that names nothing (status, content type, body);
//! - the probe reached the lookups: no 400, so the body (built from the
//!   operation's request schema) was accepted and the answer is about ids.
//!
//! A's objects, read through A's own key before and after, are unchanged.
//! The operations are read from the document, not listed here, and their
//! count is checked against the document's, so a new endpoint with a path
//! parameter is probed the day it is documented (tests/openapi/ holds the
//! document to the router).
//!
//! (tests/scope_matrix.rs runs the same comparison the other way round,
//! A's credentials on B's ids mixed with A's own; this file starts from the
//! document's request schemas and adds the leak and no-400 checks.)

mod common;
#[path = "common/openapi.rs"]
mod openapi;

use std::collections::BTreeMap;

use common::{Key, StatusCode, TestApp};
use openapi::{OPERATION_KEYS, doc_from_disk, fill, method, path_params, resolve};
use reqwest::Method;
use serde_json::{Value, json};

/// One documented operation whose path has parameters.
#[derive(Debug, Clone)]
struct Operation {
    method: Method,
    template: String,
    /// The body to send: built from the request schema, or None.
    body: Option<Value>,
    /// Public by design (`security: []`, an app's JWKS): it may succeed
    /// for any id, but must answer another tenant's id exactly as an id
    /// that names nothing.
    public: bool,
}

/// Every documented operation with a `{param}` in its path.
fn operations_with_path_params(doc: &Value) -> Vec<Operation> {
    let mut out = Vec::new();
    for (template, item) in doc["paths"].as_object().expect("paths") {
        if !template.contains('{') {
            continue;
        }
        for (key, op) in item.as_object().expect("path item") {
            if !OPERATION_KEYS.contains(&key.as_str()) {
                continue;
            }
            let method = method(key);
            out.push(Operation {
                body: request_body(doc, op, &method, template),
                public: op["security"].as_array().is_some_and(Vec::is_empty),
                method,
                template: template.clone(),
            });
        }
    }
    out
}

/// The body a probe sends: the smallest value the operation's JSON schema
/// accepts (its required members only), except where an operation needs
/// more than its schema's `required` says.
fn request_body(doc: &Value, op: &Value, method: &Method, template: &str) -> Option<Value> {
    let rb = op.get("requestBody")?;
    let schema = &resolve(doc, rb)["content"]["application/json"]["schema"];
    assert!(
        !schema.is_null(),
        "{method} {template}: a request body that is not JSON; teach this test to build it"
    );
    // "Send at least one member": `{}` would be refused before the lookup.
    if *method == Method::PATCH && template.ends_with("/webhooks/{webhook_id}") {
        return Some(json!({"triggers": ["key:deleted"]}));
    }
    Some(minimal(doc, schema))
}

/// The smallest value of a schema: required members only, the first of an
/// enum, a minimum, a well-formed URL or time where the format asks.
fn minimal(doc: &Value, schema: &Value) -> Value {
    let schema = resolve(doc, schema);
    if let Some(c) = schema.get("const") {
        return c.clone();
    }
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    let ty = match &schema["type"] {
        Value::String(t) => t.as_str(),
        Value::Array(ts) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ => "object",
    };
    match ty {
        "object" => {
            let mut out = serde_json::Map::new();
            for name in schema["required"].as_array().into_iter().flatten() {
                let name = name.as_str().expect("required names are strings");
                out.insert(name.to_string(), minimal(doc, &schema["properties"][name]));
            }
            Value::Object(out)
        }
        "array" => Value::Array(vec![minimal(doc, &schema["items"])]),
        "string" => match schema["format"].as_str() {
            Some("uri") => json!("https://example.com/probe"),
            Some("date-time") => json!("2099-01-01T00:00:00Z"),
            _ => json!("probe"),
        },
        "integer" | "number" => schema
            .get("default")
            .or_else(|| schema.get("minimum"))
            .cloned()
            .unwrap_or(json!(1)),
        "boolean" => json!(false),
        _ => Value::Null,
    }
}

/// The ids of one tenant, by the path parameter that names them.
#[derive(Debug, Clone)]
struct Ids {
    account: String,
    app: String,
    app_key: String,
    /// The user's `usr_` id.
    user: String,
    /// The same user's external id (paths take either).
    user_external: String,
    webhook: String,
    /// A delivery of that webhook.
    delivery: String,
    sa: String,
    sa_key: String,
    /// The owner's own user-account key (`/v1/account/keys/{key_id}`).
    own_key: String,
    verifier_token: String,
    /// The owner's user account (`/v1/account/members/{user_id}`).
    member: String,
    /// An open invite of the account.
    invite: String,
}

impl Ids {
    /// The values of `{name}` in `template`: the `user` parameter has two,
    /// the `usr_` id and the external id.
    fn values(&self, template: &str, name: &str) -> Vec<String> {
        let one = match name {
            "account_id" => &self.account,
            "app_id" => &self.app,
            "key_id" if template.starts_with("/v1/serviceAccounts/") => &self.sa_key,
            "key_id" if template.starts_with("/v1/account/") => &self.own_key,
            "key_id" => &self.app_key,
            "user" => return vec![self.user.clone(), self.user_external.clone()],
            "webhook_id" => &self.webhook,
            "delivery_id" => &self.delivery,
            "sa_id" => &self.sa,
            "token_id" => &self.verifier_token,
            "user_id" => &self.member,
            "invite_id" => &self.invite,
            other => panic!("{template}: no value for {{{other}}}; add it to Ids"),
        };
        vec![one.clone()]
    }

    /// Ids of the same kinds and shapes that name nothing.
    fn nothing() -> Ids {
        Ids {
            account: "acc_0Missing0Missing0Missi".into(),
            app: "ap_0Missing0Missing0Missi".into(),
            app_key: "app_0Missing0Missing0Missi".into(),
            user: "usr_0Missing0Missing0Missi".into(),
            user_external: "nobody-of-any-tenant".into(),
            webhook: "whk_0Missing0Missing0Missi".into(),
            delivery: "dlv_0Missing0Missing0Missi0Missing0Missing0Missi".into(),
            sa: "sa_0Missing0Missing0Missi".into(),
            sa_key: "svc_0Missing0Missing0Missi".into(),
            own_key: "act_0Missing0Missing0Missi".into(),
            verifier_token: "vt_0Missing0Missing0Missi".into(),
            member: "ua_0Missing0Missing0Missi".into(),
            invite: "inv_0Missing0Missing0Missi".into(),
        }
    }
}

/// One tenant: its ids, its credentials, and every string of its that must
/// not reach another tenant.
#[derive(Debug)]
struct Tenant {
    ids: Ids,
    owner: Key,
    app_key: Key,
    sa_key: Key,
    secrets: Vec<String>,
}

impl Tenant {
    /// An app with a key, a user and a webhook, and a service account with
    /// a key granted the app, in the account whose owner is `owner`. Names
    /// carry `tag`, so that a leak of them is recognizable.
    async fn build(app: &TestApp, owner: Key, tag: &str, verifier_token: &str) -> Self {
        let auth = owner.basic();
        let r = app.get("/v1/account", &auth).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        let account = r.body["accountId"]
            .as_str()
            .expect("account id")
            .to_string();
        let owner_user = r.body["userAccountId"]
            .as_str()
            .expect("user account id")
            .to_string();
        let app_name = format!("{tag} app name");
        let app_id = app.create_app(&auth, &app_name).await;
        let app_key = app.create_app_key(&auth, &app_id).await;
        let external = format!("{tag}-user");
        let email = format!("{tag}@example.com");
        let r = app
            .post(
                &format!("/v1/apps/{app_id}/users"),
                &auth,
                json!({"externalId": external, "profile": {"givenName": format!("{tag} given"), "email": email}}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        let user = r.body["user"]["id"].as_str().expect("user id").to_string();
        let target = format!("https://{tag}.example.com/hook");
        let r = app
            .post(
                &format!("/v1/apps/{app_id}/webhooks"),
                &auth,
                json!({"target": target, "triggers": ["key:created"]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        let webhook = r.body["webhook"]["id"].as_str().expect("id").to_string();
        let webhook_secret = r.body["webhook"]["secret"]
            .as_str()
            .expect("webhook secret")
            .to_string();
        let sa = app.create_service_account(&auth).await;
        let sa_key = app.create_service_account_key(&auth, &sa).await;
        let r = app
            .put(&format!("/v1/serviceAccounts/{sa}/apps/{app_id}"), &auth)
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
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
        let invitee = format!("{tag}-invitee@example.com");
        let r = app
            .post(
                "/v1/account/invites",
                &auth,
                json!({"email": invitee, "role": "viewer"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        let invite = r.body["invite"]["id"].as_str().expect("id").to_string();
        let ids = Ids {
            member: owner_user.clone(),
            invite,
            account,
            app: app_id,
            app_key: app_key.id.clone(),
            user,
            user_external: external,
            webhook,
            delivery,
            sa,
            sa_key: sa_key.id.clone(),
            own_key: owner.id.clone(),
            verifier_token: verifier_token.to_string(),
        };
        let secrets = vec![
            ids.account.clone(),
            ids.app.clone(),
            ids.app_key.clone(),
            ids.user.clone(),
            ids.user_external.clone(),
            ids.webhook.clone(),
            ids.delivery.clone(),
            ids.sa.clone(),
            ids.sa_key.clone(),
            ids.own_key.clone(),
            ids.invite.clone(),
            invitee,
            app_name,
            email,
            target,
            webhook_secret,
            owner.secret.clone(),
            app_key.secret.clone(),
            sa_key.secret.clone(),
            owner_user,
        ];
        Tenant {
            ids,
            owner,
            app_key,
            sa_key,
            secrets,
        }
    }

    /// B's credentials, by name.
    fn credentials(&self) -> Vec<(&'static str, String)> {
        vec![
            ("B's account owner key", self.owner.basic()),
            ("B's app key", self.app_key.basic()),
            (
                "B's appUser JWT",
                self.app_key
                    .jwt(json!({"scope": "appUser", "userId": self.ids.user_external})),
            ),
            ("B's service-account key", self.sa_key.basic()),
        ]
    }
}

/// Status, content type and body of one answer.
type Answer = (StatusCode, String, String);

async fn answer(app: &TestApp, op: &Operation, path: &str, auth: &str) -> Answer {
    let mut req = app
        .http
        .request(op.method.clone(), app.url(path))
        .header("authorization", auth);
    if let Some(b) = &op.body {
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
    (status, kind, resp.text().await.expect("body"))
}

/// For each parameter in turn: (path with A's id there, path with an id
/// that names nothing there). The parameters before it are B's own (so B
/// reaches them and the probe tests the one after), those after it A's in
/// both paths, in each of their forms.
///
/// A user's external id names it only within its app: under B's own app,
/// A's external id is just a name in B's namespace (B may mint a token for
/// any name there), so after B's app only the `usr_` id, which is global,
/// stands for A's user; A's external id is probed under A's app.
fn probe_paths(template: &str, a: &Ids, b: &Ids) -> Vec<(String, String)> {
    let names = path_params(template);
    let nothing = Ids::nothing();
    let mut out = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let before: Vec<String> = names[..i]
            .iter()
            .map(|n| b.values(template, n)[0].clone())
            .collect();
        // Every combination of the forms of A's ids after position i.
        let mut afters: Vec<Vec<String>> = vec![Vec::new()];
        for n in &names[i + 1..] {
            afters = afters
                .into_iter()
                .flat_map(|prefix| {
                    a.values(template, n).into_iter().map(move |v| {
                        let mut p = prefix.clone();
                        p.push(v);
                        p
                    })
                })
                .collect();
        }
        let forms = if i == 0 { usize::MAX } else { 1 };
        let pairs = a
            .values(template, name)
            .into_iter()
            .zip(nothing.values(template, name))
            .take(forms);
        for (theirs, none) in pairs {
            for after in &afters {
                let with = |v: &str| {
                    let mut all = before.clone();
                    all.push(v.to_string());
                    all.extend(after.iter().cloned());
                    fill(template, &all)
                };
                out.push((with(&theirs), with(&none)));
            }
        }
    }
    out
}

/// What A's owner sees of A's objects, path by path.
async fn snapshot(app: &TestApp, a: &Tenant) -> BTreeMap<String, (StatusCode, Value)> {
    let ids = &a.ids;
    let mut out = BTreeMap::new();
    for path in [
        "/v1/account".to_string(),
        "/v1/account/keys".to_string(),
        "/v1/apps".to_string(),
        format!("/v1/apps/{}", ids.app),
        format!("/v1/apps/{}/keys", ids.app),
        format!("/v1/apps/{}/keys/{}", ids.app, ids.app_key),
        format!("/v1/apps/{}/users", ids.app),
        format!("/v1/apps/{}/users/{}", ids.app, ids.user),
        format!("/v1/apps/{}/webhooks", ids.app),
        format!("/v1/apps/{}/webhooks/{}", ids.app, ids.webhook),
        format!("/v1/apps/{}/audit?limit=100", ids.app),
        "/v1/audit?limit=100".to_string(),
        "/v1/serviceAccounts".to_string(),
        format!("/v1/serviceAccounts/{}", ids.sa),
        format!("/v1/serviceAccounts/{}/keys", ids.sa),
        format!("/v1/serviceAccounts/{}/keys/{}", ids.sa, ids.sa_key),
        "/v1/account/members".to_string(),
        "/v1/account/invites".to_string(),
    ] {
        let r = app.get(&path, &a.owner.basic()).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {:?}", r.body);
        out.insert(path, (r.status, r.body));
    }
    for path in [
        format!("/v1/accounts/{}", ids.account),
        format!("/v1/verifierTokens/{}", ids.verifier_token),
    ] {
        let r = app.get(&path, &app.operator()).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {:?}", r.body);
        out.insert(path, (r.status, r.body));
    }
    out
}

/// Both tenants, and a snapshot of A before any probe.
async fn two_tenants(app: &TestApp) -> (Tenant, Tenant) {
    let (verifier_token, _) = app.create_verifier_token("tenant probes").await;
    let a = Tenant::build(app, app.owner_key(), "tenanta", &verifier_token).await;
    let owner_b = app.create_account("tenant-b@example.com").await;
    let b = Tenant::build(app, owner_b, "tenantb", &verifier_token).await;
    (a, b)
}

#[tokio::test]
async fn tenant_b_learns_nothing_of_tenant_a_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let (a, b) = two_tenants(&app).await;
    let before = snapshot(&app, &a).await;
    let doc = doc_from_disk();
    let operations = operations_with_path_params(&doc);

    let mut problems = Vec::new();
    let mut probed = 0;
    let mut requests = 0;
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for op in &operations {
        let paths = probe_paths(&op.template, &a.ids, &b.ids);
        assert!(!paths.is_empty(), "{} {}", op.method, op.template);
        for (label, auth) in b.credentials() {
            for (theirs, none) in &paths {
                let got = answer(&app, op, theirs, &auth).await;
                let baseline = answer(&app, op, none, &auth).await;
                requests += 2;
                *statuses.entry(got.0.as_u16()).or_default() += 1;
                let what = format!("{label}: {} {theirs}", op.method);
                if got.0.is_success() && !op.public {
                    problems.push(format!("{what} succeeded: {}", got.2));
                }
                if got.0 == StatusCode::BAD_REQUEST {
                    problems.push(format!(
                        "{what} was refused before any lookup (400; the probe's body?): {}",
                        got.2
                    ));
                }
                for secret in a.secrets.iter().filter(|s| got.2.contains(s.as_str())) {
                    problems.push(format!("{what} shows A's {secret:?}: {}", got.2));
                }
                if got != baseline {
                    problems.push(format!(
                        "{what} -> {} {:?} {}\n    but {none} -> {} {:?} {}",
                        got.0, got.1, got.2, baseline.0, baseline.1, baseline.2
                    ));
                }
            }
        }
        probed += 1;
    }
    eprintln!(
        "cross-tenant: {probed} operations probed with {} credentials, {requests} requests; \
         answers to A's ids by status: {statuses:?}",
        b.credentials().len()
    );
    assert!(
        problems.is_empty(),
        "{} problems in {requests} requests:\n{}",
        problems.len(),
        problems.join("\n")
    );

    // Every documented operation with a path parameter, counted from the
    // document on its own terms.
    let documented = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .filter(|(path, _)| path.contains('{'))
        .flat_map(|(_, item)| item.as_object().expect("path item").keys())
        .filter(|k| OPERATION_KEYS.contains(&k.as_str()))
        .count();
    assert_eq!(probed, documented);
    assert!(documented >= 30, "only {documented} operations");

    let after = snapshot(&app, &a).await;
    for (path, was) in &before {
        assert_eq!(
            Some(was),
            after.get(path),
            "{path} changed under B's probes"
        );
    }
    // A's credentials still work, and B's service account was not granted
    // A's app.
    for auth in [a.app_key.basic(), a.sa_key.basic()] {
        let r = app.get(&format!("/v1/apps/{}", a.ids.app), &auth).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }
    let r = app
        .get(&format!("/v1/apps/{}", a.ids.app), &b.sa_key.basic())
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.body);
}

#[test]
fn probe_paths_put_a_s_id_at_each_parameter_in_turn() {
    let a = Ids {
        account: "acc_A".into(),
        app: "ap_A".into(),
        app_key: "app_A".into(),
        user: "usr_A".into(),
        user_external: "ext-A".into(),
        webhook: "whk_A".into(),
        delivery: "dlv_A".into(),
        sa: "sa_A".into(),
        sa_key: "svc_A".into(),
        own_key: "act_A".into(),
        verifier_token: "vt_A".into(),
        member: "ua_A".into(),
        invite: "inv_A".into(),
    };
    let b = Ids {
        app: "ap_B".into(),
        ..a.clone()
    };
    let paths = probe_paths("/v1/apps/{app_id}/users/{user}", &a, &b);
    assert_eq!(
        paths,
        vec![
            (
                "/v1/apps/ap_A/users/usr_A".to_string(),
                "/v1/apps/ap_0Missing0Missing0Missi/users/usr_A".to_string()
            ),
            (
                "/v1/apps/ap_A/users/ext-A".to_string(),
                "/v1/apps/ap_0Missing0Missing0Missi/users/ext-A".to_string()
            ),
            (
                "/v1/apps/ap_B/users/usr_A".to_string(),
                "/v1/apps/ap_B/users/usr_0Missing0Missing0Missi".to_string()
            ),
        ]
    );
}

#[test]
fn bodies_are_built_from_the_required_members() {
    let doc = doc_from_disk();
    let ops = operations_with_path_params(&doc);
    let body = |method: Method, template: &str| {
        ops.iter()
            .find(|o| o.method == method && o.template == template)
            .and_then(|o| o.body.clone())
    };
    assert_eq!(
        body(Method::POST, "/v1/apps/{app_id}/webhooks"),
        Some(json!({"target": "https://example.com/probe", "triggers": ["key:created"]}))
    );
    assert_eq!(
        body(Method::POST, "/v1/apps/{app_id}/keys"),
        Some(json!({"displayName": "probe"}))
    );
    assert_eq!(
        body(Method::POST, "/v1/apps/{app_id}/keys/{key_id}/rotate"),
        Some(json!({}))
    );
    assert_eq!(body(Method::GET, "/v1/apps/{app_id}"), None);
}
