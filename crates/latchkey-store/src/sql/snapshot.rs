//! The snapshot the key index is built from: everything verification
//! needs, read in one transaction, whole or streamed in pages.

use sqlx::any::AnyRow;
use sqlx::{Any, AssertSqlSafe, Row, Transaction};

use super::apps::{APP_COLUMNS, app_from};
use super::bootstrap::operator_token_from;
use super::keys::{KEY_COLUMNS, credits_from, key_from, policy_from, public_key_from};
use super::verifier_tokens::{VERIFIER_TOKEN_COLUMNS, verifier_token_from};
use super::{Backend, SqlStore};
use crate::{KeyKind, Result, Snapshot, SnapshotHead, SnapshotKey, StoreError};

/// Rows per query when [`Store::snapshot`](crate::Store::snapshot) reads a large table.
const SNAPSHOT_PAGE: i64 = 10_000;

/// Every row of `table` in `seq` order, read a page at a time inside the
/// snapshot's transaction: only one page of driver rows exists at once,
/// instead of the whole table as driver rows next to its converted copy
/// (with 10^6 keys that copy cost about a gigabyte at start-up).
async fn snapshot_table<T>(
    tx: &mut Transaction<'_, Any>,
    table: &str,
    columns: &str,
    from: fn(&AnyRow) -> Result<T>,
) -> Result<Vec<T>> {
    let sql = format!("SELECT seq, {columns} FROM {table} WHERE seq > $1 ORDER BY seq LIMIT $2");
    let mut out = Vec::new();
    let mut after = 0i64;
    loop {
        let rows = sqlx::query(AssertSqlSafe(sql.clone()))
            .bind(after)
            .bind(SNAPSHOT_PAGE)
            .fetch_all(&mut **tx)
            .await?;
        let Some(last) = rows.last() else {
            break;
        };
        after = last.try_get("seq")?;
        out.reserve(rows.len());
        for row in &rows {
            out.push(from(row)?);
        }
        if rows.len() < usize::try_from(SNAPSHOT_PAGE).unwrap_or(usize::MAX) {
            break;
        }
    }
    Ok(out)
}

/// Sends every key to `keys` in `seq` order, one page of `batch` keys at a
/// time, inside the snapshot's transaction. The receiver prepares a page
/// while the next one is read. Returns early if the receiver is gone.
///
/// Each page comes back as ONE row holding a JSON array of the keys (the
/// secrets in hex): through sqlx's `Any` driver every row and every value
/// is copied twice and handed between threads one row at a time, which
/// with 10^6 keys cost more than everything else at start-up together.
async fn snapshot_keys(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    batch: usize,
    keys: &tokio::sync::mpsc::Sender<Vec<SnapshotKey>>,
) -> Result<()> {
    // The CHECK constraint on api_keys sets exactly the owner column of
    // the key's kind, so COALESCE picks it.
    let page = "SELECT seq, id, kind, account_id, \
         COALESCE(app_id, user_account_id, service_account_id) AS owner_id, \
         secret_sealed, expires_at, last_used_at, policy, credits_remaining, credits_period, \
         credits_version, public_key \
         FROM api_keys WHERE seq > $1 ORDER BY seq LIMIT $2";
    let sql = match backend {
        Backend::Sqlite => format!(
            "SELECT MAX(seq), COUNT(*), json_group_array(json_array(id, kind, account_id, \
             owner_id, hex(secret_sealed), expires_at, last_used_at, policy, credits_remaining, \
             credits_period, credits_version, public_key)) FROM ({page})"
        ),
        Backend::Postgres => format!(
            "SELECT MAX(seq), COUNT(*), COALESCE(json_agg(json_build_array(id, kind, \
             account_id, owner_id, encode(secret_sealed, 'hex'), expires_at, last_used_at, policy, \
             credits_remaining, credits_period, credits_version, public_key))::text, \
             '[]') FROM ({page}) AS page"
        ),
    };
    let batch = batch.max(1);
    let limit = i64::try_from(batch).unwrap_or(i64::MAX);
    let mut after = 0i64;
    loop {
        let row = sqlx::query(AssertSqlSafe(sql.clone()))
            .bind(after)
            .bind(limit)
            .fetch_one(&mut **tx)
            .await?;
        let last: Option<i64> = row.try_get(0)?;
        let count: i64 = row.try_get(1)?;
        let Some(last) = last else {
            return Ok(());
        };
        after = last;
        let page = snapshot_keys_from_json(row.try_get(2)?)?;
        if i64::try_from(page.len()).ok() != Some(count) {
            return Err(StoreError::Corrupt("a snapshot page lost keys".into()));
        }
        let full = page.len() >= batch;
        if keys.send(page).await.is_err() || !full {
            return Ok(());
        }
    }
}

/// One key of a snapshot page: id, kind, account id, owner id, sealed
/// secret (hex), expiry, last use, policy (JSON text), credit balance,
/// its refill period and version, public key (JWK text).
type PageKey = (
    String,
    String,
    String,
    Option<String>,
    String,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    i64,
    Option<String>,
);

fn snapshot_keys_from_json(text: &str) -> Result<Vec<SnapshotKey>> {
    let rows: Vec<PageKey> = serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("a snapshot page is not readable: {e}")))?;
    rows.into_iter()
        .map(
            |(
                id,
                kind,
                account_id,
                owner_id,
                sealed,
                expires_at,
                last_used_at,
                policy,
                credits_remaining,
                credits_period,
                credits_version,
                public_key,
            )| {
                let kind = KeyKind::parse(&kind)
                    .ok_or_else(|| StoreError::Corrupt(format!("unknown key kind {kind:?}")))?;
                Ok(SnapshotKey {
                    id,
                    kind,
                    account_id,
                    owner_id: owner_id
                        .ok_or_else(|| StoreError::Corrupt("a key has no owner".into()))?,
                    secret_sealed: from_hex(&sealed)?,
                    public_key: public_key_from(public_key)?,
                    expires_at,
                    last_used_at,
                    policy: policy_from(policy)?,
                    credits: credits_from(credits_remaining, credits_period, credits_version),
                })
            },
        )
        .collect()
}

