//! The operations: every flow that changes state, and the access checks
//! that reads share, as one function per operation. The `/v1` handlers
//! (`crate::api`), the dashboard's pages (`crate::dashboard`) and the
//! front doors are adapters around them: they parse, call an operation and
//! render its result.
//!
//! Each operation runs in one order: access check, audit event, store
//! write (the event goes in the same transaction), index update. An
//! operation that changes what verification sees takes the [`WriteGuard`]
//! as a parameter, so that calling it without the write lock does not
//! compile.

pub mod accounts;
pub mod apps;
pub mod key_policy;
pub mod keys;
pub mod members;
pub mod policy;
pub mod service_accounts;
pub mod signing_keys;
pub mod users;
pub mod verifier_tokens;
pub mod verify;
pub mod webhooks;

use std::net::IpAddr;
use std::sync::Arc;

use latchkey_core::Principal;
use latchkey_core::policy::{LivePolicy, Permission, Role};
use latchkey_core::principal::AppRef;
use latchkey_store::App;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Who acts: a verified principal and the peer address it came from.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    /// The peer's address, for the audit log.
    pub peer: Option<IpAddr>,
    /// The policy of the caller's key, when it has one: its permissions
    /// decide which of Latchkey's own operations it may call.
    pub policy: Option<Arc<LivePolicy>>,
    /// The role of the person behind a user-account key, its JWTs or a
    /// dashboard session (teams); `None` for every other caller.
    pub role: Option<Role>,
}

impl Caller {
    /// The one check of Latchkey's built-in permissions, which every
    /// operation makes: a person's role must allow `permission` (403
    /// `forbidden`, naming the role needed), and a key with a permission
    /// list must carry it (403 `insufficient_permissions`). A key's
    /// effective permissions are thus its role's intersected with its
    /// list. Keys without a list, operators and dashboard sessions may
    /// call every operation their scope (and role) reaches.
    pub fn require(&self, permission: Permission) -> ApiResult<()> {
        if let Some(role) = self.role
            && !role.allows(permission)
        {
            return Err(ApiError::role_lacks(role, permission));
        }
        self.require_listed(permission)
    }

    /// Only the key's permission list, not the role: for a person's own
    /// keys (see `ops::keys`), which never reach further than the role.
    pub fn require_listed(&self, permission: Permission) -> ApiResult<()> {
        match &self.policy {
            Some(p) if !p.has_permission(permission.as_str()) => Err(ApiError::lacks(permission)),
            _ => Ok(()),
        }
    }

    /// A key with a permission list may give the keys it creates or
    /// changes only permissions it carries itself, never the full power
    /// of a key without a list (it could otherwise make itself a stronger
    /// key).
    pub fn may_grant(&self, policy: &latchkey_core::policy::KeyPolicy) -> ApiResult<()> {
        let Some(own) = self.policy.as_ref().and_then(|p| p.permissions()) else {
            return Ok(());
        };
        let Some(wanted) = &policy.permissions else {
            return Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "insufficient_permissions",
                "a key with a permission list may create or change only keys with a \
                 permission list that it carries itself: send permissions",
            ));
        };
        match wanted
            .iter()
            .find(|w| own.binary_search_by(|p| (**p).cmp(w.as_str())).is_err())
        {
            Some(missing) => Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "insufficient_permissions",
                format!("the calling key does not carry {missing:?}, so it cannot give it"),
            )),
            None => Ok(()),
        }
    }

    /// The peer's address as the audit log records it.
    pub fn address(&self) -> Option<String> {
        self.peer.map(|ip| ip.to_string())
    }
}

/// The write token. Held by every operation that changes what
/// verification sees (keys, apps, service accounts, grants, accounts,
/// settings, verifier tokens), and by the other writes so that they are
/// checked against the same state, from after the request has been read
/// until the index is updated. It serializes those writes, so the store
/// and the index apply them in the same order. Taken after the body is
/// read (a slow client cannot hold it) and before access checks; on
/// acquiring it the caller's credential is checked again, so a key deleted
/// by one request cannot act in a request verified just before.
/// When dropped, it wakes the replication feed's streams (the change, if
/// any, is in the store and the index by then).
#[derive(Debug)]
pub struct WriteGuard {
    _lock: tokio::sync::OwnedMutexGuard<()>,
    feed: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
}

