//! The replication feed: what `GET /v1/replica/snapshot` and
//! `GET /v1/replica/changes` send (one JSON document per line), the
//! transport key under which key secrets travel, and how a replica applies
//! each record to its own [`KeyIndex`].
//!
//! The server writes these records and the `latchkey-replica` crate reads
//! them; both apply them with the same index operations, so a replica
//! answers from the same data with the same code as a node.
//!
//! A key's secret never travels in clear, not even inside TLS: each
//! response begins with a random salt, and every secret in it is sealed
//! with AES-256-GCM under `HKDF-SHA256(replica token, salt)`, bound to the
//! key's id. Only a holder of the replica token opens them.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::crypto::{CryptoError, MasterKey};
use crate::index::{AppPolicy, KeyIndex, KeyOwner, LiveKey};
use crate::policy::{KeyPolicy, Role};

/// Bytes of the salt each response begins with.
pub const SALT_LEN: usize = 16;
/// HKDF's `info`: binds derived keys to this use and format.
const INFO: &[u8] = b"latchkey replica transport v1";

/// The key that seals secrets for one response, derived from the replica
/// token and the response's salt. `Debug` shows nothing of it.
pub struct TransportKey(MasterKey);

impl std::fmt::Debug for TransportKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TransportKey(<redacted>)")
    }
}

impl TransportKey {
    /// `HKDF-SHA256(ikm = token, salt)`, expanded to an AES-256 key.
    pub fn derive(token: &str, salt: &[u8]) -> Result<Self, CryptoError> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(token.as_bytes());
        let okm = prk
            .expand(&[INFO], hkdf::HKDF_SHA256)
            .map_err(|_| CryptoError::BadMasterKey)?;
        let mut bytes = Zeroizing::new([0u8; 32]);
        okm.fill(bytes.as_mut())
            .map_err(|_| CryptoError::BadMasterKey)?;
        Ok(Self(MasterKey::from_bytes(bytes.as_ref())?))
    }

    /// A fresh random salt, base64 (standard, padded) for the wire.
    pub fn new_salt(rng: &SystemRandom) -> Result<(Vec<u8>, String), CryptoError> {
        let mut salt = vec![0u8; SALT_LEN];
        rng.fill(&mut salt).map_err(|_| CryptoError::Random)?;
        let text = STANDARD.encode(&salt);
        Ok((salt, text))
    }

    /// Decodes a salt sent by [`TransportKey::new_salt`].
    pub fn decode_salt(text: &str) -> Result<Vec<u8>, CryptoError> {
        STANDARD
            .decode(text)
            .ok()
            .filter(|s| s.len() == SALT_LEN)
            .ok_or(CryptoError::Decrypt)
    }

    /// Seals a key's secret for the wire, bound to its id; base64.
    pub fn seal(
        &self,
        rng: &SystemRandom,
        key_id: &str,
        secret: &[u8],
    ) -> Result<String, CryptoError> {
        Ok(STANDARD.encode(self.0.seal(rng, key_id, secret)?))
    }

    /// Opens what [`TransportKey::seal`] produced for the same key id.
    pub fn open(&self, key_id: &str, sealed: &str) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let bytes = STANDARD.decode(sealed).map_err(|_| CryptoError::Decrypt)?;
        self.0.open(key_id, &bytes)
    }
}

/// Who owns a key, as the feed names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OwnerKind {
    App,
    UserAccount,
    ServiceAccount,
}

/// A live key: what verification needs of it.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyRecord {
    pub id: String,
    pub owner_kind: OwnerKind,
    pub account_id: String,
    /// The app, user account or service account that owns the key.
    pub owner_id: String,
    /// The secret sealed under the response's [`TransportKey`], base64;
    /// absent for a public-key key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// A public-key key's public key, as a JWK (no secret: not sealed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<Box<serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    #[serde(default, skip_serializing_if = "KeyPolicy::is_empty")]
    pub policy: KeyPolicy,
}

impl std::fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRecord")
            .field("id", &self.id)
            .field("owner_kind", &self.owner_kind)
            .field("account_id", &self.account_id)
            .field("owner_id", &self.owner_id)
            .finish_non_exhaustive()
    }
}

/// A live app and what its settings ask of verification.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppRecord {
    pub id: String,
    pub account_id: String,
    #[serde(default)]
    pub policy: AppPolicy,
    /// The app's signing keys, current first: the public keys of the
    /// EdDSA tokens Latchkey mints for it (nothing secret).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signers: Vec<SignerRecord>,
}

/// An app's signing key: its id (the `kid` of the tokens it signs) and its
/// Ed25519 public key, base64url.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignerRecord {
    pub id: String,
    pub public_key: String,
}

