//! The owners of keys in the index: accounts, apps and their policies,
//! service accounts and the apps they reach (grants). Deleting an owner
//! drops its keys.

use std::collections::HashSet;
use std::sync::Arc;

use crate::policy::Role;

use super::{AppEntry, AppPolicy, Inner, KeyIndex, KeyOwner};

impl KeyIndex {
    pub fn insert_account(&self, account_id: &str) {
        self.write().accounts.insert(account_id.into());
    }

    /// Sets what a live app's settings ask of verification.
    pub fn set_app_policy(&self, app_id: &str, policy: AppPolicy) {
        let mut inner = self.write();
        if let Some(app) = inner.apps.get(app_id) {
            app.max_token_ttl.put(policy.max_token_ttl);
            app.max_token_ttl.put_limit(policy.default_key_ratelimit);
            inner.policies.insert(app_id.to_string(), Arc::new(policy));
        }
    }

    /// A live app's policy (the default for an app without one).
    pub fn app_policy(&self, app_id: &str) -> Option<Arc<AppPolicy>> {
        let inner = self.read();
        if !inner.apps.contains_key(app_id) {
            return None;
        }
        Some(inner.policies.get(app_id).cloned().unwrap_or_default())
    }

    /// The app's maxTokenTtlSeconds policy, if any.
    pub fn app_token_ttl(&self, app_id: &str) -> Option<i64> {
        self.read()
            .policies
            .get(app_id)
            .and_then(|p| p.max_token_ttl)
    }

    /// Sets (or clears) only the longest JWT lifetime an app accepts.
    pub fn set_app_token_ttl(&self, app_id: &str, max_seconds: Option<i64>) {
        let mut policy = self
            .app_policy(app_id)
            .map(|p| (*p).clone())
            .unwrap_or_default();
        policy.max_token_ttl = max_seconds;
        self.set_app_policy(app_id, policy);
    }

    /// Adds an app if its account is still live; returns false otherwise.
    pub fn insert_app(&self, app_id: &str, account_id: &str) -> bool {
        let mut inner = self.write();
        let Some(account) = inner.accounts.get(account_id).cloned() else {
            return false;
        };
        let entry = match inner.apps.get(app_id) {
            Some(app) if app.account_id == account => return true,
            // Keys already in the index keep their entry; the policy cell
            // stays shared.
            Some(app) => AppEntry {
                account_id: account,
                app_id: app.app_id.clone(),
                max_token_ttl: app.max_token_ttl.clone(),
            },
            None => AppEntry {
                account_id: account,
                app_id: app_id.into(),
                max_token_ttl: Arc::default(),
            },
        };
        inner.apps.insert(entry.app_id.clone(), Arc::new(entry));
        true
    }

    /// The account that owns a live app.
    pub fn app_account(&self, app_id: &str) -> Option<Arc<str>> {
        self.read()
            .apps
            .get(app_id)
            .map(|app| Arc::clone(&app.account_id))
    }

    /// Sets an app's signing keys (current first): those not listed leave
    /// the index, new ones enter it (`LiveKey::app_signer`). False when
    /// the app is not in the index.
    pub fn set_app_signers(
        &self,
        app_id: &str,
        signers: Vec<(String, crate::jwt::Ed25519PublicKey)>,
    ) -> bool {
        let mut inner = self.write();
        let Some(app) = inner.apps.get(app_id).cloned() else {
            return false;
        };
        let old = inner.signers.remove(app_id).unwrap_or_default();
        for (id, _) in &old {
            if !signers.iter().any(|(new, _)| new == id) {
                inner.keys.remove(id.as_bytes());
            }
        }
        for (id, public_key) in &signers {
            if !old.iter().any(|(had, _)| had == id) {
                let key = super::LiveKey::app_signer(
                    id.clone(),
                    &app.account_id,
                    &app.app_id,
                    public_key.clone(),
                );
                inner.insert_key(key);
            }
        }
        if !signers.is_empty() {
            inner.signers.insert(Arc::clone(&app.app_id), signers);
        }
        true
    }

    /// An app's signing keys, current first (its JWKS); `None` for an app
    /// not in the index.
    pub fn app_signers(&self, app_id: &str) -> Option<Vec<(String, crate::jwt::Ed25519PublicKey)>> {
        let inner = self.read();
        inner.apps.get(app_id)?;
        Some(inner.signers.get(app_id).cloned().unwrap_or_default())
    }

