//! Service accounts and their grants of apps (`service_account_apps`).

use sqlx::Row;
use sqlx::any::AnyRow;

use super::audit::insert_audit_tx;
use super::{SqlStore, classify};
use crate::{AuditEvent, Change, Page, PageOf, Result, ServiceAccount};

fn service_account_from(row: &AnyRow) -> Result<ServiceAccount> {
    Ok(ServiceAccount {
        id: row.try_get("id")?,
        account_id: row.try_get("account_id")?,
        display_name: row.try_get("display_name")?,
        created_at: row.try_get("created_at")?,
    })
}

pub(super) async fn create(
    store: &SqlStore,
    sa: &ServiceAccount,
    audit: &AuditEvent,
) -> Result<()> {
    let mut tx = store.write_tx().await?;
    sqlx::query(
        "INSERT INTO service_accounts (id, account_id, display_name, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(&sa.id)
    .bind(&sa.account_id)
    .bind(&sa.display_name)
    .bind(sa.created_at)
    .execute(&mut *tx)
    .await
    .map_err(|e| classify(e, "a service account with this id already exists"))?;
    insert_audit_tx(&mut tx, audit).await?;
    store
        .record_change_tx(&mut tx, audit.at, Change::ServiceAccount(&sa.id))
        .await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn list(
    store: &SqlStore,
    account_id: &str,
    page: &Page,
) -> Result<PageOf<ServiceAccount>> {
    store
        .page(
            "service_accounts",
            "id, account_id, display_name, created_at",
            "account_id = $1",
            &[account_id],
            page,
            service_account_from,
        )
        .await
}

pub(super) async fn get(store: &SqlStore, id: &str) -> Result<Option<ServiceAccount>> {
    let row = sqlx::query(
        "SELECT id, account_id, display_name, created_at FROM service_accounts WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&store.pool)
    .await?;
    row.as_ref().map(service_account_from).transpose()
}

pub(super) async fn delete(store: &SqlStore, id: &str, audit: &AuditEvent) -> Result<bool> {
    store
        .delete_audited(
            "DELETE FROM service_accounts WHERE id = $1",
            &[id],
            audit,
            Some(Change::ServiceAccount(id)),
        )
        .await
}

pub(super) async fn grant_app(
    store: &SqlStore,
    sa_id: &str,
    app_id: &str,
    now: i64,
    audit: &AuditEvent,
) -> Result<bool> {
    let mut tx = store.write_tx().await?;
    let done = sqlx::query(
        "INSERT INTO service_account_apps (service_account_id, app_id, created_at) \
         VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(sa_id)
    .bind(app_id)
    .bind(now)
    .execute(&mut *tx)
    .await
    .map_err(|e| classify(e, "the grant exists already"))?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    insert_audit_tx(&mut tx, audit).await?;
    store
        .record_change_tx(&mut tx, audit.at, Change::ServiceAccount(sa_id))
        .await?;
    tx.commit().await?;
    Ok(true)
}

pub(super) async fn revoke_app(
    store: &SqlStore,
    sa_id: &str,
    app_id: &str,
    audit: &AuditEvent,
) -> Result<bool> {
    store
        .delete_audited(
            "DELETE FROM service_account_apps WHERE service_account_id = $1 AND app_id = $2",
            &[sa_id, app_id],
            audit,
            Some(Change::ServiceAccount(sa_id)),
        )
        .await
}
