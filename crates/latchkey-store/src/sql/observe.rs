//! What `/metrics` reads from the store at scrape time: each a single
//! cheap query or no query at all.

use super::SqlStore;
use crate::{PoolStats, Result};

pub(crate) fn pool_stats(store: &SqlStore) -> Vec<PoolStats> {
    let stats = |name, pool: &sqlx::AnyPool| PoolStats {
        name,
        size: pool.size(),
        idle: pool.num_idle(),
    };
    let mut pools = vec![stats("read", &store.pool)];
    if store.own_writer {
        pools.push(stats("write", &store.writer));
    }
    pools
}

/// Pending deliveries (the `webhook_deliveries_due` index covers it).
pub(crate) async fn webhook_queue_depth(store: &SqlStore) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'pending'")
            .fetch_one(&store.pool)
            .await?,
    )
}

pub(crate) async fn latest_change_seq(store: &SqlStore) -> Result<i64> {
    let seq: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM changes")
        .fetch_one(&store.pool)
        .await?;
    Ok(seq.unwrap_or(0))
}
