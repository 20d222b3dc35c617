//! Reading usage analytics: `GET /v1/apps/{appId}/usage` (app scope, or
//! account scope on the app; `?keyId=` for one key) and `GET /v1/usage`
//! (account scope: every app of the account, and the account's own keys;
//! a service account sees the apps it reaches). Counts per bucket of a
//! minute, an hour or a day, by outcome; every bucket of the range is
//! listed, empty ones with zeros. What nodes counted reaches the store
//! with their next flush (`--last-used-flush-seconds`, 10 s by default).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use latchkey_core::policy::Permission;
use latchkey_store::{DAY, HOUR, MINUTE, UsageFilter, UsageRow, retention_of};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::api::audit_log::parse_time;
use crate::error::{ApiError, ApiResult, require};
use crate::extract::{Caller, PathParams};
use crate::ops::{app_ref, load_app};
use crate::state::AppState;
use crate::views::rfc3339;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUsageQuery {
    #[serde(rename = "accountId")]
    account_id: Option<String>,
    #[serde(rename = "keyId")]
    key_id: Option<String>,
    since: Option<String>,
    until: Option<String>,
    granularity: Option<String>,
}

/// `?keyId=&since=&until=&granularity=minute|hour|day` (times in RFC
/// 3339), checked and with defaults filled in.
#[derive(Debug)]
pub struct UsageQuery {
    account_id: Option<String>,
    key_id: Option<String>,
    granularity: i64,
    /// The first bucket's start.
    since: i64,
    /// The end of the range (exclusive), a bucket boundary.
    until: i64,
}

/// The longest key id taken in `keyId`.
const MAX_KEY_ID: usize = 64;

fn granularity_name(seconds: i64) -> &'static str {
    match seconds {
        MINUTE => "minute",
        HOUR => "hour",
        _ => "day",
    }
}

/// The range asked for when none is given: the last hour of minutes, the
/// last 24 hours, the last 30 days.
fn default_span(granularity: i64) -> i64 {
    match granularity {
        MINUTE => HOUR,
        HOUR => DAY,
        _ => 30 * DAY,
    }
}

impl UsageQuery {
    fn parse(raw: RawUsageQuery, now: i64) -> ApiResult<Self> {
        let granularity = match raw.granularity.as_deref() {
            None | Some("hour") => HOUR,
            Some("minute") => MINUTE,
            Some("day") => DAY,
            Some(_) => {
                return Err(ApiError::bad_request(
                    "granularity must be minute, hour or day",
                ));
            }
        };
        let kept = retention_of(granularity).unwrap_or(DAY);
        // By default through the current bucket (`now` itself included).
        let until = parse_time("until", raw.until)?.unwrap_or(now + 1);
        let since = parse_time("since", raw.since)?.unwrap_or(until - default_span(granularity));
        if since >= until {
            return Err(ApiError::bad_request("since must be before until"));
        }
        let floor = |t: i64| t - t.rem_euclid(granularity);
        let (since, until) = (floor(since), floor(until - 1) + granularity);
        if since < floor(now - kept) {
            return Err(ApiError::bad_request(format!(
                "since is too far back: {} buckets are kept {}{}",
                granularity_name(granularity),
                match granularity {
                    MINUTE => "48 hours",
                    HOUR => "90 days",
                    _ => "2 years",
                },
                match granularity {
                    MINUTE => "; use granularity=hour",
                    HOUR => "; use granularity=day",
                    _ => "",
                }
            )));
        }
        if until > floor(now) + 2 * granularity.max(HOUR) {
            return Err(ApiError::bad_request("until is in the future"));
        }
        let key_id = raw.key_id.filter(|k| !k.is_empty());
        if key_id.as_ref().is_some_and(|k| k.len() > MAX_KEY_ID) {
            return Err(ApiError::bad_request("keyId is not a key id"));
        }
        Ok(UsageQuery {
            account_id: raw.account_id.filter(|a| !a.is_empty()),
            key_id,
            granularity,
            since,
            until,
        })
    }
}

