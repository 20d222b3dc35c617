//! [`Store`] for [`SqlStore`]: each method hands over to the file of the
//! entity it touches, in the order of the trait.

use async_trait::async_trait;

use super::{
    SqlStore, accounts, app_users, apps, audit, bootstrap, changes, key_notices, keys,
    service_accounts, signing_keys, snapshot, verifier_tokens,
};
use crate::{
    Account, ApiKey, App, AppUser, AuditEvent, AuditFilter, Change, ChangeBatch, Initialization,
    KeyNotice, KeyOwnerRef, NewAccount, NewSigningKey, OperatorToken, Page, PageOf, Result,
    Rotation, ServiceAccount, SigningKey, Snapshot, SnapshotHead, SnapshotKey, Store, TokenKind,
    UserAccount, VerifierToken,
};

#[async_trait]
impl Store for SqlStore {
    // --- bootstrap ------------------------------------------------------------

    async fn is_initialized(&self) -> Result<bool> {
        bootstrap::is_initialized(self).await
    }

    async fn initialize(&self, init: &Initialization) -> Result<()> {
        bootstrap::initialize(self, init).await
    }

    async fn master_key_check(&self) -> Result<Option<Vec<u8>>> {
        bootstrap::master_key_check(self).await
    }

    async fn operator_tokens(&self) -> Result<Vec<OperatorToken>> {
        bootstrap::operator_tokens(self).await
    }

    async fn create_operator_token(&self, token: &OperatorToken, audit: &AuditEvent) -> Result<()> {
        bootstrap::create_operator_token(self, token, audit).await
    }

    async fn delete_operator_token(&self, id: &str, audit: &AuditEvent) -> Result<bool> {
        self.delete_audited(
            "DELETE FROM operator_tokens WHERE id = $1",
            &[id],
            audit,
            Some(Change::OperatorToken(id)),
        )
        .await
    }

    // --- verifier tokens ------------------------------------------------------

    async fn create_verifier_token(&self, token: &VerifierToken, audit: &AuditEvent) -> Result<()> {
        verifier_tokens::create(self, token, audit).await
    }

    async fn list_verifier_tokens(
        &self,
        kind: TokenKind,
        page: &Page,
    ) -> Result<PageOf<VerifierToken>> {
        verifier_tokens::list(self, kind, page).await
    }

    async fn get_verifier_token(&self, id: &str) -> Result<Option<VerifierToken>> {
        verifier_tokens::get(self, id).await
    }

    async fn delete_verifier_token(&self, id: &str, audit: &AuditEvent) -> Result<bool> {
        verifier_tokens::delete(self, id, audit).await
    }

    // --- accounts -------------------------------------------------------------

    async fn create_account(&self, new: &NewAccount, audit: &AuditEvent) -> Result<()> {
        accounts::create(self, new, audit).await
    }

    async fn list_accounts(&self, page: &Page) -> Result<PageOf<Account>> {
        accounts::list(self, page).await
    }

    async fn get_account(&self, id: &str) -> Result<Option<Account>> {
        accounts::get(self, id).await
    }

    async fn delete_account(&self, id: &str, audit: &AuditEvent) -> Result<bool> {
        accounts::delete(self, id, audit).await
    }

    async fn get_user_account(&self, id: &str) -> Result<Option<UserAccount>> {
        accounts::get_user_account(self, id).await
    }

    // --- apps -----------------------------------------------------------------

    async fn create_app(&self, app: &App, creator: Option<&str>, audit: &AuditEvent) -> Result<()> {
        apps::create(self, app, creator, audit).await
    }

    async fn list_apps(
        &self,
        account_id: &str,
        only_reachable_by: Option<&str>,
        page: &Page,
    ) -> Result<PageOf<App>> {
        apps::list(self, account_id, only_reachable_by, page).await
    }

    async fn get_app(&self, id: &str) -> Result<Option<App>> {
        apps::get(self, id).await
    }

    async fn update_app(&self, app: &App, audit: &AuditEvent) -> Result<bool> {
        apps::update(self, app, audit).await
    }

    async fn delete_app(&self, id: &str, audit: &AuditEvent) -> Result<bool> {
        apps::delete(self, id, audit).await
    }

    // --- keys -----------------------------------------------------------------

    async fn signing_keys(&self, app_id: &str) -> Result<Vec<SigningKey>> {
        signing_keys::list(self, app_id).await
    }

    async fn create_signing_key(
        &self,
        key: &SigningKey,
        how: NewSigningKey,
        audit: &AuditEvent,
    ) -> Result<bool> {
        signing_keys::create(self, key, how, audit).await
    }

    async fn create_key(
        &self,
        key: &ApiKey,
        limit: u32,
        now: i64,
        audit: &AuditEvent,
    ) -> Result<()> {
        keys::create(self, key, limit, now, audit).await
    }

    async fn rotate_key(&self, rotation: &Rotation, now: i64, audit: &AuditEvent) -> Result<()> {
        keys::rotate(self, rotation, now, audit).await
    }

    async fn list_keys(&self, owner: KeyOwnerRef<'_>, page: &Page) -> Result<PageOf<ApiKey>> {
        keys::list(self, owner, page).await
    }

    async fn get_key(&self, id: &str) -> Result<Option<ApiKey>> {
        keys::get(self, id).await
    }

    async fn delete_key(&self, id: &str, audit: &AuditEvent) -> Result<bool> {
        keys::delete(self, id, audit).await
    }

