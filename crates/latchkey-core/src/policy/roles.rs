//! A member's role in an account (issue 20, teams): what a person's
//! user account may do through Latchkey's own API and the dashboard.
//!
//! A role is a set of Latchkey's built-in permissions. A user-account
//! (`act_`) key, its account-scope JWTs and its person's dashboard
//! sessions may call an operation only when the role allows the
//! operation's permission; a key with a permission list needs it in its
//! list too (the two are intersected). Each role allows everything the
//! role below it allows.

use super::Permission;

/// The four roles, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads everything, changes nothing.
    Viewer,
    /// Apps, their settings, keys, users, tokens and webhooks; not service
    /// accounts, members or invites.
    Developer,
    /// Everything but members and invites.
    Admin,
    /// Everything, members and invites included.
    Owner,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Developer, Role::Admin, Role::Owner];

    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Developer => "developer",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }

    /// The weakest role that allows `permission`.
    pub const fn needed_for(permission: Permission) -> Role {
        match permission {
            Permission::AccountRead
            | Permission::AppsRead
            | Permission::KeysRead
            | Permission::UsersRead
            | Permission::WebhooksRead
            | Permission::AuditRead
            | Permission::UsageRead
            | Permission::ServiceAccountsRead
            | Permission::MembersRead => Role::Viewer,
            Permission::AppsWrite
            | Permission::SettingsWrite
            | Permission::KeysWrite
            | Permission::UsersWrite
            | Permission::TokensMint
            | Permission::WebhooksWrite => Role::Developer,
            Permission::ServiceAccountsWrite => Role::Admin,
            Permission::MembersWrite => Role::Owner,
        }
    }

    /// Whether this role allows an operation that needs `permission`.
    pub fn allows(self, permission: Permission) -> bool {
        self >= Role::needed_for(permission)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_nested_and_named() {
        for p in Permission::ALL {
            assert!(Role::Owner.allows(p), "owner allows {p}");
            for pair in Role::ALL.windows(2) {
                assert!(
                    !pair[0].allows(p) || pair[1].allows(p),
                    "{} allows {p} but {} does not",
                    pair[0],
                    pair[1]
                );
            }
        }
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("Owner"), None);
    }

    #[test]
    fn what_each_role_may_do() {
        assert!(Role::Viewer.allows(Permission::KeysRead));
        assert!(!Role::Viewer.allows(Permission::TokensMint));
        assert!(Role::Developer.allows(Permission::KeysWrite));
        assert!(!Role::Developer.allows(Permission::ServiceAccountsWrite));
        assert!(Role::Admin.allows(Permission::ServiceAccountsWrite));
        assert!(Role::Admin.allows(Permission::MembersRead));
        assert!(!Role::Admin.allows(Permission::MembersWrite));
        assert!(Role::Owner.allows(Permission::MembersWrite));
    }
}
