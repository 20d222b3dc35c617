//! Who a verified credential speaks for, and what it may reach.
//!
//! Every endpoint asks one of the `may_*` questions below. The answers follow
//! one rule: a resource outside the caller's reach is [`Access::NotFound`]
//! (its existence is not revealed); a resource the caller can see but may not
//! act on is [`Access::Forbidden`].

use std::sync::Arc;

use serde::Serialize;

use crate::ids::KeyId;

/// The three scopes of access a key credential can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Scope {
    AppUser,
    App,
    Account,
}

impl Scope {
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::AppUser => "appUser",
            Scope::App => "app",
            Scope::Account => "account",
        }
    }
}

/// The identity behind a verified credential.
///
/// The owners' ids are `Arc<str>` shared with the key index, and the key's
/// id is copied from the key (inline), so verification builds a principal
/// without allocating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The deployment's operator (operator token).
    Operator { token_id: String },
    /// An API server that verifies credentials (a verifier token): may call
    /// `/v1/verify` and `/v1/introspect` and nothing else.
    Verifier { token_id: String },
    /// One end user of one app (a JWT signed by an app key with `appUser` scope).
    AppUser {
        key_id: KeyId,
        account_id: Arc<str>,
        app_id: Arc<str>,
        external_id: String,
    },
    /// An app's server (app key by Basic, or a JWT with `app` scope).
    App {
        key_id: KeyId,
        account_id: Arc<str>,
        app_id: Arc<str>,
    },
    /// A person's user account (an `act_` key): the whole account.
    UserAccount {
        key_id: KeyId,
        account_id: Arc<str>,
        user_account_id: Arc<str>,
    },
    /// A person signed in to the dashboard: the same reach as their
    /// user-account keys, without a key.
    Session {
        account_id: Arc<str>,
        user_account_id: Arc<str>,
    },
    /// A machine's service account (an `svc_` key): the apps it created or
    /// was granted.
    ServiceAccount {
        key_id: KeyId,
        account_id: Arc<str>,
        service_account_id: Arc<str>,
    },
}

/// The answer to "may this caller do this to that?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Allow,
    /// The caller can see the resource but may not perform this action (403).
    Forbidden,
    /// The resource is outside the caller's reach (404).
    NotFound,
}

/// An app as the access rules see it.
#[derive(Debug, Clone, Copy)]
pub struct AppRef<'a> {
    pub id: &'a str,
    pub account_id: &'a str,
    /// Whether the calling service account (if any) created or was granted
    /// this app. Ignored for every other principal.
    pub granted_to_caller: bool,
}

/// How far into an app a principal reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AppReach {
    None,
    /// Sees the app, but only to act as one of its users.
    AppUser,
    /// Sees the app as an operator: may not manage it.
    Operator,
    App,
    Account,
}

/// What is done to an app user record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserAction {
    Read,
    Update,
    /// Create, list or delete: app scope and above.
    Manage,
}

impl Principal {
    pub fn scope(&self) -> Option<Scope> {
        match self {
            Principal::Operator { .. } | Principal::Verifier { .. } => None,
            Principal::AppUser { .. } => Some(Scope::AppUser),
            Principal::App { .. } => Some(Scope::App),
            Principal::UserAccount { .. }
            | Principal::Session { .. }
            | Principal::ServiceAccount { .. } => Some(Scope::Account),
        }
    }

    pub fn account_id(&self) -> Option<&str> {
        match self {
            Principal::Operator { .. } | Principal::Verifier { .. } => None,
            Principal::AppUser { account_id, .. }
            | Principal::App { account_id, .. }
            | Principal::UserAccount { account_id, .. }
            | Principal::Session { account_id, .. }
            | Principal::ServiceAccount { account_id, .. } => Some(account_id.as_ref()),
        }
    }

    pub fn key_id(&self) -> Option<&str> {
        match self {
            Principal::Operator { .. } | Principal::Verifier { .. } | Principal::Session { .. } => {
                None
            }
            Principal::AppUser { key_id, .. }
            | Principal::App { key_id, .. }
            | Principal::UserAccount { key_id, .. }
            | Principal::ServiceAccount { key_id, .. } => Some(key_id.as_ref()),
        }
    }

    pub fn is_operator(&self) -> bool {
        matches!(self, Principal::Operator { .. })
    }

    pub fn is_verifier(&self) -> bool {
        matches!(self, Principal::Verifier { .. })
    }

    fn app_reach(&self, app: AppRef<'_>) -> AppReach {
        match self {
            // A verifier token, like the operator, sees apps but may act
            // on none (403, not 404).
            Principal::Operator { .. } | Principal::Verifier { .. } => AppReach::Operator,
            Principal::AppUser { app_id, .. } if **app_id == *app.id => AppReach::AppUser,
            Principal::App { app_id, .. } if **app_id == *app.id => AppReach::App,
            Principal::UserAccount { account_id, .. } | Principal::Session { account_id, .. }
                if **account_id == *app.account_id =>
            {
                AppReach::Account
            }
            Principal::ServiceAccount { account_id, .. }
                if **account_id == *app.account_id && app.granted_to_caller =>
            {
                AppReach::Account
            }
            _ => AppReach::None,
        }
    }

