//! What a verified credential reaches: `/v1/verify`'s rules for the app
//! and app user a request targets, shared by the server (`/v1/verify`,
//! forward-auth, the gateway) and the in-process replica, so that both
//! give the same answer.

use super::KeyIndex;
use crate::Principal;
use crate::principal::AppRef;

/// What a credential reaches for a target.
#[derive(Debug, PartialEq, Eq)]
pub struct Reached<'a> {
    /// The targeted app, or the credential's own.
    pub app_id: Option<&'a str>,
    /// The targeted app user, or the appUser credential's own.
    pub user_id: Option<&'a str>,
}

impl KeyIndex {
    /// Whether a verified principal may act on the app and app user a
    /// request targets, coming from a browser (`Origin` sent) or not. The
    /// refusal is a code and title.
    pub fn reach<'a>(
        &self,
        p: &'a Principal,
        target_app: Option<&'a str>,
        target_user: Option<&'a str>,
        from_browser: bool,
    ) -> Result<Reached<'a>, (&'static str, &'static str)> {
        if p.scope().is_none() {
            return Err((
                "forbidden",
                "the operator token is not a credential for the operator's API",
            ));
        }
        if from_browser && !matches!(p, Principal::AppUser { .. }) {
            return Err((
                "forbidden",
                "app and account credentials must never be used from a browser; use an appUser JWT",
            ));
        }
        let mut app_id = match p {
            Principal::App { app_id, .. } | Principal::AppUser { app_id, .. } => Some(&**app_id),
            _ => None,
        };
        if let Some(target) = target_app {
            let reached = match p {
                // An app or appUser credential reaches its own app only,
                // which is live while its key is (an app's keys leave the
                // index with it): no lookup.
                Principal::App { app_id, .. } | Principal::AppUser { app_id, .. } => {
                    **app_id == *target
                }
                _ => self.reaches_listed_app(p, target),
            };
            if !reached {
                return Err(("not_found", "the credential does not reach this app"));
            }
            app_id = Some(target);
        }
        let mut user_id = match p {
            Principal::AppUser { external_id, .. } => Some(external_id.as_str()),
            _ => None,
        };
        if let Some(target) = target_user {
            if let Principal::AppUser { external_id, .. } = p
                && external_id != target
            {
                return Err(("not_found", "the credential does not reach this user"));
            }
            user_id = Some(target);
        }
        Ok(Reached { app_id, user_id })
    }

    /// Whether an account credential reaches `target`, a live app of its
    /// account (a service account: one it created or was granted).
    fn reaches_listed_app(&self, p: &Principal, target: &str) -> bool {
        self.app_account(target).is_some_and(|account_id| {
            let granted = match p {
                Principal::ServiceAccount {
                    service_account_id, ..
                } => self.service_account_reaches(service_account_id, target),
                _ => false,
            };
            p.reaches_app(AppRef {
                id: target,
                account_id: &account_id,
                granted_to_caller: granted,
            })
        })
    }
}
