//! A checker for the subset of JSON Schema the document uses, the checks
//! of replies and request bodies against the document built on it, and the
//! router's routes read from its source.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::common::Reply;
use crate::openapi::{OPERATION_KEYS, deref, resolve};

// ---------------------------------------------------------------------------
// A checker for the subset of JSON Schema the document uses.

/// Keywords the checker validates.
pub const ASSERTIONS: &[&str] = &[
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
pub const ANNOTATIONS: &[&str] = &[
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

pub const TYPES: &[&str] = &[
    "null", "boolean", "object", "array", "string", "number", "integer",
];

pub fn has_type(value: &Value, t: &str) -> bool {
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
pub fn validate(doc: &Value, schema: &Value, value: &Value, at: &str, errs: &mut Vec<String>) {
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
pub fn lint_schema(doc: &Value, schema: &Value, at: &str, errs: &mut Vec<String>) {
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
pub fn response_schema<'a>(
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
    resolve(doc, resp).get("content").map(|c| {
        c.get(NDJSON)
            .map_or(&c["application/json"]["schema"], |m| &m["schema"])
    })
}

/// A streamed response of JSON lines; its schema is that of one line.
pub const NDJSON: &str = "application/x-ndjson";

fn is_ndjson(doc: &Value, path: &str, method: &str, status: &str) -> bool {
    let resp = resolve(doc, &doc["paths"][path][method]["responses"][status]);
    resp.get("content").is_some_and(|c| c.get(NDJSON).is_some())
}

/// Asserts that a reply is a documented response of the operation and
/// matches its schema and required headers.
pub fn check_reply(doc: &Value, path: &str, method: &str, reply: &Reply) {
    let status = reply.status.as_str();
    let resp = resolve(doc, &doc["paths"][path][method]["responses"][status]);
    match response_schema(doc, path, method, status) {
        Some(schema) if is_ndjson(doc, path, method, status) => {
            let ct = reply
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            assert!(
                ct.starts_with(NDJSON),
                "{method} {path} {status}: content-type {ct:?}"
            );
            let text = match &reply.body {
                Value::String(text) => text.clone(),
                // One line only: the reader took it for JSON.
                other => other.to_string(),
            };
            let mut lines = 0;
            for line in text.lines().filter(|l| !l.is_empty()) {
                let value: Value = serde_json::from_str(line).unwrap_or_else(|e| {
                    panic!("{method} {path} {status}: a line is not JSON ({e}): {line}")
                });
                assert_valid(
                    doc,
                    schema,
                    &value,
                    &format!("{method} {path} {status}, a line"),
                );
                lines += 1;
            }
            assert!(lines > 0, "{method} {path} {status}: no line");
        }
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

pub fn assert_valid(doc: &Value, schema: &Value, value: &Value, what: &str) {
    let mut errs = Vec::new();
    validate(doc, schema, value, "$", &mut errs);
    assert!(
        errs.is_empty(),
        "{what}: {value}\ndoes not match: {errs:#?}"
    );
}

pub fn request_errors(doc: &Value, path: &str, method: &str, body: &Value) -> Vec<String> {
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
    let src = include_str!("../../src/routes.rs");
    let decl = format!("pub const {name}: &str = \"");
    let start = src.find(&decl).expect("a constant of routes.rs") + decl.len();
    let len = src[start..].find('"').expect("closing quote");
    src[start..start + len].to_string()
}

/// The routes of the router, read from the source of `router.rs`: each
/// `.route("path", ...)` (or `.route(routes::NAME, ...)`) with the methods
/// chained in its second argument.
pub fn router_routes() -> BTreeMap<String, BTreeSet<String>> {
    let src = include_str!("../../src/router.rs");
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