impl Drop for WriteGuard {
    fn drop(&mut self) {
        self.feed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

impl WriteGuard {
    /// Takes the lock and, when nodes share the store, first applies every
    /// change other nodes made: a write on this node then sees (and is
    /// checked against) everything written before it anywhere, such as an
    /// app created on another node a moment ago.
    async fn lock(state: &AppState) -> Result<tokio::sync::OwnedMutexGuard<()>, ApiError> {
        let guard = state.write_lock.clone().lock_owned().await;
        if state.freshness.is_shared() {
            crate::sync::catch_up(state).await.map_err(|e| match e {
                crate::sync::SyncError::Store(e) => ApiError::from(e),
                crate::sync::SyncError::Index(e) => {
                    tracing::error!(error = %e, "applying changes failed");
                    ApiError::internal()
                }
            })?;
        }
        Ok(guard)
    }

    /// For a caller with a credential: the lock, then the credential
    /// checked again.
    pub async fn acquire(state: &AppState, caller: &Caller) -> Result<Self, ApiError> {
        let guard = Self::lock(state).await?;
        if let Some(key_id) = caller.principal.key_id() {
            let live = state.index.key_is_live(key_id, state.now());
            if !live {
                return Err(
                    ApiError::unauthorized(&latchkey_core::AuthError::BadCredentials)
                        .with_title("the credential was deleted or expired while this request ran"),
                );
            }
        }
        // A person's role as it is now, not as it was when the request was
        // verified: a demotion just before is in effect.
        if let Principal::UserAccount {
            user_account_id, ..
        } = &caller.principal
            && state.index.member_role(user_account_id) != caller.role
        {
            return Err(ApiError::forbidden(
                "your role in this account changed while this request ran; send it again",
            ));
        }
        Ok(WriteGuard {
            _lock: guard,
            feed: state.feed.clone(),
        })
    }

    /// For the dashboard, which checks its session itself once it holds
    /// the lock (see `dashboard::csrf::SignedForm`).
    pub async fn for_session(state: &AppState) -> Result<Self, ApiError> {
        Ok(WriteGuard {
            _lock: Self::lock(state).await?,
            feed: state.feed.clone(),
        })
    }
}

/// An app as the access rules see it, for this caller.
pub fn app_ref<'a>(state: &AppState, caller: &Principal, app: &'a App) -> AppRef<'a> {
    let granted_to_caller = match caller {
        Principal::ServiceAccount {
            service_account_id, ..
        } => state
            .index
            .service_account_reaches(service_account_id, &app.id),
        _ => false,
    };
    AppRef {
        id: &app.id,
        account_id: &app.account_id,
        granted_to_caller,
    }
}

/// Loads an app or answers 404.
pub async fn load_app(state: &AppState, app_id: &str) -> ApiResult<App> {
    state
        .store
        .get_app(app_id)
        .await?
        .ok_or_else(|| ApiError::not_found("app"))
}

pub const MAX_NAME_LEN: usize = 100;

/// A required display name: trimmed, 1 to 100 characters, no control
/// characters.
pub fn display_name(value: &str, field: &str) -> ApiResult<String> {
    let v = value.trim();
    if v.is_empty() || v.chars().count() > MAX_NAME_LEN {
        return Err(ApiError::bad_request(format!(
            "{field} must be 1 to {MAX_NAME_LEN} characters"
        )));
    }
    if v.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(v.to_string())
}

pub const MAX_JSON_OBJECT_BYTES: usize = 16 * 1024;