    /// Forgets an app, its keys, and every grant of it.
    pub fn remove_app(&self, app_id: &str) {
        let mut inner = self.write();
        inner.apps.remove(app_id);
        inner.policies.remove(app_id);
        inner.signers.remove(app_id);
        inner.keys.retain(|k| match &k.owner {
            KeyOwner::App { app_id: a, .. } => &**a != app_id,
            _ => true,
        });
        for (_, apps) in inner.service_accounts.values_mut() {
            apps.remove(app_id);
        }
    }

    /// Adds a service account if its account is still live.
    pub fn insert_service_account(&self, sa_id: &str, account_id: &str) -> bool {
        let mut inner = self.write();
        let Some(account) = inner.accounts.get(account_id).cloned() else {
            return false;
        };
        inner
            .service_accounts
            .entry(sa_id.into())
            .or_insert_with(|| (account, HashSet::new()));
        true
    }

    /// Forgets a service account and its keys.
    pub fn remove_service_account(&self, sa_id: &str) {
        let mut inner = self.write();
        inner.service_accounts.remove(sa_id);
        inner.keys.retain(|k| match &k.owner {
            KeyOwner::ServiceAccount {
                service_account_id, ..
            } => &**service_account_id != sa_id,
            _ => true,
        });
    }

    /// Records that a service account reaches an app of its own account,
    /// if both are still live.
    pub fn grant(&self, sa_id: &str, app_id: &str) -> bool {
        let mut inner = self.write();
        let Some(app_account) = inner.apps.get(app_id).map(|app| app.account_id.clone()) else {
            return false;
        };
        match inner.service_accounts.get_mut(sa_id) {
            Some((account, apps)) if *account == app_account => {
                apps.insert(app_id.to_string());
                true
            }
            _ => false,
        }
    }

    /// Replaces the apps a service account reaches with `app_ids` (those
    /// that are live apps of its account).
    pub fn set_grants(&self, sa_id: &str, app_ids: &[String]) {
        let mut inner = self.write();
        let Inner {
            apps,
            service_accounts,
            ..
        } = &mut *inner;
        if let Some((account, reached)) = service_accounts.get_mut(sa_id) {
            *reached = app_ids
                .iter()
                .filter(|app| {
                    apps.get(app.as_str())
                        .is_some_and(|app| app.account_id == *account)
                })
                .cloned()
                .collect();
        }
    }

    pub fn revoke_grant(&self, sa_id: &str, app_id: &str) {
        if let Some((_, apps)) = self.write().service_accounts.get_mut(sa_id) {
            apps.remove(app_id);
        }
    }

    /// Whether a service account created or was granted an app.
    pub fn service_account_reaches(&self, sa_id: &str, app_id: &str) -> bool {
        self.read()
            .service_accounts
            .get(sa_id)
            .is_some_and(|(_, apps)| apps.contains(app_id))
    }

    /// Adds a member of a live account (a user account) with its role, or
    /// changes the role of one; false if the account is gone.
    pub fn set_member(&self, user_account_id: &str, account_id: &str, role: Role) -> bool {
        let mut inner = self.write();
        let Some(account) = inner.accounts.get(account_id).cloned() else {
            return false;
        };
        inner
            .members
            .insert(user_account_id.into(), (account, role));
        true
    }

    /// A member's role; `None` for a user account the index does not hold
    /// (removed, or of a deleted account).
    pub fn member_role(&self, user_account_id: &str) -> Option<Role> {
        self.read()
            .members
            .get(user_account_id)
            .map(|(_, role)| *role)
    }

    /// Forgets a member and drops its keys: the next request with one of
    /// them is refused.
    pub fn remove_member(&self, user_account_id: &str) {
        let mut inner = self.write();
        inner.members.remove(user_account_id);
        inner.keys.retain(|k| match &k.owner {
            KeyOwner::UserAccount {
                user_account_id: u, ..
            } => &**u != user_account_id,
            _ => true,
        });
    }

    /// Forgets an account and everything under it.
    pub fn remove_account(&self, account_id: &str) {
        let mut inner = self.write();
        inner.accounts.remove(account_id);
        inner.apps.retain(|_, app| &*app.account_id != account_id);
        let Inner { apps, policies, .. } = &mut *inner;
        policies.retain(|app, _| apps.contains_key(app.as_str()));
        inner
            .service_accounts
            .retain(|_, (acc, _)| &**acc != account_id);
        inner.members.retain(|_, (acc, _)| &**acc != account_id);
        inner.keys.retain(|k| k.owner.account_id() != account_id);
    }
}