impl FromRequestParts<AppState> for UsageQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Query(raw) = Query::<RawUsageQuery>::from_request_parts(parts, state)
            .await
            .map_err(|e| {
                ApiError::bad_request(format!(
                    "bad query (keyId, since, until, granularity): {}",
                    e.body_text()
                        .trim_start_matches("Failed to deserialize query string: ")
                ))
            })?;
        UsageQuery::parse(raw, state.now())
    }
}

/// Checks counted in one bucket, or in a whole range.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub valid: i64,
    /// Refusals by code.
    pub refused: BTreeMap<String, i64>,
}

impl Counts {
    fn add(&mut self, outcome: &str, n: i64) {
        if outcome == crate::usage::VALID {
            self.valid += n;
        } else {
            *self.refused.entry(outcome.to_string()).or_default() += n;
        }
    }
}

/// One bucket of the answer.
#[derive(Debug, Serialize)]
pub struct Bucket {
    /// The bucket's first instant (RFC 3339).
    pub start: String,
    #[serde(flatten)]
    pub counts: Counts,
}

/// Every bucket of the query's range, in order, with the rows' counts
/// (summed over apps) and the range's totals.
pub fn buckets_of(q: &UsageQuery, rows: &[UsageRow]) -> (Vec<Bucket>, Counts) {
    let mut per_start: BTreeMap<i64, Counts> = BTreeMap::new();
    let mut total = Counts::default();
    for row in rows {
        per_start
            .entry(row.start)
            .or_default()
            .add(&row.outcome, row.count);
        total.add(&row.outcome, row.count);
    }
    let mut buckets = Vec::new();
    let mut start = q.since;
    while start < q.until {
        buckets.push(Bucket {
            start: rfc3339(start),
            counts: per_start.remove(&start).unwrap_or_default(),
        });
        start += q.granularity;
    }
    (buckets, total)
}

fn range_json(q: &UsageQuery) -> Value {
    json!({
        "granularity": granularity_name(q.granularity),
        "since": rfc3339(q.since),
        "until": rfc3339(q.until),
    })
}

pub async fn app_usage(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(app_id): PathParams<String>,
    q: UsageQuery,
) -> ApiResult<Json<Value>> {
    caller.require(Permission::UsageRead)?;
    if q.account_id.is_some() {
        return Err(ApiError::bad_request("accountId applies to /v1/usage only"));
    }
    let app = load_app(&state, &app_id).await?;
    require(
        caller
            .principal
            .may_configure_app(app_ref(&state, &caller.principal, &app)),
        "app",
        "this needs app scope (an app key) or account scope",
    )?;
    let filter = UsageFilter {
        account_id: app.account_id.clone(),
        app_id: Some(app.id.clone()),
        key_id: q.key_id.clone(),
        reachable_by: None,
        granularity: q.granularity,
        since: q.since,
        until: q.until,
    };
    let rows = state.store.usage(&filter).await?;
    let (buckets, totals) = buckets_of(&q, &rows);
    let mut out = range_json(&q);
    out["appId"] = json!(app.id);
    out["keyId"] = json!(q.key_id);
    out["buckets"] = json!(buckets);
    out["totals"] = json!(totals);
    Ok(Json(out))
}

