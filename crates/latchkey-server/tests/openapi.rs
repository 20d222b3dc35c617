//! `docs/openapi.json` against the running server: it is served verbatim,
//! every documented operation is routed, no undocumented method is, its
//! paths are exactly the router's, and real responses (and the request
//! bodies the server accepts) match the documented schemas.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{Key, Reply, StatusCode, TestApp};
use latchkey_core::Clock;
use reqwest::Method;
use serde_json::{Value, json};

/// The operation keys of an OpenAPI path item.
const OPERATION_KEYS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn doc_from_disk() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    let text = std::fs::read_to_string(path).expect("read docs/openapi.json");
    serde_json::from_str(&text).expect("docs/openapi.json is JSON")
}

/// Every (path, method) the document lists, method in lower case.
fn operations(doc: &Value) -> Vec<(String, String)> {
    let paths = doc["paths"].as_object().expect("paths object");
    let mut out = Vec::new();
    for (path, item) in paths {
        let item = item.as_object().expect("path item object");
        for key in item.keys() {
            if OPERATION_KEYS.contains(&key.as_str()) {
                out.push((path.clone(), key.clone()));
            }
        }
    }
    out
}

/// The target of a local `$ref` ("#/components/...").
fn deref<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    doc.pointer(reference.strip_prefix('#')?)
}

/// Follows `$ref`s of a response, parameter or request body object.
fn resolve<'a>(doc: &'a Value, mut v: &'a Value) -> &'a Value {
    while let Some(r) = v.get("$ref").and_then(Value::as_str) {
        v = deref(doc, r).unwrap_or_else(|| panic!("dangling $ref {r}"));
    }
    v
}

/// A concrete path: each `{param}` of the template replaced, in order.
fn fill(template: &str, values: &[&str]) -> String {
    let mut out = String::new();
    let mut values = values.iter();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').expect("closing brace") + open;
        out.push_str(&rest[..open]);
        out.push_str(values.next().expect("a value for every parameter"));
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    assert!(values.next().is_none(), "too many values for {template}");
    out
}

/// The names of a template's `{param}`s, in order.
fn path_params(template: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').expect("closing brace") + open;
        out.push(rest[open + 1..close].to_string());
        rest = &rest[close + 1..];
    }
    out
}

fn method(name: &str) -> Method {
    Method::from_bytes(name.to_ascii_uppercase().as_bytes()).expect("method")
}

// ---------------------------------------------------------------------------
// A checker for the subset of JSON Schema the document uses.

/// Keywords the checker validates.
const ASSERTIONS: &[&str] = &[
    "$ref",
    "type",
    "required",
    "properties",
    "additionalProperties",
    "items",
    "enum",
    "const",
    "oneOf",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
];

/// Keywords that only annotate (not checked).
const ANNOTATIONS: &[&str] = &[
    "description",
    "title",
    "format",
    "pattern",
    "default",
    "examples",
    "readOnly",
    "writeOnly",
    "deprecated",
];

const TYPES: &[&str] = &[
    "null", "boolean", "object", "array", "string", "number", "integer",
];

fn has_type(value: &Value, t: &str) -> bool {
    match t {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => {
            value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => false,
    }
}

/// Appends to `errs` every way `value` breaks `schema`.
fn validate(doc: &Value, schema: &Value, value: &Value, at: &str, errs: &mut Vec<String>) {
    let schema = match schema {
        Value::Bool(true) => return,
        Value::Bool(false) => {
            errs.push(format!("{at}: no value is allowed here"));
            return;
        }
        Value::Object(s) => s,
        other => {
            errs.push(format!("{at}: schema is not an object: {other}"));
            return;
        }
    };
    for key in schema.keys() {
        if !ASSERTIONS.contains(&key.as_str()) && !ANNOTATIONS.contains(&key.as_str()) {
            errs.push(format!("{at}: unsupported schema keyword {key}"));
        }
    }
    if let Some(r) = schema.get("$ref") {
        match r.as_str().and_then(|r| deref(doc, r)) {
            Some(target) => validate(doc, target, value, at, errs),
            None => errs.push(format!("{at}: dangling $ref {r}")),
        }
    }
    if let Some(t) = schema.get("type") {
        let allowed: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !allowed.iter().any(|t| has_type(value, t)) {
            errs.push(format!("{at}: {value} is not of type {t}"));
            return;
        }
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array)
        && !e.contains(value)
    {
        errs.push(format!("{at}: {value} is not one of {e:?}"));
    }
    if let Some(c) = schema.get("const")
        && c != value
    {
        errs.push(format!("{at}: {value} is not {c}"));
    }
    if let Some(alternatives) = schema.get("oneOf").and_then(Value::as_array) {
        let mut matching = 0;
        let mut why = Vec::new();
        for (i, alt) in alternatives.iter().enumerate() {
            let mut sub = Vec::new();
            validate(doc, alt, value, &format!("{at}(oneOf {i})"), &mut sub);
            if sub.is_empty() {
                matching += 1;
            } else {
                why.extend(sub);
            }
        }
        if matching != 1 {
            errs.push(format!(
                "{at}: matches {matching} of the oneOf alternatives, not exactly one: {why:?}"
            ));
        }
    }
    match value {
        Value::Object(members) => {
            let props = schema.get("properties").and_then(Value::as_object);
            if let Some(required) = schema.get("required").and_then(Value::as_array) {
                for name in required.iter().filter_map(Value::as_str) {
                    if !members.contains_key(name) {
                        errs.push(format!("{at}: missing required member {name}"));
                    }
                }
            }
            for (name, v) in members {
                let here = format!("{at}.{name}");
                match props.and_then(|p| p.get(name)) {
                    Some(s) => validate(doc, s, v, &here, errs),
                    None => match schema.get("additionalProperties") {
                        Some(Value::Bool(false)) => {
                            errs.push(format!("{at}: member {name} is not allowed"));
                        }
                        Some(s) => validate(doc, s, v, &here, errs),
                        None => {}
                    },
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    validate(doc, s, v, &format!("{at}[{i}]"), errs);
                }
            }
            let len = items.len() as u64;
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && len < min
            {
                errs.push(format!("{at}: fewer than {min} items"));
            }
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && len > max
            {
                errs.push(format!("{at}: more than {max} items"));
            }
        }
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && len < min
            {
                errs.push(format!("{at}: shorter than {min} characters"));
            }
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && len > max
            {
                errs.push(format!("{at}: longer than {max} characters"));
            }
        }
        Value::Number(n) => {
            let n = n.as_f64().unwrap_or(f64::NAN);
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                && n < min
            {
                errs.push(format!("{at}: below the minimum {min}"));
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                && n > max
            {
                errs.push(format!("{at}: above the maximum {max}"));
            }
        }
        _ => {}
    }
}

/// Checks that a schema uses only keywords the checker knows, with
/// well-formed values, everywhere (not only where a test reaches).
fn lint_schema(doc: &Value, schema: &Value, at: &str, errs: &mut Vec<String>) {
    let Some(s) = schema.as_object() else {
        if !schema.is_boolean() {
            errs.push(format!("{at}: schema is neither an object nor a boolean"));
        }
        return;
    };
    for key in s.keys() {
        if !ASSERTIONS.contains(&key.as_str()) && !ANNOTATIONS.contains(&key.as_str()) {
            errs.push(format!("{at}: unsupported schema keyword {key}"));
        }
    }
    if let Some(r) = s.get("$ref")
        && r.as_str().and_then(|r| deref(doc, r)).is_none()
    {
        errs.push(format!("{at}: dangling $ref {r}"));
    }
    if let Some(t) = s.get("type") {
        let names: Vec<&Value> = match t {
            Value::Array(a) => a.iter().collect(),
            other => vec![other],
        };
        for n in names {
            if !n.as_str().is_some_and(|n| TYPES.contains(&n)) {
                errs.push(format!("{at}: unknown type {n}"));
            }
        }
    }
    let props = s.get("properties").and_then(Value::as_object);
    if let Some(required) = s.get("required") {
        for name in required.as_array().into_iter().flatten() {
            if !name
                .as_str()
                .is_some_and(|n| props.is_some_and(|p| p.contains_key(n)))
            {
                errs.push(format!("{at}: required {name} is not among the properties"));
            }
        }
    }
    for (name, sub) in props.into_iter().flatten() {
        lint_schema(doc, sub, &format!("{at}.properties.{name}"), errs);
    }
    if let Some(sub) = s.get("items") {
        lint_schema(doc, sub, &format!("{at}.items"), errs);
    }
    if let Some(sub) = s.get("additionalProperties") {
        lint_schema(doc, sub, &format!("{at}.additionalProperties"), errs);
    }
    for (i, sub) in s
        .get("oneOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        lint_schema(doc, sub, &format!("{at}.oneOf[{i}]"), errs);
    }
}

/// The JSON schema of a documented response, or None for one without
/// content (204).
fn response_schema<'a>(
    doc: &'a Value,
    path: &str,
    method: &str,
    status: &str,
) -> Option<&'a Value> {
    let op = &doc["paths"][path][method];
    assert!(op.is_object(), "{method} {path} is not documented");
    let Some(resp) = op["responses"].get(status) else {
        panic!("{method} {path} answered {status}, which is not documented");
    };
    resolve(doc, resp)
        .get("content")
        .map(|c| &c["application/json"]["schema"])
}

