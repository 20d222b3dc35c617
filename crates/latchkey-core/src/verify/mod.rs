//! Verification of an `Authorization` header against the key index.
//!
//! This is the hot path: it reads the in-memory [`KeyIndex`] only, costs one
//! constant-time comparison (Basic) or one HMAC (JWT), and never touches the
//! store. Every failure is an [`AuthError`] whose message says what to fix
//! without echoing the credential.

mod basic;
mod bearer;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use crate::ids::{ID_BODY_LEN, IdKind, is_base62};
use crate::index::{KeyIndex, KeyOwner, LiveKey};
use crate::jwt::{self, JwtError};
use crate::policy::{LivePolicy, RateLimit};
use crate::principal::Principal;
use crate::secret::{OPERATOR_TOKEN_PREFIX, SecretFormatError, VERIFIER_TOKEN_PREFIX};

/// Largest `Authorization` header value accepted.
pub const MAX_HEADER_LEN: usize = jwt::MAX_TOKEN_LEN + 16;

/// Settings of the verification path.
#[derive(Debug, Clone, Copy)]
pub struct VerifyOptions {
    /// Seconds of clock skew tolerated on `exp` and `nbf`.
    pub leeway_seconds: i64,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self { leeway_seconds: 30 }
    }
}

/// A verified credential. The key behind it, if any, is the principal's
/// `key_id`.
#[derive(Debug, Clone)]
pub struct Verified {
    pub principal: Principal,
    /// When the credential stops working, if it does (unix seconds): the
    /// earlier of a JWT's `exp` and its key's expiry; for Basic, the key's
    /// expiry. What introspection reports as `exp`.
    pub expires_at: Option<i64>,
    /// A JWT's `iat`, if it carried one.
    pub issued_at: Option<i64>,
    /// The key's policy, when it has one (see `crate::policy`).
    pub policy: Option<Arc<LivePolicy>>,
    /// The rate limit that applies: the key's own, else its app's default.
    pub ratelimit: Option<RateLimit>,
}

impl Verified {
    /// A credential that carries no times (operator and verifier tokens).
    fn timeless(principal: Principal) -> Self {
        Self {
            principal,
            expires_at: None,
            issued_at: None,
            policy: None,
            ratelimit: None,
        }
    }
}

/// Why a credential was refused. All answer 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials: send an Authorization header with Basic or Bearer credentials")]
    Missing,
    #[error("the Authorization header must use the Basic or Bearer scheme")]
    Scheme,
    #[error("the Authorization header is too large")]
    TooLarge,
    #[error("Basic credentials must be base64(keyId:secret)")]
    MalformedBasic,
    #[error("the key id is not an app_, act_ or svc_ key id")]
    MalformedKeyId,
    #[error("the secret is malformed: {0}")]
    MalformedSecret(SecretFormatError),
    #[error("unknown key id or wrong secret")]
    BadCredentials,
    #[error("unknown operator token")]
    BadOperatorToken,
    #[error("unknown verifier token (deleted?)")]
    BadVerifierToken,
    /// Same message as a bad signature: whether a key id is live is not
    /// told to a caller who cannot sign with it.
    #[error("the JWT's kid does not name a live key, or its signature does not match")]
    UnknownKid,
    #[error("{0}")]
    Jwt(JwtError),
    #[error("the JWT's kid does not name a live key, or its signature does not match")]
    BadSignature,
    #[error("the app accepts JWTs that live at most {0} seconds: set exp (and iat) within that")]
    TokenTooLong(i64),
    #[error("the JWT has expired (exp)")]
    TokenExpired,
    #[error("the JWT is not valid yet (nbf)")]
    NotYetValid,
    #[error("the JWT must carry a scope claim")]
    MissingScope,
    #[error("a key of this kind may not sign scope {0:?}")]
    ScopeNotAllowed(String),
    /// A signed request (RFC 9421) refused, and why.
    #[error("signed request: {0}")]
    SignedRequest(String),
}

impl AuthError {
    /// The error code of the HTTP error body and of `/v1/verify`.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::TokenExpired => "token_expired",
            _ => "unauthorized",
        }
    }
}

impl KeyIndex {
    /// Verifies the value of an `Authorization` header at time `now`.
    ///
    /// Spaces and tabs before and after the value are not part of it
    /// ([`trim_ows`]), whatever the scheme, so a value forwarded as it was
    /// received gets the same answer as the value itself.
    pub fn verify_authorization(
        &self,
        header: Option<&[u8]>,
        now: i64,
        opts: VerifyOptions,
    ) -> Result<Verified, AuthError> {
        let header = trim_ows(header.ok_or(AuthError::Missing)?);
        if header.len() > MAX_HEADER_LEN {
            return Err(AuthError::TooLarge);
        }
        if let Some(answer) = self.verify_common(header, now, opts) {
            return answer;
        }
        self.verify_general(header, now, opts)
    }

