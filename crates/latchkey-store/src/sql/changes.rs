//! The change feed: what writes that affect verification record, read by
//! other nodes to follow, and pruned with a watermark.

use sqlx::{Any, Row, Transaction};

use super::SqlStore;
use crate::{Change, ChangeBatch, ChangeEntity, ChangeRecord, Result, StoreError};

impl SqlStore {
    /// Records a change in the caller's transaction; on PostgreSQL also
    /// queues its NOTIFY, which is sent when the transaction commits.
    pub(crate) async fn record_change_tx(
        &self,
        tx: &mut Transaction<'_, Any>,
        at: i64,
        change: Change<'_>,
    ) -> Result<()> {
        let (entity, id) = change.entity();
        let seq: i64 = sqlx::query_scalar(
            "INSERT INTO changes (entity, entity_id, at) VALUES ($1, $2, $3) RETURNING seq",
        )
        .bind(entity.as_str())
        .bind(id)
        .bind(at)
        .fetch_one(&mut **tx)
        .await?;
        if let Some(channel) = &self.channel {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(channel.as_str())
                .bind(seq.to_string())
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }
}

pub(super) async fn since(store: &SqlStore, seq: i64, limit: u32) -> Result<ChangeBatch> {
    let rows = sqlx::query(
        "SELECT seq, entity, entity_id FROM changes WHERE seq > $1 ORDER BY seq LIMIT $2",
    )
    .bind(seq)
    .bind(i64::from(limit))
    .fetch_all(&store.pool)
    .await?;
    let changes = rows
        .iter()
        .map(|row| {
            let entity: String = row.try_get("entity")?;
            Ok(ChangeRecord {
                seq: row.try_get("seq")?,
                entity: ChangeEntity::parse(&entity).ok_or_else(|| {
                    StoreError::Corrupt(format!("unknown change entity {entity:?}"))
                })?,
                id: row.try_get("entity_id")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let pruned_through: Option<i64> =
        sqlx::query_scalar("SELECT value FROM change_watermark WHERE name = 'pruned_through'")
            .fetch_optional(&store.pool)
            .await?;
    Ok(ChangeBatch {
        changes,
        pruned_through: pruned_through.unwrap_or(0),
    })
}

pub(super) async fn prune(store: &SqlStore, before: i64) -> Result<u64> {
    let mut tx = store.write_tx().await?;
    // Keep the newest change whatever its age: it tells new readers
    // where the sequence stands.
    let through: Option<i64> = sqlx::query_scalar(
        "SELECT MAX(seq) FROM changes WHERE at < $1 \
         AND seq < (SELECT MAX(seq) FROM changes)",
    )
    .bind(before)
    .fetch_one(&mut *tx)
    .await?;
    let Some(through) = through else {
        return Ok(0);
    };
    let done = sqlx::query("DELETE FROM changes WHERE seq <= $1")
        .bind(through)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO change_watermark (name, value) VALUES ('pruned_through', $1) \
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
    )
    .bind(through)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(done.rows_affected())
}
