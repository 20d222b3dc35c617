//! The body of `POST /v1/verify` as the server reads it
//! (`VerifyRequest::from_json`, in core: the connection's direct path
//! calls it, and the router's `JsonBody` reads the same type with the same
//! object check), then the credential in it verified against the seeded
//! index.
//!
//! The oracle is serde_json's own reading of the object, member by
//! member: the body is taken exactly when its first byte after JSON's
//! whitespace is `{`, it is one JSON object, no name repeats, every name
//! is `authorization`, `signedRequest`, `appId`, `userId`, `origin`,
//! `permissions`, `ip` or `cost` (after unescaping), `authorization`,
//! `appId`, `userId` and `origin` are strings or `null` (absent:
//! `null`), `signedRequest` what serde reads as one or `null`, `permissions` a
//! string, a list of strings or `null`, `ip` an IP address's text or
//! `null`, `cost` a whole number from 0 to 2^32 - 1 (a zero fraction
//! allowed) or `null`; and then with those values.
#![no_main]

use latchkey_core::verify_request::{SignedRequestInput, VerifyRequest};
use latchkey_fuzz::{Members, verify_and_check};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq, Default)]
struct Fields {
    authorization: Option<String>,
    signed_request: Option<SignedRequestInput>,
    app_id: Option<String>,
    user_id: Option<String>,
    origin: Option<String>,
    permissions: Vec<String>,
    ip: Option<std::net::IpAddr>,
    cost: Option<u32>,
}

fn permissions(raw: &str) -> Option<Vec<String>> {
    match serde_json::from_str::<serde_json::Value>(raw).ok()? {
        serde_json::Value::Null => Some(Vec::new()),
        serde_json::Value::String(s) => Some(vec![s]),
        serde_json::Value::Array(list) => list
            .into_iter()
            .map(|v| match v {
                serde_json::Value::String(s) => Some(s),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

fn cost(raw: &str) -> Option<Option<u32>> {
    match serde_json::from_str::<serde_json::Value>(raw).ok()? {
        serde_json::Value::Null => Some(None),
        serde_json::Value::Number(n) => {
            let f = n.as_f64()?;
            (f.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&f)).then_some(Some(f as u32))
        }
        _ => None,
    }
}

fn expected(data: &[u8]) -> Option<Fields> {
    let first = data
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    if first != Some(&b'{') {
        return None;
    }
    let members = serde_json::from_slice::<Members<'_>>(data).ok()?;
    let mut fields = Fields::default();
    let mut seen = Vec::new();
    for (name, raw) in &members.0 {
        let name = name.text.as_ref();
        if seen.contains(&name) {
            return None;
        }
        seen.push(name);
        match name {
            "permissions" => {
                fields.permissions = permissions(raw.get())?;
                continue;
            }
            "cost" => {
                fields.cost = cost(raw.get())?;
                continue;
            }
            "signedRequest" => {
                fields.signed_request =
                    serde_json::from_str::<Option<SignedRequestInput>>(raw.get()).ok()?;
                continue;
            }
            "ip" => {
                fields.ip = match serde_json::from_str::<Option<String>>(raw.get()).ok()? {
                    None => None,
                    Some(text) => Some(text.parse().ok()?),
                };
                continue;
            }
            _ => {}
        }
        let value = serde_json::from_str::<Option<String>>(raw.get()).ok()?;
        let slot = match name {
            "authorization" => &mut fields.authorization,
            "appId" => &mut fields.app_id,
            "userId" => &mut fields.user_id,
            "origin" => &mut fields.origin,
            _ => return None,
        };
        *slot = value;
    }
    Some(fields)
}

fuzz_target!(|data: &[u8]| {
    let ours = VerifyRequest::from_json(data).map(|r| Fields {
        authorization: r.authorization,
        signed_request: r.signed_request,
        app_id: r.app_id,
        user_id: r.user_id,
        origin: r.origin,
        permissions: r.permissions,
        ip: r.ip,
        cost: r.cost,
    });
    assert_eq!(ours, expected(data), "{:?}", String::from_utf8_lossy(data));
    if let Some(Fields {
        authorization: Some(authorization),
        ..
    }) = ours
    {
        let _ = verify_and_check(authorization.as_bytes());
    }
});