    /// Every form of header, every error. `header` has no optional
    /// whitespace around it.
    pub(crate) fn verify_general(
        &self,
        header: &[u8],
        now: i64,
        opts: VerifyOptions,
    ) -> Result<Verified, AuthError> {
        let header = std::str::from_utf8(header).map_err(|_| AuthError::Scheme)?;
        let (scheme, rest) = header.split_once(' ').ok_or(AuthError::Scheme)?;
        let credentials = rest.trim_start_matches(' ');
        if scheme.eq_ignore_ascii_case("basic") {
            self.verify_basic(credentials, now)
        } else if scheme.eq_ignore_ascii_case("bearer") {
            if credentials.starts_with(OPERATOR_TOKEN_PREFIX) {
                self.verify_operator_token(credentials)
            } else if credentials.starts_with(VERIFIER_TOKEN_PREFIX) {
                self.verify_verifier_token(credentials)
            } else {
                self.verify_jwt(credentials, now, opts)
            }
        } else {
            Err(AuthError::Scheme)
        }
    }

    /// The common forms of a header, read as bytes: Basic with a key id and
    /// secret of the usual lengths, and Bearer with a JWT whose header
    /// [`jwt::parse_fast`] reads. `None` for anything else, which then
    /// takes the general path above.
    ///
    /// What is answered here is all ASCII (the scheme, the spaces, and
    /// either a Basic credential that decodes as base64 and equals a key's
    /// ASCII encoding, or a token checked below), so the general path would
    /// read the same text: its UTF-8 check passes and its `str` operations
    /// act byte for byte. A Basic credential is answered here only when the
    /// fast path accepts it; a JWT whose header `parse_fast` reads gets the
    /// general path's answer, whatever it is, since from there both run the
    /// same code on the same parsed token.
    pub(crate) fn verify_common(
        &self,
        header: &[u8],
        now: i64,
        opts: VerifyOptions,
    ) -> Option<Result<Verified, AuthError>> {
        let space = header.iter().position(|&b| b == b' ')?;
        let (scheme, rest) = (&header[..space], &header[space + 1..]);
        let start = rest.iter().position(|&b| b != b' ')?;
        let credentials = &rest[start..];
        if scheme.eq_ignore_ascii_case(b"basic") {
            self.verify_basic_fast(credentials, now).map(Ok)
        } else if scheme.eq_ignore_ascii_case(b"bearer")
            && is_ascii(credentials)
            && !credentials.starts_with(OPERATOR_TOKEN_PREFIX.as_bytes())
        {
            let parsed = jwt::parse_fast(credentials)?;
            Some(self.verify_parsed_jwt(&parsed, now, opts))
        } else {
            None
        }
    }
}

/// A field value without the optional whitespace around it: RFC 9110 §5.5
/// says that spaces and horizontal tabs (OWS) before and after a field
/// value are not part of it. Only those two: anything else (a newline, a
/// no-break space) is part of the value, which is then refused. When
/// there is nothing to trim (the usual case) it costs a look at the first
/// and the last byte.
#[inline]
pub fn trim_ows(value: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    match value {
        // The usual case: nothing to trim.
        [first, .., last] if !is_ows(first) && !is_ows(last) => value,
        _ => {
            let start = value.iter().position(|b| !is_ows(b)).unwrap_or(value.len());
            let end = value
                .iter()
                .rposition(|b| !is_ows(b))
                .map_or(start, |i| i + 1);
            &value[start..end]
        }
    }
}

/// `<[u8]>::is_ascii`, eight bytes at a time without early exit (the
/// standard one is slower on the few hundred bytes of a token).
fn is_ascii(bytes: &[u8]) -> bool {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let words = bytes.chunks_exact(8);
    let tail = words.remainder().iter().fold(0u8, |acc, &b| acc | b);
    let high = words.fold(0u64, |acc, w| {
        let mut word = [0u8; 8];
        word.copy_from_slice(w);
        acc | u64::from_le_bytes(word)
    });
    high & HIGH == 0 && tail.is_ascii()
}

/// Length of an `app_`, `act_` or `svc_` key id.
const KEY_ID_LEN: usize = 4 + ID_BODY_LEN;
const _: () = assert!(
    IdKind::AppKey.prefix().len() == 4
        && IdKind::UserAccountKey.prefix().len() == 4
        && IdKind::ServiceAccountKey.prefix().len() == 4
);

/// `IdKind::{AppKey, UserAccountKey, ServiceAccountKey}.matches(id)`, with
/// the body checked once.
pub(crate) fn is_key_id(id: &str) -> bool {
    id.len() == KEY_ID_LEN
        && [
            IdKind::AppKey,
            IdKind::UserAccountKey,
            IdKind::ServiceAccountKey,
        ]
        .iter()
        .any(|k| id.starts_with(k.prefix()))
        && id.bytes().skip(4).all(is_base62)
}

/// The principal of a key in its own scope (Basic, or an account-scope JWT).
pub(crate) fn key_principal(key: &LiveKey, owner: &KeyOwner) -> Principal {
    match owner {
        KeyOwner::UserAccount {
            account_id,
            user_account_id,
        } => Principal::UserAccount {
            key_id: key.id.clone(),
            account_id: account_id.clone(),
            user_account_id: user_account_id.clone(),
        },
        KeyOwner::ServiceAccount {
            account_id,
            service_account_id,
        } => Principal::ServiceAccount {
            key_id: key.id.clone(),
            account_id: account_id.clone(),
            service_account_id: service_account_id.clone(),
        },
        KeyOwner::App { account_id, app_id } => Principal::App {
            key_id: key.id.clone(),
            account_id: account_id.clone(),
            app_id: app_id.clone(),
        },
    }
}