    /// Whether the credential speaks for (part of) this app: its own app for
    /// app and appUser scope, any reachable app for account scope. The
    /// operator reaches no app this way.
    pub fn reaches_app(&self, app: AppRef<'_>) -> bool {
        matches!(
            self.app_reach(app),
            AppReach::Account | AppReach::App | AppReach::AppUser
        )
    }

    /// Operator endpoints (accounts, verifier tokens).
    pub fn may_operate(&self) -> Access {
        if self.is_operator() {
            Access::Allow
        } else {
            Access::Forbidden
        }
    }

    /// Verification endpoints (`/v1/verify`, `/v1/introspect`): the
    /// operator and verifier tokens.
    pub fn may_verify(&self) -> Access {
        match self {
            Principal::Operator { .. } | Principal::Verifier { .. } => Access::Allow,
            _ => Access::Forbidden,
        }
    }

    /// Account-wide endpoints that name no app: create and list apps.
    pub fn may_use_account_scope(&self) -> Access {
        match self.scope() {
            Some(Scope::Account) => Access::Allow,
            _ => Access::Forbidden,
        }
    }

    /// Service-account management: user-account keys only.
    pub fn may_manage_service_accounts(&self) -> Access {
        match self {
            Principal::UserAccount { .. } | Principal::Session { .. } => Access::Allow,
            _ => Access::Forbidden,
        }
    }

    /// The account's members and invites (teams): people only, that is
    /// user-account keys and dashboard sessions; what they may do there
    /// is their role's to say.
    pub fn may_manage_members(&self) -> Access {
        match self {
            Principal::UserAccount { .. } | Principal::Session { .. } => Access::Allow,
            _ => Access::Forbidden,
        }
    }

    /// A service account (by its owning account) as seen by this caller.
    pub fn may_manage_service_account(&self, sa_account_id: &str) -> Access {
        match self {
            Principal::UserAccount { account_id, .. } | Principal::Session { account_id, .. }
                if **account_id == *sa_account_id =>
            {
                Access::Allow
            }
            Principal::UserAccount { .. } | Principal::Session { .. } => Access::NotFound,
            _ => Access::Forbidden,
        }
    }

    /// Account scope on one app: its keys, deleting it.
    pub fn may_manage_app(&self, app: AppRef<'_>) -> Access {
        match self.app_reach(app) {
            AppReach::Account => Access::Allow,
            AppReach::App | AppReach::AppUser | AppReach::Operator => Access::Forbidden,
            AppReach::None => Access::NotFound,
        }
    }

    /// App scope (or account scope on that app): app settings and users.
    pub fn may_configure_app(&self, app: AppRef<'_>) -> Access {
        match self.app_reach(app) {
            AppReach::Account | AppReach::App => Access::Allow,
            AppReach::AppUser | AppReach::Operator => Access::Forbidden,
            AppReach::None => Access::NotFound,
        }
    }

