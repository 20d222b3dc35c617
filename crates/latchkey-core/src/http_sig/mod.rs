//! Signed requests (issue 22): RFC 9421 HTTP Message Signatures with
//! `hmac-sha256` under a key's secret, which never goes on the wire.
//!
//! A request carries `Signature-Input` and `Signature` (RFC 8941 / 9651
//! dictionaries, read with the `sfv` crate). [`prepare`] reads them, checks
//! what the signature must cover and when it was made, and rebuilds the
//! signature base (RFC 9421 §2.5) from the request as Latchkey received it;
//! [`KeyIndex::verify_signed_request`] looks the key up by `keyid` and
//! compares the HMAC in constant time. [`content_digest_matches`] checks a
//! body against its `Content-Digest` (RFC 9530), which the signature
//! covers.
//!
//! What a signature must cover, so that a captured request cannot be
//! replayed for another method, target or body: `@method`; `@target-uri`,
//! or `@authority` and `@path` (and `@query` when the request has a query);
//! `content-digest` when the request has a body or its method may carry one
//! (every method but GET, HEAD and OPTIONS). `created` is required and
//! must be within [`SignedRequestPolicy::window_seconds`] of now (and not
//! further ahead than the leeway); `expires`, when present, must not have
//! passed. A `nonce` is read for the verifier, which keeps the ones it has
//! seen in a [`NonceCache`] (the index is stateless); [`ReceivedRequest`]
//! puts these steps together for every verifier. Component parameters (`;sf`, `;key`,
//! `;bs`, `;req`, `;name`) are not supported, and a request carries one
//! signature.

use sfv::{BareItem, Dictionary, FieldType, Item, List, ListEntry, Parser};

mod received;
pub use received::{MAX_NONCES, NonceCache, ReceivedRequest, SignedRefusal};

use crate::index::KeyIndex;
use crate::verify::{AuthError, Verified, key_principal};

/// The one algorithm Latchkey verifies: HMAC-SHA256 under the key's secret.
pub const ALGORITHM: &str = "hmac-sha256";

/// Largest `Signature-Input` or `Signature` value read (4 KiB).
pub const MAX_FIELD_LEN: usize = 4096;

/// Longest `nonce` taken (the server remembers each for the window).
pub const MAX_NONCE_LEN: usize = 128;

/// How old a signature may be, and how far ahead of this clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedRequestPolicy {
    /// `created` may be at most this many seconds old (default 300).
    pub window_seconds: i64,
    /// `created` may be at most this many seconds in the future (the
    /// signer's clock running ahead; default 30).
    pub leeway_seconds: i64,
}

impl Default for SignedRequestPolicy {
    fn default() -> Self {
        Self {
            window_seconds: 300,
            leeway_seconds: 30,
        }
    }
}

/// A request as the signature base needs it.
#[derive(Debug, Clone)]
pub struct RequestParts<'a> {
    pub method: &'a str,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// The `Host` (or `:authority`): host and, when not the default, port.
    pub authority: &'a str,
    /// The absolute path, `/` for an empty one.
    pub path: &'a str,
    /// The query without its `?`; `None` when the target has none.
    pub query: Option<&'a str>,
    /// Header fields: names in any case, values as received (a field sent
    /// several times appears several times).
    pub headers: &'a [(String, String)],
    /// Whether the request has a body (then `content-digest` must be
    /// covered).
    pub has_body: bool,
}

impl RequestParts<'_> {
    /// Every value of a header field, combined as RFC 9421 §2.1 says:
    /// each trimmed, joined with `, `. `None` when the field is absent.
    fn field(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim_matches([' ', '\t']))
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    }
}

