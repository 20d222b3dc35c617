//! Operator, verifier and replica tokens, held by the SHA-256 of the token and
//! matched in constant time.

use subtle::ConstantTimeEq;

use super::KeyIndex;
use crate::crypto::sha256;

/// The id whose hash equals the SHA-256 of `token`. Every hash is
/// compared, in constant time, so the time taken says nothing about which
/// (if any) matched. Deployments have a handful of such tokens.
fn token_id_by_hash(tokens: &[(String, [u8; 32])], token: &str) -> Option<String> {
    let presented = sha256(token.as_bytes());
    let mut found = None;
    for (id, hash) in tokens {
        if bool::from(hash.ct_eq(&presented)) {
            found = Some(id.clone());
        }
    }
    found
}

impl KeyIndex {
    /// Adds an operator token (by the SHA-256 of the token), or replaces
    /// the hash of one with the same id.
    pub fn insert_operator_token(&self, token_id: &str, token_hash: [u8; 32]) {
        let mut inner = self.write();
        inner.operator_tokens.retain(|(id, _)| id != token_id);
        inner
            .operator_tokens
            .push((token_id.to_string(), token_hash));
    }

    /// Forgets an operator token; false if it was not there.
    pub fn remove_operator_token(&self, token_id: &str) -> bool {
        let mut inner = self.write();
        let before = inner.operator_tokens.len();
        inner.operator_tokens.retain(|(id, _)| id != token_id);
        inner.operator_tokens.len() != before
    }

    /// The id of the operator token `token` matches, compared in constant time.
    pub fn operator_token_id(&self, token: &str) -> Option<String> {
        token_id_by_hash(&self.read().operator_tokens, token)
    }

    /// Adds a verifier token (by the SHA-256 of the token), or replaces
    /// the hash of one with the same id.
    pub fn insert_verifier_token(&self, token_id: &str, token_hash: [u8; 32]) {
        let mut inner = self.write();
        inner.verifier_tokens.retain(|(id, _)| id != token_id);
        inner
            .verifier_tokens
            .push((token_id.to_string(), token_hash));
    }

    /// Forgets a verifier token; false if it was not there.
    pub fn remove_verifier_token(&self, token_id: &str) -> bool {
        let mut inner = self.write();
        let before = inner.verifier_tokens.len();
        inner.verifier_tokens.retain(|(id, _)| id != token_id);
        inner.verifier_tokens.len() != before
    }

    /// The id of the verifier token `token` matches, compared in constant time.
    pub fn verifier_token_id(&self, token: &str) -> Option<String> {
        token_id_by_hash(&self.read().verifier_tokens, token)
    }

    /// Whether a verifier token is in the index.
    pub fn contains_verifier_token(&self, token_id: &str) -> bool {
        self.read()
            .verifier_tokens
            .iter()
            .any(|(id, _)| id == token_id)
    }

    /// Adds a replica token (by the SHA-256 of the token), or replaces the
    /// hash of one with the same id.
    pub fn insert_replica_token(&self, token_id: &str, token_hash: [u8; 32]) {
        let mut inner = self.write();
        inner.replica_tokens.retain(|(id, _)| id != token_id);
        inner
            .replica_tokens
            .push((token_id.to_string(), token_hash));
    }

    /// Forgets a replica token; false if it was not there.
    pub fn remove_replica_token(&self, token_id: &str) -> bool {
        let mut inner = self.write();
        let before = inner.replica_tokens.len();
        inner.replica_tokens.retain(|(id, _)| id != token_id);
        inner.replica_tokens.len() != before
    }

    /// The id of the replica token `token` matches, compared in constant time.
    pub fn replica_token_id(&self, token: &str) -> Option<String> {
        token_id_by_hash(&self.read().replica_tokens, token)
    }

    /// Whether a replica token is in the index.
    pub fn contains_replica_token(&self, token_id: &str) -> bool {
        self.read()
            .replica_tokens
            .iter()
            .any(|(id, _)| id == token_id)
    }
}
