//! `docs/openapi.json` against the running server: it is served verbatim,
//! every documented operation is routed, no undocumented method is, its
//! paths are exactly the router's, and real responses (and the request
//! bodies the server accepts) match the documented schemas.
//!
//! The document-level tests are here; `schema.rs` holds the JSON Schema
//! checker they and the tour use, and `tour/` the tour of the API, one
//! test per resource.

#[path = "../common/mod.rs"]
mod common;
#[path = "../common/openapi.rs"]
mod openapi;
mod schema;
#[path = "../common/team.rs"]
mod team;
mod tour;

use std::collections::BTreeSet;

use common::{Reply, StatusCode, TestApp};
use openapi::{deref, doc_from_disk, fill, method, operations, path_params, resolve};
use reqwest::Method;
use schema::{assert_valid, check_reply, lint_schema, router_routes, validate};
use serde_json::{Value, json};

#[tokio::test]
async fn the_served_document_is_the_file() {
    let app = TestApp::spawn().await;
    let r = app.call(Method::GET, "/v1/openapi.json", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let ct = r
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert_eq!(ct, "application/json");
    assert_eq!(r.body, doc_from_disk());
}

#[test]
fn the_document_is_well_formed() {
    let doc = doc_from_disk();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "Latchkey");
    assert_eq!(doc["info"]["version"], "0.1.0");
    assert!(doc["info"]["description"].is_string());
    let schemes = doc["components"]["securitySchemes"]
        .as_object()
        .expect("security schemes");
    assert_eq!(schemes["basicAuth"]["scheme"], "basic");
    assert_eq!(schemes["bearerAuth"]["scheme"], "bearer");
    assert_eq!(schemes["bearerAuth"]["bearerFormat"], "JWT");
    assert_eq!(schemes["operatorToken"]["scheme"], "bearer");

    // Every $ref anywhere resolves.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                    out.push(r.to_string());
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    for r in &all {
        assert!(deref(&doc, r).is_some(), "dangling $ref {r}");
    }

    // Every schema uses only what the checker understands.
    let mut errs = Vec::new();
    for (name, s) in doc["components"]["schemas"].as_object().expect("schemas") {
        lint_schema(&doc, s, &format!("#/components/schemas/{name}"), &mut errs);
    }
    for (name, p) in doc["components"]["parameters"].as_object().expect("params") {
        lint_schema(&doc, &p["schema"], &format!("parameter {name}"), &mut errs);
    }
    for (name, r) in doc["components"]["responses"].as_object().expect("resps") {
        for (h, header) in r
            .get("headers")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            lint_schema(
                &doc,
                &header["schema"],
                &format!("response {name} header {h}"),
                &mut errs,
            );
        }
    }

    let mut ids = BTreeSet::new();
    for (path, m) in operations(&doc) {
        let item = &doc["paths"][&path];
        let op = &item[&m];
        let what = format!("{m} {path}");
        let id = op["operationId"].as_str().expect("operationId");
        assert!(ids.insert(id.to_string()), "{what}: operationId {id} twice");
        for key in ["summary", "description"] {
            assert!(
                op[key].as_str().is_some_and(|s| !s.is_empty()),
                "{what}: {key}"
            );
        }
        assert!(
            op["description"]
                .as_str()
                .is_some_and(|d| d.contains("Who may call")),
            "{what}: the description says who may call"
        );
        let security = op["security"].as_array().expect("security per operation");
        for req in security {
            for scheme in req.as_object().expect("requirement").keys() {
                assert!(schemes.contains_key(scheme), "{what}: scheme {scheme}");
            }
        }
        // Path parameters: exactly the template's, all required.
        let mut declared = BTreeSet::new();
        let params = item["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(op["parameters"].as_array().into_iter().flatten());
        for p in params {
            let p = resolve(&doc, p);
            lint_schema(&doc, &p["schema"], &format!("{what} parameter"), &mut errs);
            if p["in"] == "path" {
                assert_eq!(p["required"], true, "{what}: path parameters are required");
                declared.insert(p["name"].as_str().expect("name").to_string());
            }
        }
        assert_eq!(
            declared,
            path_params(&path).into_iter().collect(),
            "{what}: path parameters"
        );
        if let Some(rb) = op.get("requestBody") {
            let rb = resolve(&doc, rb);
            let media = rb["content"].as_object().expect("request body content");
            assert!(!media.is_empty(), "{what}: a request body media type");
            for (kind, content) in media {
                lint_schema(
                    &doc,
                    &content["schema"],
                    &format!("{what} request body ({kind})"),
                    &mut errs,
                );
            }
        }
        let responses = op["responses"].as_object().expect("responses");
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{what}: a success response"
        );
        for (status, resp) in responses {
            let resp = resolve(&doc, resp);
            assert!(
                resp["description"].is_string(),
                "{what} {status}: description"
            );
            if let Some(c) = resp.get("content") {
                let media = c
                    .get(crate::schema::NDJSON)
                    .unwrap_or(&c["application/json"]);
                lint_schema(
                    &doc,
                    &media["schema"],
                    &format!("{what} {status}"),
                    &mut errs,
                );
            }
        }
        // Public operations say so; all others need a credential and
        // document the 401.
        if security.is_empty() {
            assert!(!responses.contains_key("401"), "{what}: public, no 401");
        } else {
            assert!(responses.contains_key("401"), "{what}: documents 401");
        }
    }
    assert!(errs.is_empty(), "{errs:#?}");
}