    async fn record_last_used(&self, batch: &[(String, i64)]) -> Result<()> {
        keys::record_last_used(self, batch).await
    }

    async fn update_key(
        &self,
        key: &ApiKey,
        credits_set: bool,
        audit: &AuditEvent,
    ) -> Result<bool> {
        keys::update(self, key, credits_set, audit).await
    }

    async fn lease_ratelimit(
        &self,
        key_id: &str,
        subject: &str,
        window_start: i64,
        window_end: i64,
        limit: u32,
        want: u32,
    ) -> Result<(u32, u32)> {
        keys::lease_ratelimit(self, key_id, subject, window_start, window_end, limit, want).await
    }

    async fn lease_credits(
        &self,
        key_id: &str,
        want: i64,
        refill_amount: Option<i64>,
        period: i64,
    ) -> Result<(i64, i64, i64)> {
        keys::lease_credits(self, key_id, want, refill_amount, period).await
    }

    async fn return_credits(&self, batch: &[(String, i64, i64, i64)]) -> Result<()> {
        keys::return_credits(self, batch).await
    }

    async fn prune_ratelimit_leases(&self, before: i64) -> Result<u64> {
        keys::prune_ratelimit_leases(self, before).await
    }

    async fn record_credits(&self, batch: &[(String, i64, i64, i64)]) -> Result<()> {
        keys::record_credits(self, batch).await
    }

    // --- service accounts -----------------------------------------------------

    async fn create_service_account(&self, sa: &ServiceAccount, audit: &AuditEvent) -> Result<()> {
        service_accounts::create(self, sa, audit).await
    }

    async fn list_service_accounts(
        &self,
        account_id: &str,
        page: &Page,
    ) -> Result<PageOf<ServiceAccount>> {
        service_accounts::list(self, account_id, page).await
    }

    async fn get_service_account(&self, id: &str) -> Result<Option<ServiceAccount>> {
        service_accounts::get(self, id).await
    }

    async fn delete_service_account(&self, id: &str, audit: &AuditEvent) -> Result<bool> {
        service_accounts::delete(self, id, audit).await
    }

    async fn grant_app(
        &self,
        sa_id: &str,
        app_id: &str,
        now: i64,
        audit: &AuditEvent,
    ) -> Result<bool> {
        service_accounts::grant_app(self, sa_id, app_id, now, audit).await
    }

    async fn revoke_app(&self, sa_id: &str, app_id: &str, audit: &AuditEvent) -> Result<bool> {
        service_accounts::revoke_app(self, sa_id, app_id, audit).await
    }

    // --- app users ------------------------------------------------------------

    async fn create_app_user(&self, user: &AppUser, audit: &AuditEvent) -> Result<()> {
        app_users::create(self, user, audit).await
    }

    async fn list_app_users(&self, app_id: &str, page: &Page) -> Result<PageOf<AppUser>> {
        app_users::list(self, app_id, page).await
    }

    async fn find_app_user(&self, app_id: &str, id_or_external: &str) -> Result<Option<AppUser>> {
        app_users::find(self, app_id, id_or_external).await
    }

    async fn update_app_user(&self, user: &AppUser, audit: &AuditEvent) -> Result<bool> {
        app_users::update(self, user, audit).await
    }

    async fn delete_app_user(&self, app_id: &str, id: &str, audit: &AuditEvent) -> Result<bool> {
        app_users::delete(self, app_id, id, audit).await
    }

    // --- audit log and key notices --------------------------------------------

    async fn record_audit(&self, audit: &AuditEvent) -> Result<()> {
        audit::record(self, audit).await
    }

    async fn list_audit(&self, filter: &AuditFilter, page: &Page) -> Result<PageOf<AuditEvent>> {
        audit::list(self, filter, page).await
    }

    async fn keys_due_notice(
        &self,
        notice: KeyNotice,
        now: i64,
        limit: u32,
    ) -> Result<Vec<ApiKey>> {
        key_notices::due(self, notice, now, limit).await
    }

    async fn mark_key_notice(
        &self,
        key_id: &str,
        notice: KeyNotice,
        audit: &AuditEvent,
    ) -> Result<bool> {
        key_notices::mark(self, key_id, notice, audit).await
    }

    // --- loading and following the index --------------------------------------

    async fn snapshot(&self) -> Result<Snapshot> {
        snapshot::read(self).await
    }

    async fn snapshot_into(
        &self,
        batch: usize,
        head: &mut (dyn FnMut(SnapshotHead) + Send),
        keys: tokio::sync::mpsc::Sender<Vec<SnapshotKey>>,
    ) -> Result<()> {
        snapshot::read_into(self, batch, head, keys).await
    }

    async fn changes_since(&self, seq: i64, limit: u32) -> Result<ChangeBatch> {
        changes::since(self, seq, limit).await
    }

    async fn prune_changes(&self, before: i64) -> Result<u64> {
        changes::prune(self, before).await
    }

    fn backend_name(&self) -> &'static str {
        self.backend.as_str()
    }

    fn change_channel(&self) -> Option<&str> {
        self.channel.as_deref()
    }

    fn pool_stats(&self) -> Vec<crate::PoolStats> {
        super::observe::pool_stats(self)
    }

    async fn webhook_queue_depth(&self) -> Result<i64> {
        super::observe::webhook_queue_depth(self).await
    }

    async fn latest_change_seq(&self) -> Result<i64> {
        super::observe::latest_change_seq(self).await
    }
}
