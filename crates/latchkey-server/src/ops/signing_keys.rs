//! Apps' signing keys (issue 22): Latchkey's own Ed25519 key per app that
//! signs the appUser tokens it mints with `alg` `EdDSA`, so that anyone
//! with the app's JWKS (`GET /v1/apps/{appId}/jwks.json`) verifies them
//! offline. The private key is made here from the OS CSPRNG, sealed under
//! the master key like every secret, and opened only to sign; the index
//! holds the public keys (`KeyIndex::set_app_signers`), current first,
//! and verifies the tokens as it verifies any other. An app gets its first
//! key with its first EdDSA token; a rotation makes a new current key and
//! keeps the previous one published and verifying (tokens live at most a
//! day), and removes the one before that; a rotation that revokes removes
//! every other key at once. Minted tokens name their app's issuer
//! ([`issuer`]) in `iss`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latchkey_core::ids::{IdKind, new_id};
use latchkey_core::policy::{KeyPolicy, Permission};
use latchkey_store::{App, NewSigningKey, SigningKey};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};

use super::{Caller, WriteGuard};
use crate::audit::{self, EventExt};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::views::rfc3339;

/// The JWS name minted tokens and the JWKS give the algorithm: RFC 8037's
/// `EdDSA`, which every JOSE library reads (RFC 9864's `Ed25519` is newer;
/// Latchkey reads both).
pub const MINTED_ALG: &str = "EdDSA";

fn internal<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> ApiError {
    move |e| {
        tracing::error!(error = %e, "{what}");
        ApiError::internal()
    }
}

/// A new signing key for `app_id`: its stored form (private key sealed).
fn new_signing_key(state: &AppState, app_id: &str) -> ApiResult<SigningKey> {
    let id = new_id(&state.rng, IdKind::SigningKey);
    let pkcs8 =
        Ed25519KeyPair::generate_pkcs8(&state.rng).map_err(internal("generating a signing key"))?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(internal("reading a new signing key"))?;
    let private_sealed = state
        .master
        .seal(&state.rng, &id, pkcs8.as_ref())
        .map_err(internal("sealing a signing key"))?;
    Ok(SigningKey {
        id,
        app_id: app_id.to_string(),
        private_sealed,
        public_key: URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
        created_at: state.now(),
        retired_at: None,
    })
}

/// Puts the app's signing keys, as the store has them, in this node's
/// index (other nodes and replicas follow the change the write recorded).
pub fn index_signers(state: &AppState, app_id: &str, keys: &[SigningKey]) {
    crate::indexing::set_app_signers(
        &state.index,
        app_id,
        keys.iter().map(|k| (k.id.as_str(), k.public_key.as_str())),
    );
}

/// The app's current signing key, made (and indexed) if it has none yet,
/// opened to sign: its id and key pair.
pub async fn current_signer(
    state: &AppState,
    caller: &Caller,
    app: &App,
) -> ApiResult<(String, Ed25519KeyPair)> {
    let mut keys = state.store.signing_keys(&app.id).await?;
    if keys.first().is_none_or(|k| k.retired_at.is_some()) {
        // The first key: under the write token, as a rotation is, so that
        // neither indexes a list the other has already changed.
        let _write = WriteGuard::acquire(state, caller).await?;
        let key = new_signing_key(state, &app.id)?;
        let event = audit::event(state, caller, "signingKey.created", "signingKey", &key.id)
            .in_app(&app.id);
        // Another node may have made one meanwhile: then it is the one.
        state
            .store
            .create_signing_key(&key, NewSigningKey::First, &event)
            .await?;
        keys = state.store.signing_keys(&app.id).await?;
        index_signers(state, &app.id, &keys);
    }
    let current = keys
        .into_iter()
        .find(|k| k.retired_at.is_none())
        .ok_or_else(|| ApiError::conflict("the app's signing key changed meanwhile; try again"))?;
    let pkcs8 = state
        .master
        .open(&current.id, &current.private_sealed)
        .map_err(internal("opening a signing key"))?;
    let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(internal("reading a signing key"))?;
    Ok((current.id, pair))
}

/// Signs `claims` as an EdDSA JWT under the app's current signing key.
pub async fn sign_eddsa(
    state: &AppState,
    caller: &Caller,
    app: &App,
    claims: &Value,
) -> ApiResult<(String, String)> {
    let (kid, pair) = current_signer(state, caller, app).await?;
    let header = json!({"alg": MINTED_ALG, "typ": "JWT", "kid": kid});
    let mut token = URL_SAFE_NO_PAD.encode(header.to_string());
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
    let sig = pair.sign(token.as_bytes());
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(sig.as_ref()));
    Ok((token, kid))
}