#[test]
fn the_document_lists_exactly_the_routers_paths_and_methods() {
    let doc = doc_from_disk();
    let routes = router_routes();
    assert!(routes.contains_key("/healthz"), "{routes:?}");
    assert!(routes.contains_key("/v1/openapi.json"), "{routes:?}");
    let documented: BTreeSet<String> = doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .cloned()
        .collect();
    let routed: BTreeSet<String> = routes.keys().cloned().collect();
    assert_eq!(
        documented, routed,
        "documented paths (left) and router paths (right) differ"
    );
    for (path, methods) in &routes {
        let documented: BTreeSet<String> = operations(&doc)
            .into_iter()
            .filter(|(p, _)| p == path)
            .map(|(_, m)| m)
            .collect();
        assert_eq!(&documented, methods, "methods of {path}");
    }
}

/// A value for a path parameter: a well-formed id that names nothing.
fn dummy(param: &str) -> &'static str {
    match param {
        "account_id" => "acc_0000000000000000000000",
        "app_id" => "ap_0000000000000000000000",
        "key_id" => "app_0000000000000000000000",
        "sa_id" => "sa_0000000000000000000000",
        "token_id" => "vt_0000000000000000000000",
        _ => "nobody",
    }
}

fn dummy_path(template: &str) -> String {
    let params: Vec<&str> = path_params(template).iter().map(|p| dummy(p)).collect();
    fill(template, &params)
}

/// Whether a reply is the router's 404 for a path it does not know.
pub fn is_no_such_endpoint(r: &Reply) -> bool {
    r.status == StatusCode::NOT_FOUND
        && r.code() == "not_found"
        && r.body["errors"][0]["title"]
            .as_str()
            .is_some_and(|t| t.starts_with("no such endpoint"))
}

#[tokio::test]
async fn every_documented_operation_is_routed() {
    let doc = doc_from_disk();
    let app = TestApp::spawn().await;
    let ops = operations(&doc);
    assert!(!ops.is_empty());
    for (path, m) in ops {
        let public = doc["paths"][&path][&m]["security"]
            .as_array()
            .is_some_and(Vec::is_empty);
        let r = app.call(method(&m), &dummy_path(&path), None, None).await;
        let what = format!("{m} {path}");
        assert!(
            !is_no_such_endpoint(&r),
            "{what} is not routed: {:?}",
            r.body
        );
        assert_ne!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{what}: 405");
        if public {
            assert!(r.status.is_success(), "{what} is public: {:?}", r.body);
        } else {
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}: {:?}", r.body);
        }
        check_reply(&doc, &path, &m, &r);
    }
}

