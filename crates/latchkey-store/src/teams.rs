//! Teams (issue 20): the members of an account (its user accounts, each
//! with a role), invites to join it, and a member's own password.
//!
//! An invite's one-time token is never stored: only its SHA-256, which is
//! what an accepting request is looked up by. Role changes and removals
//! are recorded in the change feed (`userAccount`), so every node's index
//! follows them.

use async_trait::async_trait;
use latchkey_core::policy::Role;
use sqlx::any::AnyRow;
use sqlx::{Any, AssertSqlSafe, Row, Transaction};

use crate::sql::{
    Backend, SqlStore, USER_ACCOUNT_COLUMNS, classify, insert_audit_tx, role_from,
    user_account_from,
};
use crate::{AuditEvent, Change, Page, PageOf, Result, UserAccount};

/// An invite to join an account with a role.
#[derive(Clone, PartialEq, Eq)]
pub struct Invite {
    pub id: String,
    pub account_id: String,
    /// Normalized (trimmed, lower case).
    pub email: String,
    pub role: Role,
    /// SHA-256 of the one-time token.
    pub token_hash: Vec<u8>,
    /// The user account that invited.
    pub invited_by: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub accepted_at: Option<i64>,
    pub accepted_by: Option<String>,
    pub revoked_at: Option<i64>,
}

impl std::fmt::Debug for Invite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invite")
            .field("id", &self.id)
            .field("account_id", &self.account_id)
            .field("email", &self.email)
            .field("role", &self.role)
            .field("expires_at", &self.expires_at)
            .field("accepted_at", &self.accepted_at)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

impl Invite {
    /// Open: neither accepted nor revoked, and not expired at `now`.
    pub fn is_open(&self, now: i64) -> bool {
        self.accepted_at.is_none() && self.revoked_at.is_none() && self.expires_at > now
    }

    pub fn status(&self, now: i64) -> &'static str {
        if self.accepted_at.is_some() {
            "accepted"
        } else if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires_at <= now {
            "expired"
        } else {
            "pending"
        }
    }
}

/// What a change to a member came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberChange {
    Done,
    /// No such user account in that account.
    NotFound,
    /// It would leave the account without an owner.
    LastOwner,
}

/// What the teams' API and pages need from the store.
#[async_trait]
pub trait TeamStore: Send + Sync {
    /// The user accounts of an account, oldest first.
    async fn list_members(&self, account_id: &str, page: &Page) -> Result<PageOf<UserAccount>>;
    /// Stores a new invite and records `audit`, in one transaction.
    async fn create_invite(&self, invite: &Invite, audit: &AuditEvent) -> Result<()>;
    /// The invites of an account that were neither accepted nor revoked
    /// (expired ones included), oldest first.
    async fn list_invites(&self, account_id: &str, page: &Page) -> Result<PageOf<Invite>>;
    async fn get_invite(&self, id: &str) -> Result<Option<Invite>>;
    /// The invite whose token has this SHA-256.
    async fn find_invite_by_token_hash(&self, token_hash: &[u8]) -> Result<Option<Invite>>;
    /// Revokes an invite that is still open at `now`; false otherwise.
    async fn revoke_invite(&self, id: &str, now: i64, audit: &AuditEvent) -> Result<bool>;
    /// Marks an invite accepted if it is still open at `now` and adds
    /// `user` (with the invite's role) to its account, in one transaction;
    /// false (and nothing changed) if the invite is no longer open;
    /// `Conflict` if the email is taken.
    async fn accept_invite(
        &self,
        invite_id: &str,
        user: &UserAccount,
        now: i64,
        audit: &AuditEvent,
    ) -> Result<bool>;
    /// Changes a member's role, unless that leaves the account without an
    /// owner.
    async fn set_member_role(
        &self,
        account_id: &str,
        user_account_id: &str,
        role: Role,
        audit: &AuditEvent,
    ) -> Result<MemberChange>;
    /// Removes a member (its keys and sessions go with it), unless it is
    /// the account's last owner.
    async fn remove_member(
        &self,
        account_id: &str,
        user_account_id: &str,
        audit: &AuditEvent,
    ) -> Result<MemberChange>;
    /// Replaces a user's password hash (only if it is still
    /// `expected_hash`, when given) and ends every session of that user but
    /// `keep_session` (the one that asked), recording `audit`; false if the
    /// user account is gone or its hash changed meanwhile.
    async fn change_password(
        &self,
        user_account_id: &str,
        password_hash: &str,
        expected_hash: Option<&str>,
        keep_session: Option<&[u8]>,
        audit: &AuditEvent,
    ) -> Result<bool>;
}