/// Asserts that a reply is a documented response of the operation and
/// matches its schema and required headers.
fn check_reply(doc: &Value, path: &str, method: &str, reply: &Reply) {
    let status = reply.status.as_str();
    let resp = resolve(doc, &doc["paths"][path][method]["responses"][status]);
    match response_schema(doc, path, method, status) {
        Some(schema) => {
            if method != "head" {
                let ct = reply
                    .headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                assert!(
                    ct.starts_with("application/json"),
                    "{method} {path} {status}: content-type {ct:?}"
                );
                assert_valid(
                    doc,
                    schema,
                    &reply.body,
                    &format!("{method} {path} {status}"),
                );
            }
        }
        None => assert_eq!(
            reply.body,
            Value::Null,
            "{method} {path} {status} is documented without content"
        ),
    }
    for (name, header) in resp
        .get("headers")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let header = resolve(doc, header);
        let value = reply.headers.get(name.as_str());
        if header["required"] == true {
            let value = value
                .and_then(|v| v.to_str().ok())
                .unwrap_or_else(|| panic!("{method} {path} {status}: header {name} missing"));
            assert_valid(
                doc,
                &header["schema"],
                &Value::String(value.to_string()),
                &format!("{method} {path} {status} header {name}"),
            );
        }
    }
}

fn assert_valid(doc: &Value, schema: &Value, value: &Value, what: &str) {
    let mut errs = Vec::new();
    validate(doc, schema, value, "$", &mut errs);
    assert!(
        errs.is_empty(),
        "{what}: {value}\ndoes not match: {errs:#?}"
    );
}

fn request_errors(doc: &Value, path: &str, method: &str, body: &Value) -> Vec<String> {
    let rb = resolve(doc, &doc["paths"][path][method]["requestBody"]);
    let schema = &rb["content"]["application/json"]["schema"];
    assert!(
        !schema.is_null(),
        "{method} {path} documents no request body"
    );
    let mut errs = Vec::new();
    validate(doc, schema, body, "$", &mut errs);
    errs
}

/// The value of `routes::NAME`, read from the source of `routes.rs`.
fn named_route(name: &str) -> String {
    let src = include_str!("../src/routes.rs");
    let decl = format!("pub const {name}: &str = \"");
    let start = src.find(&decl).expect("a constant of routes.rs") + decl.len();
    let len = src[start..].find('"').expect("closing quote");
    src[start..start + len].to_string()
}

/// The routes of the router, read from the source of `router.rs`: each
/// `.route("path", ...)` (or `.route(routes::NAME, ...)`) with the methods
/// chained in its second argument.
fn router_routes() -> BTreeMap<String, BTreeSet<String>> {
    let src = include_str!("../src/router.rs");
    let mut out = BTreeMap::new();
    let mut rest = src;
    while let Some(i) = rest.find(".route(") {
        rest = &rest[i + ".route(".len()..];
        // The arguments, up to the matching parenthesis.
        let mut depth = 1;
        let mut in_string = false;
        let mut end = None;
        for (j, c) in rest.char_indices() {
            match c {
                '"' => in_string = !in_string,
                '(' if !in_string => depth += 1,
                ')' if !in_string => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(j);
                        break;
                    }
                }
                _ => {}
            }
        }
        let args = &rest[..end.expect("balanced .route( call")];
        let args = args.trim_start();
        let (path, handlers) = match args.strip_prefix("routes::") {
            Some(named) => {
                let end = named.find(',').expect("a comma after the path");
                (named_route(named[..end].trim()), &named[end..])
            }
            None => {
                let literal = args
                    .strip_prefix('"')
                    .expect(".route( starts with a string literal or routes::NAME");
                let close = literal.find('"').expect("closing quote");
                (literal[..close].to_string(), &literal[close + 1..])
            }
        };
        let mut methods = BTreeSet::new();
        let bytes = handlers.as_bytes();
        let mut k = 0;
        while k < bytes.len() {
            if bytes[k].is_ascii_alphabetic() {
                let start = k;
                while k < bytes.len() && (bytes[k].is_ascii_alphanumeric() || bytes[k] == b'_') {
                    k += 1;
                }
                let ident = &handlers[start..k];
                let called = bytes.get(k) == Some(&b'(');
                let qualified = handlers[..start].ends_with("::");
                if called && !qualified && OPERATION_KEYS.contains(&ident) {
                    methods.insert(ident.to_string());
                }
            } else {
                k += 1;
            }
        }
        assert!(!methods.is_empty(), "no methods found for route {path}");
        assert!(
            out.insert(path.clone(), methods).is_none(),
            "route {path} appears twice"
        );
    }
    out
}

// ---------------------------------------------------------------------------

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
                lint_schema(
                    &doc,
                    &c["application/json"]["schema"],
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

fn is_no_such_endpoint(r: &Reply) -> bool {
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

// ---------------------------------------------------------------------------
// A tour of the API: every operation answers with a documented, valid
// response, and every body the server accepts matches the documented
// request schema.

struct Tour<'a> {
    doc: Value,
    app: &'a TestApp,
    covered: BTreeSet<(String, String)>,
}

impl Tour<'_> {
    /// Calls `path` (an instance of `template`) and checks the reply.
    async fn call(
        &mut self,
        m: &str,
        template: &str,
        path: &str,
        auth: Option<&str>,
        body: Option<Value>,
        expect: StatusCode,
    ) -> Reply {
        self.call_from(m, template, path, auth, body, None, expect)
            .await
    }

    /// Like [`Tour::call`], from a browser page when `origin` is given
    /// (the request carries that `Origin` header).
    #[allow(clippy::too_many_arguments)]
    async fn call_from(
        &mut self,
        m: &str,
        template: &str,
        path: &str,
        auth: Option<&str>,
        body: Option<Value>,
        origin: Option<&str>,
        expect: StatusCode,
    ) -> Reply {
        let r = match origin {
            None => self.app.call(method(m), path, auth, body.clone()).await,
            Some(o) => send_from(self.app, m, path, auth, body.clone(), o).await,
        };
        assert_eq!(r.status, expect, "{m} {path}: {:?}", r.body);
        check_reply(&self.doc, template, m, &r);
        if r.status.is_success() {
            if let Some(b) = &body {
                let errs = request_errors(&self.doc, template, m, b);
                assert!(
                    errs.is_empty(),
                    "{m} {template}: the server accepted {b}, which the document refuses: {errs:#?}"
                );
            }
            self.covered.insert((template.to_string(), m.to_string()));
        }
        r
    }
}

