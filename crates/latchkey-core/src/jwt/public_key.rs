//! Public keys that verify JWS signatures (issue 22): Ed25519 (the JWS
//! algorithm `Ed25519` of RFC 9864, and the older `EdDSA`) and ECDSA over
//! P-256 with SHA-256 (`ES256`). The customer keeps the private key;
//! Latchkey holds only the public one, so no secret crosses the network or
//! rests here.
//!
//! Verification is strict (RFC 8725): an ES256 signature only in JOSE's
//! fixed-size form (`r || s`, 32 bytes each; DER is refused), `r` and `s`
//! each in `[1, n-1]`, a high `s` accepted (ECDSA does not require the low
//! one); an Ed25519 signature of exactly 64 bytes, verified strictly
//! (ed25519-dalek's `verify_strict`: `S` canonical, `R` and the key not of
//! small order; faster here than ring's `ED25519`, see docs/BENCHMARKS.md).
//! ECDSA is ring's (`ECDSA_P256_SHA256_FIXED`). Both are checked against
//! Project Wycheproof's vectors in `tests/wycheproof_signatures.rs`.
//!
//! A key is registered as a JWK (RFC 7517, RFC 8037 for `OKP`) and checked
//! then, so that a key that could never verify anything is refused with a
//! reason instead of accepted and silent: an Ed25519 point that
//! decompresses and is not of small order (ed25519-dalek), a P-256 point on
//! the curve (p256, used for nothing else). A JWK that carries a private
//! key (`d`) is refused.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{self, UnparsedPublicKey};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{Algorithm, JwsVerifier, UnverifiedJwt};
use crate::b64;

/// An Ed25519 public key (32 bytes, RFC 8032's encoding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ed25519PublicKey([u8; 32]);

impl Ed25519PublicKey {
    /// The key's 32 bytes; `None` for any other length.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Self)
    }

    /// The key from its base64url text (no padding), as apps' signing
    /// keys are stored and replicated; `None` if it does not read.
    pub fn from_base64url(text: &str) -> Option<Self> {
        Self::from_bytes(&URL_SAFE_NO_PAD.decode(text).ok()?)
    }

    /// Whether `sig` (64 bytes) is this key's signature of `message`.
    pub fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        let Ok(sig) = <[u8; 64]>::try_from(sig) else {
            return false;
        };
        let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&self.0) else {
            return false;
        };
        key.verify_strict(message, &ed25519_dalek::Signature::from_bytes(&sig))
            .is_ok()
    }
}

/// A P-256 public key, as the uncompressed SEC 1 point (`04 || x || y`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct P256PublicKey([u8; 65]);

impl P256PublicKey {
    /// The uncompressed point (65 bytes, first `04`); `None` otherwise.
    /// Whether the point is on the curve is checked by every
    /// verification (a point that is not verifies nothing).
    pub fn from_uncompressed(bytes: &[u8]) -> Option<Self> {
        let point = <[u8; 65]>::try_from(bytes).ok()?;
        (point[0] == 4).then_some(Self(point))
    }

    /// The point of a JWK's `x` and `y` (32 bytes each).
    pub fn from_coordinates(x: &[u8], y: &[u8]) -> Option<Self> {
        if x.len() != 32 || y.len() != 32 {
            return None;
        }
        let mut point = [0u8; 65];
        point[0] = 4;
        point[1..33].copy_from_slice(x);
        point[33..].copy_from_slice(y);
        Some(Self(point))
    }

    /// Whether `sig` (`r || s`, 64 bytes) is this key's ES256 signature
    /// of `message`.
    pub fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        sig.len() == 64
            && UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &self.0)
                .verify(message, sig)
                .is_ok()
    }
}

/// A token's signature decoded into 64 bytes; `None` for any other
/// length or bad base64url.
fn signature_64(jwt: &UnverifiedJwt<'_>) -> Option<[u8; 64]> {
    let mut sig = [0u8; 64];
    match b64::decode_url(jwt.signature, &mut sig) {
        Some(64) => Some(sig),
        _ => None,
    }
}

