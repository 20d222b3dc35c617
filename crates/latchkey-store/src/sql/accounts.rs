//! Accounts (tenants) and their user accounts: the people who sign in to
//! the dashboard, created with the account as its owner.

use latchkey_core::policy::Role;
use sqlx::any::AnyRow;
use sqlx::{Any, AssertSqlSafe, Row, Transaction};

use super::audit::insert_audit_tx;
use super::keys::insert_key_tx;
use super::{SqlStore, classify};
use crate::{
    Account, AuditEvent, Change, NewAccount, Page, PageOf, Result, StoreError, UserAccount,
};

fn account_from(row: &AnyRow) -> Result<Account> {
    Ok(Account {
        id: row.try_get("id")?,
        display_name: row.try_get("display_name")?,
        created_at: row.try_get("created_at")?,
    })
}

pub(crate) fn user_account_from(row: &AnyRow) -> Result<UserAccount> {
    Ok(UserAccount {
        id: row.try_get("id")?,
        account_id: row.try_get("account_id")?,
        email: row.try_get("email")?,
        password_hash: row.try_get("password_hash")?,
        created_at: row.try_get("created_at")?,
        role: role_from(&row.try_get::<String, _>("role")?)?,
    })
}

/// The columns [`user_account_from`] reads.
pub(crate) const USER_ACCOUNT_COLUMNS: &str =
    "id, account_id, email, password_hash, created_at, role";

pub(crate) fn role_from(text: &str) -> Result<Role> {
    Role::parse(text).ok_or_else(|| StoreError::Corrupt(format!("unknown role {text:?}")))
}

pub(super) async fn insert_account_tx(
    tx: &mut Transaction<'_, Any>,
    new: &NewAccount,
) -> Result<()> {
    sqlx::query("INSERT INTO accounts (id, display_name, created_at) VALUES ($1, $2, $3)")
        .bind(&new.account.id)
        .bind(&new.account.display_name)
        .bind(new.account.created_at)
        .execute(&mut **tx)
        .await
        .map_err(|e| classify(e, "an account with this id already exists"))?;
    sqlx::query(
        "INSERT INTO user_accounts (id, account_id, email, password_hash, created_at, role) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&new.owner.id)
    .bind(&new.owner.account_id)
    .bind(&new.owner.email)
    .bind(&new.owner.password_hash)
    .bind(new.owner.created_at)
    .bind(new.owner.role.as_str())
    .execute(&mut **tx)
    .await
    .map_err(|e| classify(e, "a user account with this email already exists"))?;
    insert_key_tx(tx, &new.key).await
}

pub(super) async fn create(store: &SqlStore, new: &NewAccount, audit: &AuditEvent) -> Result<()> {
    let mut tx = store.write_tx().await?;
    insert_account_tx(&mut tx, new).await?;
    insert_audit_tx(&mut tx, audit).await?;
    store
        .record_change_tx(&mut tx, audit.at, Change::Account(&new.account.id))
        .await?;
    store
        .record_change_tx(&mut tx, audit.at, Change::Key(&new.key.id))
        .await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn list(store: &SqlStore, page: &Page) -> Result<PageOf<Account>> {
    store
        .page(
            "accounts",
            "id, display_name, created_at",
            "1 = 1",
            &[],
            page,
            account_from,
        )
        .await
}

pub(super) async fn get(store: &SqlStore, id: &str) -> Result<Option<Account>> {
    let row = sqlx::query("SELECT id, display_name, created_at FROM accounts WHERE id = $1")
        .bind(id)
        .fetch_optional(&store.pool)
        .await?;
    row.as_ref().map(account_from).transpose()
}

pub(super) async fn delete(store: &SqlStore, id: &str, audit: &AuditEvent) -> Result<bool> {
    // Deletes the account's apps too (foreign keys cascade).
    let (owned, id, audit) = (store.clone(), id.to_string(), audit.clone());
    store
        .then_forget_apps(async move {
            owned
                .delete_audited(
                    "DELETE FROM accounts WHERE id = $1",
                    &[&id],
                    &audit,
                    Some(Change::Account(&id)),
                )
                .await
        })
        .await
}

pub(super) async fn get_user_account(store: &SqlStore, id: &str) -> Result<Option<UserAccount>> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {USER_ACCOUNT_COLUMNS} FROM user_accounts WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&store.pool)
    .await?;
    row.as_ref().map(user_account_from).transpose()
}
