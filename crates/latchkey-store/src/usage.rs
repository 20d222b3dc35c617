//! Usage analytics: how often each key's credentials were checked, by
//! outcome, in buckets of a minute, an hour and a day (migration 0012).
//!
//! Nodes count in memory and add their counts here in batches
//! ([`UsageStore::record_usage`]): every bucket row is an upsert that adds,
//! so the counts of all nodes sharing a store add up, and a batch written
//! twice would count twice (a node writes each count once, and puts a
//! failed batch back to be written with the next).

use std::collections::BTreeMap;

use async_trait::async_trait;
use sqlx::Row;

use crate::Result;

/// A minute bucket, in seconds.
pub const MINUTE: i64 = 60;
/// An hour bucket, in seconds.
pub const HOUR: i64 = 3_600;
/// A day bucket (UTC), in seconds.
pub const DAY: i64 = 86_400;

/// How long buckets of each size are kept: minutes 48 hours, hours 90
/// days, days 2 years.
pub const RETENTION: [(i64, i64); 3] = [(MINUTE, 48 * HOUR), (HOUR, 90 * DAY), (DAY, 730 * DAY)];

/// How long buckets of `granularity` seconds are kept, if it is one of
/// the three sizes.
pub fn retention_of(granularity: i64) -> Option<i64> {
    RETENTION
        .iter()
        .find(|(g, _)| *g == granularity)
        .map(|(_, keep)| *keep)
}

/// Checks of one key in one minute with one outcome, as a node counted
/// them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageCount {
    pub key_id: String,
    /// The minute's first second (Unix).
    pub minute: i64,
    /// `valid`, or the refusal's code.
    pub outcome: String,
    pub count: u64,
}

/// Which counts to read: one account's, optionally one app's and one
/// key's, in buckets of `granularity` seconds starting in `[since, until)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageFilter {
    pub account_id: String,
    pub app_id: Option<String>,
    pub key_id: Option<String>,
    /// For a service account: only apps it reaches (and its own keys).
    pub reachable_by: Option<String>,
    pub granularity: i64,
    pub since: i64,
    pub until: i64,
}

/// Counts summed over the keys a filter selects, per app, bucket and
/// outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    /// The keys' app (`None` for user-account and service-account keys).
    pub app_id: Option<String>,
    pub start: i64,
    pub outcome: String,
    pub count: i64,
}

/// Checks of one key in one bucket with one outcome, for lists of keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUsageRow {
    pub key_id: String,
    pub start: i64,
    pub outcome: String,
    pub count: i64,
}

/// Keys asked about at most in one [`UsageStore::keys_usage_since`].
pub const MAX_KEYS_PER_QUERY: usize = 500;

#[async_trait]
pub trait UsageStore: Send + Sync {
    /// Adds a node's counts to the minute, hour and day buckets, in one
    /// transaction. Counts of a key that is not in the store (deleted
    /// before it was ever counted) are dropped.
    async fn record_usage(&self, batch: &[UsageCount]) -> Result<()>;
    /// The counts `filter` selects, oldest bucket first.
    async fn usage(&self, filter: &UsageFilter) -> Result<Vec<UsageRow>>;
    /// The buckets of `granularity` seconds from `since` (Unix seconds) on
    /// of each of `key_ids` (at most [`MAX_KEYS_PER_QUERY`]; any more are
    /// left out).
    async fn keys_usage_since(
        &self,
        key_ids: &[String],
        granularity: i64,
        since: i64,
    ) -> Result<Vec<KeyUsageRow>>;
    /// Deletes buckets older than their [`RETENTION`] at `now`; returns how
    /// many went.
    async fn prune_usage(&self, now: i64) -> Result<u64>;
}

/// What one batch adds to each bucket: per key, (granularity, start,
/// outcome) → count, in a fixed order (nodes that write the same rows lock
/// them in the same order, so two flushes never deadlock on PostgreSQL).
fn buckets(batch: &[UsageCount]) -> BTreeMap<&str, BTreeMap<(i64, i64, &str), i64>> {
    let mut out: BTreeMap<&str, BTreeMap<(i64, i64, &str), i64>> = BTreeMap::new();
    for c in batch {
        let Ok(count) = i64::try_from(c.count) else {
            continue;
        };
        if count == 0 {
            continue;
        }
        let per_key = out.entry(c.key_id.as_str()).or_default();
        for (granularity, _) in RETENTION {
            let start = c.minute - c.minute.rem_euclid(granularity);
            *per_key
                .entry((granularity, start, c.outcome.as_str()))
                .or_default() += count;
        }
    }
    out
}

