//! Verification of an `Authorization` header against the key index.
//!
//! This is the hot path: it reads the in-memory [`KeyIndex`] only, costs one
//! constant-time comparison (Basic) or one HMAC (JWT), and never touches the
//! store. Every failure is an [`AuthError`] whose message says what to fix
//! without echoing the credential.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use crate::b64;
use crate::ids::{ID_BODY_LEN, IdKind, is_base62};
use crate::index::{KeyIndex, KeyOwner, LiveKey};
use crate::jwt::{self, ClaimedScope, JwtError, UnverifiedJwt};
use crate::principal::Principal;
use crate::secret::{
    self, KEY_SECRET_PREFIX, OPERATOR_TOKEN_PREFIX, SecretFormatError, VERIFIER_TOKEN_PREFIX,
};

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
}

impl Verified {
    /// A credential that carries no times (operator and verifier tokens).
    fn timeless(principal: Principal) -> Self {
        Self {
            principal,
            expires_at: None,
            issued_at: None,
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

    /// `keyId:secret`, base64-encoded.
    pub fn verify_basic(&self, credentials: &str, now: i64) -> Result<Verified, AuthError> {
        if let Some(verified) = self.verify_basic_fast(credentials.as_bytes(), now) {
            return Ok(verified);
        }
        // Anything the fast path did not accept goes through every check
        // in order, so that it is refused with the precise reason.
        let decoded = Zeroizing::new(
            STANDARD
                .decode(credentials)
                .map_err(|_| AuthError::MalformedBasic)?,
        );
        let decoded = std::str::from_utf8(&decoded).map_err(|_| AuthError::MalformedBasic)?;
        let (key_id, secret) = decoded.split_once(':').ok_or(AuthError::MalformedBasic)?;
        if !is_key_id(key_id) {
            return Err(AuthError::MalformedKeyId);
        }
        secret::check_format(KEY_SECRET_PREFIX, secret).map_err(AuthError::MalformedSecret)?;
        self.with_key(key_id.as_bytes(), |key| {
            (key.secret_matches(secret.as_bytes()) && !key.is_expired(now))
                .then(|| basic_verified(key, now))
        })
        .flatten()
        .ok_or(AuthError::BadCredentials)
    }

    /// The common case without decoding the secret: a key id and its colon
    /// are 27 bytes, whole base64 groups, so the first 36 characters are
    /// exactly `base64(keyId ":")` and the rest exactly `base64(secret)`.
    /// Decodes the key id only and compares the rest, in constant time,
    /// with the key's stored encoding of its secret, which exists only for
    /// a secret that passes [`secret::check_format`]. Accepts exactly what
    /// the full path accepts; `None` sends everything else there.
    fn verify_basic_fast(&self, credentials: &[u8], now: i64) -> Option<Verified> {
        const ID_B64_LEN: usize = (KEY_ID_LEN + 1) / 3 * 4;
        const _: () = assert!((KEY_ID_LEN + 1).is_multiple_of(3));
        if credentials.len() != ID_B64_LEN + crate::index::BASIC_SECRET_B64_LEN {
            return None;
        }
        let (id_b64, secret_b64) = credentials.split_at(ID_B64_LEN);
        let mut id_colon = [0u8; KEY_ID_LEN + 1];
        if !b64::decode_whole_groups(id_b64, &mut id_colon) {
            return None;
        }
        let (key_id, colon) = id_colon.split_at(KEY_ID_LEN);
        if colon != b":" {
            return None;
        }
        // The key's stored encoding exists only when its id passes
        // `is_key_id` too, so a key found here by that id needs no check.
        self.with_key(key_id, |key| {
            (key.basic_secret_b64_matches(secret_b64) && !key.is_expired(now))
                .then(|| basic_verified(key, now))
        })
        .flatten()
    }

    /// A JWT signed with a key's secret.
    pub fn verify_jwt(
        &self,
        token: &str,
        now: i64,
        opts: VerifyOptions,
    ) -> Result<Verified, AuthError> {
        let parsed = jwt::parse(token).map_err(AuthError::Jwt)?;
        self.verify_parsed_jwt(&parsed, now, opts)
    }

    /// Everything after parsing: the key, the signature, the claims.
    fn verify_parsed_jwt(
        &self,
        parsed: &UnverifiedJwt<'_>,
        now: i64,
        opts: VerifyOptions,
    ) -> Result<Verified, AuthError> {
        self.with_key(parsed.kid_bytes(), |key| {
            if key.is_expired(now) {
                return Err(AuthError::UnknownKid);
            }
            parsed
                .verify_signature(key.hmac_key())
                .map_err(|_| AuthError::BadSignature)?;
            // Only now: the claims reader sees only what a key signed.
            let claims = parsed.claims().map_err(AuthError::Jwt)?;
            jwt_verified(key, claims, now, opts)
        })
        .unwrap_or(Err(AuthError::UnknownKid))
    }

    fn verify_operator_token(&self, token: &str) -> Result<Verified, AuthError> {
        // Every stored hash is of a token Latchkey generated, in the checked
        // format, so the format (alphabet and checksum, ~80 ns on each
        // verification request) is checked only when no hash matches, to
        // say what is wrong with the token.
        match self.operator_token_id(token) {
            Some(token_id) => Ok(Verified::timeless(Principal::Operator { token_id })),
            None => {
                secret::check_format(OPERATOR_TOKEN_PREFIX, token)
                    .map_err(AuthError::MalformedSecret)?;
                Err(AuthError::BadOperatorToken)
            }
        }
    }

    /// As [`KeyIndex::verify_operator_token`], for verifier tokens.
    fn verify_verifier_token(&self, token: &str) -> Result<Verified, AuthError> {
        match self.verifier_token_id(token) {
            Some(token_id) => Ok(Verified::timeless(Principal::Verifier { token_id })),
            None => {
                secret::check_format(VERIFIER_TOKEN_PREFIX, token)
                    .map_err(AuthError::MalformedSecret)?;
                Err(AuthError::BadVerifierToken)
            }
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

/// The decisions on a JWT whose signature `key` verified.
fn jwt_verified(
    key: &LiveKey,
    claims: jwt::Claims,
    now: i64,
    opts: VerifyOptions,
) -> Result<Verified, AuthError> {
    if let Some(exp) = claims.exp
        && now >= exp.saturating_add(opts.leeway_seconds)
    {
        return Err(AuthError::TokenExpired);
    }
    if let Some(nbf) = claims.nbf
        && now.saturating_add(opts.leeway_seconds) < nbf
    {
        return Err(AuthError::NotYetValid);
    }
    // An app key reaches its app's policy through the key itself.
    if let KeyOwner::App { .. } = &key.owner
        && let Some(max) = key.app_token_ttl()
    {
        // Lifetime from issue (an iat in the future counts as now, so it
        // cannot stretch the window), or what remains without iat.
        let lifetime = match (claims.exp, claims.iat) {
            (None, _) => return Err(AuthError::TokenTooLong(max)),
            (Some(exp), Some(iat)) => exp.saturating_sub(iat.min(now)),
            (Some(exp), None) => exp.saturating_sub(now),
        };
        if lifetime > max {
            return Err(AuthError::TokenTooLong(max));
        }
    }
    let principal = match (&key.owner, claims.scope) {
        (KeyOwner::App { account_id, app_id }, ClaimedScope::App) => Principal::App {
            key_id: key.id.clone(),
            account_id: account_id.clone(),
            app_id: app_id.clone(),
        },
        (KeyOwner::App { account_id, app_id }, ClaimedScope::AppUser { external_id }) => {
            Principal::AppUser {
                key_id: key.id.clone(),
                account_id: account_id.clone(),
                app_id: app_id.clone(),
                external_id,
            }
        }
        (
            owner @ (KeyOwner::UserAccount { .. } | KeyOwner::ServiceAccount { .. }),
            ClaimedScope::Account,
        ) => key_principal(key, owner),
        (_, ClaimedScope::Missing) => return Err(AuthError::MissingScope),
        (_, ClaimedScope::App) => return Err(AuthError::ScopeNotAllowed("app".into())),
        (_, ClaimedScope::Account) => return Err(AuthError::ScopeNotAllowed("account".into())),
        (_, ClaimedScope::AppUser { .. }) => {
            return Err(AuthError::ScopeNotAllowed("appUser".into()));
        }
        (_, ClaimedScope::Other(s)) => return Err(AuthError::ScopeNotAllowed(s)),
    };
    key.touch(now);
    let expires_at = match (claims.exp, key.expires_at()) {
        (Some(exp), Some(key)) => Some(exp.min(key)),
        (exp, key) => exp.or(key),
    };
    Ok(Verified {
        principal,
        expires_at,
        issued_at: claims.iat,
    })
}

/// The principal of a key that presented its secret (Basic).
fn basic_verified(key: &LiveKey, now: i64) -> Verified {
    let principal = key_principal(key, &key.owner);
    key.touch(now);
    Verified {
        principal,
        expires_at: key.expires_at(),
        issued_at: None,
    }
}

/// The principal of a key in its own scope (Basic, or an account-scope JWT).
fn key_principal(key: &LiveKey, owner: &KeyOwner) -> Principal {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::sha256;
    use crate::ids::new_id;
    use crate::secret::generate;
    use proptest::prelude::*;
    use ring::rand::SystemRandom;
    use serde_json::json;

    struct Fixture {
        index: KeyIndex,
        app_key: String,
        app_secret: String,
        svc_key: String,
        svc_secret: String,
        op_token: String,
        vf_token: String,
    }

    fn fixture() -> Fixture {
        let rng = SystemRandom::new();
        let index = KeyIndex::new();
        index.insert_account("acc_A");
        index.insert_app("ap_1", "acc_A");
        index.insert_service_account("sa_1", "acc_A");
        let app_key = new_id(&rng, IdKind::AppKey);
        let app_secret = generate(&rng, KEY_SECRET_PREFIX).expose().to_string();
        index.insert_key(LiveKey::new(
            app_key.clone(),
            KeyOwner::App {
                account_id: "acc_A".into(),
                app_id: "ap_1".into(),
            },
            app_secret.as_bytes(),
            None,
            None,
        ));
        let svc_key = new_id(&rng, IdKind::ServiceAccountKey);
        let svc_secret = generate(&rng, KEY_SECRET_PREFIX).expose().to_string();
        index.insert_key(LiveKey::new(
            svc_key.clone(),
            KeyOwner::ServiceAccount {
                account_id: "acc_A".into(),
                service_account_id: "sa_1".into(),
            },
            svc_secret.as_bytes(),
            None,
            None,
        ));
        let op_token = generate(&rng, OPERATOR_TOKEN_PREFIX).expose().to_string();
        index.insert_operator_token("op_1", sha256(op_token.as_bytes()));
        let vf_token = generate(&rng, VERIFIER_TOKEN_PREFIX).expose().to_string();
        index.insert_verifier_token("vt_1", sha256(vf_token.as_bytes()));
        Fixture {
            index,
            app_key,
            app_secret,
            svc_key,
            svc_secret,
            op_token,
            vf_token,
        }
    }

    fn basic(id: &str, secret: &str) -> String {
        format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
    }

    const NOW: i64 = 1_800_000_000;

    fn verify(f: &Fixture, header: &str) -> Result<Verified, AuthError> {
        f.index
            .verify_authorization(Some(header.as_bytes()), NOW, VerifyOptions::default())
    }

    #[test]
    fn claims_count_only_after_the_signature() {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let f = fixture();
        let token = |kid: &str, secret: &str, payload: &str| {
            let header = format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{kid}"}}"#);
            let input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header),
                URL_SAFE_NO_PAD.encode(payload)
            );
            let sig = crate::hs256::Hs256Key::new(secret.as_bytes()).sign(input.as_bytes());
            format!("Bearer {input}.{}", URL_SAFE_NO_PAD.encode(sig))
        };
        let payloads = [
            "not json",
            "[]",
            r#"{"scope":1}"#,
            r#"{"scope":"app","exp":"soon"}"#,
            r#"{"scope":"app","exp":1}"#,
            r#"{"scope":"app","nbf":99999999999}"#,
            r#"{"scope":"account"}"#,
            r#"{"userId":"a"}"#,
            r#"{"scope":"app","scope":"app"}"#,
        ];
        for payload in payloads {
            let good = verify(&f, &token(&f.app_key, &f.app_secret, payload)).err();
            assert!(good.is_some(), "{payload}");
            assert_ne!(good, Some(AuthError::BadSignature), "{payload}");
            assert_eq!(
                verify(&f, &token(&f.app_key, &f.svc_secret, payload)).err(),
                Some(AuthError::BadSignature),
                "{payload}"
            );
            assert_eq!(
                verify(&f, &token("app_unknown", &f.app_secret, payload)).err(),
                Some(AuthError::UnknownKid),
                "{payload}"
            );
        }
        assert!(f.index.set_key_expiry(&f.app_key, Some(NOW)));
        for payload in payloads {
            assert_eq!(
                verify(&f, &token(&f.app_key, &f.app_secret, payload)).err(),
                Some(AuthError::UnknownKid),
                "{payload}"
            );
        }
    }

    #[test]
    fn basic_gives_app_and_account_scope() {
        let f = fixture();
        let v = verify(&f, &basic(&f.app_key, &f.app_secret)).expect("app key");
        assert!(matches!(v.principal, Principal::App { .. }));
        assert_eq!(v.principal.key_id(), Some(f.app_key.as_str()));
        let key = f.index.key(&f.app_key).expect("key");
        assert_eq!(key.last_used_at(), Some(NOW));
        let v = verify(&f, &basic(&f.svc_key, &f.svc_secret)).expect("svc key");
        assert!(matches!(v.principal, Principal::ServiceAccount { .. }));
        assert_eq!(
            verify(&f, &basic(&f.app_key, &f.svc_secret)).err(),
            Some(AuthError::BadCredentials)
        );
        assert_eq!(
            verify(&f, &basic("app_nope", &f.app_secret)).err(),
            Some(AuthError::MalformedKeyId)
        );
        assert!(matches!(
            verify(&f, &basic(&f.app_key, "lksk_short")).err(),
            Some(AuthError::MalformedSecret(_))
        ));
        assert_eq!(
            verify(&f, "Basic !!!").err(),
            Some(AuthError::MalformedBasic)
        );
        assert_eq!(verify(&f, "Digest x").err(), Some(AuthError::Scheme));
    }

    #[test]
    fn jwt_scopes_follow_the_key_kind() {
        let f = fixture();
        let sign = |kid: &str, secret: &str, claims: serde_json::Value| {
            format!(
                "Bearer {}",
                jwt::sign_hs256(secret.as_bytes(), kid, &claims)
            )
        };
        let v = verify(
            &f,
            &sign(
                &f.app_key,
                &f.app_secret,
                json!({"scope":"appUser","userId":"alice"}),
            ),
        )
        .expect("appUser");
        assert!(
            matches!(v.principal, Principal::AppUser { ref external_id, .. } if external_id == "alice")
        );
        let v = verify(&f, &sign(&f.app_key, &f.app_secret, json!({"scope":"app"}))).expect("app");
        assert!(matches!(v.principal, Principal::App { .. }));
        let v = verify(
            &f,
            &sign(&f.svc_key, &f.svc_secret, json!({"scope":"account"})),
        )
        .expect("account");
        assert!(matches!(v.principal, Principal::ServiceAccount { .. }));
        for (kid, secret, claims) in [
            (&f.app_key, &f.app_secret, json!({"scope":"account"})),
            (&f.svc_key, &f.svc_secret, json!({"scope":"app"})),
            (
                &f.svc_key,
                &f.svc_secret,
                json!({"scope":"appUser","userId":"a"}),
            ),
            (&f.app_key, &f.app_secret, json!({"scope":"admin"})),
        ] {
            assert!(matches!(
                verify(&f, &sign(kid, secret, claims)).err(),
                Some(AuthError::ScopeNotAllowed(_))
            ));
        }
        assert_eq!(
            verify(&f, &sign(&f.app_key, &f.app_secret, json!({"userId":"a"}))).err(),
            Some(AuthError::MissingScope)
        );
        // Signed by the svc secret but naming the app key.
        assert!(matches!(
            verify(&f, &sign(&f.app_key, &f.svc_secret, json!({"scope":"app"}))).err(),
            Some(AuthError::BadSignature)
        ));
        assert_eq!(
            verify(
                &f,
                &sign("app_unknown", &f.app_secret, json!({"scope":"app"}))
            )
            .err(),
            Some(AuthError::UnknownKid)
        );
    }

    #[test]
    fn exp_and_nbf_with_leeway() {
        let f = fixture();
        let sign = |claims: serde_json::Value| {
            format!(
                "Bearer {}",
                jwt::sign_hs256(f.app_secret.as_bytes(), &f.app_key, &claims)
            )
        };
        assert!(verify(&f, &sign(json!({"scope":"app","exp": NOW - 10}))).is_ok());
        assert_eq!(
            verify(&f, &sign(json!({"scope":"app","exp": NOW - 31}))).err(),
            Some(AuthError::TokenExpired)
        );
        assert_eq!(AuthError::TokenExpired.code(), "token_expired");
        assert!(verify(&f, &sign(json!({"scope":"app","nbf": NOW + 10}))).is_ok());
        assert_eq!(
            verify(&f, &sign(json!({"scope":"app","nbf": NOW + 31}))).err(),
            Some(AuthError::NotYetValid)
        );
    }

    #[test]
    fn app_token_ttl_policy() {
        let f = fixture();
        let sign = |claims: serde_json::Value| {
            format!(
                "Bearer {}",
                jwt::sign_hs256(f.app_secret.as_bytes(), &f.app_key, &claims)
            )
        };
        let no_exp = sign(json!({"scope":"app"}));
        assert!(verify(&f, &no_exp).is_ok(), "no policy: no exp needed");
        f.index.set_app_token_ttl("ap_1", Some(600));
        assert_eq!(
            verify(&f, &no_exp).err(),
            Some(AuthError::TokenTooLong(600))
        );
        let ok = sign(json!({"scope":"app","iat": NOW, "exp": NOW + 600}));
        assert!(verify(&f, &ok).is_ok());
        let long = sign(json!({"scope":"app","iat": NOW, "exp": NOW + 601}));
        assert_eq!(verify(&f, &long).err(), Some(AuthError::TokenTooLong(600)));
        let future_iat =
            sign(json!({"scope":"app","iat": NOW + 86_400, "exp": NOW + 86_400 + 600}));
        assert_eq!(
            verify(&f, &future_iat).err(),
            Some(AuthError::TokenTooLong(600))
        );
        let backwards = sign(json!({"scope":"app","iat": NOW + 7200, "exp": NOW + 3600}));
        assert_eq!(
            verify(&f, &backwards).err(),
            Some(AuthError::TokenTooLong(600))
        );
        let long_no_iat = sign(json!({"scope":"app","exp": NOW + 3600}));
        assert_eq!(
            verify(&f, &long_no_iat).err(),
            Some(AuthError::TokenTooLong(600))
        );
        // Basic is not a JWT: the policy does not apply.
        assert!(verify(&f, &basic(&f.app_key, &f.app_secret)).is_ok());
        f.index.set_app_token_ttl("ap_1", None);
        assert!(verify(&f, &no_exp).is_ok());
    }

    #[test]
    fn rotation_shortens_a_live_key() {
        let f = fixture();
        let header = basic(&f.app_key, &f.app_secret);
        assert!(f.index.set_key_expiry(&f.app_key, Some(NOW + 10)));
        assert!(verify(&f, &header).is_ok());
        assert!(
            f.index
                .verify_authorization(Some(header.as_bytes()), NOW + 10, VerifyOptions::default())
                .is_err()
        );
    }

    #[test]
    fn removed_and_expired_keys_stop_at_once() {
        let f = fixture();
        let token = format!(
            "Bearer {}",
            jwt::sign_hs256(f.app_secret.as_bytes(), &f.app_key, &json!({"scope":"app"}))
        );
        assert!(verify(&f, &token).is_ok());
        f.index.remove_key(&f.app_key);
        assert_eq!(verify(&f, &token).err(), Some(AuthError::UnknownKid));
        assert_eq!(
            verify(&f, &basic(&f.app_key, &f.app_secret)).err(),
            Some(AuthError::BadCredentials)
        );
    }

    #[test]
    fn operator_token() {
        let f = fixture();
        let v = verify(&f, &format!("Bearer {}", f.op_token)).expect("operator");
        assert!(v.principal.is_operator());
        let mut wrong = f.op_token.clone();
        wrong.replace_range(6..7, if &wrong[6..7] == "a" { "b" } else { "a" });
        assert!(verify(&f, &format!("Bearer {wrong}")).is_err());
    }

    #[test]
    fn verifier_token() {
        let f = fixture();
        let v = verify(&f, &format!("Bearer {}", f.vf_token)).expect("verifier");
        assert_eq!(
            v.principal,
            Principal::Verifier {
                token_id: "vt_1".into()
            }
        );
        assert_eq!((v.expires_at, v.issued_at), (None, None));
        // Optional whitespace around the value is not part of it.
        assert!(verify(&f, &format!("\tBearer {}  ", f.vf_token)).is_ok());
        let rng = SystemRandom::new();
        let unknown = generate(&rng, VERIFIER_TOKEN_PREFIX);
        assert_eq!(
            verify(&f, &format!("Bearer {}", unknown.expose())).err(),
            Some(AuthError::BadVerifierToken)
        );
        let mut typo = f.vf_token.clone();
        typo.replace_range(8..9, if &typo[8..9] == "a" { "b" } else { "a" });
        assert_eq!(
            verify(&f, &format!("Bearer {typo}")).err(),
            Some(AuthError::MalformedSecret(SecretFormatError::Checksum))
        );
        // The operator token is not a verifier token, nor the reverse.
        let as_operator = format!("Bearer lkop_{}", &f.vf_token[5..]);
        assert!(verify(&f, &as_operator).is_err());
        // Deleted: refused at once.
        assert!(f.index.remove_verifier_token("vt_1"));
        assert_eq!(
            verify(&f, &format!("Bearer {}", f.vf_token)).err(),
            Some(AuthError::BadVerifierToken)
        );
    }

    #[test]
    fn verified_credentials_carry_their_times() {
        let f = fixture();
        let sign = |claims: serde_json::Value| {
            format!(
                "Bearer {}",
                jwt::sign_hs256(f.app_secret.as_bytes(), &f.app_key, &claims)
            )
        };
        let v = verify(
            &f,
            &sign(json!({"scope":"app","iat": NOW - 5, "exp": NOW + 60})),
        )
        .expect("jwt");
        assert_eq!((v.expires_at, v.issued_at), (Some(NOW + 60), Some(NOW - 5)));
        let v = verify(&f, &sign(json!({"scope":"app"}))).expect("jwt");
        assert_eq!((v.expires_at, v.issued_at), (None, None));
        let v = verify(&f, &basic(&f.app_key, &f.app_secret)).expect("basic");
        assert_eq!((v.expires_at, v.issued_at), (None, None));
        // A key that expires first ends the JWT's life first.
        assert!(f.index.set_key_expiry(&f.app_key, Some(NOW + 30)));
        let v = verify(&f, &sign(json!({"scope":"app","exp": NOW + 60}))).expect("jwt");
        assert_eq!(v.expires_at, Some(NOW + 30));
        let v = verify(&f, &sign(json!({"scope":"app","exp": NOW + 10}))).expect("jwt");
        assert_eq!(v.expires_at, Some(NOW + 10));
        let v = verify(&f, &basic(&f.app_key, &f.app_secret)).expect("basic");
        assert_eq!(v.expires_at, Some(NOW + 30));
    }

    #[test]
    fn basic_fast_and_full_paths_agree() {
        let f = fixture();
        // A key whose id is not a well-formed key id gets no fast path and
        // is refused by the full one, as before.
        f.index.insert_key(LiveKey::new(
            "app_1".into(),
            KeyOwner::App {
                account_id: "acc_A".into(),
                app_id: "ap_1".into(),
            },
            f.app_secret.as_bytes(),
            None,
            None,
        ));
        assert_eq!(
            verify(&f, &basic("app_1", &f.app_secret)).err(),
            Some(AuthError::MalformedKeyId)
        );
        // Optional whitespace around the value is not part of it, on both
        // paths.
        let header = format!(" {} \t", basic(&f.app_key, &f.app_secret));
        assert!(verify(&f, &header).is_ok());
        // Another key's secret, a one-character change (checksum) and an
        // expired key are refused with the full path's reasons.
        assert_eq!(
            verify(&f, &basic(&f.app_key, &f.svc_secret)).err(),
            Some(AuthError::BadCredentials)
        );
        let mut typo = f.app_secret.clone().into_bytes();
        typo[20] = if typo[20] == b'a' { b'b' } else { b'a' };
        let typo = String::from_utf8(typo).expect("ascii");
        assert!(matches!(
            verify(&f, &basic(&f.app_key, &typo)).err(),
            Some(AuthError::MalformedSecret(SecretFormatError::Checksum))
        ));
        f.index.set_key_expiry(&f.app_key, Some(NOW));
        assert_eq!(
            verify(&f, &basic(&f.app_key, &f.app_secret)).err(),
            Some(AuthError::BadCredentials)
        );
    }

    /// One fixture for a whole property test.
    fn shared() -> &'static Fixture {
        static SHARED: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
        SHARED.get_or_init(fixture)
    }

    /// A verification's outcome, comparable.
    fn outcome(
        r: Result<Verified, AuthError>,
    ) -> Result<(Principal, Option<i64>, Option<i64>), AuthError> {
        r.map(|v| (v.principal, v.expires_at, v.issued_at))
    }

    /// Headers near the common forms: valid Basic and JWT credentials of
    /// the fixture's keys with a few bytes changed (any byte, non-ASCII
    /// and invalid UTF-8 included), spaces or text added, parts cut.
    fn near_headers(f: &Fixture) -> impl Strategy<Value = Vec<u8>> {
        let sign = |secret: &str, kid: &str, claims: serde_json::Value| {
            format!(
                "Bearer {}",
                jwt::sign_hs256(secret.as_bytes(), kid, &claims)
            )
        };
        let valid = vec![
            basic(&f.app_key, &f.app_secret),
            basic(&f.svc_key, &f.svc_secret),
            sign(
                &f.app_secret,
                &f.app_key,
                json!({"scope":"app","exp": NOW + 60}),
            ),
            sign(
                &f.app_secret,
                &f.app_key,
                json!({"scope":"appUser","userId":"alice"}),
            ),
            sign(&f.svc_secret, &f.svc_key, json!({"scope":"account"})),
            sign(&f.svc_secret, &f.svc_key, json!({"scope":"app"})),
            sign(
                &f.app_secret,
                &f.app_key,
                json!({"scope":"app","exp": NOW - 60}),
            ),
            format!("Bearer {}", f.op_token),
            format!("Bearer {}", f.vf_token),
        ];
        (
            proptest::sample::select(valid),
            proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3),
            prop_oneof![
                6 => Just(String::new()),
                1 => Just(" ".to_string()),
                1 => Just("\t".to_string()),
                1 => Just("\u{a0}".to_string()),
                1 => Just(".x".to_string()),
            ],
            any::<bool>(),
            0usize..3,
        )
            .prop_map(|(header, changes, suffix, upper, cut)| {
                let mut bytes = header.into_bytes();
                if upper {
                    bytes[..6].make_ascii_uppercase();
                }
                for (at, b) in changes {
                    let at = at % bytes.len();
                    bytes[at] = b;
                }
                bytes.truncate(bytes.len() - cut);
                bytes.extend_from_slice(suffix.as_bytes());
                bytes
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The byte-level fast paths answer exactly as the general path.
        #[test]
        fn common_forms_are_answered_as_the_general_path_would(header in near_headers(shared())) {
            let index = &shared().index;
            let opts = VerifyOptions::default();
            prop_assert_eq!(
                outcome(index.verify_authorization(Some(&header), NOW, opts)),
                outcome(index.verify_general(trim_ows(&header), NOW, opts))
            );
        }

        /// Spaces and tabs before and after a header's value change
        /// nothing, for every scheme and every outcome; any other
        /// whitespace around a good credential is refused.
        #[test]
        fn optional_whitespace_around_the_value_changes_nothing(
            header in near_headers(shared()),
            before in "[ \t]{0,3}",
            after in "[ \t]{0,3}",
            other in prop::sample::select(vec!["\n", "\r\n", "\u{a0}", "\u{c}", "\u{b}"]),
            other_after in any::<bool>(),
        ) {
            let index = &shared().index;
            let opts = VerifyOptions::default();
            let bare = trim_ows(&header).to_vec();
            let padded = [before.as_bytes(), &bare, after.as_bytes()].concat();
            let answer = outcome(index.verify_authorization(Some(&bare), NOW, opts));
            prop_assert_eq!(
                outcome(index.verify_authorization(Some(&padded), NOW, opts)),
                answer.clone()
            );
            if answer.is_ok() {
                let mut odd = bare.clone();
                if other_after {
                    odd.extend_from_slice(other.as_bytes());
                } else {
                    odd.splice(0..0, other.bytes());
                }
                prop_assert!(index.verify_authorization(Some(&odd), NOW, opts).is_err());
            }
        }
    }

    proptest! {
        #[test]
        fn is_ascii_is_the_standard_one(bytes in proptest::collection::vec(any::<u8>(), 0..300), high in 0usize..300) {
            let mut bytes = bytes;
            let ascii: Vec<u8> = bytes.iter().map(|b| b & 0x7F).collect();
            prop_assert!(is_ascii(&ascii));
            if let Some(b) = bytes.get_mut(high) {
                *b |= 0x80;
            }
            prop_assert_eq!(is_ascii(&bytes), bytes.is_ascii());
        }

        #[test]
        fn arbitrary_headers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let f = fixture();
            let _ = f.index.verify_authorization(Some(&bytes), NOW, VerifyOptions::default());
        }

        #[test]
        fn arbitrary_basic_payloads_are_refused(payload in ".{0,120}") {
            let f = fixture();
            let header = format!("Basic {}", STANDARD.encode(&payload));
            prop_assert!(verify(&f, &header).is_err());
        }

        #[test]
        fn scheme_is_case_insensitive(upper in proptest::bool::ANY) {
            let f = fixture();
            let scheme = if upper { "BASIC" } else { "basic" };
            let header = format!("{scheme} {}", STANDARD.encode(format!("{}:{}", f.app_key, f.app_secret)));
            prop_assert!(verify(&f, &header).is_ok());
        }
    }
}