impl JwsVerifier for Ed25519PublicKey {
    fn algorithm(&self) -> Algorithm {
        Algorithm::Ed25519
    }

    fn signature_matches(&self, jwt: &UnverifiedJwt<'_>) -> bool {
        signature_64(jwt).is_some_and(|sig| self.verify(jwt.signing_input, &sig))
    }
}

impl JwsVerifier for P256PublicKey {
    fn algorithm(&self) -> Algorithm {
        Algorithm::Es256
    }

    fn signature_matches(&self, jwt: &UnverifiedJwt<'_>) -> bool {
        signature_64(jwt).is_some_and(|sig| self.verify(jwt.signing_input, &sig))
    }
}

/// A customer's public key, one of the kinds Latchkey verifies: what a
/// public-key API key holds instead of a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// `OKP` / `Ed25519`: signs JWTs with alg `Ed25519` (or `EdDSA`).
    Ed25519(Ed25519PublicKey),
    /// `EC` / `P-256`: signs JWTs with alg `ES256`.
    P256(P256PublicKey),
}

/// Why a JWK is not a public key Latchkey accepts; the message says what
/// to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwkError {
    #[error("publicKey must be a JWK: a JSON object")]
    NotAnObject,
    #[error(
        "publicKey holds a private key (its d member): send only the public key, and keep the \
         private key where it is"
    )]
    PrivateKey,
    #[error("publicKey's kty must be OKP (with crv Ed25519) or EC (with crv P-256)")]
    Kty,
    #[error("publicKey's crv must be {0}")]
    Crv(&'static str),
    #[error("publicKey's {0} must be the base64url encoding (no padding) of {1} bytes")]
    Coordinate(&'static str, usize),
    #[error("publicKey's alg, when given, must be {0}")]
    Alg(&'static str),
    #[error("publicKey's use, when given, must be sig")]
    Use,
    #[error("publicKey's key_ops, when given, must include verify")]
    KeyOps,
    #[error("publicKey is not a valid {0} public key: {1}")]
    Invalid(&'static str, &'static str),
}

impl PublicKey {
    /// The key of a JWK (RFC 7517), checked: the members of its kind,
    /// no private part, a point that can verify signatures. `kid` and
    /// members Latchkey does not use are ignored; `alg`, `use` and
    /// `key_ops`, when present, must agree with verifying this key's
    /// algorithm.
    pub fn from_jwk(jwk: &Value) -> Result<Self, JwkError> {
        let jwk = jwk.as_object().ok_or(JwkError::NotAnObject)?;
        if jwk.contains_key("d") {
            return Err(JwkError::PrivateKey);
        }
        let key = match jwk.get("kty").and_then(Value::as_str) {
            Some("OKP") => {
                if jwk.get("crv").and_then(Value::as_str) != Some("Ed25519") {
                    return Err(JwkError::Crv("Ed25519 for kty OKP"));
                }
                let x = coordinate(jwk, "x")?;
                let checked = ed25519_dalek::VerifyingKey::from_bytes(&x)
                    .map_err(|_| JwkError::Invalid("Ed25519", "x is not a point of the curve"))?;
                if checked.is_weak() {
                    return Err(JwkError::Invalid(
                        "Ed25519",
                        "x is a point of small order, which verifies forged signatures",
                    ));
                }
                PublicKey::Ed25519(Ed25519PublicKey(x))
            }
            Some("EC") => {
                if jwk.get("crv").and_then(Value::as_str) != Some("P-256") {
                    return Err(JwkError::Crv("P-256 for kty EC"));
                }
                let (x, y) = (coordinate(jwk, "x")?, coordinate(jwk, "y")?);
                let point =
                    P256PublicKey::from_coordinates(&x, &y).ok_or(JwkError::Coordinate("x", 32))?;
                p256::PublicKey::from_sec1_bytes(&point.0).map_err(|_| {
                    JwkError::Invalid("P-256", "(x, y) is not a point of the curve")
                })?;
                PublicKey::P256(point)
            }
            _ => return Err(JwkError::Kty),
        };
        key.check_intent(jwk)?;
        Ok(key)
    }

    /// `alg`, `use` and `key_ops` of the JWK, when present.
    fn check_intent(&self, jwk: &Map<String, Value>) -> Result<(), JwkError> {
        if let Some(alg) = jwk.get("alg") {
            let ok = match self {
                PublicKey::Ed25519(_) => {
                    matches!(alg.as_str(), Some("Ed25519" | "EdDSA"))
                }
                PublicKey::P256(_) => alg.as_str() == Some("ES256"),
            };
            if !ok {
                return Err(JwkError::Alg(match self {
                    PublicKey::Ed25519(_) => "Ed25519 or EdDSA for an Ed25519 key",
                    PublicKey::P256(_) => "ES256 for a P-256 key",
                }));
            }
        }
        if let Some(purpose) = jwk.get("use")
            && purpose.as_str() != Some("sig")
        {
            return Err(JwkError::Use);
        }
        if let Some(ops) = jwk.get("key_ops") {
            let verifies = ops
                .as_array()
                .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")));
            if !verifies {
                return Err(JwkError::KeyOps);
            }
        }
        Ok(())
    }

    /// The key as a public JWK: `kty`, `crv` and the coordinates only.
    pub fn to_jwk(&self) -> Value {
        match self {
            PublicKey::Ed25519(key) => json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "x": URL_SAFE_NO_PAD.encode(key.0),
            }),
            PublicKey::P256(key) => json!({
                "kty": "EC",
                "crv": "P-256",
                "x": URL_SAFE_NO_PAD.encode(&key.0[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&key.0[33..]),
            }),
        }
    }

    /// The RFC 7638 thumbprint (SHA-256, base64url): a short name for the
    /// key that any JOSE library computes the same way.
    pub fn thumbprint(&self) -> String {
        // The required members in lexicographic order, no whitespace.
        let canonical = match self {
            PublicKey::Ed25519(key) => format!(
                r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
                URL_SAFE_NO_PAD.encode(key.0)
            ),
            PublicKey::P256(key) => format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                URL_SAFE_NO_PAD.encode(&key.0[1..33]),
                URL_SAFE_NO_PAD.encode(&key.0[33..])
            ),
        };
        URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
    }

    /// The one algorithm the key verifies.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            PublicKey::Ed25519(_) => Algorithm::Ed25519,
            PublicKey::P256(_) => Algorithm::Es256,
        }
    }
}

