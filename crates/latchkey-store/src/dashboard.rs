//! Dashboard sessions: a person signed in with email and password.
//!
//! The session id is a random 256-bit value held only by the person's
//! browser (in a cookie); the store keeps its SHA-256 hash and never sees
//! the id itself.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::sql::{USER_ACCOUNT_COLUMNS, classify, insert_audit_tx, user_account_from};
use crate::{AuditEvent, Result, UserAccount};

/// A signed-in dashboard session.
#[derive(Clone, PartialEq, Eq)]
pub struct DashboardSession {
    /// SHA-256 of the session id.
    pub id_hash: Vec<u8>,
    pub user_account_id: String,
    pub account_id: String,
    pub created_at: i64,
    /// The session ends at this time (Unix seconds), whatever happens.
    pub expires_at: i64,
}

impl std::fmt::Debug for DashboardSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DashboardSession")
            .field("user_account_id", &self.user_account_id)
            .field("account_id", &self.account_id)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// What the dashboard needs from the store.
#[async_trait]
pub trait DashboardStore: Send + Sync {
    /// The user account with this email (emails are stored normalized:
    /// trimmed, lower case).
    async fn find_user_account_by_email(&self, email: &str) -> Result<Option<UserAccount>>;
    /// Stores a new session and records `audit`, in one transaction;
    /// [`crate::StoreError::MissingParent`] if the user account is gone.
    async fn create_dashboard_session(
        &self,
        session: &DashboardSession,
        audit: &AuditEvent,
    ) -> Result<()>;
    /// The session with this id hash, unless it has expired at `now`.
    async fn get_dashboard_session(
        &self,
        id_hash: &[u8],
        now: i64,
    ) -> Result<Option<DashboardSession>>;
    /// Ends a session (sign-out), recording `audit` when there was one;
    /// false if there was no such session.
    async fn delete_dashboard_session(&self, id_hash: &[u8], audit: &AuditEvent) -> Result<bool>;
    /// Removes the sessions that have expired at `now`; returns how many.
    async fn delete_expired_dashboard_sessions(&self, now: i64) -> Result<u64>;
    /// Replaces a user account's password hash and ends every session of
    /// that user, recording `audit`, in one transaction (recovery: `latchkey
    /// admin reset-password`); false if the user account is gone.
    async fn reset_password(
        &self,
        user_account_id: &str,
        password_hash: &str,
        audit: &AuditEvent,
    ) -> Result<bool>;
}

fn session_from(row: &AnyRow) -> Result<DashboardSession> {
    Ok(DashboardSession {
        id_hash: row.try_get("id_hash")?,
        user_account_id: row.try_get("user_account_id")?,
        account_id: row.try_get("account_id")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
    })
}

#[async_trait]
impl DashboardStore for crate::SqlStore {
    async fn find_user_account_by_email(&self, email: &str) -> Result<Option<UserAccount>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_ACCOUNT_COLUMNS} FROM user_accounts WHERE email = $1"
        )))
        .bind(email)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(user_account_from).transpose()
    }

    async fn create_dashboard_session(
        &self,
        session: &DashboardSession,
        audit: &AuditEvent,
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO dashboard_sessions (id_hash, user_account_id, account_id, created_at, \
             expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&session.id_hash)
        .bind(&session.user_account_id)
        .bind(&session.account_id)
        .bind(session.created_at)
        .bind(session.expires_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| classify(e, "a session with this id already exists"))?;
        insert_audit_tx(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_dashboard_session(
        &self,
        id_hash: &[u8],
        now: i64,
    ) -> Result<Option<DashboardSession>> {
        let row = sqlx::query(
            "SELECT id_hash, user_account_id, account_id, created_at, expires_at \
             FROM dashboard_sessions WHERE id_hash = $1 AND expires_at > $2",
        )
        .bind(id_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(session_from).transpose()
    }

    async fn delete_dashboard_session(&self, id_hash: &[u8], audit: &AuditEvent) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query("DELETE FROM dashboard_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        insert_audit_tx(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn delete_expired_dashboard_sessions(&self, now: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM dashboard_sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected())
    }

    async fn reset_password(
        &self,
        user_account_id: &str,
        password_hash: &str,
        audit: &AuditEvent,
    ) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query("UPDATE user_accounts SET password_hash = $1 WHERE id = $2")
            .bind(password_hash)
            .bind(user_account_id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM dashboard_sessions WHERE user_account_id = $1")
            .bind(user_account_id)
            .execute(&mut *tx)
            .await?;
        insert_audit_tx(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }
}
