//! A signed request as a verifier received it, and the steps every
//! verifier takes with it: the server (its API, forward-auth, the gateway,
//! `/v1/verify`) and the in-process replica alike call
//! [`ReceivedRequest::verify`].
//!
//! What depends on the verifier: whether it holds the body to
//! `Content-Digest` (the API and the gateway read it; forward-auth never
//! sees it, `/v1/verify` and a replica may not be given it). Where the body
//! is not checked, a request whose method may carry one must carry a
//! `nonce`, so that its signature is used once (on that verifier) with
//! whatever body; the nonces of verified signatures are kept in a
//! [`NonceCache`] for as long as the signature could be accepted.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{
    PreparedSignature, RequestParts, SignedRequestError, SignedRequestPolicy, body_matches_digest,
    prepare,
};
use crate::index::KeyIndex;
use crate::verify::Verified;

/// The most nonces a [`NonceCache`] keeps; past it, a signature with a new
/// nonce is refused ([`SignedRefusal::NoncesFull`]) until old ones expire.
/// Each is a few dozen bytes.
pub const MAX_NONCES: usize = 1_000_000;

/// A request's parts as a signature covers them, owned. `Debug` leaves the
/// header values out (a cookie may be among them).
#[derive(Clone)]
pub struct ReceivedRequest {
    pub method: String,
    /// `http` or `https`.
    pub scheme: String,
    /// The host (and port) the client called.
    pub authority: String,
    /// The path; empty is read as `/`.
    pub path: String,
    pub query: Option<String>,
    /// Every header field, names lower case, values as received (a value
    /// that is not text is read lossily: the base then differs from what
    /// was signed and the request is refused, rather than a covered field
    /// silently left out).
    pub headers: Vec<(String, String)>,
    /// The request says it has a body (`Content-Length` other than 0, or
    /// `Transfer-Encoding`).
    pub has_body: bool,
}

impl std::fmt::Debug for ReceivedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceivedRequest")
            .field("method", &self.method)
            .field("scheme", &self.scheme)
            .field("authority", &self.authority)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl ReceivedRequest {
    /// The request from its method, scheme, authority, path and query, and
    /// its header fields (name, raw value).
    pub fn new<'h>(
        method: &str,
        scheme: &str,
        authority: String,
        path: &str,
        query: Option<&str>,
        headers: impl IntoIterator<Item = (&'h str, &'h [u8])>,
    ) -> Self {
        let headers: Vec<(String, String)> = headers
            .into_iter()
            .map(|(n, v)| {
                (
                    n.to_ascii_lowercase(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect();
        let has_body = headers
            .iter()
            .any(|(n, v)| (n == "content-length" && v.trim() != "0") || n == "transfer-encoding");
        Self {
            method: method.to_string(),
            scheme: scheme.to_ascii_lowercase(),
            authority,
            path: path.to_string(),
            query: query.map(str::to_string),
            headers,
            has_body,
        }
    }

    /// The parts the signature base is rebuilt from.
    pub fn parts(&self) -> RequestParts<'_> {
        RequestParts {
            method: &self.method,
            scheme: &self.scheme,
            authority: &self.authority,
            path: if self.path.is_empty() {
                "/"
            } else {
                &self.path
            },
            query: self.query.as_deref(),
            headers: &self.headers,
            has_body: self.has_body,
        }
    }

    /// Whether the request authenticates with a signature (it has
    /// `Signature-Input`).
    pub fn is_signed(&self) -> bool {
        self.headers.iter().any(|(n, _)| n == "signature-input")
    }

    /// The one value of header field `name` (lower case); an error when it
    /// was sent more than once.
    pub fn one_field(&self, name: &str) -> Result<Option<&str>, SignedRequestError> {
        let mut values = self.headers.iter().filter(|(n, _)| n == name);
        let first = values.next();
        if values.next().is_some() {
            return Err(SignedRequestError::NotOne);
        }
        Ok(first.map(|(_, v)| v.as_str()))
    }

    /// Whether `body` is the one the signature covers
    /// ([`body_matches_digest`] with the request's `Content-Digest`).
    pub fn check_body(&self, body: &[u8]) -> Result<(), SignedRequestError> {
        let digest = self
            .one_field("content-digest")
            .map_err(|_| SignedRequestError::DigestSyntax)?;
        body_matches_digest(digest, body)
    }

    /// Verifies the request's signature at `now`: `Signature-Input` and
    /// `Signature` read and the base rebuilt ([`prepare`]); a nonce
    /// required when `body_checked` is false and the method may carry a
    /// body; the key's HMAC compared ([`KeyIndex::verify_signed_request`]);
    /// then the nonce, if any, recorded in `nonces` (a second use is
    /// refused). `body_checked`: the verifier holds the body to
    /// `Content-Digest` ([`Self::check_body`]), before or after this.
    pub fn verify(
        &self,
        index: &KeyIndex,
        nonces: &NonceCache,
        body_checked: bool,
        now: i64,
    ) -> Result<Verified, SignedRefusal> {
        let policy = SignedRequestPolicy::default();
        let input = self.one_field("signature-input")?;
        let signature = self.one_field("signature")?;
        let (Some(input), Some(signature)) = (input, signature) else {
            return Err(SignedRequestError::Half.into());
        };
        let prepared = prepare(input, signature, &self.parts(), now, policy)?;
        let may_have_body = !matches!(self.method.as_str(), "GET" | "HEAD" | "OPTIONS");
        if !body_checked && may_have_body && prepared.nonce.is_none() {
            return Err(SignedRequestError::NonceRequired.into());
        }
        let verified = index
            .verify_signed_request(&prepared, now)
            .map_err(|_| SignedRefusal::Mismatch)?;
        nonces.remember(&prepared, now, policy)?;
        Ok(verified)
    }
}

/// Why a signed request is refused; the message says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignedRefusal {
    /// The signature's fields, coverage or time.
    #[error("{0}")]
    Request(#[from] SignedRequestError),
    #[error(
        "the keyid does not name a live key with a secret, or the signature does not match the request"
    )]
    Mismatch,
    #[error("this nonce was already used; sign each request afresh")]
    Replayed,
    /// [`MAX_NONCES`] are remembered (an overload, not the client's fault).
    #[error("too many signed-request nonces are remembered; retry shortly")]
    NoncesFull,
}

/// The nonces of verified signatures, per key, each with when it may be
/// forgotten: its `created` plus the window and the leeway. Only the
/// nonces of signatures that verified are kept, so nobody can fill it
/// without a key's secret; it holds at most [`MAX_NONCES`].
#[derive(Debug, Default)]
pub struct NonceCache {
    seen: Mutex<HashMap<(String, String), i64>>,
}

impl NonceCache {
    /// Records the nonce of a verified signature, if it has one; refused
    /// when it was seen already (a replay) or the cache is full.
    pub fn remember(
        &self,
        prepared: &PreparedSignature,
        now: i64,
        policy: SignedRequestPolicy,
    ) -> Result<(), SignedRefusal> {
        let Some(nonce) = &prepared.nonce else {
            return Ok(());
        };
        let until = prepared
            .created
            .saturating_add(policy.window_seconds)
            .saturating_add(policy.leeway_seconds);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let entry = (prepared.key_id.clone(), nonce.clone());
        if seen.get(&entry).is_some_and(|&t| t >= now) {
            return Err(SignedRefusal::Replayed);
        }
        if seen.len() >= MAX_NONCES {
            seen.retain(|_, &mut t| t >= now);
            if seen.len() >= MAX_NONCES {
                return Err(SignedRefusal::NoncesFull);
            }
        }
        seen.insert(entry, until);
        Ok(())
    }
}
