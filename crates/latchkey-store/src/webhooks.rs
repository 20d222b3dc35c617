//! Webhooks and their durable delivery queue.
//!
//! Deliveries are enqueued by `insert_audit_tx` (in `sql/audit.rs`) in
//! the same transaction as the event that causes them; this module manages
//! webhooks and moves deliveries through their attempts:
//!
//! ```text
//! pending --claim--> (leased) --record_attempt--> delivered
//!    ^                                        \--> failed
//!    \------------------ retry at T ----------/
//! ```
//!
//! A claim leases a delivery until a given time, so that two dispatchers
//! never send it at once; a dispatcher that dies mid-attempt leaves a lease
//! that runs out, and the delivery is claimed again (at least once). Claims
//! are fair across webhooks: each webhook has a bounded number of
//! deliveries under a live lease, so a slow receiver delays only its own.

use std::fmt;

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use crate::sql::{classify, insert_audit_tx, page_of};
use crate::{AuditEvent, Backend, Page, PageOf, Result, StoreError};

/// Webhooks allowed per app.
pub const MAX_WEBHOOKS_PER_APP: u32 = 10;

/// The conflict reported when an app already has
/// [`MAX_WEBHOOKS_PER_APP`] webhooks.
pub const WEBHOOK_LIMIT_REACHED: &str =
    "the app already has 10 webhooks, the maximum; delete one first";

/// A webhook of an app.
#[derive(Clone, PartialEq, Eq)]
pub struct Webhook {
    pub id: String,
    pub app_id: String,
    /// The URL deliveries are POSTed to.
    pub target: String,
    /// The triggers it subscribes to, sorted, without duplicates.
    pub triggers: Vec<String>,
    /// The signing secret sealed under the master key (the webhook id as
    /// associated data).
    pub secret_sealed: Vec<u8>,
    pub created_at: i64,
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The target may carry a token of the receiver in its query.
        f.debug_struct("Webhook")
            .field("id", &self.id)
            .field("app_id", &self.app_id)
            .field("triggers", &self.triggers)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// Where a delivery is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    /// Waiting for its next attempt (at `next_attempt_at`).
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Given up: a final answer from the receiver, or out of attempts.
    Failed,
}

impl DeliveryStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(DeliveryStatus::Pending),
            "delivered" => Some(DeliveryStatus::Delivered),
            "failed" => Some(DeliveryStatus::Failed),
            _ => None,
        }
    }
}

/// One notification to one webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Stable across attempts: the receiver's idempotency key.
    pub id: String,
    pub webhook_id: String,
    /// The audit event that caused it.
    pub event_id: String,
    pub trigger: String,
    /// The JSON body, sent byte for byte on every attempt.
    pub payload: String,
    pub status: DeliveryStatus,
    /// Attempts whose outcome was recorded.
    pub attempts: u32,
    pub next_attempt_at: i64,
    /// The HTTP status of the last attempt, if the receiver answered.
    pub last_status: Option<u16>,
    /// Why the last attempt did not deliver.
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A delivery claimed for one attempt, with what sending it needs.
#[derive(Clone)]
pub struct ClaimedDelivery {
    pub delivery: Delivery,
    pub target: String,
    pub secret_sealed: Vec<u8>,
    /// Names this claim; [`WebhookStore::record_attempt`] needs it.
    pub lease: String,
}

impl fmt::Debug for ClaimedDelivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClaimedDelivery")
            .field("delivery", &self.delivery)
            .finish_non_exhaustive()
    }
}

/// What an attempt leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Delivered,
    /// Try again at this time.
    Retry {
        at: i64,
    },
    /// Give up.
    Failed,
}

/// The outcome of one attempt, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub outcome: AttemptOutcome,
    /// The receiver's HTTP status, if it answered.
    pub http_status: Option<u16>,
    /// Why it did not deliver (never a secret, never the target URL).
    pub error: Option<String>,
    /// When the attempt ended.
    pub at: i64,
}