impl Tour<'_> {
    /// Like [`Tour::call`] with an `application/x-www-form-urlencoded`
    /// body of `fields`, which the documented form schema must accept
    /// when the server does.
    async fn call_form(
        &mut self,
        template: &str,
        auth: Option<&str>,
        fields: &[(&str, &str)],
        expect: StatusCode,
    ) -> Reply {
        let mut req = self
            .app
            .http
            .post(self.app.url(template))
            .header("content-type", FORM)
            .body(serde_urlencoded::to_string(fields).expect("form"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = TestApp::send(req).await;
        assert_eq!(r.status, expect, "post {template}: {:?}", r.body);
        check_reply(&self.doc, template, "post", &r);
        if r.status.is_success() {
            let rb = resolve(
                &self.doc,
                &self.doc["paths"][template]["post"]["requestBody"],
            );
            let schema = &rb["content"][FORM]["schema"];
            assert!(!schema.is_null(), "post {template} documents no form body");
            let as_json: serde_json::Map<String, Value> = fields
                .iter()
                .map(|(k, v)| (k.to_string(), Value::from(*v)))
                .collect();
            assert_valid(
                &self.doc,
                schema,
                &Value::Object(as_json),
                &format!("the form the server accepted on post {template}"),
            );
            self.covered
                .insert((template.to_string(), "post".to_string()));
        }
        r
    }
}

const FORM: &str = "application/x-www-form-urlencoded";

/// A request with an `Origin` header, as a browser page sends it.
async fn send_from(
    app: &TestApp,
    m: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<Value>,
    origin: &str,
) -> Reply {
    let mut req = app
        .http
        .request(method(m), app.url(path))
        .header("origin", origin);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    Reply::read(resp).await
}

/// The `Access-Control-Allow-Origin` of a reply.
fn allowed_origin(r: &Reply) -> Option<&str> {
    r.headers
        .get("access-control-allow-origin")
        .and_then(|v| v.to_str().ok())
}

/// Seconds since the epoch of an RFC 3339 member of a reply.
fn unix(v: &Value) -> i64 {
    let text = v.as_str().expect("an RFC 3339 time");
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .expect("RFC 3339")
        .unix_timestamp()
}

fn key_of(r: &Reply) -> Key {
    Key {
        id: r.body["key"]["id"].as_str().expect("key id").to_string(),
        secret: r.body["key"]["secret"]
            .as_str()
            .expect("the create response carries the secret")
            .to_string(),
    }
}

fn id_of(r: &Reply, member: &str) -> String {
    r.body[member]["id"].as_str().expect("id").to_string()
}

#[tokio::test]
async fn real_responses_match_their_schemas() {
    let app = TestApp::spawn().await;
    let mut t = Tour {
        doc: doc_from_disk(),
        app: &app,
        covered: BTreeSet::new(),
    };
    let owner_auth = app.owner();
    let op_auth = app.operator();
    let owner = Some(owner_auth.as_str());
    let op = Some(op_auth.as_str());

    // Meta and identity.
    t.call("get", "/healthz", "/healthz", None, None, StatusCode::OK)
        .await;
    let ready = t
        .call("get", "/readyz", "/readyz", None, None, StatusCode::OK)
        .await;
    let backend = if common::on_postgres() {
        "postgres"
    } else {
        "sqlite"
    };
    assert_eq!(ready.body["backend"], backend, "{:?}", ready.body);
    assert_eq!(ready.body["status"], "ready", "{:?}", ready.body);
    t.call(
        "get",
        "/v1/openapi.json",
        "/v1/openapi.json",
        None,
        None,
        StatusCode::OK,
    )
    .await;
    let r = t
        .call(
            "get",
            "/v1/account",
            "/v1/account",
            owner,
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(r.body["scope"], "account");
    assert!(r.body["userAccountId"].is_string());
    let r = t
        .call(
            "get",
            "/v1/account",
            "/v1/account",
            op,
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(r.body, json!({"scope": "operator"}));

    // Accounts.
    let r = t
        .call(
            "post",
            "/v1/accounts",
            "/v1/accounts",
            op,
            Some(json!({"displayName": " Second ", "owner": {"email": "Second@Example.com", "password": "a long enough password"}})),
            StatusCode::CREATED,
        )
        .await;
    let account2 = id_of(&r, "account");
    let account2_owner = key_of(&r);
    assert_eq!(r.body["account"]["displayName"], "Second");
    assert_eq!(r.body["user"]["email"], "second@example.com");
    let r = t
        .call(
            "get",
            "/v1/accounts",
            "/v1/accounts?limit=1",
            op,
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(r.body["meta"]["hasMore"], true);
    let cursor = r.body["meta"]["afterCursor"].as_str().expect("cursor");
    let r = t
        .call(
            "get",
            "/v1/accounts",
            &format!("/v1/accounts?after={cursor}"),
            op,
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        r.body["meta"],
        json!({"hasMore": false, "afterCursor": null})
    );
    t.call(
        "get",
        "/v1/accounts/{account_id}",
        &format!("/v1/accounts/{account2}"),
        op,
        None,
        StatusCode::OK,
    )
    .await;

    // Apps.
    let r = t
        .call(
            "post",
            "/v1/apps",
            "/v1/apps",
            owner,
            Some(json!({"displayName": "Chat", "settings": {"theme": {"colour": "blue"}, "drop": null}})),
            StatusCode::CREATED,
        )
        .await;
    let app_id = id_of(&r, "app");
    // New apps refuse their keys from a browser unless told otherwise.
    assert_eq!(
        r.body["app"]["settings"],
        json!({"blockBrowserSecrets": true, "theme": {"colour": "blue"}})
    );
    let ap = format!("/v1/apps/{app_id}");
    t.call("get", "/v1/apps", "/v1/apps", owner, None, StatusCode::OK)
        .await;
    t.call("get", "/v1/apps/{app_id}", &ap, owner, None, StatusCode::OK)
        .await;
    let r = t
        .call(
            "patch",
            "/v1/apps/{app_id}",
            &ap,
            owner,
            Some(json!({"displayName": "Chat 2", "settings": {"theme": {"colour": null}, "beta": true}})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        r.body["app"]["settings"],
        json!({"blockBrowserSecrets": true, "theme": {}, "beta": true})
    );

    // App keys: the secret only in the create response.
    let r = t
        .call(
            "post",
            "/v1/apps/{app_id}/keys",
            &format!("{ap}/keys"),
            owner,
            Some(json!({"displayName": "server"})),
            StatusCode::CREATED,
        )
        .await;
    let key = key_of(&r);
    assert!(key.secret.starts_with("lksk_"));
    let r = t
        .call(
            "get",
            "/v1/apps/{app_id}/keys",
            &format!("{ap}/keys"),
            owner,
            None,
            StatusCode::OK,
        )
        .await;
    assert!(!r.body.to_string().contains(&key.secret));
    let r = t
        .call(
            "get",
            "/v1/apps/{app_id}/keys/{key_id}",
            &format!("{ap}/keys/{}", key.id),
            owner,
            None,
            StatusCode::OK,
        )
        .await;
    assert!(r.body["key"].get("secret").is_none());

    // App and appUser credentials.
    let app_basic_auth = key.basic();
    let app_basic = Some(app_basic_auth.as_str());
    let alice_auth = key.jwt(json!({"scope": "appUser", "userId": "alice"}));
    let alice = Some(alice_auth.as_str());
    let r = t
        .call(
            "get",
            "/v1/account",
            "/v1/account",
            app_basic,
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(r.body["scope"], "app");
    let r = t
        .call(
            "get",
            "/v1/account",
            "/v1/account",
            alice,
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(r.body["scope"], "appUser");
    assert_eq!(r.body["userId"], "alice");

    // App users.
    let r = t
        .call(
            "post",
            "/v1/apps/{app_id}/users",
            &format!("{ap}/users"),
            app_basic,
            Some(json!({"externalId": "bob", "profile": {"givenName": "Bob", "email": null}, "metadata": {"plan": "free"}})),
            StatusCode::CREATED,
        )
        .await;
    let bob = id_of(&r, "user");
    t.call(
        "get",
        "/v1/apps/{app_id}/users",
        &format!("{ap}/users"),
        app_basic,
        None,
        StatusCode::OK,
    )
    .await;
    t.call(
        "get",
        "/v1/apps/{app_id}/users/{user}",
        &format!("{ap}/users/{bob}"),
        app_basic,
        None,
        StatusCode::OK,
    )
    .await;
    let r = t
        .call(
            "get",
            "/v1/apps/{app_id}/users/{user}",
            &format!("{ap}/users/alice"),
            alice,
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(r.body["user"]["externalId"], "alice");
    let r = t
        .call(
            "patch",
            "/v1/apps/{app_id}/users/{user}",
            &format!("{ap}/users/alice"),
            alice,
            Some(json!({"profile": {"surname": "Smith"}, "metadata": {"plan": "pro"}})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(r.body["user"]["profile"]["surname"], "Smith");
    // Per profile field: null clears, absent leaves as it is.
    let r = t
        .call(
            "patch",
            "/v1/apps/{app_id}/users/{user}",
            &format!("{ap}/users/{bob}"),
            app_basic,
            Some(json!({"profile": {"email": "bob@example.com", "givenName": null}})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        r.body["user"]["profile"],
        json!({"givenName": null, "surname": null, "email": "bob@example.com"})
    );

    // Minted appUser tokens: named by usr_ id or by an external id not
    // created yet (its first use creates it).
    let mint = "/v1/apps/{app_id}/users/{user}/tokens";
    let r = t
        .call(
            "post",
            mint,
            &format!("{ap}/users/{bob}/tokens"),
            app_basic,
            Some(json!({"ttlSeconds": 600})),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(
        unix(&r.body["expiresAt"]),
        app.clock.now().unix_timestamp() + 600
    );
    let bob_token = format!("Bearer {}", r.body["token"].as_str().expect("token"));
    let r = t
        .call(
            "get",
            "/v1/apps/{app_id}/users/{user}",
            &format!("{ap}/users/{bob}"),
            Some(&bob_token),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(r.body["user"]["externalId"], "bob");
    let r = t
        .call(
            "post",
            mint,
            &format!("{ap}/users/dana/tokens"),
            owner,
            None,
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(
        unix(&r.body["expiresAt"]),
        app.clock.now().unix_timestamp() + 3600
    );
    let dana_token = format!("Bearer {}", r.body["token"].as_str().expect("token"));
    let r = t
        .call(
            "get",
            "/v1/account",
            "/v1/account",
            Some(&dana_token),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(r.body["scope"], "appUser");
    assert_eq!(r.body["userId"], "dana");
    for bad in [json!({"ttlSeconds": 59}), json!({"ttlSeconds": 86_401})] {
        assert!(!request_errors(&t.doc, mint, "post", &bad).is_empty());
        t.call(
            "post",
            mint,
            &format!("{ap}/users/dana/tokens"),
            owner,
            Some(bad),
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    let r = t
        .call(
            "post",
            mint,
            &format!("{ap}/users/alice/tokens"),
            alice,
            Some(json!({})),
            StatusCode::FORBIDDEN,
        )
        .await;
    assert_eq!(r.code(), "forbidden");
    let r = t
        .call(
            "post",
            mint,
            &format!("{ap}/users/usr_0000000000000000000000/tokens"),
            app_basic,
            None,
            StatusCode::NOT_FOUND,
        )
        .await;
    assert_eq!(r.code(), "not_found");
    t.call(
        "post",
        mint,
        "/v1/apps/ap_0000000000000000000000/users/dana/tokens",
        owner,
        None,
        StatusCode::NOT_FOUND,
    )
    .await;
    let r = t
        .call(
            "post",
            "/v1/apps",
            "/v1/apps",
            owner,
            Some(json!({"displayName": "Keyless"})),
            StatusCode::CREATED,
        )
        .await;
    let r = t
        .call(
            "post",
            mint,
            &format!("/v1/apps/{}/users/dana/tokens", id_of(&r, "app")),
            owner,
            None,
            StatusCode::CONFLICT,
        )
        .await;
    assert_eq!(r.code(), "conflict");

    // Webhooks: the secret only in the create response.
    let hooks = format!("{ap}/webhooks");
    let r = t
        .call(
            "post",
            "/v1/apps/{app_id}/webhooks",
            &hooks,
            app_basic,
            Some(json!({"target": "https://hooks.example.com/latchkey", "triggers": ["key:rotated", "key:created"]})),
            StatusCode::CREATED,
        )
        .await;
    let hook = format!("{hooks}/{}", id_of(&r, "webhook"));
    let hook_secret = r.body["webhook"]["secret"]
        .as_str()
        .expect("the create response carries the secret")
        .to_string();
    t.call(
        "get",
        "/v1/apps/{app_id}/webhooks",
        &hooks,
        owner,
        None,
        StatusCode::OK,
    )
    .await;
    let r = t
        .call(
            "patch",
            "/v1/apps/{app_id}/webhooks/{webhook_id}",
            &hook,
            owner,
            Some(json!({"triggers": ["key:deleted", "key:expiring"]})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        r.body["webhook"]["triggers"],
        json!(["key:deleted", "key:expiring"])
    );
    let r = t
        .call(
            "get",
            "/v1/apps/{app_id}/webhooks/{webhook_id}",
            &hook,
            app_basic,
            None,
            StatusCode::OK,
        )
        .await;
    assert!(!r.body.to_string().contains(&hook_secret));
    let bad_target = json!({"target": "ftp://example.com/", "triggers": ["key:created"]});
    assert!(request_errors(&t.doc, "/v1/apps/{app_id}/webhooks", "post", &bad_target).is_empty());
    t.call(
        "post",
        "/v1/apps/{app_id}/webhooks",
        &hooks,
        owner,
        Some(bad_target),
        StatusCode::BAD_REQUEST,
    )
    .await;
    t.call(
        "delete",
        "/v1/apps/{app_id}/webhooks/{webhook_id}",
        &hook,
        owner,
        None,
        StatusCode::NO_CONTENT,
    )
    .await;

    // Service accounts, their keys and grants.
    let r = t
        .call(
            "post",
            "/v1/serviceAccounts",
            "/v1/serviceAccounts",
            owner,
            Some(json!({"displayName": "robot"})),
            StatusCode::CREATED,
        )
        .await;
    let sa_id = id_of(&r, "serviceAccount");
    let sa = format!("/v1/serviceAccounts/{sa_id}");
    t.call(
        "get",
        "/v1/serviceAccounts",
        "/v1/serviceAccounts",
        owner,
        None,
        StatusCode::OK,
    )
    .await;
    t.call(
        "get",
        "/v1/serviceAccounts/{sa_id}",
        &sa,
        owner,
        None,
        StatusCode::OK,
    )
    .await;
    let r = t
        .call(
            "post",
            "/v1/serviceAccounts/{sa_id}/keys",
            &format!("{sa}/keys"),
            owner,
            Some(json!({"displayName": "robot key"})),
            StatusCode::CREATED,
        )
        .await;
    let svc = key_of(&r);
    t.call(
        "get",
        "/v1/serviceAccounts/{sa_id}/keys",
        &format!("{sa}/keys"),
        owner,
        None,
        StatusCode::OK,
    )
    .await;
    let r = t
        .call(
            "get",
            "/v1/serviceAccounts/{sa_id}/keys/{key_id}",
            &format!("{sa}/keys/{}", svc.id),
            owner,
            None,
            StatusCode::OK,
        )
        .await;
    assert!(r.body["key"].get("secret").is_none());
    let svc_basic = svc.basic();
    let r = t
        .call(
            "get",
            "/v1/account",
            "/v1/account",
            Some(&svc_basic),
            None,
            StatusCode::OK,
        )
        .await;
    assert!(r.body["serviceAccountId"].is_string());
    let grant = format!("{sa}/apps/{app_id}");
    for _ in 0..2 {
        t.call(
            "put",
            "/v1/serviceAccounts/{sa_id}/apps/{app_id}",
            &grant,
            owner,
            None,
            StatusCode::NO_CONTENT,
        )
        .await;
    }

    // Verifier tokens, and introspection with one.
    let r = t
        .call(
            "post",
            "/v1/verifierTokens",
            "/v1/verifierTokens",
            op,
            Some(json!({"displayName": "gateway"})),
            StatusCode::CREATED,
        )
        .await;
    let vt = id_of(&r, "verifierToken");
    let vt_auth = format!(
        "Bearer {}",
        r.body["verifierToken"]["token"].as_str().expect("token")
    );
    let verifier = Some(vt_auth.as_str());
    t.call(
        "get",
        "/v1/verifierTokens",
        "/v1/verifierTokens?limit=1",
        op,
        None,
        StatusCode::OK,
    )
    .await;
    let vt_path = format!("/v1/verifierTokens/{vt}");
    t.call(
        "get",
        "/v1/verifierTokens/{token_id}",
        &vt_path,
        op,
        None,
        StatusCode::OK,
    )
    .await;
    let r = t
        .call(
            "post",
            "/v1/verify",
            "/v1/verify",
            verifier,
            Some(json!({"authorization": svc_basic})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(r.body["valid"], true);
    let now = app.clock.unix();
    let alice_timed =
        key.jwt(json!({"scope": "appUser", "userId": "alice", "iat": now, "exp": now + 60}));
    for (token, active) in [
        (alice_timed.trim_start_matches("Bearer "), true),
        (format!("{}:{}", key.id, key.secret).as_str(), true),
        ("not a token", false),
    ] {
        let r = t
            .call_form(
                "/v1/introspect",
                verifier,
                &[("token", token), ("token_type_hint", "access_token")],
                StatusCode::OK,
            )
            .await;
        assert_eq!(r.body["active"], active, "{:?}", r.body);
    }
    t.call_form("/v1/introspect", op, &[("token", "x")], StatusCode::OK)
        .await;
    t.call_form(
        "/v1/introspect",
        verifier,
        &[("token_type_hint", "access_token")],
        StatusCode::BAD_REQUEST,
    )
    .await;
    t.call_form(
        "/v1/introspect",
        owner,
        &[("token", "x")],
        StatusCode::FORBIDDEN,
    )
    .await;
    t.call_form(
        "/v1/introspect",
        None,
        &[("token", "x")],
        StatusCode::UNAUTHORIZED,
    )
    .await;
    for (m, template, path, body) in [
        ("get", "/v1/accounts", "/v1/accounts".to_string(), None),
        (
            "post",
            "/v1/verifierTokens",
            "/v1/verifierTokens".to_string(),
            Some(json!({"displayName": "x"})),
        ),
        (
            "get",
            "/v1/verifierTokens/{token_id}",
            vt_path.clone(),
            None,
        ),
    ] {
        let r = t
            .call(m, template, &path, verifier, body, StatusCode::FORBIDDEN)
            .await;
        assert_eq!(r.code(), "forbidden");
    }
    t.call(
        "delete",
        "/v1/verifierTokens/{token_id}",
        &vt_path,
        op,
        None,
        StatusCode::NO_CONTENT,
    )
    .await;
    t.call(
        "get",
        "/v1/verifierTokens/{token_id}",
        &vt_path,
        op,
        None,
        StatusCode::NOT_FOUND,
    )
    .await;
    t.call_form(
        "/v1/introspect",
        verifier,
        &[("token", "x")],
        StatusCode::UNAUTHORIZED,
    )
    .await;

    // Verification, valid and not.
    let verify = |authorization: &str, extra: Value| {
        let mut body = json!({"authorization": authorization});
        if let (Some(b), Value::Object(e)) = (body.as_object_mut(), extra) {
            b.extend(e);
        }
        body
    };
    let r = t
        .call(
            "post",
            "/v1/verify",
            "/v1/verify",
            op,
            Some(verify(&svc_basic, json!({"appId": app_id}))),
            StatusCode::OK,
        )
        .await;
    assert_eq!(r.body["valid"], true);
    assert_eq!(r.body["scope"], "account");
    t.call(
        "delete",
        "/v1/serviceAccounts/{sa_id}/apps/{app_id}",
        &grant,
        owner,
        None,
        StatusCode::NO_CONTENT,
    )
    .await;
    let expired = key.jwt(json!({"scope": "app", "exp": 1}));
    let cases = [
        (
            verify(
                &alice_auth,
                json!({"appId": app_id, "userId": "alice", "origin": "https://example.com"}),
            ),
            json!(true),
        ),
        (
            verify(&svc_basic, json!({"appId": app_id})),
            json!("not_found"),
        ),
        (verify("Basic nonsense", json!({})), json!("unauthorized")),
        (verify(&expired, json!({})), json!("token_expired")),
        (
            verify(&app_basic_auth, json!({"origin": "https://example.com"})),
            json!("forbidden"),
        ),
        (
            verify(&alice_auth, json!({"userId": "bob"})),
            json!("not_found"),
        ),
    ];
    for (body, want) in cases {
        let r = t
            .call(
                "post",
                "/v1/verify",
                "/v1/verify",
                op,
                Some(body),
                StatusCode::OK,
            )
            .await;
        if want == true {
            assert_eq!(r.body["valid"], true, "{:?}", r.body);
        } else {
            assert_eq!(r.body["valid"], false, "{:?}", r.body);
            assert_eq!(r.body["code"], want, "{:?}", r.body);
        }
    }

    // Errors, each a documented response of its operation.
    let r = t
        .call(
            "get",
            "/v1/apps",
            "/v1/apps",
            None,
            None,
            StatusCode::UNAUTHORIZED,
        )
        .await;
    assert_eq!(r.code(), "unauthorized");
    let r = t
        .call(
            "get",
            "/v1/apps/{app_id}",
            &ap,
            Some(&expired),
            None,
            StatusCode::UNAUTHORIZED,
        )
        .await;
    assert_eq!(r.code(), "token_expired");
    let unknown_member = json!({"displayName": "x", "colour": "red"});
    assert!(!request_errors(&t.doc, "/v1/apps", "post", &unknown_member).is_empty());
    let r = t
        .call(
            "post",
            "/v1/apps",
            "/v1/apps",
            owner,
            Some(unknown_member),
            StatusCode::BAD_REQUEST,
        )
        .await;
    assert_eq!(r.code(), "bad_request");
    for query in ["limit=0", "limit=101", "colour=red", "after=ap_nothing"] {
        t.call(
            "get",
            "/v1/apps",
            &format!("/v1/apps?{query}"),
            owner,
            None,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    t.call(
        "post",
        "/v1/apps",
        "/v1/apps",
        owner,
        Some(json!({"displayName": "x".repeat(70 * 1024)})),
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    for (m, template, path, auth) in [
        ("post", "/v1/apps", "/v1/apps".to_string(), alice),
        ("get", "/v1/accounts", "/v1/accounts".to_string(), owner),
        ("get", "/v1/apps/{app_id}", ap.clone(), op),
        (
            "get",
            "/v1/serviceAccounts",
            "/v1/serviceAccounts".to_string(),
            Some(svc_basic.as_str()),
        ),
        (
            "get",
            "/v1/apps/{app_id}/keys",
            format!("{ap}/keys"),
            app_basic,
        ),
        (
            "delete",
            "/v1/apps/{app_id}/users/{user}",
            format!("{ap}/users/alice"),
            alice,
        ),
    ] {
        let body = (m == "post").then(|| json!({"displayName": "x"}));
        let r = t
            .call(m, template, &path, auth, body, StatusCode::FORBIDDEN)
            .await;
        assert_eq!(r.code(), "forbidden");
    }
    let r = t
        .call(
            "post",
            "/v1/verify",
            "/v1/verify",
            owner,
            Some(verify(&svc_basic, json!({}))),
            StatusCode::FORBIDDEN,
        )
        .await;
    assert_eq!(r.code(), "forbidden");
    for (template, path, auth) in [
        (
            "/v1/apps/{app_id}",
            "/v1/apps/ap_0000000000000000000000".to_string(),
            owner,
        ),
        (
            "/v1/apps/{app_id}/users/{user}",
            format!("{ap}/users/bob"),
            alice,
        ),
        (
            "/v1/apps/{app_id}/users/{user}",
            format!("{ap}/users/carol"),
            app_basic,
        ),
        ("/v1/apps/{app_id}", ap.clone(), Some(svc_basic.as_str())),
    ] {
        let r = t
            .call("get", template, &path, auth, None, StatusCode::NOT_FOUND)
            .await;
        assert_eq!(r.code(), "not_found");
    }
    let r = t
        .call(
            "post",
            "/v1/apps/{app_id}/users",
            &format!("{ap}/users"),
            app_basic,
            Some(json!({"externalId": "bob"})),
            StatusCode::CONFLICT,
        )
        .await;
    assert_eq!(r.code(), "conflict");
    // Outside any operation: an unknown path and an undocumented method.
    let r = app.get("/v1/nothing-here", &owner_auth).await;
    assert!(is_no_such_endpoint(&r));
    let error = json!({"$ref": "#/components/schemas/Error"});
    assert_valid(&t.doc, &error, &r.body, "unknown path");
    let r = app.put("/v1/apps", &owner_auth).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_valid(&t.doc, &error, &r.body, "405");

    // Key expiry, rotation, app policy settings and the audit log.
    let r = t
        .call(
            "post",
            "/v1/apps/{app_id}/keys",
            &format!("{ap}/keys"),
            owner,
            Some(json!({"displayName": "expiring", "expiresAt": "2027-01-01T00:00:00Z"})),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(r.body["key"]["status"], "expiring");
    let lifetime = unix(&r.body["key"]["expiresAt"]) - unix(&r.body["key"]["createdAt"]);
    let expiring = key_of(&r);
    t.call(
        "post",
        "/v1/apps/{app_id}/keys",
        &format!("{ap}/keys"),
        owner,
        Some(json!({"displayName": "past", "expiresAt": "2020-01-01T00:00:00Z"})),
        StatusCode::BAD_REQUEST,
    )
    .await;
    let policy = json!({"settings": {"maxKeyAgeDays": 30, "maxTokenTtlSeconds": 3600}});
    let r = t
        .call(
            "patch",
            "/v1/apps/{app_id}",
            &ap,
            owner,
            Some(policy),
            StatusCode::OK,
        )
        .await;
    assert_eq!(r.body["app"]["settings"]["maxKeyAgeDays"], 30);
    // A minted token's lifetime is capped by maxTokenTtlSeconds.
    let r = t
        .call(
            "post",
            mint,
            &format!("{ap}/users/dana/tokens"),
            owner,
            Some(json!({"ttlSeconds": 86_400})),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(
        unix(&r.body["expiresAt"]),
        app.clock.now().unix_timestamp() + 3600
    );
    let capped = format!("Bearer {}", r.body["token"].as_str().expect("token"));
    t.call(
        "get",
        "/v1/apps/{app_id}/users/{user}",
        &format!("{ap}/users/dana"),
        Some(&capped),
        None,
        StatusCode::OK,
    )
    .await;
    let bad = json!({"settings": {"maxKeyAgeDays": 0}});
    assert!(!request_errors(&t.doc, "/v1/apps/{app_id}", "patch", &bad).is_empty());
    t.call(
        "patch",
        "/v1/apps/{app_id}",
        &ap,
        owner,
        Some(bad),
        StatusCode::BAD_REQUEST,
    )
    .await;
    let bad = json!({"displayName": "x", "settings": {"maxTokenTtlSeconds": 59}});
    assert!(!request_errors(&t.doc, "/v1/apps", "post", &bad).is_empty());
    t.call(
        "post",
        "/v1/apps",
        "/v1/apps",
        owner,
        Some(bad),
        StatusCode::BAD_REQUEST,
    )
    .await;
    let r = t
        .call(
            "get",
            "/v1/apps/{app_id}",
            &ap,
            Some(&key.jwt(json!({"scope": "app"}))),
            None,
            StatusCode::UNAUTHORIZED,
        )
        .await;
    assert_eq!(r.code(), "unauthorized");
    t.call(
        "patch",
        "/v1/apps/{app_id}",
        &ap,
        owner,
        Some(json!({"settings": {"maxKeyAgeDays": null, "maxTokenTtlSeconds": null}})),
        StatusCode::OK,
    )
    .await;

    // Browsers: CORS by scope, and server credentials refused from a page.
    let page = "https://shop.example";
    let r = t
        .call(
            "patch",
            "/v1/apps/{app_id}",
            &ap,
            owner,
            Some(json!({"settings": {"allowedOrigins": [page]}})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(r.body["app"]["settings"]["allowedOrigins"], json!([page]));
    for bad in [
        json!({"settings": {"blockBrowserSecrets": "no"}}),
        json!({"settings": {"allowedOrigins": page}}),
    ] {
        assert!(!request_errors(&t.doc, "/v1/apps/{app_id}", "patch", &bad).is_empty());
        t.call(
            "patch",
            "/v1/apps/{app_id}",
            &ap,
            owner,
            Some(bad),
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    // Not an exact origin (a trailing slash): the server refuses it.
    t.call(
        "patch",
        "/v1/apps/{app_id}",
        &ap,
        owner,
        Some(json!({"settings": {"allowedOrigins": ["https://shop.example/"]}})),
        StatusCode::BAD_REQUEST,
    )
    .await;
    let alice_path = format!("{ap}/users/alice");
    let r = t
        .call_from(
            "get",
            "/v1/apps/{app_id}/users/{user}",
            &alice_path,
            alice,
            None,
            Some(page),
            StatusCode::OK,
        )
        .await;
    assert_eq!(allowed_origin(&r), Some(page));
    let r = t
        .call_from(
            "get",
            "/v1/apps/{app_id}/users/{user}",
            &alice_path,
            alice,
            None,
            Some("https://elsewhere.example"),
            StatusCode::OK,
        )
        .await;
    assert_eq!(allowed_origin(&r), None);
    let r = t
        .call_from(
            "get",
            "/v1/apps/{app_id}",
            &ap,
            app_basic,
            None,
            Some(page),
            StatusCode::FORBIDDEN,
        )
        .await;
    assert_eq!(r.code(), "forbidden");
    assert_eq!(allowed_origin(&r), None);
    let r = t
        .call_from(
            "get",
            "/v1/account",
            "/v1/account",
            owner,
            None,
            Some(page),
            StatusCode::FORBIDDEN,
        )
        .await;
    assert_eq!(r.code(), "forbidden");
    t.call(
        "patch",
        "/v1/apps/{app_id}",
        &ap,
        owner,
        Some(json!({"settings": {"blockBrowserSecrets": false}})),
        StatusCode::OK,
    )
    .await;
    let r = t
        .call_from(
            "get",
            "/v1/apps/{app_id}",
            &ap,
            app_basic,
            None,
            Some(page),
            StatusCode::OK,
        )
        .await;
    assert_eq!(allowed_origin(&r), None, "never CORS for an app key");
    let r = t
        .call(
            "patch",
            "/v1/apps/{app_id}",
            &ap,
            owner,
            Some(json!({"settings": {"blockBrowserSecrets": true, "allowedOrigins": null}})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(r.body["app"]["settings"]["blockBrowserSecrets"], true);
    assert!(r.body["app"]["settings"].get("allowedOrigins").is_none());
    let r = t
        .call(
            "get",
            "/v1/apps/{app_id}/audit",
            &format!("{ap}/audit?action=credential.exposed"),
            owner,
            None,
            StatusCode::OK,
        )
        .await;
    let exposed = r.body["events"].as_array().expect("events");
    assert_eq!(exposed.len(), 1, "once per key per window: {exposed:?}");
    assert_eq!(exposed[0]["target"]["id"], key.id.as_str());
    assert_eq!(exposed[0]["outcome"], "failure");
    assert_eq!(exposed[0]["details"]["refused"], true);
    let rotate = format!("{ap}/keys/{}/rotate", expiring.id);
    let bad = json!({"graceSeconds": 2_592_001});
    assert!(
        !request_errors(
            &t.doc,
            "/v1/apps/{app_id}/keys/{key_id}/rotate",
            "post",
            &bad
        )
        .is_empty()
    );
    t.call(
        "post",
        "/v1/apps/{app_id}/keys/{key_id}/rotate",
        &rotate,
        owner,
        Some(bad),
        StatusCode::BAD_REQUEST,
    )
    .await;
    let r = t
        .call(
            "post",
            "/v1/apps/{app_id}/keys/{key_id}/rotate",
            &rotate,
            owner,
            Some(json!({"graceSeconds": 60})),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(r.body["key"]["rotatedFrom"], expiring.id.as_str());
    // The new key inherits the old key's lifetime.
    assert_eq!(r.body["key"]["status"], "expiring");
    assert_eq!(
        unix(&r.body["key"]["expiresAt"]) - unix(&r.body["key"]["createdAt"]),
        lifetime
    );
    let rotated = key_of(&r);
    t.call(
        "post",
        "/v1/apps/{app_id}/keys/{key_id}/rotate",
        &rotate,
        owner,
        None,
        StatusCode::CONFLICT,
    )
    .await;
    let r = t
        .call(
            "post",
            "/v1/apps/{app_id}/keys/{key_id}/rotate",
            &format!("{ap}/keys/{}/rotate", rotated.id),
            owner,
            None,
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(r.body["key"]["status"], "expiring");
    assert_eq!(
        unix(&r.body["key"]["expiresAt"]) - unix(&r.body["key"]["createdAt"]),
        lifetime
    );
    let r = t
        .call(
            "get",
            "/v1/apps/{app_id}/keys/{key_id}",
            &format!("{ap}/keys/{}", expiring.id),
            owner,
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(r.body["key"]["replacedBy"], rotated.id.as_str());
    t.call(
        "get",
        "/v1/apps/{app_id}/keys",
        &format!("{ap}/keys"),
        owner,
        None,
        StatusCode::OK,
    )
    .await;
    let r = t
        .call(
            "post",
            "/v1/serviceAccounts/{sa_id}/keys",
            &format!("{sa}/keys"),
            owner,
            Some(json!({"displayName": "robot 2", "expiresAt": "2026-06-01T00:00:00+02:00"})),
            StatusCode::CREATED,
        )
        .await;
    let svc2 = key_of(&r);
    t.call(
        "post",
        "/v1/serviceAccounts/{sa_id}/keys/{key_id}/rotate",
        &format!("{sa}/keys/{}/rotate", svc2.id),
        owner,
        Some(json!({})),
        StatusCode::CREATED,
    )
    .await;
    t.call(
        "post",
        "/v1/serviceAccounts/{sa_id}/keys/{key_id}/rotate",
        &format!("{sa}/keys/{}/rotate", svc2.id),
        Some(svc_basic.as_str()),
        Some(json!({})),
        StatusCode::FORBIDDEN,
    )
    .await;
    // Rotation cannot pile up working keys: at most twice the live-key
    // limit (10 by default), keys in their grace period included.
    let r = t
        .call(
            "post",
            "/v1/serviceAccounts",
            "/v1/serviceAccounts",
            owner,
            Some(json!({"displayName": "rotor"})),
            StatusCode::CREATED,
        )
        .await;
    let rotor = format!("/v1/serviceAccounts/{}", id_of(&r, "serviceAccount"));
    let r = t
        .call(
            "post",
            "/v1/serviceAccounts/{sa_id}/keys",
            &format!("{rotor}/keys"),
            owner,
            Some(json!({"displayName": "spinning"})),
            StatusCode::CREATED,
        )
        .await;
    let mut current = key_of(&r).id;
    for _ in 1..20 {
        let r = t
            .call(
                "post",
                "/v1/serviceAccounts/{sa_id}/keys/{key_id}/rotate",
                &format!("{rotor}/keys/{current}/rotate"),
                owner,
                None,
                StatusCode::CREATED,
            )
            .await;
        current = key_of(&r).id;
    }
    let r = t
        .call(
            "post",
            "/v1/serviceAccounts/{sa_id}/keys/{key_id}/rotate",
            &format!("{rotor}/keys/{current}/rotate"),
            owner,
            None,
            StatusCode::CONFLICT,
        )
        .await;
    assert!(
        r.body["errors"][0]["title"]
            .as_str()
            .is_some_and(|t| t.contains("20 working keys")),
        "{:?}",
        r.body
    );
    let r = t
        .call(
            "get",
            "/v1/account/keys",
            "/v1/account/keys",
            owner,
            None,
            StatusCode::OK,
        )
        .await;
    let own = r.body["keys"][0]["id"]
        .as_str()
        .expect("own key")
        .to_string();
    for auth in [app_basic, Some(svc_basic.as_str()), op, alice] {
        t.call(
            "get",
            "/v1/account/keys",
            "/v1/account/keys",
            auth,
            None,
            StatusCode::FORBIDDEN,
        )
        .await;
    }
    t.call(
        "get",
        "/v1/account/keys",
        "/v1/account/keys?colour=red",
        owner,
        None,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let r = t
        .call(
            "post",
            "/v1/account/keys/{key_id}/rotate",
            &format!("/v1/account/keys/{own}/rotate"),
            owner,
            Some(json!({"graceSeconds": 2_592_000})),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(r.body["previousKey"]["id"], own.as_str());
    t.call(
        "post",
        "/v1/account/keys/{key_id}/rotate",
        &format!("/v1/account/keys/{own}/rotate"),
        Some(svc_basic.as_str()),
        None,
        StatusCode::FORBIDDEN,
    )
    .await;
    t.call(
        "post",
        "/v1/account/keys/{key_id}/rotate",
        "/v1/account/keys/act_0000000000000000000000/rotate",
        owner,
        None,
        StatusCode::NOT_FOUND,
    )
    .await;
    t.call(
        "get",
        "/v1/account/keys",
        "/v1/account/keys",
        owner,
        None,
        StatusCode::OK,
    )
    .await;
    let r = t
        .call(
            "get",
            "/v1/audit",
            "/v1/audit?limit=100",
            owner,
            None,
            StatusCode::OK,
        )
        .await;
    let events = r.body["events"].as_array().expect("events");
    assert!(
        events.iter().any(|e| e["outcome"] == "failure"),
        "{events:?}"
    );
    assert!(events.iter().any(|e| e["action"] == "key.rotated"));
    let r = t
        .call(
            "get",
            "/v1/audit",
            "/v1/audit?limit=1&action=key.rotated",
            owner,
            None,
            StatusCode::OK,
        )
        .await;
    let cursor = r.body["meta"]["afterCursor"]
        .as_str()
        .expect("cursor")
        .to_string();
    t.call(
        "get",
        "/v1/audit",
        &format!("/v1/audit?after={cursor}&action=key.rotated&since=2025-01-01T00:00:00Z&until=2030-01-01T00:00:00%2B01:00"),
        owner,
        None,
        StatusCode::OK,
    )
    .await;
    t.call(
        "get",
        "/v1/audit",
        "/v1/audit?action=POST%20%2Fv1%2Fapps%2F%7Bapp_id%7D%2Fkeys%2F%7Bkey_id%7D%2Frotate",
        owner,
        None,
        StatusCode::OK,
    )
    .await;
    let r = t
        .call(
            "get",
            "/v1/audit",
            "/v1/audit",
            Some(svc_basic.as_str()),
            None,
            StatusCode::OK,
        )
        .await;
    // A service account sees the events of the apps it reaches, and those
    // about itself and its keys.
    let events = r.body["events"].as_array().expect("events");
    assert!(
        events.iter().all(|e| e["appId"] == app_id.as_str()
            || e["target"]["id"] == sa_id.as_str()
            || e["details"]["owner"] == sa_id.as_str()),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["action"] == "serviceAccount.created"),
        "{events:?}"
    );
    for q in [
        "since=yesterday",
        "colour=red",
        "limit=0",
        "after=evt_nothing",
    ] {
        t.call(
            "get",
            "/v1/audit",
            &format!("/v1/audit?{q}"),
            owner,
            None,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    for auth in [app_basic, alice] {
        t.call(
            "get",
            "/v1/audit",
            "/v1/audit",
            auth,
            None,
            StatusCode::FORBIDDEN,
        )
        .await;
    }
    // accountId: required of the operator, refused from anyone else.
    let by_operator = format!("/v1/audit?accountId={account2}");
    for (path, auth) in [
        ("/v1/audit", op),
        (by_operator.as_str(), owner),
        (by_operator.as_str(), app_basic),
    ] {
        t.call(
            "get",
            "/v1/audit",
            path,
            auth,
            None,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    // The operator sees its own token id and address; customers see only
    // that the operator acted.
    let r = t
        .call("get", "/v1/audit", &by_operator, op, None, StatusCode::OK)
        .await;
    let created = r.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["action"] == "account.created")
        .expect("account.created")
        .clone();
    assert_eq!(created["actor"]["type"], "operator");
    assert!(created["actor"]["id"].is_string(), "{created}");
    assert!(created["address"].is_string(), "{created}");
    let account2_auth = account2_owner.basic();
    let r = t
        .call(
            "get",
            "/v1/audit",
            "/v1/audit?action=account.created",
            Some(&account2_auth),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(r.body["events"][0]["id"], created["id"]);
    assert_eq!(r.body["events"][0]["actor"]["type"], "operator");
    assert_eq!(r.body["events"][0]["actor"]["id"], Value::Null);
    assert_eq!(r.body["events"][0]["address"], Value::Null);
    let r = t
        .call(
            "get",
            "/v1/audit",
            &format!(
                "/v1/audit?accountId={}&action=token.minted",
                app.account_id()
            ),
            op,
            None,
            StatusCode::OK,
        )
        .await;
    let minted = r.body["events"].as_array().expect("events");
    assert!(
        minted
            .iter()
            .any(|e| e["target"]["id"] == "bob" && e["details"]["ttlSeconds"] == 600),
        "{minted:?}"
    );
    assert!(
        !r.body
            .to_string()
            .contains(bob_token.trim_start_matches("Bearer "))
    );
    let app_audit = format!("{ap}/audit");
    for auth in [app_basic, owner] {
        t.call(
            "get",
            "/v1/apps/{app_id}/audit",
            &app_audit,
            auth,
            None,
            StatusCode::OK,
        )
        .await;
    }
    t.call(
        "get",
        "/v1/apps/{app_id}/audit",
        &format!("{app_audit}?accountId={}", app.account_id()),
        owner,
        None,
        StatusCode::BAD_REQUEST,
    )
    .await;
    // The grant was revoked above: the app is out of the service account's reach.
    t.call(
        "get",
        "/v1/apps/{app_id}/audit",
        &app_audit,
        Some(svc_basic.as_str()),
        None,
        StatusCode::NOT_FOUND,
    )
    .await;
    for auth in [alice, op] {
        t.call(
            "get",
            "/v1/apps/{app_id}/audit",
            &app_audit,
            auth,
            None,
            StatusCode::FORBIDDEN,
        )
        .await;
    }
    t.call(
        "get",
        "/v1/apps/{app_id}/audit",
        "/v1/apps/ap_0000000000000000000000/audit",
        owner,
        None,
        StatusCode::NOT_FOUND,
    )
    .await;
    let r = t
        .call(
            "get",
            "/v1/apps/{app_id}/audit",
            &format!("{app_audit}?until=2020-01-01T00:00:00Z"),
            app_basic,
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        r.body,
        json!({"events": [], "meta": {"hasMore": false, "afterCursor": null}})
    );
    // A system event (key notice) in the log.
    app.clock.advance(time::Duration::days(1));
    let state = &app.server.as_ref().expect("running").state;
    let n = latchkey_server::maintenance::run_key_notices(state)
        .await
        .expect("notices");
    assert!(n > 0);
    let r = t
        .call(
            "get",
            "/v1/apps/{app_id}/audit",
            &app_audit,
            owner,
            None,
            StatusCode::OK,
        )
        .await;
    assert!(
        r.body["events"]
            .as_array()
            .expect("events")
            .iter()
            .any(|e| e["actor"]["type"] == "system"),
        "{:?}",
        r.body
    );
    t.call(
        "get",
        "/v1/audit",
        "/v1/audit?limit=100",
        owner,
        None,
        StatusCode::OK,
    )
    .await;

    // Forward-auth: a proxy asks with the original request's credential;
    // every method is answered alike (no route is configured here, so the
    // credential alone is checked).
    for m in [
        "get", "post", "put", "patch", "delete", "options", "head", "trace",
    ] {
        t.call(
            m,
            "/v1/forward-auth",
            "/v1/forward-auth?from=proxy",
            app_basic,
            None,
            StatusCode::OK,
        )
        .await;
    }

    // Deletions.
    for (template, path, auth) in [
        (
            "/v1/apps/{app_id}/users/{user}",
            format!("{ap}/users/bob"),
            app_basic,
        ),
        (
            "/v1/serviceAccounts/{sa_id}/keys/{key_id}",
            format!("{sa}/keys/{}", svc.id),
            owner,
        ),
        ("/v1/serviceAccounts/{sa_id}", sa.clone(), owner),
        ("/v1/serviceAccounts/{sa_id}", rotor.clone(), owner),
        (
            "/v1/apps/{app_id}/keys/{key_id}",
            format!("{ap}/keys/{}", key.id),
            owner,
        ),
        ("/v1/apps/{app_id}", ap.clone(), owner),
        (
            "/v1/accounts/{account_id}",
            format!("/v1/accounts/{account2}"),
            op,
        ),
    ] {
        t.call(
            "delete",
            template,
            &path,
            auth,
            None,
            StatusCode::NO_CONTENT,
        )
        .await;
    }

    // Every documented operation answered with a documented success.
    let all: BTreeSet<(String, String)> = operations(&t.doc).into_iter().collect();
    let missed: Vec<_> = all.difference(&t.covered).collect();
    assert!(
        missed.is_empty(),
        "operations the tour did not reach: {missed:?}"
    );
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