/// RFC 7396 merge patch of a JSON object: null removes a member, objects
/// merge recursively, anything else replaces.
pub fn merge_patch(
    target: &mut serde_json::Map<String, serde_json::Value>,
    patch: &serde_json::Map<String, serde_json::Value>,
) {
    use serde_json::Value;
    for (k, v) in patch {
        match v {
            Value::Null => {
                target.remove(k);
            }
            Value::Object(p) => {
                let entry = target
                    .entry(k.clone())
                    .or_insert_with(|| Value::Object(serde_json::Map::new()));
                if !entry.is_object() {
                    *entry = Value::Object(serde_json::Map::new());
                }
                if let Value::Object(t) = entry {
                    merge_patch(t, p);
                }
            }
            other => {
                target.insert(k.clone(), other.clone());
            }
        }
    }
}

/// Refuses JSON objects larger than [`MAX_JSON_OBJECT_BYTES`] when stored.
pub fn check_object_size(
    value: &serde_json::Map<String, serde_json::Value>,
    field: &str,
) -> ApiResult<()> {
    let len = serde_json::to_vec(value)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if len > MAX_JSON_OBJECT_BYTES {
        return Err(ApiError::bad_request(format!(
            "{field} must be at most {MAX_JSON_OBJECT_BYTES} bytes of JSON"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut target = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": 4})
            .as_object()
            .cloned()
            .expect("object");
        let patch = json!({"a": null, "b": {"c": null, "x": 9}, "e": [1]});
        merge_patch(&mut target, patch.as_object().expect("object"));
        assert_eq!(
            serde_json::Value::Object(target),
            json!({"b": {"d": 3, "x": 9}, "e": [1]})
        );
    }

    /// A person's key may do what both its role and its permission list
    /// allow; the refusal names what is missing.
    #[test]
    fn a_role_and_a_permission_list_intersect() {
        use latchkey_core::policy::KeyPolicy;
        let caller = |role: Option<Role>, list: Option<&[&str]>| Caller {
            principal: Principal::UserAccount {
                key_id: "act_1".into(),
                account_id: "acc_A".into(),
                user_account_id: "ua_1".into(),
            },
            peer: None,
            policy: list.map(|l| {
                Arc::new(LivePolicy::new(
                    &KeyPolicy {
                        permissions: Some(l.iter().map(|p| p.to_string()).collect()),
                        ..KeyPolicy::default()
                    },
                    None,
                ))
            }),
            role,
        };
        let code = |r: ApiResult<()>| r.err().map(|e| e.code);
        let listed: &[&str] = &["latchkey:keys.write", "latchkey:service_accounts.write"];
        // A developer with both listed: keys yes, service accounts no (role).
        let dev = caller(Some(Role::Developer), Some(listed));
        assert_eq!(code(dev.require(Permission::KeysWrite)), None);
        assert_eq!(
            code(dev.require(Permission::ServiceAccountsWrite)),
            Some("forbidden")
        );
        // An owner whose key lacks apps.write: refused by the list.
        let owner = caller(Some(Role::Owner), Some(listed));
        assert_eq!(
            code(owner.require(Permission::AppsWrite)),
            Some("insufficient_permissions")
        );
        assert_eq!(code(owner.require(Permission::ServiceAccountsWrite)), None);
        // Without a list, the role alone decides.
        let viewer = caller(Some(Role::Viewer), None);
        assert_eq!(code(viewer.require(Permission::KeysRead)), None);
        let refused = viewer.require(Permission::KeysWrite).expect_err("refused");
        assert_eq!(refused.code, "forbidden");
        assert!(
            refused.title.contains("developer role or higher"),
            "{}",
            refused.title
        );
        // Own keys: only the list.
        assert_eq!(code(viewer.require_listed(Permission::KeysWrite)), None);
        // No role (other keys): only the list.
        let svc = caller(None, None);
        assert_eq!(code(svc.require(Permission::MembersWrite)), None);
    }

    #[test]
    fn display_names_are_checked() {
        assert_eq!(
            display_name("  My app ", "displayName").expect("ok"),
            "My app"
        );
        assert!(display_name("", "displayName").is_err());
        assert!(display_name("a\u{7}b", "displayName").is_err());
        assert!(display_name(&"x".repeat(101), "displayName").is_err());
    }
}
