//! The issuer's public keys (RFC 7517), each parsed once and bound to the one algorithm
//! its JWK declares (RFC 8725 §3.1). A token's header picks a key by `kid` only; it
//! never picks the key type or algorithm.

use std::time::Duration;

use aws_lc_rs::signature::{self, ParsedPublicKey, RsaPublicKeyComponents};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latchkey_core::jose::Alg;
use serde::Deserialize;

use crate::error::{SetupError, TokenError};

/// A verification key: its `kid`, its algorithm and the parsed public key.
pub(crate) struct Key {
    pub kid: String,
    pub alg: Alg,
    public: ParsedPublicKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl Key {
    pub fn verify(&self, signing_input: &[u8], signature: &[u8]) -> Result<(), TokenError> {
        self.public
            .verify_sig(signing_input, signature)
            .map_err(|_| TokenError::BadSignature)
    }

    fn same_as(&self, other: &Key) -> bool {
        self.kid == other.kid
            && self.alg == other.alg
            && self.public.as_ref() == other.public.as_ref()
    }
}

/// The keys of one JWKS that this verifier accepts.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    keys: Vec<Key>,
}

/// A JWK as published, every member optional so one odd key does not spoil the set.
#[derive(Deserialize)]
struct RawJwk {
    kty: Option<String>,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    key_ops: Option<Vec<String>>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    n: Option<String>,
    e: Option<String>,
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

impl KeySet {
    /// Reads a JWKS document, keeping the keys that are for signatures, name a `kid` and
    /// an `alg` Latchkey uses (in `allowed`, when given), and whose `kty`/`crv` agree with
    /// that `alg`. Fails when no key is left.
    pub fn parse(json: &[u8], allowed: Option<&[Alg]>) -> Result<KeySet, SetupError> {
        let raw: RawJwks = serde_json::from_slice(json)
            .map_err(|_| SetupError::Jwks("not a JSON object with a keys array"))?;
        let keys: Vec<Key> = raw
            .keys
            .into_iter()
            .filter_map(|v| serde_json::from_value::<RawJwk>(v).ok())
            .filter_map(|jwk| Key::from_jwk(jwk, allowed))
            .collect();
        if keys.is_empty() {
            return Err(SetupError::Jwks("no key with an accepted algorithm"));
        }
        Ok(KeySet { keys })
    }

    /// The key for a token: its `kid` names it and its `alg` must be the key's own.
    pub fn find(&self, kid: &str, alg: Alg) -> Result<&Key, TokenError> {
        let mut named = self.keys.iter().filter(|k| k.kid == kid).peekable();
        if named.peek().is_none() {
            return Err(TokenError::UnknownKey);
        }
        named
            .find(|k| k.alg == alg)
            .ok_or(TokenError::AlgorithmMismatch)
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid == kid)
    }

    /// Whether every key of `self` is also in `next` (so tokens verified with `self` are
    /// still verifiable).
    pub fn is_covered_by(&self, next: &KeySet) -> bool {
        self.keys
            .iter()
            .all(|k| next.keys.iter().any(|n| n.same_as(k)))
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }
}

impl Key {
    fn from_jwk(jwk: RawJwk, allowed: Option<&[Alg]>) -> Option<Key> {
        if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
            return None;
        }
        if let Some(ops) = &jwk.key_ops
            && !ops.iter().any(|o| o == "verify")
        {
            return None;
        }
        let kid = jwk.kid?;
        let alg = Alg::parse(jwk.alg.as_deref()?)?;
        if allowed.is_some_and(|a| !a.contains(&alg)) {
            return None;
        }
        let dec = |v: Option<String>| URL_SAFE_NO_PAD.decode(v?).ok();
        let public = match (alg, jwk.kty.as_deref()?, jwk.crv.as_deref()) {
            (Alg::EdDSA, "OKP", Some("Ed25519")) => {
                let x = dec(jwk.x).filter(|x| x.len() == 32)?;
                ParsedPublicKey::new(&signature::ED25519, x).ok()?
            }
            (Alg::ES256, "EC", Some("P-256")) => {
                let x = dec(jwk.x).filter(|x| x.len() == 32)?;
                let y = dec(jwk.y).filter(|y| y.len() == 32)?;
                let mut point = Vec::with_capacity(65);
                point.push(4u8);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                ParsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point).ok()?
            }
            (Alg::RS256, "RSA", None) => {
                // RFC 8725 §3.5 / RFC 7518 §3.3: at least 2048 bits.
                let n = dec(jwk.n).filter(|n| n.len() >= 256 && n.len() <= 1024)?;
                let e = dec(jwk.e)?;
                RsaPublicKeyComponents { n: &n, e: &e }
                    .to_parsed_public_key(&signature::RSA_PKCS1_2048_8192_SHA256)
                    .ok()?
            }
            _ => return None,
        };
        Some(Key { kid, alg, public })
    }
}