/// Why a signed request is refused before its key is looked up; the
/// message says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignedRequestError {
    #[error("Signature-Input and Signature must be sent together")]
    Half,
    #[error("Signature-Input or Signature is larger than 4 KiB")]
    TooLarge,
    #[error("{0} is not a structured-field dictionary (RFC 8941)")]
    Syntax(&'static str),
    #[error("send exactly one signature (one member in Signature-Input and in Signature)")]
    NotOne,
    #[error("Signature has no byte sequence for the label of Signature-Input")]
    NoSignature,
    #[error("the signature's components must be an inner list of strings without parameters")]
    Components,
    #[error("the signature must name its key in keyid (a string: the key id)")]
    KeyId,
    #[error("the signature's alg, when given, must be hmac-sha256")]
    Algorithm,
    #[error("the signature must carry created (an integer: Unix seconds)")]
    Created,
    #[error(
        "the signature was created more than {0} seconds ago, or in the future: sign each request when it is sent"
    )]
    Stale(i64),
    #[error("the signature has expired (expires)")]
    Expired,
    #[error("the signature's nonce must be a string of at most 128 characters")]
    Nonce,
    #[error("the signature must cover {0}")]
    NotCovered(&'static str),
    #[error("the signature covers {0}, which the request does not have")]
    Absent(String),
    #[error("the component {0:?} is not supported")]
    Unsupported(String),
    #[error("Content-Digest must be a dictionary with a sha-256 or sha-512 byte sequence")]
    DigestSyntax,
    #[error("Content-Digest does not match the body")]
    DigestMismatch,
    #[error(
        "a request whose method may carry a body must carry a nonce where its body is not checked \
         against Content-Digest (forward-auth, /v1/verify, a replica not given the body)"
    )]
    NonceRequired,
}

/// A signed request read and checked, its key not yet looked up.
pub struct PreparedSignature {
    /// The `keyid`: the id of the key whose secret signed.
    pub key_id: String,
    pub created: i64,
    pub nonce: Option<String>,
    /// The signature base Latchkey rebuilt (RFC 9421 §2.5).
    base: String,
    signature: Vec<u8>,
}

impl std::fmt::Debug for PreparedSignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedSignature")
            .field("key_id", &self.key_id)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

impl PreparedSignature {
    /// The signature base, for tests and logs of a test's own requests.
    pub fn base(&self) -> &str {
        &self.base
    }
}

fn dictionary(text: &str, what: &'static str) -> Result<Dictionary, SignedRequestError> {
    if text.len() > MAX_FIELD_LEN {
        return Err(SignedRequestError::TooLarge);
    }
    Parser::new(text)
        .parse::<Dictionary>()
        .map_err(|_| SignedRequestError::Syntax(what))
}

/// The one member of a dictionary.
fn only_member(dict: Dictionary) -> Result<(String, ListEntry), SignedRequestError> {
    if dict.len() != 1 {
        return Err(SignedRequestError::NotOne);
    }
    dict.into_iter()
        .next()
        .map(|(k, v)| (k.as_str().to_string(), v))
        .ok_or(SignedRequestError::NotOne)
}

