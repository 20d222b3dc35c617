//! The account overview at the top of the account page: checks of the
//! account's keys per day over the last 7 days (all apps, and each app's
//! own bars), and what needs attention: keys expiring soon, keys due for
//! rotation, keys unused for 30 days (candidates to delete), webhooks whose
//! last delivery failed.

use std::collections::BTreeMap;

use latchkey_store::{ApiKey, App, DAY, DeliveryStatus, KeyOwnerRef, Page, UsageFilter};

use super::charts::{Chart, Series};
use super::view::{KeyRow, PageError, when};
use crate::error::ApiError;
use crate::ops::policy;
use crate::state::AppState;

/// How far back the overview's charts go, in days.
pub const DAYS: usize = 7;

/// A key not used for this long is a candidate to delete.
pub const UNUSED_SECONDS: i64 = 30 * DAY;

/// An app's line in the overview.
#[derive(Debug)]
pub struct AppUsage {
    pub id: String,
    pub name: String,
    pub valid: i64,
    pub refused: i64,
    pub spark: Chart,
}

/// A key that needs attention.
#[derive(Debug)]
pub struct KeyAlert {
    pub id: String,
    pub name: String,
    pub app_name: String,
    /// The key's page.
    pub url: String,
    /// `expires in 3 days`, `last used 2026-10-01 10:00 UTC`.
    pub detail: String,
}

/// A webhook whose last delivery failed.
#[derive(Debug)]
pub struct WebhookAlert {
    pub id: String,
    pub target: String,
    pub app_name: String,
    pub url: String,
    pub detail: String,
}

#[derive(Debug)]
pub struct Overview {
    pub chart: Chart,
    pub apps: Vec<AppUsage>,
    pub expiring: Vec<KeyAlert>,
    pub rotation_due: Vec<KeyAlert>,
    pub unused: Vec<KeyAlert>,
    pub failing_webhooks: Vec<WebhookAlert>,
}

impl Overview {
    pub fn needs_attention(&self) -> bool {
        !(self.expiring.is_empty()
            && self.rotation_due.is_empty()
            && self.unused.is_empty()
            && self.failing_webhooks.is_empty())
    }

    /// The overview of `apps` (the account's, as the page lists them).
    pub async fn load(state: &AppState, account_id: &str, apps: &[App]) -> Result<Self, PageError> {
        let now = state.now();
        let mut total = Series::new(now, DAY, DAYS);
        let rows = state
            .store
            .usage(&UsageFilter {
                account_id: account_id.to_string(),
                app_id: None,
                key_id: None,
                reachable_by: None,
                granularity: DAY,
                since: total.since,
                until: now - now.rem_euclid(DAY) + DAY,
            })
            .await
            .map_err(ApiError::from)?;
        total.add_rows(&rows);
        let mut per_app: BTreeMap<&str, Series> = BTreeMap::new();
        for r in &rows {
            if let Some(app) = &r.app_id {
                per_app
                    .entry(app.as_str())
                    .or_insert_with(|| Series::new(now, DAY, DAYS))
                    .add(r.start, &r.outcome, r.count);
            }
        }
        let empty = Series::new(now, DAY, DAYS);
        let mut app_rows = Vec::with_capacity(apps.len());
        let mut expiring = Vec::new();
        let mut rotation_due = Vec::new();
        let mut unused = Vec::new();
        let mut failing_webhooks = Vec::new();
        for app in apps {
            let series = per_app.get(app.id.as_str()).unwrap_or(&empty);
            let totals = series.totals();
            app_rows.push(AppUsage {
                id: app.id.clone(),
                name: app.display_name.clone(),
                valid: totals.valid,
                refused: totals.refused_total(),
                spark: Chart::spark(
                    &format!("app-spark-{}", app.id),
                    &format!(
                        "Checks of {}'s keys per day, the last {DAYS} days",
                        app.display_name
                    ),
                    series,
                ),
            });
            let keys = state
                .store
                .list_keys(
                    KeyOwnerRef::App(&app.id),
                    &Page {
                        limit: 100,
                        after: None,
                    },
                )
                .await
                .map_err(ApiError::from)?;
            let max_age = policy::max_key_age_days(&app.settings);
            for key in &keys.items {
                let row = KeyRow::new(state, key, max_age);
                let alert = |detail: String| KeyAlert {
                    id: key.id.clone(),
                    name: key.display_name.clone(),
                    app_name: app.display_name.clone(),
                    url: format!("/dashboard/apps/{}/keys/{}", app.id, key.id),
                    detail,
                };
                if row.badge_class == "expiring" {
                    expiring.push(alert(row.badge.clone()));
                }
                if row.rotation_due {
                    rotation_due.push(alert(format!("created {}", row.created)));
                }
                if let Some(detail) = unused_for(state, key, row.status, now) {
                    unused.push(alert(detail));
                }
            }
            let webhooks = state
                .store
                .list_webhooks(
                    &app.id,
                    &Page {
                        limit: 100,
                        after: None,
                    },
                )
                .await
                .map_err(ApiError::from)?;
            for w in &webhooks.items {
                let last = state
                    .store
                    .list_deliveries(
                        &w.id,
                        &Page {
                            limit: 1,
                            after: None,
                        },
                    )
                    .await
                    .map_err(ApiError::from)?;
                let Some(d) = last.items.first() else {
                    continue;
                };
                let failing = d.status == DeliveryStatus::Failed
                    || (d.status == DeliveryStatus::Pending && d.attempts > 0);
                if failing {
                    let answered = d
                        .last_status
                        .map_or_else(|| "no answer".to_string(), |s| format!("HTTP {s}"));
                    failing_webhooks.push(WebhookAlert {
                        id: w.id.clone(),
                        target: w.target.clone(),
                        app_name: app.display_name.clone(),
                        url: format!("/dashboard/apps/{}/webhooks", app.id),
                        detail: format!(
                            "last delivery {} after {} attempt{} ({answered})",
                            if d.status == DeliveryStatus::Failed {
                                "failed"
                            } else {
                                "retrying"
                            },
                            d.attempts,
                            if d.attempts == 1 { "" } else { "s" }
                        ),
                    });
                }
            }
        }
        Ok(Overview {
            chart: Chart::draw(
                "account-usage",
                &format!("Checks of all the account's keys per day, the last {DAYS} days"),
                &total,
                720,
                160,
                1,
            ),
            apps: app_rows,
            expiring,
            rotation_due,
            unused,
            failing_webhooks,
        })
    }
}

/// Why a live key is a candidate to delete: older than
/// [`UNUSED_SECONDS`] and not used for that long.
fn unused_for(state: &AppState, key: &ApiKey, status: &str, now: i64) -> Option<String> {
    if status == "expired" || key.replaced_by.is_some() || now - key.created_at < UNUSED_SECONDS {
        return None;
    }
    let used = state
        .index
        .key_last_used(&key.id)
        .filter(|u| *u > 0)
        .or(key.last_used_at);
    match used {
        None => Some("never used".to_string()),
        Some(at) if now - at >= UNUSED_SECONDS => Some(format!("last used {}", when(at))),
        Some(_) => None,
    }
}