/// What minting an EdDSA token takes beyond minting: a token signed with
/// the app's key carries no key's policy (permissions, address and origin
/// restrictions, rate limit, credits) and is not revoked with the calling
/// key, so only a caller whose key has no policy may have one made.
pub fn may_mint_eddsa(caller: &Caller) -> ApiResult<()> {
    let refused = || {
        ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "insufficient_permissions",
            "a key with a policy (permissions, restrictions, a rate limit or credits) cannot \
             mint EdDSA tokens, which carry none of it; mint HS256 tokens, which carry the \
             signing key's",
        )
    };
    if caller.policy.is_some() {
        return Err(refused());
    }
    caller
        .may_grant(&KeyPolicy::default())
        .map_err(|_| refused())
}

/// The `iss` of the EdDSA tokens minted for `app_id`: the app's URL under
/// `--public-url` (`{public-url}/v1/apps/{appId}`, whose JWKS is
/// `{iss}/jwks.json`), or `latchkey:{appId}` when none is configured.
pub fn issuer(state: &AppState, app_id: &str) -> String {
    match &state.config.public_url {
        Some(base) => format!("{base}/v1/apps/{app_id}"),
        None => format!("latchkey:{app_id}"),
    }
}

/// The app's signing keys as the API shows them, with the issuer its
/// tokens name.
fn list_view(state: &AppState, app_id: &str, keys: &[SigningKey]) -> Value {
    json!({
        "issuer": issuer(state, app_id),
        "signingKeys": keys.iter().map(view).collect::<Vec<_>>(),
    })
}

/// A signing key as the API shows it.
fn view(key: &SigningKey) -> Value {
    json!({
        "id": key.id,
        "algorithm": MINTED_ALG,
        "publicKey": {"kty": "OKP", "crv": "Ed25519", "x": key.public_key},
        "status": if key.retired_at.is_none() { "current" } else { "previous" },
        "createdAt": rfc3339(key.created_at),
        "retiredAt": key.retired_at.map(rfc3339),
    })
}

/// `GET /v1/apps/{appId}/signingKeys`.
pub async fn list(state: &AppState, caller: &Caller, app: &App) -> ApiResult<Value> {
    caller.require(Permission::KeysRead)?;
    let keys = state.store.signing_keys(&app.id).await?;
    Ok(list_view(state, &app.id, &keys))
}

/// `POST /v1/apps/{appId}/signingKeys/rotate`: a new current key; the
/// previous one stays published and verifying, the one before goes. With
/// `revoke_old_keys` (a key leaked), every other key goes at once.
pub async fn rotate(
    state: &AppState,
    _write: &WriteGuard,
    caller: &Caller,
    app: &App,
    revoke_old_keys: bool,
) -> ApiResult<Value> {
    caller.require(Permission::KeysWrite)?;
    let key = new_signing_key(state, &app.id)?;
    let (how, action) = if revoke_old_keys {
        (NewSigningKey::Replace, "signingKey.replaced")
    } else {
        (NewSigningKey::Rotate, "signingKey.rotated")
    };
    let event = audit::event(state, caller, action, "signingKey", &key.id).in_app(&app.id);
    state.store.create_signing_key(&key, how, &event).await?;
    let keys = state.store.signing_keys(&app.id).await?;
    index_signers(state, &app.id, &keys);
    Ok(list_view(state, &app.id, &keys))
}

/// The app's JWKS (RFC 7517 §5): its signing keys' public keys, current
/// first, from this node's index (what it verifies). An id that names no
/// app gets the empty set an app without signing keys gets: the JWKS is
/// public, so it tells nothing of an app but the keys it publishes (any
/// other answer would tell another tenant which app ids exist).
pub fn jwks(state: &AppState, app_id: &str) -> Value {
    let signers = state.index.app_signers(app_id).unwrap_or_default();
    let keys: Vec<Value> = signers
        .iter()
        .map(|(id, key)| {
            let mut jwk = latchkey_core::jwt::PublicKey::Ed25519(key.clone()).to_jwk();
            if let Some(members) = jwk.as_object_mut() {
                members.insert("kid".into(), json!(id));
                members.insert("alg".into(), json!(MINTED_ALG));
                members.insert("use".into(), json!("sig"));
            }
            jwk
        })
        .collect();
    json!({"keys": keys})
}
