//! App users: the end users of an app, found by id or external id.

use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use super::audit::insert_audit_tx;
use super::{SqlStore, classify, json_object};
use crate::{AppUser, AuditEvent, Page, PageOf, Result};

const USER_COLUMNS: &str =
    "id, app_id, external_id, given_name, surname, email, metadata, created_at";

fn user_from(row: &AnyRow) -> Result<AppUser> {
    Ok(AppUser {
        id: row.try_get("id")?,
        app_id: row.try_get("app_id")?,
        external_id: row.try_get("external_id")?,
        given_name: row.try_get("given_name")?,
        surname: row.try_get("surname")?,
        email: row.try_get("email")?,
        metadata: json_object(row.try_get("metadata")?)?,
        created_at: row.try_get("created_at")?,
    })
}

pub(super) async fn create(store: &SqlStore, user: &AppUser, audit: &AuditEvent) -> Result<()> {
    let mut tx = store.write_tx().await?;
    sqlx::query(
        "INSERT INTO app_users (id, app_id, external_id, given_name, surname, email, metadata, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&user.id)
    .bind(&user.app_id)
    .bind(&user.external_id)
    .bind(&user.given_name)
    .bind(&user.surname)
    .bind(&user.email)
    .bind(Value::Object(user.metadata.clone()).to_string())
    .bind(user.created_at)
    .execute(&mut *tx)
    .await
    .map_err(|e| classify(e, "a user with this externalId already exists in this app"))?;
    insert_audit_tx(&mut tx, audit).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn list(store: &SqlStore, app_id: &str, page: &Page) -> Result<PageOf<AppUser>> {
    store
        .page(
            "app_users",
            USER_COLUMNS,
            "app_id = $1",
            &[app_id],
            page,
            user_from,
        )
        .await
}

pub(super) async fn find(
    store: &SqlStore,
    app_id: &str,
    id_or_external: &str,
) -> Result<Option<AppUser>> {
    let sql = format!(
        "SELECT {USER_COLUMNS} FROM app_users WHERE app_id = $1 AND (id = $2 OR external_id = $3) \
         ORDER BY (id = $4) DESC LIMIT 1"
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(app_id)
        .bind(id_or_external)
        .bind(id_or_external)
        .bind(id_or_external)
        .fetch_optional(&store.pool)
        .await?;
    row.as_ref().map(user_from).transpose()
}

pub(super) async fn update(store: &SqlStore, user: &AppUser, audit: &AuditEvent) -> Result<bool> {
    let mut tx = store.write_tx().await?;
    let done = sqlx::query(
        "UPDATE app_users SET given_name = $1, surname = $2, email = $3, metadata = $4 \
         WHERE id = $5 AND app_id = $6",
    )
    .bind(&user.given_name)
    .bind(&user.surname)
    .bind(&user.email)
    .bind(Value::Object(user.metadata.clone()).to_string())
    .bind(&user.id)
    .bind(&user.app_id)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    insert_audit_tx(&mut tx, audit).await?;
    tx.commit().await?;
    Ok(true)
}

pub(super) async fn delete(
    store: &SqlStore,
    app_id: &str,
    id: &str,
    audit: &AuditEvent,
) -> Result<bool> {
    store
        .delete_audited(
            "DELETE FROM app_users WHERE app_id = $1 AND id = $2",
            &[app_id, id],
            audit,
            None,
        )
        .await
}
