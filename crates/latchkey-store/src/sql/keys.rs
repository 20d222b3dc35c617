//! API keys: creation under the per-owner limit, rotation, listing,
//! deletion and last use.

use sqlx::any::AnyRow;
use sqlx::{Any, AssertSqlSafe, Row, Transaction};

use super::audit::insert_audit_tx;
use super::{SqlStore, classify};
use crate::{
    ApiKey, AuditEvent, Change, KeyKind, KeyOwnerRef, KeyPolicy, Page, PageOf, PublicKey, Result,
    Rotation, StoreError, StoredCredits,
};

pub(super) const KEY_COLUMNS: &str = "id, kind, account_id, app_id, user_account_id, service_account_id, \
     display_name, secret_sealed, created_at, expires_at, last_used_at, rotated_from, replaced_by, \
     policy, credits_remaining, credits_period, credits_version, public_key";

pub(super) fn key_from(row: &AnyRow) -> Result<ApiKey> {
    let kind_text: &str = row.try_get("kind")?;
    let kind = KeyKind::parse(kind_text)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown key kind {kind_text:?}")))?;
    let owner_column = match kind {
        KeyKind::App => "app_id",
        KeyKind::UserAccount => "user_account_id",
        KeyKind::ServiceAccount => "service_account_id",
    };
    let owner_id: Option<String> = row.try_get(owner_column)?;
    Ok(ApiKey {
        id: row.try_get("id")?,
        kind,
        account_id: row.try_get("account_id")?,
        owner_id: owner_id.ok_or_else(|| StoreError::Corrupt("a key has no owner".into()))?,
        display_name: row.try_get("display_name")?,
        secret_sealed: row.try_get("secret_sealed")?,
        public_key: public_key_from(row.try_get("public_key")?)?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        last_used_at: row.try_get("last_used_at")?,
        rotated_from: row.try_get("rotated_from")?,
        replaced_by: row.try_get("replaced_by")?,
        policy: policy_from(row.try_get("policy")?)?,
        credits: credits_from(
            row.try_get("credits_remaining")?,
            row.try_get("credits_period")?,
            row.try_get("credits_version")?,
        ),
    })
}

/// A stored policy (NULL: none). One that does not read is corruption:
/// taking it for "no policy" would give the key its scope's full power.
pub(super) fn policy_from(text: Option<String>) -> Result<KeyPolicy> {
    match text {
        None => Ok(KeyPolicy::default()),
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| StoreError::Corrupt(format!("a key's policy is not readable: {e}"))),
    }
}

/// A stored public key (NULL: the key has a secret). One that does not
/// read is corruption.
pub(super) fn public_key_from(text: Option<String>) -> Result<Option<PublicKey>> {
    let Some(text) = text else {
        return Ok(None);
    };
    let jwk: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| StoreError::Corrupt(format!("a key's public key is not JSON: {e}")))?;
    PublicKey::from_jwk(&jwk)
        .map(Some)
        .map_err(|e| StoreError::Corrupt(format!("a key's public key is not usable: {e}")))
}

/// The stored policy's text, NULL for none.
fn policy_text(policy: &KeyPolicy) -> Result<Option<String>> {
    if policy.is_empty() {
        return Ok(None);
    }
    serde_json::to_string(policy)
        .map(Some)
        .map_err(|e| StoreError::Corrupt(format!("a key's policy cannot be written: {e}")))
}

pub(super) fn credits_from(
    remaining: Option<i64>,
    period: Option<i64>,
    version: i64,
) -> Option<StoredCredits> {
    remaining.map(|remaining| StoredCredits {
        remaining,
        period: period.unwrap_or(0),
        version,
    })
}

fn owner_columns(key: &ApiKey) -> (Option<&str>, Option<&str>, Option<&str>) {
    match key.owner() {
        KeyOwnerRef::App(id) => (Some(id), None, None),
        KeyOwnerRef::UserAccount(id) => (None, Some(id), None),
        KeyOwnerRef::ServiceAccount(id) => (None, None, Some(id)),
    }
}

/// The columns a new key is inserted with, bound as `$1`…`$16` by
/// [`bind_key`].
const KEY_INSERT_COLUMNS: &str = "id, kind, account_id, app_id, user_account_id, \
     service_account_id, display_name, secret_sealed, created_at, expires_at, rotated_from, \
     policy, credits_remaining, credits_period, credits_version, public_key";