/// Reads `Signature-Input` and `Signature`, checks coverage and time at
/// `now`, and rebuilds the signature base from `req`.
pub fn prepare(
    signature_input: &str,
    signature: &str,
    req: &RequestParts<'_>,
    now: i64,
    policy: SignedRequestPolicy,
) -> Result<PreparedSignature, SignedRequestError> {
    let (label, entry) = only_member(dictionary(signature_input, "Signature-Input")?)?;
    let ListEntry::InnerList(inner) = entry else {
        return Err(SignedRequestError::Components);
    };
    let signatures = dictionary(signature, "Signature")?;
    let (sig_label, sig_entry) = only_member(signatures)?;
    let bytes = match sig_entry {
        ListEntry::Item(Item {
            bare_item: BareItem::ByteSequence(bytes),
            ..
        }) if sig_label == label => bytes,
        _ => return Err(SignedRequestError::NoSignature),
    };

    // Parameters.
    let param = |name: &str| {
        inner
            .params
            .iter()
            .find(|(k, _)| k.as_str() == name)
            .map(|(_, v)| v)
    };
    let key_id = match param("keyid") {
        Some(BareItem::String(s)) => s.as_str().to_string(),
        _ => return Err(SignedRequestError::KeyId),
    };
    match param("alg") {
        None => {}
        Some(BareItem::String(s)) if s.as_str() == ALGORITHM => {}
        Some(_) => return Err(SignedRequestError::Algorithm),
    }
    let created = match param("created") {
        Some(BareItem::Integer(n)) => i64::from(*n),
        _ => return Err(SignedRequestError::Created),
    };
    if created < now.saturating_sub(policy.window_seconds)
        || created > now.saturating_add(policy.leeway_seconds)
    {
        return Err(SignedRequestError::Stale(policy.window_seconds));
    }
    match param("expires") {
        None => {}
        Some(BareItem::Integer(n)) if i64::from(*n) > now => {}
        Some(_) => return Err(SignedRequestError::Expired),
    }
    let nonce = match param("nonce") {
        None => None,
        Some(BareItem::String(s)) if s.as_str().len() <= MAX_NONCE_LEN => {
            Some(s.as_str().to_string())
        }
        Some(_) => return Err(SignedRequestError::Nonce),
    };

    // Components: strings without parameters, each once.
    let mut components: Vec<&str> = Vec::with_capacity(inner.items.len());
    for item in &inner.items {
        match (&item.bare_item, item.params.is_empty()) {
            (BareItem::String(s), true) if !components.contains(&s.as_str()) => {
                components.push(s.as_str());
            }
            _ => return Err(SignedRequestError::Components),
        }
    }
    let covers = |c: &str| components.contains(&c);
    if !covers("@method") {
        return Err(SignedRequestError::NotCovered("@method"));
    }
    if !covers("@target-uri") {
        if !(covers("@authority") && covers("@path")) {
            return Err(SignedRequestError::NotCovered(
                "@target-uri, or @authority and @path",
            ));
        }
        if req.query.is_some() && !covers("@query") {
            return Err(SignedRequestError::NotCovered(
                "@query (the request has a query)",
            ));
        }
    }
    // A body the verifier may not see (forward-auth, HTTP/2 without a
    // length) must still be bound: every method that may carry one covers
    // the digest.
    let may_have_body = req.has_body || !matches!(req.method, "GET" | "HEAD" | "OPTIONS");
    if may_have_body && !covers("content-digest") {
        return Err(SignedRequestError::NotCovered(
            "content-digest (the request has a body, or its method may carry one: every method \
             but GET, HEAD and OPTIONS)",
        ));
    }

    let base = signature_base(&components, &inner, req)?;
    Ok(PreparedSignature {
        key_id,
        created,
        nonce,
        base,
        signature: bytes,
    })
}

/// The signature base (RFC 9421 §2.5): each covered component's line, then
/// the signature's parameters as the canonical serialization of its inner
/// list.
fn signature_base(
    components: &[&str],
    inner: &sfv::InnerList,
    req: &RequestParts<'_>,
) -> Result<String, SignedRequestError> {
    let mut base = String::new();
    for c in components {
        let value = component_value(c, req)?;
        base.push('"');
        base.push_str(c);
        base.push_str("\": ");
        base.push_str(&value);
        base.push('\n');
    }
    let params: List = vec![ListEntry::InnerList(inner.clone())];
    let serialized = params.serialize().ok_or(SignedRequestError::Components)?;
    base.push_str("\"@signature-params\": ");
    base.push_str(&serialized);
    Ok(base)
}

/// The value of one covered component (RFC 9421 §2.1, §2.2).
fn component_value(name: &str, req: &RequestParts<'_>) -> Result<String, SignedRequestError> {
    let query = || {
        req.query
            .map_or_else(|| "?".to_string(), |q| format!("?{q}"))
    };
    Ok(match name {
        "@method" => req.method.to_string(),
        "@target-uri" => match req.query {
            Some(q) => format!("{}://{}{}?{q}", scheme(req), authority(req), req.path),
            None => format!("{}://{}{}", scheme(req), authority(req), req.path),
        },
        "@authority" => authority(req),
        "@scheme" => scheme(req),
        "@path" => req.path.to_string(),
        "@query" => query(),
        "@request-target" => match req.query {
            Some(q) => format!("{}?{q}", req.path),
            None => req.path.to_string(),
        },
        derived if derived.starts_with('@') => {
            return Err(SignedRequestError::Unsupported(derived.to_string()));
        }
        field => {
            if field.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(SignedRequestError::Unsupported(field.to_string()));
            }
            req.field(field)
                .ok_or_else(|| SignedRequestError::Absent(field.to_string()))?
        }
    })
}

