//! Verifier tokens: the credentials of the operator's API servers, which
//! may call only `/v1/verify` and `/v1/introspect` (so those servers need
//! not hold the operator token). A token is shown once, when created; the
//! store and the index keep only its SHA-256. A deleted token is refused by
//! the very next request on this node, and on other nodes once they apply
//! the change feed.

use latchkey_core::SecretString;
use latchkey_core::crypto::sha256;
use latchkey_core::ids::{IdKind, new_id};
use latchkey_core::secret::{self, VERIFIER_TOKEN_PREFIX};
use latchkey_store::VerifierToken;
use serde_json::json;

use super::{Caller, WriteGuard, display_name};
use crate::audit::{self, EventExt};
use crate::error::{ApiError, ApiResult, require};
use crate::state::AppState;

const OPERATOR_ONLY: &str = "only the operator token may manage verifier tokens";

/// The operator's check on every verifier-token endpoint.
pub fn require_operator(caller: &Caller) -> ApiResult<()> {
    require(caller.principal.may_operate(), "endpoint", OPERATOR_ONLY)
}

/// Creates a verifier token; returns it with its one showing of the token.
pub async fn create_verifier_token(
    state: &AppState,
    _write: &WriteGuard,
    caller: &Caller,
    name: &str,
) -> ApiResult<(VerifierToken, SecretString)> {
    require_operator(caller)?;
    let name = display_name(name, "displayName")?;
    let token = secret::generate(&state.rng, VERIFIER_TOKEN_PREFIX);
    let hash = sha256(token.expose().as_bytes());
    let stored = VerifierToken {
        id: new_id(&state.rng, IdKind::VerifierToken),
        display_name: name,
        token_hash: hash.to_vec(),
        created_at: state.now(),
    };
    let event = audit::event(
        state,
        caller,
        "verifierToken.created",
        "verifierToken",
        &stored.id,
    )
    .detail("displayName", json!(stored.display_name));
    state.store.create_verifier_token(&stored, &event).await?;
    state.index.insert_verifier_token(&stored.id, hash);
    Ok((stored, token))
}

/// Deletes a verifier token: refused by the next request.
pub async fn delete_verifier_token(
    state: &AppState,
    _write: &WriteGuard,
    caller: &Caller,
    token_id: &str,
) -> ApiResult<()> {
    require_operator(caller)?;
    let event = audit::event(
        state,
        caller,
        "verifierToken.deleted",
        "verifierToken",
        token_id,
    );
    if !state.store.delete_verifier_token(token_id, &event).await? {
        return Err(ApiError::not_found("verifier token"));
    }
    state.index.remove_verifier_token(token_id);
    Ok(())
}
