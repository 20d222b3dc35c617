//! Key notices: keys about to expire, expired or due for rotation, and
//! the marks that record each notice once (columns `notified_*` of
//! `api_keys`).

use sqlx::AssertSqlSafe;

use super::SqlStore;
use super::audit::insert_audit_tx;
use super::keys::{KEY_COLUMNS, key_from};
use crate::{ApiKey, AuditEvent, KeyNotice, Result};

pub(super) async fn due(
    store: &SqlStore,
    notice: KeyNotice,
    now: i64,
    limit: u32,
) -> Result<Vec<ApiKey>> {
    let max_age =
        store
            .backend
            .json_days_elapsed("a.settings", "maxKeyAgeDays", "k.created_at", "$1");
    let condition = match notice {
        KeyNotice::Expiring7d => {
            "k.expires_at > $1 + 86400 AND k.expires_at <= $1 + 604800 \
             AND k.notified_expiring_7d IS NULL"
        }
        KeyNotice::Expiring1d => {
            "k.expires_at > $1 AND k.expires_at <= $1 + 86400 AND k.notified_expiring_1d IS NULL"
        }
        KeyNotice::Expired => "k.expires_at <= $1 AND k.notified_expired IS NULL",
        KeyNotice::RotationDue => &format!(
            "k.kind = 'app' AND k.replaced_by IS NULL AND k.notified_rotation_due IS NULL \
             AND (k.expires_at IS NULL OR k.expires_at > $1) \
             AND EXISTS (SELECT 1 FROM apps a WHERE a.id = k.app_id AND {max_age})"
        ),
    };
    let columns = KEY_COLUMNS
        .split(", ")
        .map(|c| format!("k.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!("SELECT {columns} FROM api_keys k WHERE {condition} ORDER BY k.seq LIMIT $2");
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&store.pool)
        .await?;
    rows.iter().map(key_from).collect()
}

pub(super) async fn mark(
    store: &SqlStore,
    key_id: &str,
    notice: KeyNotice,
    audit: &AuditEvent,
) -> Result<bool> {
    let mut tx = store.write_tx().await?;
    let col = notice.column();
    let sql = format!("UPDATE api_keys SET {col} = $1 WHERE id = $2 AND {col} IS NULL");
    let done = sqlx::query(AssertSqlSafe(sql))
        .bind(audit.at)
        .bind(key_id)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    insert_audit_tx(&mut tx, audit).await?;
    tx.commit().await?;
    Ok(true)
}
