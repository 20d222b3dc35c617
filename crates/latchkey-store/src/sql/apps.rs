//! Apps, and the cache of apps read by id on SQLite.

use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use super::audit::insert_audit_tx;
use super::{SqlStore, classify, json_object};
use crate::{App, AuditEvent, Change, Page, PageOf, Result, StoreError};

pub(super) const APP_COLUMNS: &str = "id, account_id, display_name, settings, created_at";

pub(super) fn app_from(row: &AnyRow) -> Result<App> {
    Ok(App {
        id: row.try_get("id")?,
        account_id: row.try_get("account_id")?,
        display_name: row.try_get("display_name")?,
        settings: json_object(row.try_get("settings")?)?,
        created_at: row.try_get("created_at")?,
    })
}

impl SqlStore {
    /// Forgets the cached apps; after every write that changes or removes
    /// apps (see [`AppCache`](crate::app_cache::AppCache)).
    fn forget_apps(&self) {
        if let Some(cache) = &self.apps {
            cache.invalidate();
        }
    }

    /// Runs a write that changes or removes apps, then forgets the cached
    /// apps. With a cache, both run in a task of their own: a caller's
    /// future can be dropped (a client that went away) after the COMMIT was
    /// sent, and the commit then still happens; the invalidation must
    /// follow it all the same.
    pub(super) async fn then_forget_apps<T: Send + 'static>(
        &self,
        write: impl std::future::Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        if self.apps.is_none() {
            return write.await;
        }
        let store = self.clone();
        let done = tokio::spawn(async move {
            let done = write.await;
            store.forget_apps();
            done
        })
        .await;
        done.unwrap_or_else(|_| {
            // The write panicked; whatever it did, forget.
            self.forget_apps();
            Err(StoreError::Backend(sqlx::Error::WorkerCrashed))
        })
    }
}

async fn update_tx(store: &SqlStore, app: &App, audit: &AuditEvent) -> Result<bool> {
    let mut tx = store.write_tx().await?;
    let done = sqlx::query("UPDATE apps SET display_name = $1, settings = $2 WHERE id = $3")
        .bind(&app.display_name)
        .bind(Value::Object(app.settings.clone()).to_string())
        .bind(&app.id)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    insert_audit_tx(&mut tx, audit).await?;
    store
        .record_change_tx(&mut tx, audit.at, Change::App(&app.id))
        .await?;
    tx.commit().await?;
    Ok(true)
}

pub(super) async fn create(
    store: &SqlStore,
    app: &App,
    creator: Option<&str>,
    audit: &AuditEvent,
) -> Result<()> {
    let mut tx = store.write_tx().await?;
    sqlx::query(
        "INSERT INTO apps (id, account_id, display_name, settings, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&app.id)
    .bind(&app.account_id)
    .bind(&app.display_name)
    .bind(Value::Object(app.settings.clone()).to_string())
    .bind(app.created_at)
    .execute(&mut *tx)
    .await
    .map_err(|e| classify(e, "an app with this id already exists"))?;
    if let Some(sa) = creator {
        sqlx::query(
            "INSERT INTO service_account_apps (service_account_id, app_id, created_at) VALUES ($1, $2, $3)",
        )
        .bind(sa)
        .bind(&app.id)
        .bind(app.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| classify(e, "the grant exists already"))?;
    }
    insert_audit_tx(&mut tx, audit).await?;
    store
        .record_change_tx(&mut tx, audit.at, Change::App(&app.id))
        .await?;
    if let Some(sa) = creator {
        store
            .record_change_tx(&mut tx, audit.at, Change::ServiceAccount(sa))
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(super) async fn list(
    store: &SqlStore,
    account_id: &str,
    only_reachable_by: Option<&str>,
    page: &Page,
) -> Result<PageOf<App>> {
    match only_reachable_by {
        None => {
            store
                .page(
                    "apps",
                    APP_COLUMNS,
                    "account_id = $1",
                    &[account_id],
                    page,
                    app_from,
                )
                .await
        }
        Some(sa) => {
            store
                .page(
                    "apps",
                    APP_COLUMNS,
                    "account_id = $1 AND id IN (SELECT app_id FROM service_account_apps \
                     WHERE service_account_id = $2)",
                    &[account_id, sa],
                    page,
                    app_from,
                )
                .await
        }
    }
}

pub(super) async fn get(store: &SqlStore, id: &str) -> Result<Option<App>> {
    let generation = match store.apps.as_deref().map(|cache| cache.get(id)) {
        Some(Ok(app)) => return Ok(Some(app)),
        Some(Err(generation)) => Some(generation),
        None => None,
    };
    let sql = format!("SELECT {APP_COLUMNS} FROM apps WHERE id = $1");
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&store.pool)
        .await?;
    let app = row.as_ref().map(app_from).transpose()?;
    if let (Some(cache), Some(generation), Some(app)) = (&store.apps, generation, &app) {
        cache.keep(generation, app);
    }
    Ok(app)
}

pub(super) async fn update(store: &SqlStore, app: &App, audit: &AuditEvent) -> Result<bool> {
    let (owned, app, audit) = (store.clone(), app.clone(), audit.clone());
    store
        .then_forget_apps(async move { update_tx(&owned, &app, &audit).await })
        .await
}

pub(super) async fn delete(store: &SqlStore, id: &str, audit: &AuditEvent) -> Result<bool> {
    let (owned, id, audit) = (store.clone(), id.to_string(), audit.clone());
    store
        .then_forget_apps(async move {
            owned
                .delete_audited(
                    "DELETE FROM apps WHERE id = $1",
                    &[&id],
                    &audit,
                    Some(Change::App(&id)),
                )
                .await
        })
        .await
}
