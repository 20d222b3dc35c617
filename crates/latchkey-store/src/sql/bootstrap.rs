//! The first start: the initialized mark and the master-key check value
//! (table `meta`), and the operator tokens.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::accounts::insert_account_tx;
use super::audit::insert_audit_tx;
use super::{SqlStore, classify};
use crate::{AuditEvent, Change, Initialization, OperatorToken, Result, StoreError};

pub(super) fn operator_token_from(row: &AnyRow) -> Result<OperatorToken> {
    Ok(OperatorToken {
        id: row.try_get("id")?,
        token_hash: row.try_get("token_hash")?,
        created_at: row.try_get("created_at")?,
    })
}

pub(super) async fn is_initialized(store: &SqlStore) -> Result<bool> {
    let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM meta WHERE name = 'initialized'")
        .fetch_optional(&store.pool)
        .await?;
    Ok(found.is_some())
}

pub(super) async fn initialize(store: &SqlStore, init: &Initialization) -> Result<()> {
    let mut tx = store.write_tx().await?;
    let inserted = sqlx::query(
        "INSERT INTO meta (name, value) VALUES ('initialized', $1) ON CONFLICT DO NOTHING",
    )
    .bind(vec![1u8])
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(StoreError::AlreadyInitialized);
    }
    sqlx::query("INSERT INTO meta (name, value) VALUES ('master_key_check', $1)")
        .bind(&init.master_key_check)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO operator_tokens (id, token_hash, created_at) VALUES ($1, $2, $3)")
        .bind(&init.operator_token.id)
        .bind(&init.operator_token.token_hash)
        .bind(init.operator_token.created_at)
        .execute(&mut *tx)
        .await?;
    insert_account_tx(&mut tx, &init.first_account).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn master_key_check(store: &SqlStore) -> Result<Option<Vec<u8>>> {
    Ok(
        sqlx::query_scalar("SELECT value FROM meta WHERE name = 'master_key_check'")
            .fetch_optional(&store.pool)
            .await?,
    )
}

pub(super) async fn operator_tokens(store: &SqlStore) -> Result<Vec<OperatorToken>> {
    let rows = sqlx::query("SELECT id, token_hash, created_at FROM operator_tokens ORDER BY seq")
        .fetch_all(&store.pool)
        .await?;
    rows.iter().map(operator_token_from).collect()
}

pub(super) async fn create_operator_token(
    store: &SqlStore,
    token: &OperatorToken,
    audit: &AuditEvent,
) -> Result<()> {
    let mut tx = store.write_tx().await?;
    sqlx::query("INSERT INTO operator_tokens (id, token_hash, created_at) VALUES ($1, $2, $3)")
        .bind(&token.id)
        .bind(&token.token_hash)
        .bind(token.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| classify(e, "an operator token with this id or hash already exists"))?;
    insert_audit_tx(&mut tx, audit).await?;
    store
        .record_change_tx(&mut tx, audit.at, Change::OperatorToken(&token.id))
        .await?;
    tx.commit().await?;
    Ok(())
}
