//! Reading the audit log: `GET /v1/audit` (account scope: the account's
//! events; a service account sees those of the apps it reaches) and
//! `GET /v1/apps/{appId}/audit` (app scope, or account scope on the app).
//! Newest first, cursor paging, filters by action and time range.

use axum::Json;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use latchkey_core::policy::Permission;
use latchkey_store::{AuditFilter, Page};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::audit::event_json;
use crate::error::{ApiError, ApiResult, require};
use crate::extract::{Caller, PathParams, page_of_query};
use crate::ops::{app_ref, load_app};
use crate::state::AppState;
use crate::views::PageMeta;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuditQuery {
    #[serde(rename = "accountId")]
    account_id: Option<String>,
    limit: Option<u32>,
    after: Option<String>,
    action: Option<String>,
    since: Option<String>,
    until: Option<String>,
}

/// `?limit=&after=&action=&since=&until=` (times in RFC 3339).
#[derive(Debug)]
pub struct AuditQuery {
    account_id: Option<String>,
    page: Page,
    action: Option<String>,
    since: Option<i64>,
    until: Option<i64>,
}

pub(crate) fn parse_time(field: &str, text: Option<String>) -> ApiResult<Option<i64>> {
    text.map(|t| {
        OffsetDateTime::parse(&t, &Rfc3339)
            .map(OffsetDateTime::unix_timestamp)
            .map_err(|_| ApiError::bad_request(format!("{field} must be an RFC 3339 time")))
    })
    .transpose()
}

impl FromRequestParts<AppState> for AuditQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Query(raw) = Query::<RawAuditQuery>::from_request_parts(parts, state)
            .await
            .map_err(|e| {
                ApiError::bad_request(format!(
                    "bad query (accountId, limit, after, action, since, until): {}",
                    e.body_text()
                        .trim_start_matches("Failed to deserialize query string: ")
                ))
            })?;
        let page = page_of_query(raw.limit, raw.after)?;
        Ok(AuditQuery {
            account_id: raw.account_id.filter(|a| !a.is_empty()),
            page,
            action: raw.action.filter(|a| !a.is_empty()),
            since: parse_time("since", raw.since)?,
            until: parse_time("until", raw.until)?,
        })
    }
}

async fn list(
    state: &AppState,
    filter: AuditFilter,
    page: &Page,
    for_operator: bool,
) -> ApiResult<Json<Value>> {
    let found = state.store.list_audit(&filter, page).await?;
    let events: Vec<Value> = found
        .items
        .iter()
        .map(|e| event_json(e, for_operator))
        .collect();
    Ok(Json(json!({
        "events": events,
        "meta": PageMeta::of(&found, |e| &e.id),
    })))
}

pub async fn account_audit(
    State(state): State<AppState>,
    caller: Caller,
    q: AuditQuery,
) -> ApiResult<Json<Value>> {
    caller.require(Permission::AuditRead)?;
    let (account_id, reachable_by) = super::account_read(
        &caller,
        q.account_id.clone(),
        "audit log",
        "/v1/apps/{appId}/audit",
    )?;
    let filter = AuditFilter {
        account_id: Some(account_id),
        app_id: None,
        reachable_by,
        action: q.action,
        since: q.since,
        until: q.until,
        target_id: None,
    };
    list(&state, filter, &q.page, caller.principal.is_operator()).await
}

pub async fn app_audit(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(app_id): PathParams<String>,
    q: AuditQuery,
) -> ApiResult<Json<Value>> {
    caller.require(Permission::AuditRead)?;
    if q.account_id.is_some() {
        return Err(ApiError::bad_request("accountId applies to /v1/audit only"));
    }
    let app = load_app(&state, &app_id).await?;
    require(
        caller
            .principal
            .may_configure_app(app_ref(&state, &caller.principal, &app)),
        "app",
        "this needs app scope (an app key) or account scope",
    )?;
    let filter = AuditFilter {
        account_id: Some(app.account_id.clone()),
        app_id: Some(app.id.clone()),
        reachable_by: None,
        action: q.action,
        since: q.since,
        until: q.until,
        target_id: None,
    };
    list(&state, filter, &q.page, false).await
}
