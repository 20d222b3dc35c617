//! Rows as the store reads and writes them. Times are Unix seconds.

use std::fmt;

pub use latchkey_core::jwt::PublicKey;
pub use latchkey_core::policy::KeyPolicy;
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: String,
    pub display_name: String,
    pub created_at: i64,
}

#[derive(Clone, PartialEq, Eq)]
pub struct UserAccount {
    pub id: String,
    pub account_id: String,
    pub email: String,
    /// argon2id PHC string.
    pub password_hash: String,
    pub created_at: i64,
    /// The member's role in its account (teams).
    pub role: latchkey_core::policy::Role,
}

impl fmt::Debug for UserAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserAccount")
            .field("id", &self.id)
            .field("account_id", &self.account_id)
            .field("email", &self.email)
            .field("created_at", &self.created_at)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub id: String,
    pub account_id: String,
    pub display_name: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct App {
    pub id: String,
    pub account_id: String,
    pub display_name: String,
    pub settings: Map<String, Value>,
    pub created_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    App,
    UserAccount,
    ServiceAccount,
}

impl KeyKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            KeyKind::App => "app",
            KeyKind::UserAccount => "act",
            KeyKind::ServiceAccount => "svc",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "app" => Some(KeyKind::App),
            "act" => Some(KeyKind::UserAccount),
            "svc" => Some(KeyKind::ServiceAccount),
            _ => None,
        }
    }
}

/// The owner of a key, by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOwnerRef<'a> {
    App(&'a str),
    UserAccount(&'a str),
    ServiceAccount(&'a str),
}

#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub kind: KeyKind,
    pub account_id: String,
    /// The app, user account or service account that owns the key.
    pub owner_id: String,
    pub display_name: String,
    /// The secret sealed under the master key; empty for a public-key
    /// key, whose secret the customer keeps.
    pub secret_sealed: Vec<u8>,
    /// The customer's public key, for a key that verifies JWTs signed
    /// with its private key (issue 22); `None` for a key with a secret.
    pub public_key: Option<PublicKey>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    /// The key this one replaced by rotation.
    pub rotated_from: Option<String>,
    /// The key that replaced this one by rotation.
    pub replaced_by: Option<String>,
    /// Permissions, restrictions, rate limit, credits settings, metadata
    /// (empty: none, the key has the full power of its scope).
    pub policy: KeyPolicy,
    /// The credit balance, when the policy has credits.
    pub credits: Option<StoredCredits>,
}

/// A key's credit balance as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredCredits {
    pub remaining: i64,
    /// The refill period the balance belongs to (0 without a refill).
    pub period: i64,
    /// Raised by every balance set through the API (see
    /// `latchkey_core::policy::CreditCell`).
    pub version: i64,
}

impl ApiKey {
    pub fn owner(&self) -> KeyOwnerRef<'_> {
        match self.kind {
            KeyKind::App => KeyOwnerRef::App(&self.owner_id),
            KeyKind::UserAccount => KeyOwnerRef::UserAccount(&self.owner_id),
            KeyKind::ServiceAccount => KeyOwnerRef::ServiceAccount(&self.owner_id),
        }
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("account_id", &self.account_id)
            .field("owner_id", &self.owner_id)
            .field("display_name", &self.display_name)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .field("last_used_at", &self.last_used_at)
            .field("rotated_from", &self.rotated_from)
            .field("replaced_by", &self.replaced_by)
            .field("policy", &self.policy)
            .field("credits", &self.credits)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AppUser {
    pub id: String,
    pub app_id: String,
    pub external_id: String,
    pub given_name: Option<String>,
    pub surname: Option<String>,
    pub email: Option<String>,
    pub metadata: Map<String, Value>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorToken {
    pub id: String,
    pub token_hash: Vec<u8>,
    pub created_at: i64,
}

/// A verifier token: an API server's credential for `/v1/verify` and
/// `/v1/introspect` only. The token itself is never stored, only its
/// SHA-256, which `Debug` does not show either.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifierToken {
    pub id: String,
    pub display_name: String,
    pub token_hash: Vec<u8>,
    pub created_at: i64,
    /// A verifier token, or a replica token (same table, same feed).
    pub kind: TokenKind,
}

/// What a row of `verifier_tokens` is the credential of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// An API server's: `/v1/verify` and `/v1/introspect` only.
    Verifier,
    /// An in-process replica's: `/v1/replica/…` only.
    Replica,
}