pub async fn account_usage(
    State(state): State<AppState>,
    caller: Caller,
    q: UsageQuery,
) -> ApiResult<Json<Value>> {
    caller.require(Permission::UsageRead)?;
    if q.key_id.is_some() {
        return Err(ApiError::bad_request(
            "keyId applies to /v1/apps/{appId}/usage only",
        ));
    }
    let (account_id, reachable_by) = super::account_read(
        &caller,
        q.account_id.clone(),
        "usage",
        "/v1/apps/{appId}/usage",
    )?;
    // An operator's account that does not exist is a 404 here (the audit
    // log reads as empty).
    if caller.principal.is_operator() && state.store.get_account(&account_id).await?.is_none() {
        return Err(ApiError::not_found("account"));
    }
    let filter = UsageFilter {
        account_id: account_id.clone(),
        app_id: None,
        key_id: None,
        reachable_by,
        granularity: q.granularity,
        since: q.since,
        until: q.until,
    };
    let rows = state.store.usage(&filter).await?;
    let (buckets, totals) = buckets_of(&q, &rows);
    let mut per_app: BTreeMap<Option<&str>, Counts> = BTreeMap::new();
    for row in &rows {
        per_app
            .entry(row.app_id.as_deref())
            .or_default()
            .add(&row.outcome, row.count);
    }
    let apps: Vec<Value> = per_app
        .into_iter()
        .map(|(app_id, counts)| json!({"appId": app_id, "valid": counts.valid, "refused": counts.refused}))
        .collect();
    let mut out = range_json(&q);
    out["accountId"] = json!(account_id);
    out["buckets"] = json!(buckets);
    out["totals"] = json!(totals);
    out["apps"] = json!(apps);
    Ok(Json(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(granularity: Option<&str>, since: Option<&str>, until: Option<&str>) -> RawUsageQuery {
        RawUsageQuery {
            account_id: None,
            key_id: None,
            since: since.map(str::to_string),
            until: until.map(str::to_string),
            granularity: granularity.map(str::to_string),
        }
    }

    // 2027-01-15T10:30:20Z
    const NOW: i64 = 1_800_009_020;

    #[test]
    fn defaults_are_the_last_day_by_hour_ending_with_the_current_hour() {
        let q = UsageQuery::parse(raw(None, None, None), NOW).expect("query");
        assert_eq!(q.granularity, HOUR);
        assert_eq!(q.until, NOW - NOW % HOUR + HOUR);
        assert_eq!(q.until - q.since, 25 * HOUR);
        let q = UsageQuery::parse(raw(Some("minute"), None, None), NOW).expect("query");
        assert_eq!(q.until, NOW - NOW % 60 + 60);
        assert_eq!((q.until - q.since) / 60, 61);
    }

    #[test]
    fn bad_ranges_are_refused_with_what_to_fix() {
        let err = |g, s, u| {
            UsageQuery::parse(raw(g, s, u), NOW)
                .err()
                .map(|e| e.title)
                .unwrap_or_default()
        };
        assert!(err(Some("week"), None, None).contains("minute, hour or day"));
        assert!(err(None, Some("yesterday"), None).contains("RFC 3339"));
        assert!(
            err(
                None,
                Some("2027-01-15T10:00:00Z"),
                Some("2027-01-15T09:00:00Z")
            )
            .contains("before")
        );
        assert!(
            err(Some("minute"), Some("2027-01-10T00:00:00Z"), None).contains("granularity=hour")
        );
        assert!(err(None, None, Some("2027-03-01T00:00:00Z")).contains("future"));
    }

    #[test]
    fn every_bucket_is_listed_and_rows_fill_theirs() {
        let q = UsageQuery::parse(
            raw(
                Some("hour"),
                Some("2027-01-15T07:10:00Z"),
                Some("2027-01-15T10:00:00Z"),
            ),
            NOW,
        )
        .expect("query");
        let eight = q.since + HOUR;
        let rows = [
            UsageRow {
                app_id: Some("app_1".into()),
                start: eight,
                outcome: "valid".into(),
                count: 5,
            },
            UsageRow {
                app_id: Some("app_2".into()),
                start: eight,
                outcome: "valid".into(),
                count: 2,
            },
            UsageRow {
                app_id: Some("app_1".into()),
                start: eight,
                outcome: "key_expired".into(),
                count: 1,
            },
        ];
        let (buckets, totals) = buckets_of(&q, &rows);
        let starts: Vec<_> = buckets.iter().map(|b| b.start.as_str()).collect();
        assert_eq!(
            starts,
            [
                "2027-01-15T07:00:00Z",
                "2027-01-15T08:00:00Z",
                "2027-01-15T09:00:00Z"
            ]
        );
        assert_eq!(buckets[0].counts, Counts::default());
        assert_eq!(buckets[1].counts.valid, 7);
        assert_eq!(buckets[1].counts.refused["key_expired"], 1);
        assert_eq!(totals.valid, 7);
    }
}
