//! The one place where errors become HTTP responses:
//! `{"errors":[{"code","title"}]}` with the matching status. A 500 shows the
//! client nothing internal; its cause is logged.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use latchkey_core::policy::{LimitState, Permission, RateLimit, Refusal};
use latchkey_core::{Access, AuthError};
use latchkey_store::StoreError;
use serde_json::json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub title: String,
    /// Seconds for a `Retry-After` header (429).
    pub retry_after: Option<u64>,
    /// A key's rate limit, for the `RateLimit-Policy` and `RateLimit`
    /// headers (429 `rate_limited`).
    pub ratelimit: Option<(RateLimit, LimitState)>,
}

pub type ApiResult<T> = Result<T, ApiError>;

pub const WWW_AUTHENTICATE: &str = r#"Basic realm="latchkey", Bearer realm="latchkey""#;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, title: impl Into<String>) -> Self {
        Self {
            status,
            code,
            title: title.into(),
            retry_after: None,
            ratelimit: None,
        }
    }

    /// 403 or 429 for a key's policy refusing the request (see
    /// `latchkey_core::policy::checks`).
    pub fn refused(refusal: &Refusal, limit: Option<RateLimit>, now: i64) -> Self {
        let status = match refusal {
            Refusal::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Refusal::UsageExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::FORBIDDEN,
        };
        let mut e = Self::new(status, refusal.code(), refusal.title(now));
        if let (Refusal::RateLimited(state), Some(limit)) = (refusal, limit) {
            e.retry_after = u64::try_from(state.retry_after(now)).ok();
            e.ratelimit = Some((limit, *state));
        }
        e
    }

    /// 403 `insufficient_permissions`.
    pub fn lacks(permission: Permission) -> Self {
        Self::refused(
            &Refusal::InsufficientPermissions(permission.as_str().to_string()),
            None,
            0,
        )
    }

    /// 403: the caller's role (teams) does not allow an operation that
    /// needs `permission`.
    pub fn role_lacks(role: latchkey_core::policy::Role, permission: Permission) -> Self {
        let needed = latchkey_core::policy::Role::needed_for(permission);
        Self::forbidden(format!(
            "this needs the {needed} role or higher (it takes {permission}); your role in this \
             account is {role}"
        ))
    }

    /// 429: too many failed credentials; retry after that many seconds.
    pub fn too_many_requests(retry_after_seconds: u64, title: impl Into<String>) -> Self {
        Self {
            retry_after: Some(retry_after_seconds),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", title)
        }
    }

    pub fn bad_request(title: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", title)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn forbidden(title: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", title)
    }

    pub fn conflict(title: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", title)
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than {limit} bytes"),
        )
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal error; the cause has been logged",
        )
    }

    pub fn unauthorized(e: &AuthError) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, e.code(), e.to_string())
    }
}

/// Turns an access decision into the matching error, naming the resource
/// for a 404 and the reason for a 403.
pub fn require(access: Access, what: &str, why: &str) -> ApiResult<()> {
    match access {
        Access::Allow => Ok(()),
        Access::NotFound => Err(ApiError::not_found(what)),
        Access::Forbidden => Err(ApiError::forbidden(why)),
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(msg) => ApiError::conflict(msg),
            StoreError::LimitReached(n) => ApiError::conflict(format!(
                "this owner already has {n} working keys (keys in a rotation's grace period count), the maximum; delete one first"
            )),
            StoreError::MissingParent => ApiError::not_found("the parent resource"),
            StoreError::BadCursor => {
                ApiError::bad_request("after does not name an item of this list")
            }
            StoreError::Unavailable(e) => {
                tracing::warn!(error = %e, "the database is unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_unavailable",
                    "the database cannot be reached, so nothing was changed; retry later",
                )
            }
            StoreError::Full(e) => {
                tracing::error!(error = %e, "the database's disk is full; writes fail until space is freed");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_full",
                    "the server's storage is full, so nothing was changed; retry later",
                )
            }
            other => {
                tracing::error!(error = %other, "store failure");
                ApiError::internal()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"errors": [{"code": self.code, "title": self.title}]});
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(WWW_AUTHENTICATE),
            );
        }
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some((limit, state)) = self.ratelimit {
            ratelimit_headers(
                response.headers_mut(),
                limit,
                &state,
                self.retry_after.unwrap_or(0),
            );
        }
        response
    }
}

/// The IETF `RateLimit-Policy` and `RateLimit` headers
/// (draft-ietf-httpapi-ratelimit-headers): the policy's quota and window,
/// and what is left of it with the seconds until the window ends.
pub fn ratelimit_headers(
    headers: &mut axum::http::HeaderMap,
    limit: RateLimit,
    state: &LimitState,
    reset_seconds: u64,
) {
    let policy = format!("\"key\";q={};w={}", limit.limit, limit.window_seconds);
    let current = format!("\"key\";r={};t={}", state.remaining, reset_seconds);
    for (name, value) in [("ratelimit-policy", policy), ("ratelimit", current)] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
}