impl TokenKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            TokenKind::Verifier => "verifier",
            TokenKind::Replica => "replica",
        }
    }

    /// The stored text; anything unknown reads as a verifier token (the
    /// column's default).
    pub fn parse(text: &str) -> TokenKind {
        match text {
            "replica" => TokenKind::Replica,
            _ => TokenKind::Verifier,
        }
    }
}

impl fmt::Debug for VerifierToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifierToken")
            .field("id", &self.id)
            .field("display_name", &self.display_name)
            .field("created_at", &self.created_at)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// A new account: the account, its owner and the owner's first key.
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub account: Account,
    pub owner: UserAccount,
    pub key: ApiKey,
}

/// What `latchkey init` writes.
#[derive(Debug, Clone)]
pub struct Initialization {
    pub master_key_check: Vec<u8>,
    pub operator_token: OperatorToken,
    pub first_account: NewAccount,
}

/// One page request: at most `limit` items after the item with id `after`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    pub limit: u32,
    pub after: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PageOf<T> {
    pub items: Vec<T>,
    pub has_more: bool,
}

/// How a new signing key joins its app's ([`crate::Store::create_signing_key`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewSigningKey {
    /// The app's first: nothing is written if it already has a current
    /// key.
    First,
    /// A rotation: the current key is retired (still published and
    /// verified), the one retired before is removed.
    Rotate,
    /// A rotation that revokes: every other key of the app is removed at
    /// once (a key that leaked), and tokens they signed are refused.
    Replace,
}

/// An app's signing key (issue 22): Latchkey's own Ed25519 key for the
/// appUser tokens it mints with `alg` `EdDSA`.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey {
    pub id: String,
    pub app_id: String,
    /// The PKCS#8 document, sealed under the master key (the id as
    /// associated data).
    pub private_sealed: Vec<u8>,
    /// The public key (32 bytes), base64url.
    pub public_key: String,
    pub created_at: i64,
    /// When a rotation replaced it; `None` for the current key.
    pub retired_at: Option<i64>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("id", &self.id)
            .field("app_id", &self.app_id)
            .field("public_key", &self.public_key)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

/// An app's signing key as the index needs it: id, app, public key
/// (base64url).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSigner {
    pub id: String,
    pub app_id: String,
    pub public_key: String,
}

/// Everything the in-memory index is built from.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Account ids.
    pub accounts: Vec<String>,
    pub keys: Vec<ApiKey>,
    pub apps: Vec<App>,
    /// (service account id, account id)
    pub service_accounts: Vec<(String, String)>,
    /// (service account id, app id)
    pub grants: Vec<(String, String)>,
    /// (user account id, account id, role): the members of accounts
    pub members: Vec<(String, String, latchkey_core::policy::Role)>,
    pub operator_tokens: Vec<OperatorToken>,
    pub verifier_tokens: Vec<VerifierToken>,
    /// Apps' signing keys, each app's current one first.
    pub signers: Vec<AppSigner>,
    /// The newest change recorded when the snapshot was taken: a node that
    /// loaded it follows [`crate::Store::changes_since`] from here.
    pub change_seq: i64,
}