/// A JWK coordinate: base64url without padding, exactly 32 bytes.
fn coordinate(jwk: &Map<String, Value>, name: &'static str) -> Result<[u8; 32], JwkError> {
    jwk.get(name)
        .and_then(Value::as_str)
        .and_then(|text| URL_SAFE_NO_PAD.decode(text).ok())
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or(JwkError::Coordinate(name, 32))
}

#[cfg(test)]
mod tests {
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair};

    use super::*;

    #[test]
    fn a_signature_verifies_under_its_key_only_and_for_its_message_only() {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key");
        let key = Ed25519PublicKey::from_bytes(pair.public_key().as_ref()).expect("32 bytes");
        let sig = pair.sign(b"header.payload");
        assert!(key.verify(b"header.payload", sig.as_ref()));
        assert!(!key.verify(b"header.payloae", sig.as_ref()));
        assert!(!key.verify(b"header.payload", &sig.as_ref()[..63]));
        let other = Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
        let other = Ed25519KeyPair::from_pkcs8(other.as_ref()).expect("key");
        let other = Ed25519PublicKey::from_bytes(other.public_key().as_ref()).expect("key");
        assert!(!other.verify(b"header.payload", sig.as_ref()));
        assert!(Ed25519PublicKey::from_bytes(&[0u8; 31]).is_none());

        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("key");
        let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).expect("key");
        let point = pair.public_key().as_ref();
        let key = P256PublicKey::from_uncompressed(point).expect("65 bytes");
        assert_eq!(
            P256PublicKey::from_coordinates(&point[1..33], &point[33..]),
            Some(key.clone())
        );
        let sig = pair.sign(&rng, b"header.payload").expect("sign");
        assert_eq!(sig.as_ref().len(), 64, "JOSE's fixed-size form");
        assert!(key.verify(b"header.payload", sig.as_ref()));
        assert!(!key.verify(b"header.payloae", sig.as_ref()));
        let mut flipped = sig.as_ref().to_vec();
        flipped[40] ^= 1;
        assert!(!key.verify(b"header.payload", &flipped));
        assert!(P256PublicKey::from_uncompressed(&point[1..]).is_none());
        let mut compressed_tag = point.to_vec();
        compressed_tag[0] = 2;
        assert!(P256PublicKey::from_uncompressed(&compressed_tag).is_none());
    }
}

