//! The audit log: appending events (with the webhook deliveries they
//! cause) and listing them under a filter.

use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{Any, AssertSqlSafe, Row, Transaction};

use super::{SqlStore, classify, json_object, page_of};
use crate::{Actor, AuditEvent, AuditFilter, Page, PageOf, Result, StoreError};

const AUDIT_COLUMNS: &str = "id, at, account_id, app_id, action, actor_type, actor_id, address, \
     target_type, target_id, outcome, details, request_id";

fn audit_from(row: &AnyRow) -> Result<AuditEvent> {
    let actor_type: String = row.try_get("actor_type")?;
    let actor_id: Option<String> = row.try_get("actor_id")?;
    let actor = match (actor_type.as_str(), actor_id) {
        ("operator", Some(token_id)) => Actor::Operator { token_id },
        ("key", Some(key_id)) => Actor::Key { key_id },
        ("verifierToken", Some(token_id)) => Actor::VerifierToken { token_id },
        ("userAccount", Some(user_account_id)) => Actor::UserAccount { user_account_id },
        ("system", _) => Actor::System,
        _ => {
            return Err(StoreError::Corrupt(
                "an audit event has an unknown actor".into(),
            ));
        }
    };
    Ok(AuditEvent {
        id: row.try_get("id")?,
        at: row.try_get("at")?,
        account_id: row.try_get("account_id")?,
        app_id: row.try_get("app_id")?,
        action: row.try_get("action")?,
        actor,
        address: row.try_get("address")?,
        target_type: row.try_get("target_type")?,
        target_id: row.try_get("target_id")?,
        outcome: row.try_get("outcome")?,
        details: json_object(row.try_get("details")?)?,
        notify: None,
        request_id: row.try_get("request_id")?,
    })
}