/// Everything the in-memory index is built from except the keys, as
/// [`crate::Store::snapshot_into`] hands it out before the keys.
#[derive(Debug, Clone, Default)]
pub struct SnapshotHead {
    /// Account ids.
    pub accounts: Vec<String>,
    pub apps: Vec<App>,
    /// (service account id, account id)
    pub service_accounts: Vec<(String, String)>,
    /// (service account id, app id)
    pub grants: Vec<(String, String)>,
    /// As [`Snapshot::members`].
    pub members: Vec<(String, String, latchkey_core::policy::Role)>,
    pub operator_tokens: Vec<OperatorToken>,
    pub verifier_tokens: Vec<VerifierToken>,
    /// As [`Snapshot::signers`].
    pub signers: Vec<AppSigner>,
    /// How many keys will follow, so that the index can be sized once.
    pub key_count: u64,
    /// As [`Snapshot::change_seq`].
    pub change_seq: i64,
}

/// The columns of a stored key that the index needs: what
/// [`crate::Store::snapshot_into`] reads instead of a whole [`ApiKey`]
/// (with 10^6 keys, every column and allocation less counts at start-up).
#[derive(Clone, PartialEq, Eq)]
pub struct SnapshotKey {
    pub id: String,
    pub kind: KeyKind,
    pub account_id: String,
    /// The app, user account or service account id, as `kind` says.
    pub owner_id: String,
    /// Sealed under the master key, the key id as associated data; empty
    /// for a public-key key.
    pub secret_sealed: Vec<u8>,
    /// As [`ApiKey::public_key`].
    pub public_key: Option<PublicKey>,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub policy: KeyPolicy,
    pub credits: Option<StoredCredits>,
}

impl fmt::Debug for SnapshotKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotKey")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("account_id", &self.account_id)
            .field("owner_id", &self.owner_id)
            .field("expires_at", &self.expires_at)
            .field("last_used_at", &self.last_used_at)
            .finish_non_exhaustive()
    }
}

impl From<&ApiKey> for SnapshotKey {
    fn from(key: &ApiKey) -> Self {
        Self {
            id: key.id.clone(),
            kind: key.kind,
            account_id: key.account_id.clone(),
            owner_id: key.owner_id.clone(),
            secret_sealed: key.secret_sealed.clone(),
            public_key: key.public_key.clone(),
            expires_at: key.expires_at,
            last_used_at: key.last_used_at,
            policy: key.policy.clone(),
            credits: key.credits,
        }
    }
}

/// What a change that affects verification touched. Every such write
/// records one (or more) in its own transaction; nodes reload what it
/// names from the store, so a change carries no state of its own and
/// applying it twice, or late, does no harm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<'a> {
    Account(&'a str),
    App(&'a str),
    Key(&'a str),
    /// A service account, its existence or its grants.
    ServiceAccount(&'a str),
    VerifierToken(&'a str),
    /// An operator token, created or revoked (`latchkey admin`).
    OperatorToken(&'a str),
    /// A user account: added, its role changed, or removed (teams).
    UserAccount(&'a str),
}

/// The kind of thing a recorded change names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeEntity {
    Account,
    App,
    Key,
    ServiceAccount,
    VerifierToken,
    OperatorToken,
    UserAccount,
}

impl ChangeEntity {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeEntity::Account => "account",
            ChangeEntity::App => "app",
            ChangeEntity::Key => "key",
            ChangeEntity::ServiceAccount => "serviceAccount",
            ChangeEntity::VerifierToken => "verifierToken",
            ChangeEntity::OperatorToken => "operatorToken",
            ChangeEntity::UserAccount => "userAccount",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "account" => ChangeEntity::Account,
            "app" => ChangeEntity::App,
            "key" => ChangeEntity::Key,
            "serviceAccount" => ChangeEntity::ServiceAccount,
            "verifierToken" => ChangeEntity::VerifierToken,
            "operatorToken" => ChangeEntity::OperatorToken,
            "userAccount" => ChangeEntity::UserAccount,
            _ => return None,
        })
    }
}

impl Change<'_> {
    pub fn entity(&self) -> (ChangeEntity, &str) {
        match *self {
            Change::Account(id) => (ChangeEntity::Account, id),
            Change::App(id) => (ChangeEntity::App, id),
            Change::Key(id) => (ChangeEntity::Key, id),
            Change::ServiceAccount(id) => (ChangeEntity::ServiceAccount, id),
            Change::VerifierToken(id) => (ChangeEntity::VerifierToken, id),
            Change::OperatorToken(id) => (ChangeEntity::OperatorToken, id),
            Change::UserAccount(id) => (ChangeEntity::UserAccount, id),
        }
    }
}

/// A recorded change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRecord {
    pub seq: i64,
    pub entity: ChangeEntity,
    pub id: String,
}