/// Revokes the open invites `user_account_id` made (it is no longer an
/// owner, or no longer a member).
async fn revoke_invites_by_tx(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    user_account_id: &str,
    now: i64,
) -> Result<u64> {
    Ok(sqlx::query(
        "UPDATE invites SET revoked_at = $1 WHERE invited_by = $2 \
         AND accepted_at IS NULL AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(user_account_id)
    .execute(&mut **tx)
    .await?
    .rows_affected())
}

const INVITE_COLUMNS: &str = "id, account_id, email, role, token_hash, invited_by, created_at, \
     expires_at, accepted_at, accepted_by, revoked_at";

fn invite_from(row: &AnyRow) -> Result<Invite> {
    Ok(Invite {
        id: row.try_get("id")?,
        account_id: row.try_get("account_id")?,
        email: row.try_get("email")?,
        role: role_from(&row.try_get::<String, _>("role")?)?,
        token_hash: row.try_get("token_hash")?,
        invited_by: row.try_get("invited_by")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        accepted_at: row.try_get("accepted_at")?,
        accepted_by: row.try_get("accepted_by")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

impl SqlStore {
    /// On PostgreSQL, locks the account's row for the transaction, so that
    /// two concurrent changes to its owners are checked one after the
    /// other (SQLite has one writer anyway).
    async fn lock_account_tx(&self, tx: &mut Transaction<'_, Any>, account_id: &str) -> Result<()> {
        if self.backend() == Backend::Postgres {
            sqlx::query("SELECT id FROM accounts WHERE id = $1 FOR UPDATE")
                .bind(account_id)
                .fetch_optional(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// The member's role, and how many owners its account has.
    async fn member_and_owners(
        tx: &mut Transaction<'_, Any>,
        account_id: &str,
        user_account_id: &str,
    ) -> Result<Option<(Role, i64)>> {
        let role: Option<String> =
            sqlx::query_scalar("SELECT role FROM user_accounts WHERE id = $1 AND account_id = $2")
                .bind(user_account_id)
                .bind(account_id)
                .fetch_optional(&mut **tx)
                .await?;
        let Some(role) = role else {
            return Ok(None);
        };
        let owners: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM user_accounts WHERE account_id = $1 AND role = 'owner'",
        )
        .bind(account_id)
        .fetch_one(&mut **tx)
        .await?;
        Ok(Some((role_from(&role)?, owners)))
    }
}

#[async_trait]
impl TeamStore for SqlStore {
    async fn list_members(&self, account_id: &str, page: &Page) -> Result<PageOf<UserAccount>> {
        self.page(
            "user_accounts",
            USER_ACCOUNT_COLUMNS,
            "account_id = $1",
            &[account_id],
            page,
            user_account_from,
        )
        .await
    }

    async fn create_invite(&self, invite: &Invite, audit: &AuditEvent) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO invites (id, account_id, email, role, token_hash, invited_by, created_at, \
             expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&invite.id)
        .bind(&invite.account_id)
        .bind(&invite.email)
        .bind(invite.role.as_str())
        .bind(&invite.token_hash)
        .bind(&invite.invited_by)
        .bind(invite.created_at)
        .bind(invite.expires_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| classify(e, "an invite with this id already exists"))?;
        insert_audit_tx(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_invites(&self, account_id: &str, page: &Page) -> Result<PageOf<Invite>> {
        self.page(
            "invites",
            INVITE_COLUMNS,
            "account_id = $1 AND accepted_at IS NULL AND revoked_at IS NULL",
            &[account_id],
            page,
            invite_from,
        )
        .await
    }

    async fn get_invite(&self, id: &str) -> Result<Option<Invite>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {INVITE_COLUMNS} FROM invites WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(invite_from).transpose()
    }

    async fn find_invite_by_token_hash(&self, token_hash: &[u8]) -> Result<Option<Invite>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {INVITE_COLUMNS} FROM invites WHERE token_hash = $1"
        )))
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(invite_from).transpose()
    }

    async fn revoke_invite(&self, id: &str, now: i64, audit: &AuditEvent) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE invites SET revoked_at = $1 WHERE id = $2 AND accepted_at IS NULL \
             AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        insert_audit_tx(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn accept_invite(
        &self,
        invite_id: &str,
        user: &UserAccount,
        now: i64,
        audit: &AuditEvent,
    ) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE invites SET accepted_at = $1, accepted_by = $2 WHERE id = $3 \
             AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > $1 \
             AND EXISTS (SELECT 1 FROM user_accounts u WHERE u.id = invites.invited_by \
             AND u.account_id = invites.account_id AND u.role = 'owner')",
        )
        .bind(now)
        .bind(&user.id)
        .bind(invite_id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO user_accounts (id, account_id, email, password_hash, created_at, role) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&user.id)
        .bind(&user.account_id)
        .bind(&user.email)
        .bind(&user.password_hash)
        .bind(user.created_at)
        .bind(user.role.as_str())
        .execute(&mut *tx)
        .await
        .map_err(|e| classify(e, "a user account with this email already exists"))?;
        insert_audit_tx(&mut tx, audit).await?;
        self.record_change_tx(&mut tx, audit.at, Change::UserAccount(&user.id))
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn set_member_role(
        &self,
        account_id: &str,
        user_account_id: &str,
        role: Role,
        audit: &AuditEvent,
    ) -> Result<MemberChange> {
        let mut tx = self.write_tx().await?;
        self.lock_account_tx(&mut tx, account_id).await?;
        let Some((current, owners)) =
            Self::member_and_owners(&mut tx, account_id, user_account_id).await?
        else {
            return Ok(MemberChange::NotFound);
        };
        if current == Role::Owner && role != Role::Owner && owners <= 1 {
            return Ok(MemberChange::LastOwner);
        }
        sqlx::query("UPDATE user_accounts SET role = $1 WHERE id = $2")
            .bind(role.as_str())
            .bind(user_account_id)
            .execute(&mut *tx)
            .await?;
        if role != Role::Owner {
            revoke_invites_by_tx(&mut tx, user_account_id, audit.at).await?;
        }
        insert_audit_tx(&mut tx, audit).await?;
        self.record_change_tx(&mut tx, audit.at, Change::UserAccount(user_account_id))
            .await?;
        tx.commit().await?;
        Ok(MemberChange::Done)
    }

    async fn remove_member(
        &self,
        account_id: &str,
        user_account_id: &str,
        audit: &AuditEvent,
    ) -> Result<MemberChange> {
        let mut tx = self.write_tx().await?;
        self.lock_account_tx(&mut tx, account_id).await?;
        let Some((current, owners)) =
            Self::member_and_owners(&mut tx, account_id, user_account_id).await?
        else {
            return Ok(MemberChange::NotFound);
        };
        if current == Role::Owner && owners <= 1 {
            return Ok(MemberChange::LastOwner);
        }
        // Its keys and sessions go with it (foreign keys cascade), and so
        // do the invites it made: a removed owner must not come back
        // through a link it kept.
        revoke_invites_by_tx(&mut tx, user_account_id, audit.at).await?;
        sqlx::query("DELETE FROM user_accounts WHERE id = $1")
            .bind(user_account_id)
            .execute(&mut *tx)
            .await?;
        insert_audit_tx(&mut tx, audit).await?;
        self.record_change_tx(&mut tx, audit.at, Change::UserAccount(user_account_id))
            .await?;
        tx.commit().await?;
        Ok(MemberChange::Done)
    }

    async fn change_password(
        &self,
        user_account_id: &str,
        password_hash: &str,
        expected_hash: Option<&str>,
        keep_session: Option<&[u8]>,
        audit: &AuditEvent,
    ) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let done = match expected_hash {
            // Only if nobody changed it since it was checked.
            Some(old) => {
                sqlx::query(
                    "UPDATE user_accounts SET password_hash = $1 WHERE id = $2 \
                     AND password_hash = $3",
                )
                .bind(password_hash)
                .bind(user_account_id)
                .bind(old)
                .execute(&mut *tx)
                .await?
            }
            None => {
                sqlx::query("UPDATE user_accounts SET password_hash = $1 WHERE id = $2")
                    .bind(password_hash)
                    .bind(user_account_id)
                    .execute(&mut *tx)
                    .await?
            }
        };
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        match keep_session {
            Some(keep) => {
                sqlx::query(
                    "DELETE FROM dashboard_sessions WHERE user_account_id = $1 AND id_hash <> $2",
                )
                .bind(user_account_id)
                .bind(keep)
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM dashboard_sessions WHERE user_account_id = $1")
                    .bind(user_account_id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        insert_audit_tx(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }
}