/// What asking for a delivery to be sent again led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redelivery {
    /// Pending again, due at once, with its attempts counted afresh.
    Scheduled(Delivery),
    /// Still pending (waiting for an attempt, or in flight): nothing done.
    StillPending,
    /// No such delivery of this webhook.
    NotFound,
}

/// What the server needs from the store for webhooks.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// Inserts a webhook and its triggers and records `audit`, in one
    /// transaction; fails with [`StoreError::Conflict`]
    /// ([`WEBHOOK_LIMIT_REACHED`]) if the app already has
    /// [`MAX_WEBHOOKS_PER_APP`] webhooks, and [`StoreError::MissingParent`]
    /// if the app does not exist.
    async fn create_webhook(&self, webhook: &Webhook, audit: &AuditEvent) -> Result<()>;
    /// Webhooks of an app in creation order.
    async fn list_webhooks(&self, app_id: &str, page: &Page) -> Result<PageOf<Webhook>>;
    async fn get_webhook(&self, app_id: &str, id: &str) -> Result<Option<Webhook>>;
    /// Replaces target and triggers (id and app id select the row); false
    /// if there is no such webhook. Deliveries already enqueued are kept.
    async fn update_webhook(&self, webhook: &Webhook, audit: &AuditEvent) -> Result<bool>;
    /// Deletes a webhook with its triggers and its deliveries, delivered or
    /// not; false if there is no such webhook.
    async fn delete_webhook(&self, app_id: &str, id: &str, audit: &AuditEvent) -> Result<bool>;

    /// Claims up to `limit` pending deliveries due at `now` that no live
    /// lease holds, leasing each until `lease_until`.
    ///
    /// Fair across webhooks: a webhook never has more than `per_webhook`
    /// deliveries under a live lease (in flight, whoever claimed them), so
    /// one whose receiver is slow keeps at most that many attempts busy
    /// however long its queue. Within that, claims go round robin: each
    /// webhook's oldest due delivery before anyone's second (webhooks with
    /// fewer attempts in flight first), then oldest due first.
    async fn claim_deliveries(
        &self,
        now: i64,
        lease_until: i64,
        limit: u32,
        per_webhook: u32,
    ) -> Result<Vec<ClaimedDelivery>>;
    /// Records the outcome of an attempt made under `lease` and releases
    /// the lease. Returns false (and changes nothing) if the lease was lost
    /// (it ran out and the delivery was claimed again), or the delivery is
    /// gone or no longer pending.
    async fn record_attempt(
        &self,
        delivery_id: &str,
        lease: &str,
        attempt: &Attempt,
    ) -> Result<bool>;
    /// Deliveries of a webhook, newest first; `page.after` is the id of the
    /// last delivery already seen.
    async fn list_deliveries(&self, webhook_id: &str, page: &Page) -> Result<PageOf<Delivery>>;
    async fn get_delivery(&self, id: &str) -> Result<Option<Delivery>>;
    /// Puts a delivered or failed delivery of `webhook_id` back in the
    /// queue, due at `now`, with no attempt counted and the last outcome
    /// cleared, and records `audit`, in one transaction. A pending delivery
    /// is left alone ([`Redelivery::StillPending`]).
    async fn redeliver(
        &self,
        webhook_id: &str,
        delivery_id: &str,
        now: i64,
        audit: &AuditEvent,
    ) -> Result<Redelivery>;
    /// Deletes delivered and failed deliveries last changed before
    /// `before`; returns how many.
    async fn prune_deliveries(&self, before: i64) -> Result<u64>;
}

/// Webhook columns, with the triggers as a JSON array.
fn webhook_columns(backend: Backend) -> String {
    let triggers = backend.json_array_of(
        "t.trigger",
        "FROM webhook_triggers t WHERE t.webhook_id = w.id",
    );
    format!("w.id, w.app_id, w.target, w.secret_sealed, w.created_at, {triggers} AS triggers")
}
const DELIVERY_COLUMNS: &str = "d.id, d.webhook_id, d.event_id, d.trigger, d.payload, d.status, \
     d.attempts, d.next_attempt_at, d.last_status, d.last_error, d.created_at, d.updated_at";