#[tokio::test]
async fn undocumented_methods_answer_405() {
    let doc = doc_from_disk();
    let app = TestApp::spawn().await;
    let probes = [
        "get", "post", "put", "patch", "delete", "options", "trace", "head",
    ];
    let not_allowed = resolve(&doc, &doc["components"]["responses"]["MethodNotAllowed"]);
    let schema = &not_allowed["content"]["application/json"]["schema"];
    for path in doc["paths"].as_object().expect("paths").keys() {
        let item = &doc["paths"][path];
        for m in probes {
            // HEAD is answered wherever GET is.
            let documented = item.get(m).is_some() || (m == "head" && item.get("get").is_some());
            let r = app.call(method(m), &dummy_path(path), None, None).await;
            let what = format!("{m} {path}");
            if documented {
                assert_ne!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{what}");
                assert!(!is_no_such_endpoint(&r), "{what}");
            } else {
                assert_eq!(
                    r.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{what} is not documented but answers {}: {:?}",
                    r.status,
                    r.body
                );
                if m != "head" {
                    assert_eq!(r.code(), "method_not_allowed", "{what}");
                    assert_valid(&doc, schema, &r.body, &what);
                }
                // Allow names exactly the documented methods (and HEAD
                // with GET).
                let allow: BTreeSet<String> = r
                    .headers
                    .get("allow")
                    .and_then(|v| v.to_str().ok())
                    .expect("405 carries Allow")
                    .split(',')
                    .map(|m| m.trim().to_ascii_lowercase())
                    .collect();
                let mut expected: BTreeSet<String> = probes
                    .iter()
                    .filter(|m| item.get(**m).is_some())
                    .map(|m| m.to_string())
                    .collect();
                if expected.contains("get") {
                    expected.insert("head".to_string());
                }
                assert_eq!(allow, expected, "{what}: Allow");
            }
        }
    }
}

#[test]
fn the_checker_catches_what_it_claims_to() {
    let doc = json!({"components": {"schemas": {"K": {
        "type": "object",
        "required": ["id"],
        "properties": {"id": {"type": "string"}, "n": {"type": ["integer", "null"], "minimum": 1}},
        "additionalProperties": false
    }}}});
    let k = json!({"$ref": "#/components/schemas/K"});
    let check = |v: Value| {
        let mut errs = Vec::new();
        validate(&doc, &k, &v, "$", &mut errs);
        errs
    };
    assert!(check(json!({"id": "a", "n": null})).is_empty());
    assert!(check(json!({"id": "a", "n": 2})).is_empty());
    assert!(!check(json!({"n": 2})).is_empty(), "required");
    assert!(
        !check(json!({"id": "a", "x": 1})).is_empty(),
        "additionalProperties"
    );
    assert!(!check(json!({"id": 1})).is_empty(), "type");
    assert!(!check(json!({"id": "a", "n": 0})).is_empty(), "minimum");
    assert!(!check(json!({"id": "a", "n": 1.5})).is_empty(), "integer");
    let list = json!({"type": "array", "items": {"$ref": "#/components/schemas/K"}});
    let mut errs = Vec::new();
    validate(&doc, &list, &json!([{"id": "a"}, {}]), "$", &mut errs);
    assert_eq!(errs.len(), 1, "{errs:?}");
    let one = json!({"oneOf": [{"const": 1}, {"type": "integer"}]});
    let mut errs = Vec::new();
    validate(&doc, &one, &json!(1), "$", &mut errs);
    assert!(!errs.is_empty(), "oneOf with two matches");
    let mut errs = Vec::new();
    validate(&doc, &json!({"allOf": []}), &json!(1), "$", &mut errs);
    assert!(!errs.is_empty(), "unsupported keywords are reported");
}

#[test]
fn the_tours_reach_every_documented_operation() {
    let doc = doc_from_disk();
    let reached: BTreeSet<(String, String)> = tour::TOURS
        .iter()
        .flat_map(|ops| ops.iter())
        .map(|(m, template)| (template.to_string(), m.to_string()))
        .collect();
    // Every documented operation answered with a documented success.
    let all: BTreeSet<(String, String)> = operations(&doc).into_iter().collect();
    let missed: Vec<_> = all.difference(&reached).collect();
    assert!(
        missed.is_empty(),
        "operations the tour did not reach: {missed:?}"
    );
}