fn scheme(req: &RequestParts<'_>) -> String {
    req.scheme.to_ascii_lowercase()
}

/// The authority, lower case, without the scheme's default port.
fn authority(req: &RequestParts<'_>) -> String {
    let lower = req.authority.to_ascii_lowercase();
    let default = match scheme(req).as_str() {
        "https" => ":443",
        _ => ":80",
    };
    match lower.strip_suffix(default) {
        Some(host) => host.to_string(),
        None => lower,
    }
}

/// Whether `body` matches `Content-Digest` (RFC 9530): every `sha-256` and
/// `sha-512` member must match, and at least one must be present; other
/// algorithms are ignored.
pub fn content_digest_matches(header: &str, body: &[u8]) -> Result<(), SignedRequestError> {
    use sha2::Digest;
    let dict = Parser::new(header)
        .parse::<Dictionary>()
        .map_err(|_| SignedRequestError::DigestSyntax)?;
    let mut checked = false;
    for (alg, entry) in &dict {
        let expected: Vec<u8> = match alg.as_str() {
            "sha-256" => sha2::Sha256::digest(body).to_vec(),
            "sha-512" => sha2::Sha512::digest(body).to_vec(),
            _ => continue,
        };
        let ListEntry::Item(Item {
            bare_item: BareItem::ByteSequence(got),
            ..
        }) = entry
        else {
            return Err(SignedRequestError::DigestSyntax);
        };
        if !crate::crypto::ct_eq_words(&expected, got) {
            return Err(SignedRequestError::DigestMismatch);
        }
        checked = true;
    }
    if checked {
        Ok(())
    } else {
        Err(SignedRequestError::DigestSyntax)
    }
}

/// Whether a signed request's `body` is the one its signature covers: it
/// matches the request's `Content-Digest` value `digest` (RFC 9530), or it
/// is empty and there is none (a body without a digest is refused: HTTP/2
/// needs no Content-Length, so the signature's rules could not ask for
/// one, and nothing would bind it).
pub fn body_matches_digest(digest: Option<&str>, body: &[u8]) -> Result<(), SignedRequestError> {
    match digest {
        Some(digest) => content_digest_matches(digest, body),
        None if !body.is_empty() => Err(SignedRequestError::NotCovered(
            "content-digest (the request has a body): send Content-Digest and sign it",
        )),
        None => Ok(()),
    }
}

impl KeyIndex {
    /// A signed request whose base [`prepare`] rebuilt: the key named by
    /// `keyid`, live at `now`, holding a secret whose HMAC-SHA256 of the
    /// base is the signature (compared in constant time). The principal is
    /// the key's own scope, as with Basic.
    pub fn verify_signed_request(
        &self,
        prepared: &PreparedSignature,
        now: i64,
    ) -> Result<Verified, AuthError> {
        self.with_key(prepared.key_id.as_bytes(), |key| {
            let matches = !key.is_expired(now)
                && key
                    .hmac_key()
                    .filter(|_| key.holds_secret())
                    .is_some_and(|hmac| hmac.verify(prepared.base.as_bytes(), &prepared.signature));
            matches.then(|| {
                key.touch(now);
                Verified {
                    principal: key_principal(key, &key.owner),
                    expires_at: key.expires_at(),
                    issued_at: Some(prepared.created),
                    policy: key.policy().cloned(),
                    ratelimit: key.ratelimit(),
                }
            })
        })
        .flatten()
        .ok_or(AuthError::BadCredentials)
    }
}

#[cfg(test)]
mod tests;