/// Bounds on how long a fetched JWKS is used before it is fetched again.
pub(crate) const DEFAULT_JWKS_LIFETIME: Duration = Duration::from_secs(300);
pub(crate) const MAX_JWKS_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The cache lifetime a response's `Cache-Control` grants (RFC 9111 §5.2.2): `max-age`,
/// zero for `no-store`/`no-cache`, `None` when it says nothing.
pub(crate) fn cache_lifetime(cache_control: Option<&str>) -> Option<Duration> {
    let mut max_age = None;
    for directive in cache_control?.split(',') {
        let directive = directive.trim();
        let (name, value) = directive.split_once('=').unwrap_or((directive, ""));
        let name = name.trim();
        if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
            return Some(Duration::ZERO);
        }
        if name.eq_ignore_ascii_case("max-age") {
            let seconds = value.trim().trim_matches('"').parse::<u64>().ok()?;
            max_age = Some(Duration::from_secs(seconds));
        }
    }
    max_age
}

#[cfg(test)]
mod tests {
    use super::*;
    use latchkey_core::jose::SigningKey;

    #[test]
    fn cache_control() {
        let s = |v| cache_lifetime(Some(v)).map(|d| d.as_secs());
        assert_eq!(s("public, max-age=300"), Some(300));
        assert_eq!(s("Max-Age = 60 , public"), Some(60));
        assert_eq!(s("no-store"), Some(0));
        assert_eq!(s("max-age=60, no-cache"), Some(0));
        assert_eq!(s("public"), None);
        assert_eq!(s("max-age=abc"), None);
        assert_eq!(cache_lifetime(None), None);
    }

    #[test]
    fn keeps_only_usable_keys() {
        let (ed, _) = SigningKey::generate(Alg::EdDSA, "ed".into()).unwrap();
        let (es, _) = SigningKey::generate(Alg::ES256, "es".into()).unwrap();
        let mut wrong_crv = serde_json::to_value(es.public_jwk()).unwrap();
        wrong_crv["kid"] = "wrong-crv".into();
        wrong_crv["crv"] = "P-384".into();
        let mut enc = serde_json::to_value(ed.public_jwk()).unwrap();
        enc["kid"] = "enc".into();
        enc["use"] = "enc".into();
        let mut no_alg = serde_json::to_value(ed.public_jwk()).unwrap();
        no_alg["kid"] = "no-alg".into();
        no_alg.as_object_mut().unwrap().remove("alg");
        let mut hmac = serde_json::to_value(ed.public_jwk()).unwrap();
        hmac["kid"] = "hmac".into();
        hmac["alg"] = "HS256".into();
        let mut lying = serde_json::to_value(ed.public_jwk()).unwrap();
        lying["kid"] = "lying".into();
        lying["alg"] = "ES256".into();
        let jwks = serde_json::json!({"keys": [
            ed.public_jwk(), es.public_jwk(), wrong_crv, enc, no_alg, hmac, lying,
            {"kty": "oct", "k": "c2VjcmV0", "kid": "oct", "alg": "HS256"}, 42
        ]});
        let set = KeySet::parse(jwks.to_string().as_bytes(), None).unwrap();
        assert_eq!(set.len(), 2);
        assert!(set.find("ed", Alg::EdDSA).is_ok());
        assert_eq!(
            set.find("ed", Alg::ES256).map(|k| k.alg),
            Err(TokenError::AlgorithmMismatch)
        );
        assert_eq!(
            set.find("hmac", Alg::EdDSA).map(|k| k.alg),
            Err(TokenError::UnknownKey)
        );
        let only_es = KeySet::parse(jwks.to_string().as_bytes(), Some(&[Alg::ES256])).unwrap();
        assert_eq!(only_es.len(), 1);
        assert!(KeySet::parse(b"{\"keys\":[]}", None).is_err());
        assert!(KeySet::parse(b"[]", None).is_err());
    }
}
