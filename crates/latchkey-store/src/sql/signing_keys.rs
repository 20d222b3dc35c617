//! Apps' signing keys (issue 22): Latchkey's own Ed25519 keys for the
//! appUser tokens it mints with `alg` `EdDSA`. An app has at most two:
//! the current one and the one it replaced, still published and verified
//! so that tokens it signed live out their lifetime. Each write records a
//! change of the app, which every node and replica applies by reloading
//! the app's signing keys.

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::audit::insert_audit_tx;
use super::{SqlStore, classify};
use crate::{AppSigner, AuditEvent, Change, NewSigningKey, Result, SigningKey};

const COLUMNS: &str = "id, app_id, private_sealed, public_key, created_at, retired_at";

fn signing_key_from(row: &AnyRow) -> Result<SigningKey> {
    Ok(SigningKey {
        id: row.try_get("id")?,
        app_id: row.try_get("app_id")?,
        private_sealed: row.try_get("private_sealed")?,
        public_key: row.try_get("public_key")?,
        created_at: row.try_get("created_at")?,
        retired_at: row.try_get("retired_at")?,
    })
}

/// An app's signing keys, the current one first.
pub(super) async fn list(store: &SqlStore, app_id: &str) -> Result<Vec<SigningKey>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM app_signing_keys WHERE app_id = $1 \
         ORDER BY CASE WHEN retired_at IS NULL THEN 0 ELSE 1 END, seq DESC"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(app_id)
        .fetch_all(&store.pool)
        .await?;
    rows.iter().map(signing_key_from).collect()
}

/// Makes `key` the app's current signing key, as `how` says: the first
/// (nothing written when the app already has a current key: false), a
/// rotation (the current one retired, the one retired before removed), or
/// a replacement (every other key removed).
pub(super) async fn create(
    store: &SqlStore,
    key: &SigningKey,
    how: NewSigningKey,
    audit: &AuditEvent,
) -> Result<bool> {
    let mut tx = store.write_tx().await?;
    let current: Option<String> = sqlx::query_scalar(
        "SELECT id FROM app_signing_keys WHERE app_id = $1 AND retired_at IS NULL",
    )
    .bind(&key.app_id)
    .fetch_optional(&mut *tx)
    .await?;
    match how {
        NewSigningKey::First if current.is_some() => {
            tx.commit().await?;
            return Ok(false);
        }
        NewSigningKey::First => {}
        NewSigningKey::Rotate => {
            sqlx::query(
                "DELETE FROM app_signing_keys WHERE app_id = $1 AND retired_at IS NOT NULL",
            )
            .bind(&key.app_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE app_signing_keys SET retired_at = $1 \
                 WHERE app_id = $2 AND retired_at IS NULL",
            )
            .bind(key.created_at)
            .bind(&key.app_id)
            .execute(&mut *tx)
            .await?;
        }
        NewSigningKey::Replace => {
            sqlx::query("DELETE FROM app_signing_keys WHERE app_id = $1")
                .bind(&key.app_id)
                .execute(&mut *tx)
                .await?;
        }
    }
    insert_tx(&mut tx, key).await?;
    insert_audit_tx(&mut tx, audit).await?;
    store
        .record_change_tx(&mut tx, audit.at, Change::App(&key.app_id))
        .await?;
    tx.commit().await?;
    Ok(true)
}

async fn insert_tx(tx: &mut Transaction<'_, Any>, key: &SigningKey) -> Result<()> {
    sqlx::query(
        "INSERT INTO app_signing_keys (id, app_id, private_sealed, public_key, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&key.id)
    .bind(&key.app_id)
    .bind(&key.private_sealed)
    .bind(&key.public_key)
    .bind(key.created_at)
    .execute(&mut **tx)
    .await
    .map_err(|e| {
        classify(
            e,
            "the app already has a current signing key, or the app is gone",
        )
    })?;
    Ok(())
}

/// Every app's signing keys for the snapshot, each app's current one
/// first.
pub(super) async fn signers(tx: &mut Transaction<'_, Any>) -> Result<Vec<AppSigner>> {
    sqlx::query(
        "SELECT id, app_id, public_key FROM app_signing_keys \
         ORDER BY app_id, CASE WHEN retired_at IS NULL THEN 0 ELSE 1 END, seq DESC",
    )
    .fetch_all(&mut **tx)
    .await?
    .iter()
    .map(|r| {
        Ok(AppSigner {
            id: r.try_get(0)?,
            app_id: r.try_get(1)?,
            public_key: r.try_get(2)?,
        })
    })
    .collect()
}