/// Changes after a sequence number, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeBatch {
    pub changes: Vec<ChangeRecord>,
    /// Changes up to this number were pruned: a reader that had seen less
    /// than this may have missed some and must reload everything.
    pub pruned_through: i64,
}

/// Who performed an audited action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    Operator {
        token_id: String,
    },
    /// A key credential (Basic or a JWT it signed).
    Key {
        key_id: String,
    },
    /// A verifier token (its refused calls are recorded).
    VerifierToken {
        token_id: String,
    },
    /// A person signed in to the dashboard.
    UserAccount {
        user_account_id: String,
    },
    /// Latchkey itself (expiry and other scheduled notices).
    System,
}

impl Actor {
    pub fn kind(&self) -> &'static str {
        match self {
            Actor::Operator { .. } => "operator",
            Actor::Key { .. } => "key",
            Actor::VerifierToken { .. } => "verifierToken",
            Actor::UserAccount { .. } => "userAccount",
            Actor::System => "system",
        }
    }

    pub fn id(&self) -> Option<&str> {
        match self {
            Actor::Operator { token_id } => Some(token_id),
            Actor::Key { key_id } => Some(key_id),
            Actor::VerifierToken { token_id } => Some(token_id),
            Actor::UserAccount { user_account_id } => Some(user_account_id),
            Actor::System => None,
        }
    }
}

/// A webhook notification caused by an audited event: enqueued for every
/// webhook of the event's app that subscribes to `trigger`, in the same
/// transaction as the event.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub trigger: &'static str,
    /// The JSON body every delivery will carry.
    pub payload: String,
}

/// One entry of the append-only audit log. Never carries a secret.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    pub id: String,
    pub at: i64,
    pub account_id: Option<String>,
    pub app_id: Option<String>,
    /// e.g. `key.created`.
    pub action: String,
    pub actor: Actor,
    /// The caller's network address.
    pub address: Option<String>,
    pub target_type: String,
    pub target_id: Option<String>,
    /// `success` or `failure`.
    pub outcome: String,
    pub details: Map<String, Value>,
    pub notify: Option<Notification>,
    /// The `X-Request-Id` of the request that caused the event; `None`
    /// for events of the CLI and of background work.
    pub request_id: Option<String>,
}

/// What to read from the audit log.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub account_id: Option<String>,
    pub app_id: Option<String>,
    /// For service accounts: only events of apps this service account reaches.
    pub reachable_by: Option<String>,
    pub action: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// Only events whose target is this (a key's page lists its own).
    pub target_id: Option<String>,
}

/// A notice about a key that the scheduler records once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyNotice {
    Expiring7d,
    Expiring1d,
    Expired,
    RotationDue,
}

impl KeyNotice {
    pub fn column(self) -> &'static str {
        match self {
            KeyNotice::Expiring7d => "notified_expiring_7d",
            KeyNotice::Expiring1d => "notified_expiring_1d",
            KeyNotice::Expired => "notified_expired",
            KeyNotice::RotationDue => "notified_rotation_due",
        }
    }
}

/// How a rotation changes the old key.
#[derive(Debug, Clone)]
pub struct Rotation {
    pub old_id: String,
    /// The old key's new expiry (never later than one it already had).
    pub old_expires_at: i64,
    pub new_key: ApiKey,
    /// Most keys of the owner that may work at once, those in their grace
    /// period included: repeated rotation cannot pile up live keys.
    pub max_working: u32,
    /// The old key's policy from now on, when it changes (its credit
    /// balance moves to the new key, which it then spends from); the old
    /// key's own balance is cleared then.
    pub old_policy: Option<KeyPolicy>,
}
