//! Verifier tokens, the credentials of the operator's API servers, which
//! may call only `/v1/verify` and `/v1/introspect` (so those servers need
//! not hold the operator token); and replica tokens, the credentials of
//! in-process replicas, which may read only the replication feed
//! (`/v1/replica/…`). Both are the operator's, kept in one table and told
//! apart by their kind. A token is shown once, when created; the store and
//! the index keep only its SHA-256. A deleted token is refused by the very
//! next request on this node (a replica's open feed ends at once), and on
//! other nodes once they apply the change feed.

use latchkey_core::SecretString;
use latchkey_core::crypto::sha256;
use latchkey_core::ids::{IdKind, new_id};
use latchkey_core::secret::{self, REPLICA_TOKEN_PREFIX, VERIFIER_TOKEN_PREFIX};
use latchkey_store::{TokenKind, VerifierToken};
use serde_json::json;

use super::{Caller, WriteGuard, display_name};
use crate::audit::{self, EventExt};
use crate::error::{ApiError, ApiResult, require};
use crate::state::AppState;

/// What each kind is called in errors, audit events and ids.
struct Names {
    /// `verifierToken` / `replicaToken`: the audit target type and the
    /// prefix of its actions.
    target: &'static str,
    /// For "no such …" errors.
    noun: &'static str,
    prefix: &'static str,
    id: IdKind,
    only_operator: &'static str,
}

fn names(kind: TokenKind) -> Names {
    match kind {
        TokenKind::Verifier => Names {
            target: "verifierToken",
            noun: "verifier token",
            prefix: VERIFIER_TOKEN_PREFIX,
            id: IdKind::VerifierToken,
            only_operator: "only the operator token may manage verifier tokens",
        },
        TokenKind::Replica => Names {
            target: "replicaToken",
            noun: "replica token",
            prefix: REPLICA_TOKEN_PREFIX,
            id: IdKind::ReplicaToken,
            only_operator: "only the operator token may manage replica tokens",
        },
    }
}

/// The operator's check on every verifier-token and replica-token
/// endpoint.
pub fn require_operator(caller: &Caller, kind: TokenKind) -> ApiResult<()> {
    require(
        caller.principal.may_operate(),
        "endpoint",
        names(kind).only_operator,
    )
}

/// The token `token_id` if it is of `kind` (one of another kind is not
/// found here).
pub async fn get_token(
    state: &AppState,
    caller: &Caller,
    kind: TokenKind,
    token_id: &str,
) -> ApiResult<VerifierToken> {
    require_operator(caller, kind)?;
    state
        .store
        .get_verifier_token(token_id)
        .await?
        .filter(|t| t.kind == kind)
        .ok_or_else(|| ApiError::not_found(names(kind).noun))
}

/// Creates a token of `kind`; returns it with its one showing of the token.
pub async fn create_token(
    state: &AppState,
    _write: &WriteGuard,
    caller: &Caller,
    kind: TokenKind,
    name: &str,
) -> ApiResult<(VerifierToken, SecretString)> {
    require_operator(caller, kind)?;
    let names = names(kind);
    let name = display_name(name, "displayName")?;
    let token = secret::generate(&state.rng, names.prefix);
    let hash = sha256(token.expose().as_bytes());
    let stored = VerifierToken {
        id: new_id(&state.rng, names.id),
        display_name: name,
        token_hash: hash.to_vec(),
        created_at: state.now(),
        kind,
    };
    let event = audit::event(
        state,
        caller,
        &format!("{}.created", names.target),
        names.target,
        &stored.id,
    )
    .detail("displayName", json!(stored.display_name));
    state.store.create_verifier_token(&stored, &event).await?;
    crate::indexing::index_verifier_token(&state.index, &stored);
    Ok((stored, token))
}

/// Deletes a token of `kind`: refused by the next request.
pub async fn delete_token(
    state: &AppState,
    _write: &WriteGuard,
    caller: &Caller,
    kind: TokenKind,
    token_id: &str,
) -> ApiResult<()> {
    get_token(state, caller, kind, token_id).await?;
    let names = names(kind);
    let event = audit::event(
        state,
        caller,
        &format!("{}.deleted", names.target),
        names.target,
        token_id,
    );
    if !state.store.delete_verifier_token(token_id, &event).await? {
        return Err(ApiError::not_found(names.noun));
    }
    match kind {
        TokenKind::Verifier => state.index.remove_verifier_token(token_id),
        TokenKind::Replica => state.index.remove_replica_token(token_id),
    };
    Ok(())
}