fn webhook_from(row: &AnyRow) -> Result<Webhook> {
    let triggers: String = row.try_get("triggers")?;
    let mut triggers: Vec<String> = serde_json::from_str(&triggers)
        .map_err(|_| StoreError::Corrupt("a webhook's triggers are not a JSON array".into()))?;
    triggers.sort();
    Ok(Webhook {
        id: row.try_get("id")?,
        app_id: row.try_get("app_id")?,
        target: row.try_get("target")?,
        triggers,
        secret_sealed: row.try_get("secret_sealed")?,
        created_at: row.try_get("created_at")?,
    })
}

fn delivery_from(row: &AnyRow) -> Result<Delivery> {
    let status: &str = row.try_get("status")?;
    let status = DeliveryStatus::parse(status)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown delivery status {status:?}")))?;
    let attempts: i64 = row.try_get("attempts")?;
    let last_status: Option<i64> = row.try_get("last_status")?;
    Ok(Delivery {
        id: row.try_get("id")?,
        webhook_id: row.try_get("webhook_id")?,
        event_id: row.try_get("event_id")?,
        trigger: row.try_get("trigger")?,
        payload: row.try_get("payload")?,
        status,
        attempts: u32::try_from(attempts)
            .map_err(|_| StoreError::Corrupt("a delivery has a negative attempt count".into()))?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        last_status: last_status
            .map(u16::try_from)
            .transpose()
            .map_err(|_| StoreError::Corrupt("a delivery has an impossible HTTP status".into()))?,
        last_error: row.try_get("last_error")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

async fn insert_triggers(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    webhook: &Webhook,
) -> Result<()> {
    for trigger in &webhook.triggers {
        sqlx::query("INSERT INTO webhook_triggers (webhook_id, trigger) VALUES ($1, $2)")
            .bind(&webhook.id)
            .bind(trigger)
            .execute(&mut **tx)
            .await
            .map_err(|e| classify(e, "a trigger is listed twice"))?;
    }
    Ok(())
}

#[async_trait]
impl WebhookStore for crate::SqlStore {
    async fn create_webhook(&self, webhook: &Webhook, audit: &AuditEvent) -> Result<()> {
        let mut tx = self.write_tx().await?;
        // The count and the insert are one statement, so that concurrent
        // creations cannot together pass the limit.
        let done = sqlx::query(
            "INSERT INTO webhooks (id, app_id, target, secret_sealed, created_at) \
             SELECT $1, $2, $3, $4, $5 WHERE (SELECT COUNT(*) FROM webhooks WHERE app_id = $6) < $7",
        )
        .bind(&webhook.id)
        .bind(&webhook.app_id)
        .bind(&webhook.target)
        .bind(&webhook.secret_sealed)
        .bind(webhook.created_at)
        .bind(&webhook.app_id)
        .bind(i64::from(MAX_WEBHOOKS_PER_APP))
        .execute(&mut *tx)
        .await
        .map_err(|e| classify(e, "a webhook with this id already exists"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict(WEBHOOK_LIMIT_REACHED));
        }
        insert_triggers(&mut tx, webhook).await?;
        insert_audit_tx(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_webhooks(&self, app_id: &str, page: &Page) -> Result<PageOf<Webhook>> {
        let after_seq: i64 = match &page.after {
            None => 0,
            Some(after) => {
                sqlx::query_scalar("SELECT seq FROM webhooks WHERE id = $1 AND app_id = $2")
                    .bind(after)
                    .bind(app_id)
                    .fetch_optional(&self.pool)
                    .await?
                    .ok_or(StoreError::BadCursor)?
            }
        };
        let columns = webhook_columns(self.backend);
        let sql = format!(
            "SELECT {columns} FROM webhooks w WHERE w.app_id = $1 AND w.seq > $2 \
             ORDER BY w.seq LIMIT $3"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(app_id)
            .bind(after_seq)
            .bind(i64::from(page.limit) + 1)
            .fetch_all(&self.pool)
            .await?;
        page_of(&rows, page.limit, webhook_from)
    }

    async fn get_webhook(&self, app_id: &str, id: &str) -> Result<Option<Webhook>> {
        let columns = webhook_columns(self.backend);
        let sql = format!("SELECT {columns} FROM webhooks w WHERE w.app_id = $1 AND w.id = $2");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(app_id)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(webhook_from).transpose()
    }

    async fn update_webhook(&self, webhook: &Webhook, audit: &AuditEvent) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query("UPDATE webhooks SET target = $1 WHERE id = $2 AND app_id = $3")
            .bind(&webhook.target)
            .bind(&webhook.id)
            .bind(&webhook.app_id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM webhook_triggers WHERE webhook_id = $1")
            .bind(&webhook.id)
            .execute(&mut *tx)
            .await?;
        insert_triggers(&mut tx, webhook).await?;
        insert_audit_tx(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn delete_webhook(&self, app_id: &str, id: &str, audit: &AuditEvent) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        // Triggers and deliveries go by cascade.
        let done = sqlx::query("DELETE FROM webhooks WHERE id = $1 AND app_id = $2")
            .bind(id)
            .bind(app_id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        insert_audit_tx(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn claim_deliveries(
        &self,
        now: i64,
        lease_until: i64,
        limit: u32,
        per_webhook: u32,
    ) -> Result<Vec<ClaimedDelivery>> {
        if limit == 0 || per_webhook == 0 {
            return Ok(Vec::new());
        }
        // Polled often: look before taking the write lock. Due, unleased,
        // and of a webhook that has room for one more attempt in flight.
        let any_due: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM webhook_deliveries d \
             WHERE d.status = 'pending' AND d.next_attempt_at <= $1 \
               AND (d.locked_until IS NULL OR d.locked_until <= $1) \
               AND (SELECT COUNT(*) FROM webhook_deliveries l \
                    WHERE l.webhook_id = d.webhook_id AND l.locked_until > $1 \
                      AND l.status = 'pending') < $2 \
             LIMIT 1",
        )
        .bind(now)
        .bind(i64::from(per_webhook))
        .fetch_optional(&self.pool)
        .await?;
        if any_due.is_none() {
            return Ok(Vec::new());
        }
        let mut tx = self.write_tx().await?;
        // Writing first takes the write lock at once, so the count of
        // attempts in flight cannot change under the claim; each claimed row
        // gets its own random lease name. `slot` is the place a delivery
        // would take among its webhook's attempts in flight: the first due
        // of a webhook with nothing in flight is slot 1, its second (or the
        // first of a webhook with one in flight) slot 2, and so on.
        let random = self.backend.random_hex();
        let sql = format!(
            "UPDATE webhook_deliveries SET locked_until = $1, lease = {random} \
             WHERE id IN ( \
                 WITH busy AS ( \
                     SELECT webhook_id, COUNT(*) AS n FROM webhook_deliveries \
                     WHERE locked_until > $2 AND status = 'pending' GROUP BY webhook_id), \
                 due AS ( \
                     SELECT id, webhook_id, next_attempt_at, seq, ROW_NUMBER() OVER ( \
                         PARTITION BY webhook_id ORDER BY next_attempt_at, seq) AS rank \
                     FROM webhook_deliveries \
                     WHERE status = 'pending' AND next_attempt_at <= $2 \
                       AND (locked_until IS NULL OR locked_until <= $2)), \
                 ranked AS ( \
                     SELECT due.id, due.next_attempt_at, due.seq, \
                            due.rank + COALESCE(busy.n, 0) AS slot \
                     FROM due LEFT JOIN busy ON busy.webhook_id = due.webhook_id) \
                 SELECT id FROM ranked WHERE slot <= $4 \
                 ORDER BY slot, next_attempt_at, seq LIMIT $3) \
             RETURNING id, lease"
        );
        let leased: Vec<(String, String)> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(lease_until)
            .bind(now)
            .bind(i64::from(limit))
            .bind(i64::from(per_webhook))
            .fetch_all(&mut *tx)
            .await?;
        let mut claimed = Vec::with_capacity(leased.len());
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS}, w.target, w.secret_sealed \
             FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id WHERE d.id = $1"
        );
        for (id, lease) in leased {
            let row = sqlx::query(AssertSqlSafe(sql.as_str()))
                .bind(&id)
                .fetch_one(&mut *tx)
                .await?;
            claimed.push(ClaimedDelivery {
                delivery: delivery_from(&row)?,
                target: row.try_get("target")?,
                secret_sealed: row.try_get("secret_sealed")?,
                lease,
            });
        }
        tx.commit().await?;
        Ok(claimed)
    }

    async fn record_attempt(
        &self,
        delivery_id: &str,
        lease: &str,
        attempt: &Attempt,
    ) -> Result<bool> {
        let (status, next_attempt_at) = match attempt.outcome {
            AttemptOutcome::Delivered => (DeliveryStatus::Delivered, None),
            AttemptOutcome::Retry { at } => (DeliveryStatus::Pending, Some(at)),
            AttemptOutcome::Failed => (DeliveryStatus::Failed, None),
        };
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET status = $1, attempts = attempts + 1, \
             next_attempt_at = COALESCE($2, next_attempt_at), last_status = $3, last_error = $4, \
             updated_at = $5, locked_until = NULL, lease = NULL \
             WHERE id = $6 AND lease = $7 AND status = 'pending'",
        )
        .bind(status.as_str())
        .bind(next_attempt_at)
        .bind(attempt.http_status.map(i64::from))
        .bind(&attempt.error)
        .bind(attempt.at)
        .bind(delivery_id)
        .bind(lease)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn list_deliveries(&self, webhook_id: &str, page: &Page) -> Result<PageOf<Delivery>> {
        let before: i64 = match &page.after {
            None => i64::MAX,
            Some(after) => sqlx::query_scalar(
                "SELECT seq FROM webhook_deliveries WHERE id = $1 AND webhook_id = $2",
            )
            .bind(after)
            .bind(webhook_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::BadCursor)?,
        };
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d \
             WHERE d.webhook_id = $1 AND d.seq < $2 ORDER BY d.seq DESC LIMIT $3"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(webhook_id)
            .bind(before)
            .bind(i64::from(page.limit) + 1)
            .fetch_all(&self.pool)
            .await?;
        page_of(&rows, page.limit, delivery_from)
    }

    async fn redeliver(
        &self,
        webhook_id: &str,
        delivery_id: &str,
        now: i64,
        audit: &AuditEvent,
    ) -> Result<Redelivery> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, \
             next_attempt_at = $1, last_status = NULL, last_error = NULL, updated_at = $2, \
             locked_until = NULL, lease = NULL \
             WHERE id = $3 AND webhook_id = $4 AND status <> 'pending'",
        )
        .bind(now)
        .bind(now)
        .bind(delivery_id)
        .bind(webhook_id)
        .execute(&mut *tx)
        .await?;
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d \
             WHERE d.id = $1 AND d.webhook_id = $2"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(delivery_id)
            .bind(webhook_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Ok(Redelivery::NotFound);
        };
        if done.rows_affected() == 0 {
            return Ok(Redelivery::StillPending);
        }
        let delivery = delivery_from(&row)?;
        insert_audit_tx(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(Redelivery::Scheduled(delivery))
    }

    async fn prune_deliveries(&self, before: i64) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM webhook_deliveries \
             WHERE status IN ('delivered', 'failed') AND updated_at < $1",
        )
        .bind(before)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected())
    }

    async fn get_delivery(&self, id: &str) -> Result<Option<Delivery>> {
        let sql = format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d WHERE d.id = $1");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(delivery_from).transpose()
    }
}
