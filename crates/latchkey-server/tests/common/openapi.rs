//! Reading `docs/openapi.json`: its operations, `$ref`s and path
//! templates (tests/openapi/ and tests/cross_tenant.rs).
#![allow(dead_code)]

use reqwest::Method;
use serde_json::Value;

/// The operation keys of an OpenAPI path item.
pub const OPERATION_KEYS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// `docs/openapi.json`, parsed.
pub fn doc_from_disk() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    let text = std::fs::read_to_string(path).expect("read docs/openapi.json");
    serde_json::from_str(&text).expect("docs/openapi.json is JSON")
}

/// Every (path, method) the document lists, method in lower case.
pub fn operations(doc: &Value) -> Vec<(String, String)> {
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
pub fn deref<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    doc.pointer(reference.strip_prefix('#')?)
}

/// Follows `$ref`s of a response, parameter or request body object.
pub fn resolve<'a>(doc: &'a Value, mut v: &'a Value) -> &'a Value {
    while let Some(r) = v.get("$ref").and_then(Value::as_str) {
        v = deref(doc, r).unwrap_or_else(|| panic!("dangling $ref {r}"));
    }
    v
}

/// A concrete path: each `{param}` of the template replaced, in order.
pub fn fill(template: &str, values: &[impl AsRef<str>]) -> String {
    let mut out = String::new();
    let mut values = values.iter();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').expect("closing brace") + open;
        out.push_str(&rest[..open]);
        out.push_str(values.next().expect("a value for every parameter").as_ref());
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    assert!(values.next().is_none(), "too many values for {template}");
    out
}

/// The names of a template's `{param}`s, in order.
pub fn path_params(template: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').expect("closing brace") + open;
        out.push(rest[open + 1..close].to_string());
        rest = &rest[close + 1..];
    }
    out
}

/// The method of an operation key (`get`, `post`, …).
pub fn method(name: &str) -> Method {
    Method::from_bytes(name.to_ascii_uppercase().as_bytes()).expect("method")
}
