//! Permission names: the operator's own (any valid name outside
//! Latchkey's prefix) and Latchkey's built-in ones, which its management
//! API checks, one per kind of operation.

/// Names under this prefix are Latchkey's own.
pub const BUILTIN_PREFIX: &str = "latchkey:";

/// Whether `name` matches `^[a-z][a-z0-9_.:-]{0,63}$`.
pub fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && bytes[0].is_ascii_lowercase()
        && bytes[1..]
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.:-".contains(&b))
}

/// What Latchkey's own management API asks of a key that carries a
/// permission list (a key without one may do everything its scope
/// allows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// `GET /v1/account`: who the credential is.
    AccountRead,
    /// Reading apps (`GET /v1/apps`, `GET /v1/apps/{appId}`).
    AppsRead,
    /// Creating and deleting apps.
    AppsWrite,
    /// Changing an app (`PATCH /v1/apps/{appId}`: name and settings).
    SettingsWrite,
    /// Listing and reading keys.
    KeysRead,
    /// Creating, changing, rotating and deleting keys.
    KeysWrite,
    /// Reading app users.
    UsersRead,
    /// Creating, changing and deleting app users.
    UsersWrite,
    /// Minting appUser JWTs (`POST …/users/{userId}/tokens`).
    TokensMint,
    /// Reading webhooks.
    WebhooksRead,
    /// Creating, changing and deleting webhooks.
    WebhooksWrite,
    /// Reading the audit log.
    AuditRead,
    /// Reading usage analytics (`GET /v1/usage`, `GET …/usage`).
    UsageRead,
    /// Reading service accounts.
    ServiceAccountsRead,
    /// Creating and deleting service accounts, granting apps to them.
    ServiceAccountsWrite,
    /// Reading the account's members and open invites.
    MembersRead,
    /// Inviting members, changing their roles, removing them.
    MembersWrite,
}

impl Permission {
    pub const ALL: [Permission; 17] = [
        Permission::AccountRead,
        Permission::AppsRead,
        Permission::AppsWrite,
        Permission::SettingsWrite,
        Permission::KeysRead,
        Permission::KeysWrite,
        Permission::UsersRead,
        Permission::UsersWrite,
        Permission::TokensMint,
        Permission::WebhooksRead,
        Permission::WebhooksWrite,
        Permission::AuditRead,
        Permission::UsageRead,
        Permission::ServiceAccountsRead,
        Permission::ServiceAccountsWrite,
        Permission::MembersRead,
        Permission::MembersWrite,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Permission::AccountRead => "latchkey:account.read",
            Permission::AppsRead => "latchkey:apps.read",
            Permission::AppsWrite => "latchkey:apps.write",
            Permission::SettingsWrite => "latchkey:settings.write",
            Permission::KeysRead => "latchkey:keys.read",
            Permission::KeysWrite => "latchkey:keys.write",
            Permission::UsersRead => "latchkey:users.read",
            Permission::UsersWrite => "latchkey:users.write",
            Permission::TokensMint => "latchkey:tokens.mint",
            Permission::WebhooksRead => "latchkey:webhooks.read",
            Permission::WebhooksWrite => "latchkey:webhooks.write",
            Permission::AuditRead => "latchkey:audit.read",
            Permission::UsageRead => "latchkey:usage.read",
            Permission::ServiceAccountsRead => "latchkey:service_accounts.read",
            Permission::ServiceAccountsWrite => "latchkey:service_accounts.write",
            Permission::MembersRead => "latchkey:members.read",
            Permission::MembersWrite => "latchkey:members.write",
        }
    }

    pub fn parse(name: &str) -> Option<Permission> {
        Permission::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