/// Sets an app's signing keys in `index` from its record; a key whose
/// public key does not read is left out (its tokens are refused).
fn apply_signers(index: &KeyIndex, app: &AppRecord) {
    let signers = app
        .signers
        .iter()
        .filter_map(|s| {
            let key = crate::jwt::Ed25519PublicKey::from_base64url(&s.public_key)?;
            Some((s.id.clone(), key))
        })
        .collect();
    index.set_app_signers(&app.id, signers);
}

/// A live service account and the apps it created or was granted.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountRecord {
    pub id: String,
    pub account_id: String,
    #[serde(default)]
    pub apps: Vec<String>,
}

/// A member of an account (a user account) and its role.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberRecord {
    pub id: String,
    pub account_id: String,
    /// `owner`, `admin`, `developer` or `viewer`.
    pub role: String,
}

/// A live account and its members.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountRecord {
    pub id: String,
    #[serde(default)]
    pub members: Vec<MemberRecord>,
}

/// The first line of a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Head {
    /// The last change the snapshot includes: follow the changes after it.
    pub seq: i64,
    /// The salt of this response's [`TransportKey`], base64.
    pub salt: String,
    /// How many keys follow.
    pub key_count: u64,
}

/// One line of `GET /v1/replica/snapshot`, in this order: the head; the
/// accounts (without their members), the members, the apps, the service
/// accounts; the keys; then the end (a snapshot without it was cut
/// short). One thing per line, so that no line grows with the store.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SnapshotLine {
    Head(Head),
    Account(AccountRecord),
    Member(MemberRecord),
    App(AppRecord),
    ServiceAccount(ServiceAccountRecord),
    Key(KeyRecord),
    End { keys: u64 },
}

/// The state of one thing a change names, as the store has it now
/// (`None`: it is gone).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Entity {
    Account {
        id: String,
        account: Option<AccountRecord>,
    },
    App {
        id: String,
        app: Option<AppRecord>,
    },
    Key {
        id: String,
        key: Option<KeyRecord>,
    },
    #[serde(rename_all = "camelCase")]
    ServiceAccount {
        id: String,
        service_account: Option<ServiceAccountRecord>,
    },
    Member {
        id: String,
        member: Option<MemberRecord>,
    },
}

/// One line of `GET /v1/replica/changes?after=SEQ`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FeedLine {
    /// First: the salt of this response's [`TransportKey`].
    Hello { salt: String, after: i64 },
    /// A change, in order.
    Change { seq: i64, entity: Box<Entity> },
    /// Nothing new up to `seq`; sent at least once per heartbeat interval.
    Heartbeat { seq: i64 },
    /// The changes after the replica's sequence number are no longer
    /// kept: load the snapshot again. The response ends here.
    Reset { reason: String },
}

/// Why a record could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("a key's secret could not be opened: wrong replica token or damaged data ({0})")]
    Secret(String),
    #[error("key {0} has neither a secret nor a public key, or both")]
    Material(String),
    #[error("key {0}'s public key is not one Latchkey verifies: {1}")]
    PublicKey(String, crate::jwt::JwkError),
    #[error("unknown role {0:?}")]
    Role(String),
}

fn owner(kind: OwnerKind, account_id: &str, owner_id: &str) -> KeyOwner {
    let account_id = account_id.into();
    match kind {
        OwnerKind::App => KeyOwner::App {
            account_id,
            app_id: owner_id.into(),
        },
        OwnerKind::UserAccount => KeyOwner::UserAccount {
            account_id,
            user_account_id: owner_id.into(),
        },
        OwnerKind::ServiceAccount => KeyOwner::ServiceAccount {
            account_id,
            service_account_id: owner_id.into(),
        },
    }
}

/// The index entry of a key record, its secret opened with `transport`.
/// Credits are not replicated: a key with credits carries its credits
/// policy but no balance, and the replica refuses it (see the crate).
pub fn live_key(record: &KeyRecord, transport: &TransportKey) -> Result<LiveKey, ApplyError> {
    let owner = owner(record.owner_kind, &record.account_id, &record.owner_id);
    let key = match (&record.secret, &record.public_key) {
        (Some(sealed), None) => {
            let secret = transport
                .open(&record.id, sealed)
                .map_err(|e| ApplyError::Secret(e.to_string()))?;
            LiveKey::new(record.id.clone(), owner, &secret, record.expires_at, None)
        }
        (None, Some(jwk)) => {
            let public_key = crate::jwt::PublicKey::from_jwk(jwk)
                .map_err(|e| ApplyError::PublicKey(record.id.clone(), e))?;
            LiveKey::with_public_key(
                record.id.clone(),
                owner,
                public_key,
                record.expires_at,
                None,
            )
        }
        _ => return Err(ApplyError::Material(record.id.clone())),
    };
    Ok(key.with_policy(&record.policy, None))
}

fn role(text: &str) -> Result<Role, ApplyError> {
    Role::parse(text).ok_or_else(|| ApplyError::Role(text.to_string()))
}

