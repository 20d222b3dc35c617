//! HS256 as a JWS algorithm: checking a token's signature with a key's
//! HMAC state, and signing the tokens Latchkey mints.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::{JwtError, UnverifiedJwt};
use crate::b64;
use crate::hs256::Hs256Key;

impl UnverifiedJwt<'_> {
    /// Checks the signature against `key` in constant time.
    pub fn verify_signature(&self, key: &Hs256Key) -> Result<(), JwtError> {
        let sig = match self.decoded_signature {
            Some(sig) => sig,
            None => {
                let mut sig = [0u8; 32];
                match b64::decode_url(self.signature, &mut sig) {
                    Some(32) => sig,
                    _ => return Err(JwtError::Signature),
                }
            }
        };
        if key.verify(self.signing_input, &sig) {
            Ok(())
        } else {
            Err(JwtError::Signature)
        }
    }
}

/// Signs `claims` with HS256 under `secret`, naming `kid` in the header.
pub fn sign_hs256(secret: &[u8], kid: &str, claims: &serde_json::Value) -> String {
    let header = serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": kid});
    let mut token = URL_SAFE_NO_PAD.encode(header.to_string());
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
    let tag = Hs256Key::new(secret).sign(token.as_bytes());
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(tag));
    token
}