type AnyQuery<'q> = sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>;

/// Binds a new key's values as `$1`…`$16`, in the order of
/// [`KEY_INSERT_COLUMNS`].
fn bind_key<'q>(query: AnyQuery<'q>, key: &'q ApiKey, policy: Option<String>) -> AnyQuery<'q> {
    let (app, user, sa) = owner_columns(key);
    let credits = key.credits;
    query
        .bind(&key.id)
        .bind(key.kind.as_str())
        .bind(&key.account_id)
        .bind(app)
        .bind(user)
        .bind(sa)
        .bind(&key.display_name)
        .bind(&key.secret_sealed)
        .bind(key.created_at)
        .bind(key.expires_at)
        .bind(&key.rotated_from)
        .bind(policy)
        .bind(credits.map(|c| c.remaining))
        .bind(credits.map(|c| c.period))
        .bind(credits.map_or(0, |c| c.version))
        .bind(key.public_key.as_ref().map(|k| k.to_jwk().to_string()))
}

pub(super) async fn insert_key_tx(tx: &mut Transaction<'_, Any>, key: &ApiKey) -> Result<()> {
    let sql = format!(
        "INSERT INTO api_keys ({KEY_INSERT_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
    );
    bind_key(
        sqlx::query(AssertSqlSafe(sql)),
        key,
        policy_text(&key.policy)?,
    )
    .execute(&mut **tx)
    .await
    .map_err(|e| classify(e, "a key with this id already exists"))?;
    Ok(())
}

pub(super) async fn create(
    store: &SqlStore,
    key: &ApiKey,
    limit: u32,
    now: i64,
    audit: &AuditEvent,
) -> Result<()> {
    // Only the owner's column: the owner's live keys are then counted
    // from its `*_live` index alone (migration 0007). An OR across the
    // three columns made it read the table row of every key the owner
    // ever had.
    let (owner_column, owner_id) = match key.owner() {
        KeyOwnerRef::App(id) => ("app_id", id),
        KeyOwnerRef::UserAccount(id) => ("user_account_id", id),
        KeyOwnerRef::ServiceAccount(id) => ("service_account_id", id),
    };
    let sql = format!(
        "INSERT INTO api_keys ({KEY_INSERT_COLUMNS}) \
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16 \
         WHERE (SELECT COUNT(*) FROM api_keys \
                WHERE {owner_column} = $17 AND replaced_by IS NULL \
                  AND (expires_at IS NULL OR expires_at > $18)) < $19"
    );
    let policy = policy_text(&key.policy)?;
    let mut tx = store.write_tx().await?;
    // Count and insert in one statement, so two concurrent creates cannot
    // both pass the limit.
    let done = bind_key(sqlx::query(AssertSqlSafe(sql)), key, policy)
        .bind(owner_id)
        .bind(now)
        .bind(i64::from(limit))
        .execute(&mut *tx)
        .await
        .map_err(|e| classify(e, "a key with this id already exists"))?;
    if done.rows_affected() == 0 {
        return Err(StoreError::LimitReached(limit));
    }
    insert_audit_tx(&mut tx, audit).await?;
    store
        .record_change_tx(&mut tx, audit.at, Change::Key(&key.id))
        .await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn rotate(
    store: &SqlStore,
    rotation: &Rotation,
    now: i64,
    audit: &AuditEvent,
) -> Result<()> {
    let mut tx = store.write_tx().await?;
    let (app, user, sa) = owner_columns(&rotation.new_key);
    let working: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM api_keys \
         WHERE (app_id = $1 OR user_account_id = $2 OR service_account_id = $3) \
           AND (expires_at IS NULL OR expires_at > $4)",
    )
    .bind(app)
    .bind(user)
    .bind(sa)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    if working >= i64::from(rotation.max_working) {
        return Err(StoreError::LimitReached(rotation.max_working));
    }
    let done = sqlx::query(
        "UPDATE api_keys SET replaced_by = $1, expires_at = $2 \
         WHERE id = $3 AND replaced_by IS NULL AND (expires_at IS NULL OR expires_at > $4)",
    )
    .bind(&rotation.new_key.id)
    .bind(rotation.old_expires_at)
    .bind(&rotation.old_id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::Conflict(
            "the key has already been rotated or has expired",
        ));
    }
    if let Some(policy) = &rotation.old_policy {
        sqlx::query(
            "UPDATE api_keys SET policy = $1, credits_remaining = NULL, credits_period = NULL, \
             credits_version = credits_version + 1 WHERE id = $2",
        )
        .bind(policy_text(policy)?)
        .bind(&rotation.old_id)
        .execute(&mut *tx)
        .await?;
    }
    insert_key_tx(&mut tx, &rotation.new_key).await?;
    insert_audit_tx(&mut tx, audit).await?;
    store
        .record_change_tx(&mut tx, audit.at, Change::Key(&rotation.old_id))
        .await?;
    store
        .record_change_tx(&mut tx, audit.at, Change::Key(&rotation.new_key.id))
        .await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn list(
    store: &SqlStore,
    owner: KeyOwnerRef<'_>,
    page: &Page,
) -> Result<PageOf<ApiKey>> {
    let (filter, id) = match owner {
        KeyOwnerRef::App(id) => ("app_id = $1", id),
        KeyOwnerRef::UserAccount(id) => ("user_account_id = $1", id),
        KeyOwnerRef::ServiceAccount(id) => ("service_account_id = $1", id),
    };
    store
        .page("api_keys", KEY_COLUMNS, filter, &[id], page, key_from)
        .await
}

