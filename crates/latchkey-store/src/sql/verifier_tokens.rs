//! Verifier tokens: the credentials of services that only verify keys.

use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use super::audit::insert_audit_tx;
use super::{SqlStore, classify};
use crate::{AuditEvent, Change, Page, PageOf, Result, TokenKind, VerifierToken};

pub(super) const VERIFIER_TOKEN_COLUMNS: &str = "id, display_name, token_hash, created_at, kind";

pub(super) fn verifier_token_from(row: &AnyRow) -> Result<VerifierToken> {
    Ok(VerifierToken {
        id: row.try_get("id")?,
        display_name: row.try_get("display_name")?,
        token_hash: row.try_get("token_hash")?,
        created_at: row.try_get("created_at")?,
        kind: TokenKind::parse(&row.try_get::<String, _>("kind")?),
    })
}

pub(super) async fn create(
    store: &SqlStore,
    token: &VerifierToken,
    audit: &AuditEvent,
) -> Result<()> {
    let mut tx = store.write_tx().await?;
    sqlx::query(
        "INSERT INTO verifier_tokens (id, display_name, token_hash, created_at, kind) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&token.id)
    .bind(&token.display_name)
    .bind(&token.token_hash)
    .bind(token.created_at)
    .bind(token.kind.as_str())
    .execute(&mut *tx)
    .await
    .map_err(|e| classify(e, "a verifier token with this id or hash already exists"))?;
    insert_audit_tx(&mut tx, audit).await?;
    store
        .record_change_tx(&mut tx, audit.at, Change::VerifierToken(&token.id))
        .await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn list(
    store: &SqlStore,
    kind: TokenKind,
    page: &Page,
) -> Result<PageOf<VerifierToken>> {
    store
        .page(
            "verifier_tokens",
            VERIFIER_TOKEN_COLUMNS,
            "kind = $1",
            &[kind.as_str()],
            page,
            verifier_token_from,
        )
        .await
}

pub(super) async fn get(store: &SqlStore, id: &str) -> Result<Option<VerifierToken>> {
    let sql = format!("SELECT {VERIFIER_TOKEN_COLUMNS} FROM verifier_tokens WHERE id = $1");
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&store.pool)
        .await?;
    row.as_ref().map(verifier_token_from).transpose()
}

pub(super) async fn delete(store: &SqlStore, id: &str, audit: &AuditEvent) -> Result<bool> {
    store
        .delete_audited(
            "DELETE FROM verifier_tokens WHERE id = $1",
            &[id],
            audit,
            Some(Change::VerifierToken(id)),
        )
        .await
}