/// Applies a snapshot line that is not the head, a key or the end (an
/// account, a member, an app or a service account: the owners that keys
/// need in place before them).
pub fn apply_owner(index: &KeyIndex, line: &SnapshotLine) -> Result<(), ApplyError> {
    match line {
        SnapshotLine::Account(account) => {
            index.insert_account(&account.id);
            for m in &account.members {
                index.set_member(&m.id, &m.account_id, role(&m.role)?);
            }
        }
        SnapshotLine::Member(m) => {
            index.set_member(&m.id, &m.account_id, role(&m.role)?);
        }
        SnapshotLine::App(app) => {
            index.insert_app(&app.id, &app.account_id);
            index.set_app_policy(&app.id, app.policy.clone());
            apply_signers(index, app);
        }
        SnapshotLine::ServiceAccount(sa) => {
            index.insert_service_account(&sa.id, &sa.account_id);
            index.set_grants(&sa.id, &sa.apps);
        }
        SnapshotLine::Head(_) | SnapshotLine::Key(_) | SnapshotLine::End { .. } => {}
    }
    Ok(())
}

/// Makes `index` agree with one change, as a node's follower does with
/// what it reloads from the store.
pub fn apply(
    index: &KeyIndex,
    entity: &Entity,
    transport: &TransportKey,
) -> Result<(), ApplyError> {
    match entity {
        Entity::Account { id, account } => match account {
            Some(account) => {
                index.insert_account(id);
                for m in &account.members {
                    index.set_member(&m.id, &m.account_id, role(&m.role)?);
                }
            }
            None => index.remove_account(id),
        },
        Entity::App { id, app } => match app {
            Some(app) => {
                if index.app_account(id).is_none() {
                    index.insert_app(id, &app.account_id);
                }
                index.set_app_policy(id, app.policy.clone());
                apply_signers(index, app);
            }
            None => index.remove_app(id),
        },
        Entity::Key { id, key } => match key {
            // A key already in the index keeps its usage counters; its
            // expiry (rotation, early revocation) and its policy can change.
            Some(key) if index.contains_key(id) => {
                index.set_key_expiry(id, key.expires_at);
                index.set_key_policy(id, &key.policy, None);
            }
            Some(key) => {
                index.insert_key(live_key(key, transport)?);
            }
            None => {
                index.remove_key(id);
            }
        },
        Entity::ServiceAccount {
            id,
            service_account,
        } => match service_account {
            Some(sa) => {
                index.insert_service_account(id, &sa.account_id);
                index.set_grants(id, &sa.apps);
            }
            None => index.remove_service_account(id),
        },
        Entity::Member { id, member } => match member {
            Some(m) => {
                index.set_member(id, &m.account_id, role(&m.role)?);
            }
            None => index.remove_member(id),
        },
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_opens_only_with_the_same_token_salt_and_key_id() {
        let rng = SystemRandom::new();
        let (salt, text) = TransportKey::new_salt(&rng).expect("salt");
        assert_eq!(TransportKey::decode_salt(&text).expect("decode"), salt);
        let key = TransportKey::derive("lkrp_token", &salt).expect("derive");
        let sealed = key.seal(&rng, "app_1", b"lksk_secret").expect("seal");
        assert!(!sealed.contains("lksk_"));
        assert_eq!(
            key.open("app_1", &sealed).expect("open").as_slice(),
            b"lksk_secret"
        );
        assert!(key.open("app_2", &sealed).is_err(), "bound to the key id");
        let other = TransportKey::derive("lkrp_other", &salt).expect("derive");
        assert!(other.open("app_1", &sealed).is_err(), "another token");
        let (salt2, _) = TransportKey::new_salt(&rng).expect("salt");
        let again = TransportKey::derive("lkrp_token", &salt2).expect("derive");
        assert!(again.open("app_1", &sealed).is_err(), "another salt");
        assert!(TransportKey::decode_salt("c2hvcnQ=").is_err());
    }

    #[test]
    fn feed_lines_read_back_as_written() {
        let line = FeedLine::Change {
            seq: 7,
            entity: Box::new(Entity::ServiceAccount {
                id: "sa_1".into(),
                service_account: Some(ServiceAccountRecord {
                    id: "sa_1".into(),
                    account_id: "acc_1".into(),
                    apps: vec!["ap_1".into()],
                }),
            }),
        };
        let text = serde_json::to_string(&line).expect("json");
        assert_eq!(
            text,
            r#"{"change":{"seq":7,"entity":{"type":"serviceAccount","id":"sa_1","serviceAccount":{"id":"sa_1","accountId":"acc_1","apps":["ap_1"]}}}}"#
        );
        let back: FeedLine = serde_json::from_str(&text).expect("read");
        assert!(matches!(back, FeedLine::Change { seq: 7, .. }));
    }
}