/// Appends an audit event and enqueues its webhook deliveries, inside the
/// caller's transaction. A delivery's id is derived from the event and the
/// webhook, so it is stable across retries and nodes.
pub(crate) async fn insert_audit_tx(
    tx: &mut Transaction<'_, Any>,
    audit: &AuditEvent,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_events (id, at, account_id, app_id, action, actor_type, actor_id, \
         address, target_type, target_id, outcome, details, request_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(&audit.id)
    .bind(audit.at)
    .bind(&audit.account_id)
    .bind(&audit.app_id)
    .bind(&audit.action)
    .bind(audit.actor.kind())
    .bind(audit.actor.id())
    .bind(&audit.address)
    .bind(&audit.target_type)
    .bind(&audit.target_id)
    .bind(&audit.outcome)
    .bind(Value::Object(audit.details.clone()).to_string())
    .bind(&audit.request_id)
    .execute(&mut **tx)
    .await
    .map_err(|e| classify(e, "an audit event with this id already exists"))?;
    let (Some(notify), Some(app_id)) = (&audit.notify, &audit.app_id) else {
        return Ok(());
    };
    let webhooks: Vec<String> = sqlx::query_scalar(
        "SELECT w.id FROM webhooks w JOIN webhook_triggers t ON t.webhook_id = w.id \
         WHERE w.app_id = $1 AND t.trigger = $2 ORDER BY w.seq",
    )
    .bind(app_id)
    .bind(notify.trigger)
    .fetch_all(&mut **tx)
    .await?;
    for webhook_id in webhooks {
        sqlx::query(
            "INSERT INTO webhook_deliveries (id, webhook_id, event_id, trigger, payload, \
             next_attempt_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(delivery_id(&audit.id, &webhook_id))
        .bind(&webhook_id)
        .bind(&audit.id)
        .bind(notify.trigger)
        .bind(&notify.payload)
        .bind(audit.at)
        .bind(audit.at)
        .bind(audit.at)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// `dlv_` + the random parts of the event id and the webhook id.
pub fn delivery_id(event_id: &str, webhook_id: &str) -> String {
    let body = |id: &str| id.split_once('_').map_or(id, |(_, b)| b).to_string();
    format!("dlv_{}{}", body(event_id), body(webhook_id))
}

/// A value bound to a numbered placeholder of a query built at run time.
#[derive(Debug, Clone, Copy)]
enum SqlValue<'a> {
    Text(&'a str),
    Int(i64),
}

/// Binds `values` to `$1`, `$2`, ... of `query`.
fn bind_all<'q>(
    query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>,
    values: &[SqlValue<'q>],
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments> {
    values.iter().fold(query, |q, v| match *v {
        SqlValue::Text(t) => q.bind(t),
        SqlValue::Int(n) => q.bind(n),
    })
}

/// The audit list's conditions, with only the filters given (numbered
/// `$1`, `$2`, ... in the order of the values returned). Conditions of the
/// form `($1 IS NULL OR account_id = $1)` would keep the planner from
/// using the `(account_id, seq)` and `(app_id, seq)` indexes, so that a
/// page of one account's events would scan every account's.
fn audit_where<'a>(filter: &'a AuditFilter, owner: &str) -> (String, Vec<SqlValue<'a>>) {
    let mut conditions = vec!["TRUE".to_string()];
    let mut values = Vec::new();
    if let Some(account) = &filter.account_id {
        values.push(SqlValue::Text(account));
        conditions.push(format!("account_id = ${}", values.len()));
    }
    if let Some(app) = &filter.app_id {
        values.push(SqlValue::Text(app));
        conditions.push(format!("app_id = ${}", values.len()));
    }
    if let Some(sa) = &filter.reachable_by {
        values.push(SqlValue::Text(sa));
        let n = values.len();
        conditions.push(format!(
            "(app_id IN (SELECT app_id FROM service_account_apps \
             WHERE service_account_id = ${n}) OR target_id = ${n} OR {owner} = ${n})"
        ));
    }
    if let Some(action) = &filter.action {
        values.push(SqlValue::Text(action));
        conditions.push(format!("action = ${}", values.len()));
    }
    if let Some(since) = filter.since {
        values.push(SqlValue::Int(since));
        conditions.push(format!("at >= ${}", values.len()));
    }
    if let Some(until) = filter.until {
        values.push(SqlValue::Int(until));
        conditions.push(format!("at <= ${}", values.len()));
    }
    if let Some(target) = &filter.target_id {
        values.push(SqlValue::Text(target));
        conditions.push(format!("target_id = ${}", values.len()));
    }
    (conditions.join(" AND "), values)
}

/// A page of the audit list: the events under `where_sql` (with `n`
/// values bound) before the sequence number `$n+1`, newest first, at most
/// `$n+2` of them.
fn audit_page_sql(where_sql: &str, n: usize) -> String {
    format!(
        "SELECT {AUDIT_COLUMNS} FROM audit_events WHERE {where_sql} AND seq < ${} \
         ORDER BY seq DESC LIMIT ${}",
        n + 1,
        n + 2
    )
}

pub(super) async fn record(store: &SqlStore, audit: &AuditEvent) -> Result<()> {
    let mut tx = store.write_tx().await?;
    insert_audit_tx(&mut tx, audit).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn list(
    store: &SqlStore,
    filter: &AuditFilter,
    page: &Page,
) -> Result<PageOf<AuditEvent>> {
    let owner = store.backend.json_text("details", "owner");
    let (where_sql, values) = audit_where(filter, &owner);
    let n = values.len();
    let before: i64 = match &page.after {
        None => i64::MAX,
        Some(after) => {
            let sql = format!(
                "SELECT seq FROM audit_events WHERE {where_sql} AND id = ${}",
                n + 1
            );
            bind_all(sqlx::query(AssertSqlSafe(sql)), &values)
                .bind(after)
                .fetch_optional(&store.pool)
                .await?
                .ok_or(StoreError::BadCursor)?
                .try_get("seq")?
        }
    };
    let rows = bind_all(
        sqlx::query(AssertSqlSafe(audit_page_sql(&where_sql, n))),
        &values,
    )
    .bind(before)
    .bind(i64::from(page.limit) + 1)
    .fetch_all(&store.pool)
    .await?;
    page_of(&rows, page.limit, audit_from)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLite's plan for a page of the audit list under `filter`.
    async fn audit_plan(filter: &AuditFilter) -> String {
        let store = SqlStore::in_memory().await.expect("store");
        let owner = store.backend.json_text("details", "owner");
        let (where_sql, values) = audit_where(filter, &owner);
        let sql = format!(
            "EXPLAIN QUERY PLAN {}",
            audit_page_sql(&where_sql, values.len())
        );
        let rows = bind_all(sqlx::query(AssertSqlSafe(sql)), &values)
            .bind(i64::MAX)
            .bind(51i64)
            .fetch_all(&store.pool)
            .await
            .expect("plan");
        rows.iter()
            .map(|r| r.try_get::<String, _>("detail").expect("detail"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    #[tokio::test]
    async fn audit_pages_of_one_account_or_app_use_their_index() {
        let account = AuditFilter {
            account_id: Some("acc_A".into()),
            action: Some("key.created".into()),
            ..AuditFilter::default()
        };
        let plan = audit_plan(&account).await;
        assert!(plan.contains("audit_events_account"), "{plan}");
        let app = AuditFilter {
            app_id: Some("ap_1".into()),
            since: Some(1),
            until: Some(2),
            ..AuditFilter::default()
        };
        let plan = audit_plan(&app).await;
        assert!(plan.contains("audit_events_app"), "{plan}");
    }

    #[test]
    fn audit_conditions_number_only_the_filters_given() {
        let filter = AuditFilter {
            app_id: Some("ap_1".into()),
            reachable_by: Some("sa_1".into()),
            until: Some(7),
            ..AuditFilter::default()
        };
        let (sql, values) = audit_where(&filter, "owner");
        assert_eq!(values.len(), 3);
        assert!(sql.contains("app_id = $1"), "{sql}");
        assert!(
            sql.contains("service_account_id = $2) OR target_id = $2 OR owner = $2"),
            "{sql}"
        );
        assert!(sql.contains("at <= $3"), "{sql}");
        assert!(!sql.contains("AND account_id"), "{sql}");
        assert_eq!(audit_where(&AuditFilter::default(), "owner").0, "TRUE");
    }
}
