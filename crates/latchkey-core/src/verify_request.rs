//! The body of `POST /v1/verify`, as the server reads it.
//!
//! Here rather than in the server so that the fuzz target `verify_body`
//! (fuzz/) can hold the reader to an oracle without building the HTTP
//! layer; the server's handler and its connection's direct path
//! (`latchkey-server/src/lane.rs`) both read the body with this type.

use serde::Deserialize;

/// A verification request: a credential and what the request it came
/// with targets.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VerifyRequest {
    /// The request's `Authorization` header value; absent (or null) for a
    /// signed request, which `signed_request` describes instead.
    #[serde(default)]
    pub authorization: Option<String>,
    /// An RFC 9421 signed request (issue 22): its method, URI and the
    /// headers its signature needs. The server takes exactly one of this
    /// and `authorization`.
    #[serde(default)]
    pub signed_request: Option<SignedRequestInput>,
    /// The app the request targets, if any.
    #[serde(default)]
    pub app_id: Option<String>,
    /// The app user (external id) the request targets, if any.
    #[serde(default)]
    pub user_id: Option<String>,
    /// The request's `Origin` header, if any (the request came from a
    /// browser).
    #[serde(default)]
    pub origin: Option<String>,
    /// Permissions the request needs: a name, or a list all of which the
    /// key must carry.
    #[serde(default, deserialize_with = "one_or_many")]
    pub permissions: Vec<String>,
    /// The address the request came from (for a key's `allowedIps`).
    #[serde(default)]
    pub ip: Option<std::net::IpAddr>,
    /// Credits the request spends (default 1; 0 checks without spending).
    #[serde(default, deserialize_with = "whole_number")]
    pub cost: Option<u32>,
}

/// A signed request as the operator's server saw it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SignedRequestInput {
    /// The method, as received (`GET`).
    pub method: String,
    /// The absolute URI the client called: scheme, authority, path and
    /// query (`https://api.example.com/v2/orders?limit=5`).
    pub uri: String,
    /// The request's header fields, names in any case: the two signature
    /// fields and every field the signature covers. A field sent several
    /// times is a list.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, HeaderValues>,
}

/// One header field's value, or its values in order.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum HeaderValues {
    One(String),
    Many(Vec<String>),
}

impl SignedRequestInput {
    /// The headers as (name, value) pairs, each value of a field once.
    pub fn header_pairs(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (name, values) in &self.headers {
            match values {
                HeaderValues::One(v) => out.push((name.to_ascii_lowercase(), v.clone())),
                HeaderValues::Many(vs) => {
                    out.extend(vs.iter().map(|v| (name.to_ascii_lowercase(), v.clone())))
                }
            }
        }
        out
    }
}

/// `"name"` or `["a", "b"]`; null for none.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::One(name)) => vec![name],
        Some(OneOrMany::Many(names)) => names,
    })
}

/// An integer from 0 to 2^32 - 1, also written with a zero fraction
/// (`3.0`, an integer to JSON Schema).
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    use serde::de::Error;
    let Some(n) = Option::<f64>::deserialize(d)? else {
        return Ok(None);
    };
    if n.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&n) {
        // In range and whole: the cast is exact.
        Ok(Some(n as u32))
    } else {
        Err(D::Error::custom(
            "cost must be an integer from 0 to 4294967295",
        ))
    }
}

impl std::fmt::Debug for VerifyRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyRequest")
            .field("authorization", &"<redacted>")
            .field(
                "signed_request",
                &self.signed_request.as_ref().map(|r| &r.method),
            )
            .field("app_id", &self.app_id)
            .field("user_id", &self.user_id)
            .field("origin", &self.origin)
            .field("permissions", &self.permissions)
            .field("ip", &self.ip)
            .field("cost", &self.cost)
            .finish()
    }
}

impl VerifyRequest {
    /// A body that is a JSON object and reads as a request; `None` for
    /// anything else (the server's router then answers with the precise
    /// error). The object check comes first because serde's derived
    /// structs also read an array, their members in order.
    pub fn from_json(bytes: &[u8]) -> Option<Self> {
        is_json_object(bytes)
            .then(|| serde_json::from_slice(bytes).ok())
            .flatten()
    }
}

/// Whether a JSON text is an object: its first byte after JSON's
/// whitespace is `{`. serde's derived structs also read an array (their
/// members in order), so `["evil"]` would be taken for
/// `{"displayName":"evil"}`; every body of the API is an object, as the
/// OpenAPI document says.
pub fn is_json_object(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        == Some(&b'{')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_objects_only() {
        let r = VerifyRequest::from_json(br#" {"authorization":"Basic x","appId":null}"#)
            .expect("an object");
        assert_eq!(r.authorization.as_deref(), Some("Basic x"));
        assert_eq!(r.app_id, None);
        // Without authorization it reads (the server then wants a
        // signedRequest instead).
        let r = VerifyRequest::from_json(br#"{"appId":"a"}"#).expect("an object");
        assert_eq!((r.authorization, r.signed_request), (None, None));
        let r = VerifyRequest::from_json(
            br#"{"signedRequest":{"method":"GET","uri":"https://h/p","headers":{"Signature":"s","X":["a","b"]}}}"#,
        )
        .expect("a signed request");
        let signed = r.signed_request.expect("signed");
        assert_eq!(
            signed.header_pairs(),
            vec![
                ("signature".to_string(), "s".to_string()),
                ("x".to_string(), "a".to_string()),
                ("x".to_string(), "b".to_string())
            ]
        );
        for body in [
            &br#"["Basic x"]"#[..],
            br#"{"authorization":"a","authorization":"a"}"#,
            br#"{"authorization":"a","x":1}"#,
            br#"{"signedRequest":{"method":"GET"}}"#,
            br#"{"signedRequest":{"method":"GET","uri":"u","body":"x"}}"#,
            b"\x0c{\"authorization\":\"a\"}",
            b"",
        ] {
            assert!(VerifyRequest::from_json(body).is_none(), "{body:?}");
        }
    }
}