pub(super) async fn get(store: &SqlStore, id: &str) -> Result<Option<ApiKey>> {
    let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1");
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&store.pool)
        .await?;
    row.as_ref().map(key_from).transpose()
}

pub(super) async fn delete(store: &SqlStore, id: &str, audit: &AuditEvent) -> Result<bool> {
    store
        .delete_audited(
            "DELETE FROM api_keys WHERE id = $1",
            &[id],
            audit,
            Some(Change::Key(id)),
        )
        .await
}

pub(super) async fn record_last_used(store: &SqlStore, batch: &[(String, i64)]) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let mut tx = store.write_tx().await?;
    for (id, at) in batch {
        sqlx::query(
            "UPDATE api_keys SET last_used_at = $1 \
             WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)",
        )
        .bind(at)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Writes a key's display name and policy, and its credit balance when
/// `credits_set` (a balance set through the API: its version is raised,
/// so nodes take it over the balance they hold). False if the key is gone.
pub(super) async fn update(
    store: &SqlStore,
    key: &ApiKey,
    credits_set: bool,
    audit: &AuditEvent,
) -> Result<bool> {
    let policy = policy_text(&key.policy)?;
    let mut tx = store.write_tx().await?;
    let credits = key.credits;
    let done = if credits_set || credits.is_none() {
        sqlx::query(
            "UPDATE api_keys SET display_name = $1, policy = $2, credits_remaining = $3, \
             credits_period = $4, credits_version = credits_version + 1 WHERE id = $5",
        )
        .bind(&key.display_name)
        .bind(policy)
        .bind(credits.map(|c| c.remaining))
        .bind(credits.map(|c| c.period))
        .bind(&key.id)
        .execute(&mut *tx)
        .await?
    } else {
        sqlx::query("UPDATE api_keys SET display_name = $1, policy = $2 WHERE id = $3")
            .bind(&key.display_name)
            .bind(policy)
            .bind(&key.id)
            .execute(&mut *tx)
            .await?
    };
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    insert_audit_tx(&mut tx, audit).await?;
    store
        .record_change_tx(&mut tx, audit.at, Change::Key(&key.id))
        .await?;
    tx.commit().await?;
    Ok(true)
}

/// Writes credit balances spent since the last write (no audit event, no
/// change: the balance moves with every verification). A key that lost
/// its credits meanwhile is left as it is.
pub(super) async fn record_credits(
    store: &SqlStore,
    batch: &[(String, i64, i64, i64)],
) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let mut tx = store.write_tx().await?;
    for (id, remaining, period, version) in batch {
        sqlx::query(
            "UPDATE api_keys SET credits_remaining = $1, credits_period = $2 \
             WHERE id = $3 AND credits_remaining IS NOT NULL AND credits_version = $4",
        )
        .bind(remaining)
        .bind(period)
        .bind(id)
        .bind(version)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Leases up to `want` counts of a key's rate-limit window (`subject`: ''
/// for the key, else the user of its appUser JWTs) for one node: what all
/// nodes took of it never exceeds `limit`. Returns the counts granted and
/// what the cluster has taken of the window since. Write transactions are
/// serialized (one advisory lock on PostgreSQL), so reading and then
/// raising `taken` is one step.
#[allow(clippy::too_many_arguments)]
pub(super) async fn lease_ratelimit(
    store: &SqlStore,
    key_id: &str,
    subject: &str,
    window_start: i64,
    window_end: i64,
    limit: u32,
    want: u32,
) -> Result<(u32, u32)> {
    let mut tx = store.write_tx().await?;
    sqlx::query(
        "INSERT INTO ratelimit_leases (key_id, subject, window_start, window_end, taken) \
         VALUES ($1, $2, $3, $4, 0) ON CONFLICT (key_id, subject, window_start) DO NOTHING",
    )
    .bind(key_id)
    .bind(subject)
    .bind(window_start)
    .bind(window_end)
    .execute(&mut *tx)
    .await?;
    let taken: i64 = sqlx::query_scalar(
        "SELECT taken FROM ratelimit_leases \
         WHERE key_id = $1 AND subject = $2 AND window_start = $3",
    )
    .bind(key_id)
    .bind(subject)
    .bind(window_start)
    .fetch_one(&mut *tx)
    .await?;
    let taken = u32::try_from(taken.max(0)).unwrap_or(u32::MAX);
    let granted = want.min(limit.saturating_sub(taken));
    if granted > 0 {
        sqlx::query(
            "UPDATE ratelimit_leases SET taken = taken + $1 \
             WHERE key_id = $2 AND subject = $3 AND window_start = $4",
        )
        .bind(i64::from(granted))
        .bind(key_id)
        .bind(subject)
        .bind(window_start)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok((granted, taken.saturating_add(granted)))
}

/// Deletes the leases of windows that ended before `before`.
pub(super) async fn prune_ratelimit_leases(store: &SqlStore, before: i64) -> Result<u64> {
    let mut tx = store.write_tx().await?;
    let done = sqlx::query("DELETE FROM ratelimit_leases WHERE window_end < $1")
        .bind(before)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(done.rows_affected())
}

/// Leases up to `want` credits of a key's balance to one node (nodes that
/// share the store): the balance, refilled first when `refill` says a new
/// period (`period`, the current one) has begun, never goes below zero.
/// Returns the credits granted, what the balance has left, and its period.
pub(super) async fn lease_credits(
    store: &SqlStore,
    key_id: &str,
    want: i64,
    refill_amount: Option<i64>,
    period: i64,
) -> Result<(i64, i64, i64)> {
    let mut tx = store.write_tx().await?;
    let row: Option<(Option<i64>, Option<i64>)> =
        sqlx::query_as("SELECT credits_remaining, credits_period FROM api_keys WHERE id = $1")
            .bind(key_id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some((Some(mut remaining), stored_period)) = row else {
        tx.commit().await?;
        return Ok((0, 0, period));
    };
    let mut stored_period = stored_period.unwrap_or(0);
    if let Some(amount) = refill_amount
        && period > stored_period
    {
        remaining = amount;
        stored_period = period;
    }
    let granted = want.clamp(0, remaining.max(0));
    let left = remaining - granted;
    sqlx::query("UPDATE api_keys SET credits_remaining = $1, credits_period = $2 WHERE id = $3")
        .bind(left)
        .bind(stored_period)
        .bind(key_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok((granted, left, stored_period))
}

/// Gives leased credits back (a node stopping): only to the balance they
/// came from (same period and version).
pub(super) async fn return_credits(
    store: &SqlStore,
    batch: &[(String, i64, i64, i64)],
) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let mut tx = store.write_tx().await?;
    for (id, amount, period, version) in batch {
        sqlx::query(
            "UPDATE api_keys SET credits_remaining = credits_remaining + $1 \
             WHERE id = $2 AND credits_remaining IS NOT NULL AND credits_period = $3 \
               AND credits_version = $4",
        )
        .bind(amount)
        .bind(id)
        .bind(period)
        .bind(version)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
