//! Apps' signing keys and their JWKS: `/v1/apps/{appId}/signingKeys` (account
//! scope on the app) and `/v1/apps/{appId}/jwks.json` (public). The
//! operations are in `crate::ops::signing_keys`.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, JsonBodyOrEmpty, PathParams};
use crate::ops::WriteGuard;
use crate::ops::keys::app_for_keys;
use crate::ops::signing_keys;
use crate::state::AppState;

/// How long a JWKS may be cached: 5 minutes. A rotation keeps the previous
/// key published (and verifying) until the next one, so a cached copy
/// still holds the key of every token minted before the rotation; a token
/// minted after it names a `kid` the copy lacks, which a verifier fetches
/// again (npm jose's `createRemoteJWKSet` does so by itself).
const JWKS_MAX_AGE: &str = "public, max-age=300";

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(app_id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let app = app_for_keys(&state, &caller, &app_id).await?;
    Ok(Json(signing_keys::list(&state, &caller, &app).await?))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rotate {
    /// Remove every other signing key at once (one leaked): tokens they
    /// signed are refused from now on.
    #[serde(default)]
    revoke_old_keys: bool,
}

pub async fn rotate(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(app_id): PathParams<String>,
    JsonBodyOrEmpty(body): JsonBodyOrEmpty<Rotate>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let write = WriteGuard::acquire(&state, &caller).await?;
    let app = app_for_keys(&state, &caller, &app_id).await?;
    let out = signing_keys::rotate(&state, &write, &caller, &app, body.revoke_old_keys).await?;
    Ok((StatusCode::CREATED, Json(out)))
}

/// `GET /v1/apps/{appId}/jwks.json`: public, with `Cache-Control` and a
/// strong `ETag` (an `If-None-Match` that names it gets 304).
pub async fn jwks(
    State(state): State<AppState>,
    PathParams(app_id): PathParams<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let body = signing_keys::jwks(&state, &app_id).to_string();
    let digest = ring::digest::digest(&ring::digest::SHA256, body.as_bytes());
    let etag = format!("\"{}\"", URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16]));
    let etag_value = HeaderValue::from_str(&etag).map_err(|_| ApiError::internal())?;
    let cache = [
        (header::ETAG, etag_value),
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static(JWKS_MAX_AGE),
        ),
    ];
    let matched = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag || tag == "*");
    if matched {
        return Ok((StatusCode::NOT_MODIFIED, cache).into_response());
    }
    Ok((
        cache,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}