    /// One app user record, known by its external id. `None` for actions on
    /// the collection (create, list).
    pub fn may_access_user(
        &self,
        app: AppRef<'_>,
        user_external_id: Option<&str>,
        action: UserAction,
    ) -> Access {
        match self.app_reach(app) {
            AppReach::Account | AppReach::App => Access::Allow,
            AppReach::Operator => Access::Forbidden,
            AppReach::None => Access::NotFound,
            AppReach::AppUser => {
                let own = match (self, user_external_id) {
                    (Principal::AppUser { external_id, .. }, Some(target)) => external_id == target,
                    _ => false,
                };
                match (own, action, user_external_id) {
                    (true, UserAction::Read | UserAction::Update, _) => Access::Allow,
                    (true, UserAction::Manage, _) => Access::Forbidden,
                    // The collection itself is visible (it is the app), but
                    // an appUser may not list or create in it.
                    (false, _, None) => Access::Forbidden,
                    (false, _, Some(_)) => Access::NotFound,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(id: &'static str, account: &'static str, granted: bool) -> AppRef<'static> {
        AppRef {
            id,
            account_id: account,
            granted_to_caller: granted,
        }
    }

    fn principals() -> Vec<(&'static str, Principal)> {
        vec![
            (
                "operator",
                Principal::Operator {
                    token_id: "op".into(),
                },
            ),
            (
                "verifier",
                Principal::Verifier {
                    token_id: "vt_1".into(),
                },
            ),
            (
                "act",
                Principal::UserAccount {
                    key_id: "act_1".into(),
                    account_id: "acc_A".into(),
                    user_account_id: "ua_1".into(),
                },
            ),
            (
                "act_other_account",
                Principal::UserAccount {
                    key_id: "act_2".into(),
                    account_id: "acc_B".into(),
                    user_account_id: "ua_2".into(),
                },
            ),
            (
                "svc",
                Principal::ServiceAccount {
                    key_id: "svc_1".into(),
                    account_id: "acc_A".into(),
                    service_account_id: "sa_1".into(),
                },
            ),
            (
                "app",
                Principal::App {
                    key_id: "app_1".into(),
                    account_id: "acc_A".into(),
                    app_id: "ap_1".into(),
                },
            ),
            (
                "app_other",
                Principal::App {
                    key_id: "app_2".into(),
                    account_id: "acc_A".into(),
                    app_id: "ap_2".into(),
                },
            ),
            (
                "session",
                Principal::Session {
                    account_id: "acc_A".into(),
                    user_account_id: "ua_1".into(),
                },
            ),
            (
                "appUser",
                Principal::AppUser {
                    key_id: "app_1".into(),
                    account_id: "acc_A".into(),
                    app_id: "ap_1".into(),
                    external_id: "alice".into(),
                },
            ),
        ]
    }

    use Access::{Allow as A, Forbidden as F, NotFound as N};

    /// The whole matrix: principal x question, on app ap_1 of acc_A.
    #[test]
    fn scope_matrix() {
        // (name, operate, verify, account scope, manage SAs, manage SA of
        //  acc_A, manage app (granted), manage app (not granted), configure
        //  app, read alice, read bob, update alice, delete alice, list users)
        let expected: &[(&str, [Access; 13])] = &[
            ("operator", [A, A, F, F, F, F, F, F, F, F, F, F, F]),
            // A verifier token verifies and is refused everything else.
            ("verifier", [F, A, F, F, F, F, F, F, F, F, F, F, F]),
            ("act", [F, F, A, A, A, A, A, A, A, A, A, A, A]),
            ("session", [F, F, A, A, A, A, A, A, A, A, A, A, A]),
            ("act_other_account", [F, F, A, A, N, N, N, N, N, N, N, N, N]),
            ("svc", [F, F, A, F, F, A, N, A, A, A, A, A, A]),
            ("app", [F, F, F, F, F, F, F, A, A, A, A, A, A]),
            ("app_other", [F, F, F, F, F, N, N, N, N, N, N, N, N]),
            ("appUser", [F, F, F, F, F, F, F, F, A, N, A, F, F]),
        ];
        let all = principals();
        assert_eq!(all.len(), expected.len(), "every principal has a row");
        for (name, row) in expected {
            let p = &all.iter().find(|(n, _)| n == name).expect("principal").1;
            let granted = app("ap_1", "acc_A", true);
            let not_granted = app("ap_1", "acc_A", false);
            let got = [
                p.may_operate(),
                p.may_verify(),
                p.may_use_account_scope(),
                p.may_manage_service_accounts(),
                p.may_manage_service_account("acc_A"),
                p.may_manage_app(granted),
                p.may_manage_app(not_granted),
                p.may_configure_app(granted),
                p.may_access_user(granted, Some("alice"), UserAction::Read),
                p.may_access_user(granted, Some("bob"), UserAction::Read),
                p.may_access_user(granted, Some("alice"), UserAction::Update),
                p.may_access_user(granted, Some("alice"), UserAction::Manage),
                p.may_access_user(granted, None, UserAction::Manage),
            ];
            assert_eq!(&got, row, "row for {name}");
        }
    }

    #[test]
    fn service_accounts_are_managed_only_within_the_own_account() {
        let all = principals();
        let by_name = |name: &str| &all.iter().find(|(n, _)| *n == name).expect("principal").1;
        assert_eq!(by_name("act").may_manage_service_account("acc_A"), A);
        assert_eq!(
            by_name("act_other_account").may_manage_service_account("acc_A"),
            N
        );
        assert_eq!(by_name("svc").may_manage_service_account("acc_A"), F);
    }

    #[test]
    fn only_people_manage_members() {
        for (name, p) in principals() {
            let expected = if matches!(name, "act" | "act_other_account" | "session") {
                A
            } else {
                F
            };
            assert_eq!(p.may_manage_members(), expected, "{name}");
        }
    }

    #[test]
    fn a_verifier_token_has_no_scope_account_or_key() {
        let verifier = Principal::Verifier {
            token_id: "vt_1".into(),
        };
        assert_eq!(verifier.scope(), None);
        assert_eq!(verifier.account_id(), None);
        assert_eq!(verifier.key_id(), None);
        assert!(verifier.is_verifier() && !verifier.is_operator());
        assert!(!verifier.reaches_app(app("ap_1", "acc_A", true)));
    }
}