/// Hex of either case (SQLite's `hex` writes upper case, PostgreSQL's
/// `encode` lower case).
fn from_hex(text: &str) -> Result<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let bad = || StoreError::Corrupt("a sealed secret is not hex".into());
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return Err(bad());
    }
    // A plain loop into a vector of the right size: an iterator collected
    // into a `Result` does not know the size and grows the vector as it
    // goes (10^6 secrets at start-up).
    let mut out = Vec::with_capacity(bytes.len() / 2);
    for pair in bytes.chunks_exact(2) {
        match (nibble(pair[0]), nibble(pair[1])) {
            (Some(high), Some(low)) => out.push(high << 4 | low),
            _ => return Err(bad()),
        }
    }
    Ok(out)
}

/// Everything but the keys, in the snapshot's transaction; the change
/// number first, so that the snapshot holds every change up to it.
async fn snapshot_head(tx: &mut Transaction<'_, Any>, count_keys: bool) -> Result<SnapshotHead> {
    let change_seq: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM changes")
        .fetch_one(&mut **tx)
        .await?;
    let accounts: Vec<String> = sqlx::query_scalar("SELECT id FROM accounts")
        .fetch_all(&mut **tx)
        .await?;
    let pairs = |rows: Vec<AnyRow>| -> Result<Vec<(String, String)>> {
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    };
    let apps = snapshot_table(tx, "apps", APP_COLUMNS, app_from).await?;
    let service_accounts = pairs(
        sqlx::query("SELECT id, account_id FROM service_accounts")
            .fetch_all(&mut **tx)
            .await?,
    )?;
    let grants = pairs(
        sqlx::query("SELECT service_account_id, app_id FROM service_account_apps")
            .fetch_all(&mut **tx)
            .await?,
    )?;
    let members = sqlx::query("SELECT id, account_id, role FROM user_accounts")
        .fetch_all(&mut **tx)
        .await?
        .iter()
        .map(|r| {
            let role: String = r.try_get(2)?;
            Ok((
                r.try_get(0)?,
                r.try_get(1)?,
                super::accounts::role_from(&role)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let operator_tokens = sqlx::query("SELECT id, token_hash, created_at FROM operator_tokens")
        .fetch_all(&mut **tx)
        .await?
        .iter()
        .map(operator_token_from)
        .collect::<Result<Vec<_>>>()?;
    let verifier_tokens = snapshot_table(
        tx,
        "verifier_tokens",
        VERIFIER_TOKEN_COLUMNS,
        verifier_token_from,
    )
    .await?;
    let signers = super::signing_keys::signers(tx).await?;
    let key_count: i64 = if count_keys {
        sqlx::query_scalar("SELECT COUNT(*) FROM api_keys")
            .fetch_one(&mut **tx)
            .await?
    } else {
        0
    };
    Ok(SnapshotHead {
        accounts,
        apps,
        service_accounts,
        grants,
        members,
        operator_tokens,
        verifier_tokens,
        signers,
        key_count: u64::try_from(key_count).unwrap_or(0),
        change_seq,
    })
}

/// The snapshot's one read transaction (on PostgreSQL, one view of the
/// database for all its statements).
async fn snapshot_tx(store: &SqlStore) -> Result<Transaction<'static, Any>> {
    Ok(match store.backend {
        Backend::Sqlite => store.pool.begin().await?,
        Backend::Postgres => {
            let mut tx = store
                .pool
                .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await?;
            // A snapshot streamed to a replica waits on its reader between
            // pages: a slow link may take longer than the sessions' 10 s
            // (see `POSTGRES_SESSION`). The reader gives up on a stalled
            // client itself; this bound only ends a transaction that
            // nothing ends.
            sqlx::query("SET LOCAL idle_in_transaction_session_timeout = '5min'")
                .execute(&mut *tx)
                .await?;
            tx
        }
    })
}

pub(super) async fn read(store: &SqlStore) -> Result<Snapshot> {
    // One read transaction, so the parts agree with each other (and
    // with the change number read first).
    let mut tx = snapshot_tx(store).await?;
    let head = snapshot_head(&mut tx, false).await?;
    let keys = snapshot_table(&mut tx, "api_keys", KEY_COLUMNS, key_from).await?;
    tx.commit().await?;
    Ok(Snapshot {
        accounts: head.accounts,
        keys,
        apps: head.apps,
        service_accounts: head.service_accounts,
        grants: head.grants,
        members: head.members,
        operator_tokens: head.operator_tokens,
        verifier_tokens: head.verifier_tokens,
        signers: head.signers,
        change_seq: head.change_seq,
    })
}

pub(super) async fn read_into(
    store: &SqlStore,
    batch: usize,
    head: &mut (dyn FnMut(SnapshotHead) + Send),
    keys: tokio::sync::mpsc::Sender<Vec<SnapshotKey>>,
) -> Result<()> {
    let mut tx = snapshot_tx(store).await?;
    head(snapshot_head(&mut tx, true).await?);
    snapshot_keys(&mut tx, store.backend, batch, &keys).await?;
    tx.commit().await?;
    Ok(())
}