#[cfg(test)]
mod jwk_tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
    use serde_json::json;

    use super::*;

    fn ed25519_x() -> String {
        let rng = SystemRandom::new();
        let pair =
            Ed25519KeyPair::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&rng).expect("key").as_ref())
                .expect("key");
        URL_SAFE_NO_PAD.encode(pair.public_key().as_ref())
    }

    fn p256_xy() -> (String, String) {
        let rng = SystemRandom::new();
        let alg = &ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("key");
        let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).expect("key");
        let point = pair.public_key().as_ref();
        (
            URL_SAFE_NO_PAD.encode(&point[1..33]),
            URL_SAFE_NO_PAD.encode(&point[33..]),
        )
    }

    #[test]
    fn a_jwk_reads_back_as_itself_and_its_thumbprint_is_rfc_7638s() {
        let x = ed25519_x();
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "mine", "alg": "EdDSA",
            "use": "sig", "key_ops": ["verify"]});
        let key = PublicKey::from_jwk(&jwk).expect("accepted");
        assert_eq!(key.algorithm(), Algorithm::Ed25519);
        assert_eq!(
            key.to_jwk(),
            json!({"kty": "OKP", "crv": "Ed25519", "x": x})
        );
        assert_eq!(PublicKey::from_jwk(&key.to_jwk()), Ok(key));
        let (x, y) = p256_xy();
        let key = PublicKey::from_jwk(&json!({"kty": "EC", "crv": "P-256", "x": x, "y": y}))
            .expect("accepted");
        assert_eq!(key.algorithm(), Algorithm::Es256);
        assert_eq!(PublicKey::from_jwk(&key.to_jwk()), Ok(key));
        // RFC 8037 appendix A.3: the thumbprint of its example key.
        let rfc = PublicKey::from_jwk(&json!({"kty": "OKP", "crv": "Ed25519",
            "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}))
        .expect("the RFC's key");
        assert_eq!(
            rfc.thumbprint(),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn a_jwk_that_is_not_a_usable_public_key_is_refused_with_its_reason() {
        let x = ed25519_x();
        let (ex, ey) = p256_xy();
        let cases = [
            (json!("a string"), JwkError::NotAnObject),
            (
                json!({"kty": "OKP", "crv": "Ed25519", "x": x, "d": x}),
                JwkError::PrivateKey,
            ),
            (
                json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"}),
                JwkError::Kty,
            ),
            (json!({"kty": "oct", "k": x}), JwkError::Kty),
            (json!({"crv": "Ed25519", "x": x}), JwkError::Kty),
            (
                json!({"kty": "OKP", "crv": "X25519", "x": x}),
                JwkError::Crv("Ed25519 for kty OKP"),
            ),
            (
                json!({"kty": "EC", "crv": "P-384", "x": ex, "y": ey}),
                JwkError::Crv("P-256 for kty EC"),
            ),
            (
                json!({"kty": "OKP", "crv": "Ed25519"}),
                JwkError::Coordinate("x", 32),
            ),
            (
                json!({"kty": "OKP", "crv": "Ed25519", "x": format!("{x}=")}),
                JwkError::Coordinate("x", 32),
            ),
            (
                json!({"kty": "OKP", "crv": "Ed25519", "x": &x[..42]}),
                JwkError::Coordinate("x", 32),
            ),
            (
                json!({"kty": "EC", "crv": "P-256", "x": ex}),
                JwkError::Coordinate("y", 32),
            ),
            (
                json!({"kty": "OKP", "crv": "Ed25519", "x": x, "alg": "ES256"}),
                JwkError::Alg("Ed25519 or EdDSA for an Ed25519 key"),
            ),
            (
                json!({"kty": "EC", "crv": "P-256", "x": ex, "y": ey, "alg": "EdDSA"}),
                JwkError::Alg("ES256 for a P-256 key"),
            ),
            (
                json!({"kty": "OKP", "crv": "Ed25519", "x": x, "use": "enc"}),
                JwkError::Use,
            ),
            (
                json!({"kty": "OKP", "crv": "Ed25519", "x": x, "key_ops": ["sign"]}),
                JwkError::KeyOps,
            ),
            // y of another point: off the curve.
            (
                json!({"kty": "EC", "crv": "P-256", "x": ex, "y": p256_xy().1}),
                JwkError::Invalid("P-256", "(x, y) is not a point of the curve"),
            ),
            // The identity point, of small order: it would verify forgeries.
            (
                json!({"kty": "OKP", "crv": "Ed25519",
                "x": URL_SAFE_NO_PAD.encode([1u8].iter().chain([0u8; 31].iter()).copied().collect::<Vec<u8>>())}),
                JwkError::Invalid(
                    "Ed25519",
                    "x is a point of small order, which verifies forged signatures",
                ),
            ),
        ];
        for (jwk, want) in cases {
            assert_eq!(PublicKey::from_jwk(&jwk), Err(want), "{jwk}");
        }
    }
}

#[cfg(test)]
mod jwk_properties {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    /// Members a JWK reader looks at, with values of every shape.
    fn member() -> impl Strategy<Value = (String, Value)> {
        let name = prop::sample::select(vec![
            "kty", "crv", "x", "y", "d", "alg", "use", "key_ops", "kid",
        ]);
        let value = prop_oneof![
            prop::sample::select(vec![
                "OKP", "EC", "Ed25519", "P-256", "EdDSA", "ES256", "sig", "verify"
            ])
            .prop_map(|s| json!(s)),
            prop::collection::vec(any::<u8>(), 0..40)
                .prop_map(|b| json!(URL_SAFE_NO_PAD.encode(b))),
            "[A-Za-z0-9_=+/-]{0,50}".prop_map(|s| json!(s)),
            any::<i64>().prop_map(|n| json!(n)),
            Just(json!(null)),
            Just(json!(["verify"])),
        ];
        (name.prop_map(String::from), value)
    }

    proptest! {
        /// Any object is refused with a reason or read as a key whose JWK
        /// reads back as the same key; nothing panics.
        #[test]
        fn any_jwk_is_read_or_refused_never_half_read(
            members in prop::collection::vec(member(), 0..8)
        ) {
            let jwk = Value::Object(members.into_iter().collect());
            if let Ok(key) = PublicKey::from_jwk(&jwk) {
                prop_assert_eq!(PublicKey::from_jwk(&key.to_jwk()), Ok(key.clone()));
                prop_assert!(jwk.get("d").is_none());
            }
        }
    }
}
