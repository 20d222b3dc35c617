//! HS256 as a JWS algorithm: the verifier of HS256 keys (a token's tag
//! against the key's HMAC state) and the signer of the tokens Latchkey
//! mints. The HMAC itself is `crate::hs256`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::{Algorithm, JwsVerifier, UnverifiedJwt};
use crate::b64;
use crate::hs256::Hs256Key;

impl JwsVerifier for Hs256Key {
    fn algorithm(&self) -> Algorithm {
        Algorithm::Hs256
    }

    /// The tag (as `parse_fast` decoded it, or decoded here) against the
    /// HMAC of the signing input, compared in constant time; a tag that is
    /// not 32 bytes matches nothing.
    fn signature_matches(&self, jwt: &UnverifiedJwt<'_>) -> bool {
        let sig = match jwt.decoded_signature {
            Some(sig) => sig,
            None => {
                let mut sig = [0u8; 32];
                match b64::decode_url(jwt.signature, &mut sig) {
                    Some(32) => sig,
                    _ => return false,
                }
            }
        };
        self.verify(jwt.signing_input, &sig)
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
