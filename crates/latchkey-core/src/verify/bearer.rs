//! Bearer credentials: a JWT signed with a key's secret, an operator
//! token or a verifier token.

use super::{AuthError, Verified, VerifyOptions, key_principal};
use crate::index::{KeyIndex, KeyOwner, LiveKey};
use crate::jwt::{self, ClaimedScope, UnverifiedJwt};
use crate::principal::Principal;
use crate::secret::{self, OPERATOR_TOKEN_PREFIX, VERIFIER_TOKEN_PREFIX};

impl KeyIndex {
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
    pub(super) fn verify_parsed_jwt(
        &self,
        parsed: &UnverifiedJwt<'_>,
        now: i64,
        opts: VerifyOptions,
    ) -> Result<Verified, AuthError> {
        self.with_key(parsed.kid_bytes(), |key| {
            if key.is_expired(now) {
                return Err(AuthError::UnknownKid);
            }
            // By the key's algorithm. A header that names another is
            // refused as a bad signature is: like an unknown kid, it tells
            // nothing of the key to a caller who cannot sign with it.
            parsed
                .verify_signature(key.verifying_key())
                .map_err(|_| AuthError::BadSignature)?;
            // Only now: the claims reader sees only what a key signed.
            let claims = parsed.claims().map_err(AuthError::Jwt)?;
            jwt_verified(key, claims, now, opts)
        })
        .unwrap_or(Err(AuthError::UnknownKid))
    }

    pub(super) fn verify_operator_token(&self, token: &str) -> Result<Verified, AuthError> {
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
    pub(super) fn verify_verifier_token(&self, token: &str) -> Result<Verified, AuthError> {
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
    // An app's signing key signs only the appUser tokens Latchkey mints.
    if key.is_app_signer() {
        match &claims.scope {
            ClaimedScope::AppUser { .. } => {}
            ClaimedScope::Missing => return Err(AuthError::MissingScope),
            ClaimedScope::App => return Err(AuthError::ScopeNotAllowed("app".into())),
            ClaimedScope::Account => return Err(AuthError::ScopeNotAllowed("account".into())),
            ClaimedScope::Other(s) => return Err(AuthError::ScopeNotAllowed(s.clone())),
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
        policy: key.policy().cloned(),
        ratelimit: key.ratelimit(),
    })
}