#[async_trait]
impl UsageStore for crate::SqlStore {
    async fn record_usage(&self, batch: &[UsageCount]) -> Result<()> {
        let buckets = buckets(batch);
        if buckets.is_empty() {
            return Ok(());
        }
        // Adding commutes: no need for the store's write lock on
        // PostgreSQL (SQLite has one writer connection anyway).
        let mut tx = self.usage_tx().await?;
        for (key_id, rows) in &buckets {
            sqlx::query(
                "INSERT INTO usage_keys (key_id, account_id, app_id) \
                 SELECT id, account_id, app_id FROM api_keys WHERE id = $1 \
                 ON CONFLICT (key_id) DO NOTHING",
            )
            .bind(*key_id)
            .execute(&mut *tx)
            .await?;
            let seq: Option<i64> = sqlx::query("SELECT seq FROM usage_keys WHERE key_id = $1")
                .bind(*key_id)
                .fetch_optional(&mut *tx)
                .await?
                .map(|row| row.try_get("seq"))
                .transpose()?;
            let Some(seq) = seq else {
                continue;
            };
            for ((granularity, start, outcome), count) in rows {
                sqlx::query(
                    "INSERT INTO key_usage (usage_key, granularity, start, outcome, count) \
                     VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (usage_key, granularity, start, outcome) \
                     DO UPDATE SET count = key_usage.count + excluded.count",
                )
                .bind(seq)
                .bind(*granularity)
                .bind(*start)
                .bind(*outcome)
                .bind(*count)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn usage(&self, filter: &UsageFilter) -> Result<Vec<UsageRow>> {
        let mut sql = String::from(
            "SELECT k.app_id AS app_id, u.start AS start, u.outcome AS outcome, \
             CAST(SUM(u.count) AS BIGINT) AS count \
             FROM key_usage u JOIN usage_keys k ON k.seq = u.usage_key \
             WHERE k.account_id = $1 AND u.granularity = $2 AND u.start >= $3 AND u.start < $4",
        );
        let mut texts: Vec<&str> = Vec::new();
        let mut next = 5;
        if let Some(app) = &filter.app_id {
            sql.push_str(&format!(" AND k.app_id = ${next}"));
            texts.push(app);
            next += 1;
        }
        if let Some(key) = &filter.key_id {
            sql.push_str(&format!(" AND k.key_id = ${next}"));
            texts.push(key);
            next += 1;
        }
        if let Some(sa) = &filter.reachable_by {
            sql.push_str(&format!(
                " AND (k.app_id IN (SELECT app_id FROM service_account_apps \
                 WHERE service_account_id = ${next}) \
                 OR k.key_id IN (SELECT id FROM api_keys WHERE service_account_id = ${next}))"
            ));
            texts.push(sa);
        }
        sql.push_str(
            " GROUP BY k.app_id, u.start, u.outcome ORDER BY u.start, k.app_id, u.outcome",
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&filter.account_id)
            .bind(filter.granularity)
            .bind(filter.since)
            .bind(filter.until);
        for t in texts {
            query = query.bind(t);
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                Ok(UsageRow {
                    app_id: row.try_get("app_id")?,
                    start: row.try_get("start")?,
                    outcome: row.try_get("outcome")?,
                    count: row.try_get("count")?,
                })
            })
            .collect()
    }

    async fn keys_usage_since(
        &self,
        key_ids: &[String],
        granularity: i64,
        since: i64,
    ) -> Result<Vec<KeyUsageRow>> {
        let key_ids = &key_ids[..key_ids.len().min(MAX_KEYS_PER_QUERY)];
        if key_ids.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> = (0..key_ids.len()).map(|i| format!("${}", i + 3)).collect();
        let sql = format!(
            "SELECT k.key_id AS key_id, u.start AS start, u.outcome AS outcome, u.count AS count \
             FROM key_usage u JOIN usage_keys k ON k.seq = u.usage_key \
             WHERE u.granularity = $1 AND u.start >= $2 AND k.key_id IN ({}) \
             ORDER BY k.key_id, u.start, u.outcome",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(granularity)
            .bind(since);
        for id in key_ids {
            query = query.bind(id.as_str());
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                Ok(KeyUsageRow {
                    key_id: row.try_get("key_id")?,
                    start: row.try_get("start")?,
                    outcome: row.try_get("outcome")?,
                    count: row.try_get("count")?,
                })
            })
            .collect()
    }

    async fn prune_usage(&self, now: i64) -> Result<u64> {
        let mut gone = 0;
        for (granularity, keep) in RETENTION {
            gone += sqlx::query("DELETE FROM key_usage WHERE granularity = $1 AND start < $2")
                .bind(granularity)
                .bind(now - keep)
                .execute(&self.writer)
                .await?
                .rows_affected();
        }
        Ok(gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(key: &str, minute: i64, outcome: &str, count: u64) -> UsageCount {
        UsageCount {
            key_id: key.into(),
            minute,
            outcome: outcome.into(),
            count,
        }
    }

    #[test]
    fn a_minute_adds_to_its_hour_and_its_day() {
        let day = 20_000 * DAY;
        let batch = [
            count("k1", day + 61 * MINUTE, "valid", 3),
            count("k1", day + 62 * MINUTE, "valid", 4),
            count("k1", day + 62 * MINUTE, "key_expired", 1),
            count("k2", day, "valid", 0),
        ];
        let b = buckets(&batch);
        assert_eq!(b.len(), 1, "a zero count writes nothing");
        let k1 = &b["k1"];
        assert_eq!(k1[&(MINUTE, day + 61 * MINUTE, "valid")], 3);
        assert_eq!(k1[&(MINUTE, day + 62 * MINUTE, "valid")], 4);
        assert_eq!(k1[&(HOUR, day + HOUR, "valid")], 7);
        assert_eq!(k1[&(DAY, day, "valid")], 7);
        assert_eq!(k1[&(DAY, day, "key_expired")], 1);
        // Three minute rows, and valid and key_expired in the hour and the day.
        assert_eq!(k1.len(), 7);
    }

    #[test]
    fn retention_names_the_three_sizes_only() {
        assert_eq!(retention_of(MINUTE), Some(48 * HOUR));
        assert_eq!(retention_of(HOUR), Some(90 * DAY));
        assert_eq!(retention_of(DAY), Some(730 * DAY));
        assert_eq!(retention_of(1), None);
    }
}
