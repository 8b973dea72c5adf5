//! Compact JWS (RFC 7515) signing and verification with aws-lc-rs, restricted the way
//! RFC 8725 asks: an exact algorithm allowlist, each key bound to one algorithm, no
//! `none`, no keys from headers, explicit `typ`, size and alphabet checked before any
//! decoding.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// Largest compact JWS accepted (JWT-15).
pub const MAX_JWT_LEN: usize = 8192;

/// The signature algorithms Latchkey signs with and accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Alg {
    EdDSA,
    ES256,
    RS256,
}

impl Alg {
    pub const ALL: [Alg; 3] = [Alg::EdDSA, Alg::ES256, Alg::RS256];

    pub fn as_str(self) -> &'static str {
        match self {
            Alg::EdDSA => "EdDSA",
            Alg::ES256 => "ES256",
            Alg::RS256 => "RS256",
        }
    }

    /// Exact, case-sensitive (JWT-01): `none`, `None`, `HS256`… are all unknown.
    pub fn parse(s: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JoseError {
    #[error("token is larger than 8192 bytes")]
    TooLarge,
    #[error("token is not a compact JWS")]
    Malformed,
    #[error("token header is not valid")]
    BadHeader,
    #[error("token header uses a parameter that is not accepted ({0})")]
    ForbiddenHeader(&'static str),
    #[error("token algorithm is not accepted")]
    AlgorithmNotAllowed,
    #[error("token type is not {0}")]
    WrongType(&'static str),
    #[error("token is signed by an unknown key")]
    UnknownKey,
    #[error("token signature is not valid")]
    BadSignature,
    #[error("token claims are not a JSON object")]
    BadClaims,
    #[error("key operation failed")]
    Key,
}

enum Pair {
    Ed25519(Ed25519KeyPair),
    Es256(EcdsaKeyPair),
    Rs256(RsaKeyPair),
}

/// A private signing key bound to one algorithm and one `kid`.
pub struct SigningKey {
    kid: String,
    alg: Alg,
    pair: Pair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Generates a key; returns it with its PKCS#8 v1 document for storage.
    pub fn generate(alg: Alg, kid: String) -> Result<(SigningKey, Vec<u8>), JoseError> {
        let rng = SystemRandom::new();
        let der: Vec<u8> = match alg {
            Alg::EdDSA => Ed25519KeyPair::generate_pkcs8v1(&rng)
                .map_err(|_| JoseError::Key)?
                .as_ref()
                .to_vec(),
            Alg::ES256 => {
                EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| JoseError::Key)?
                    .as_ref()
                    .to_vec()
            }
            Alg::RS256 => {
                use aws_lc_rs::encoding::AsDer;
                let pair = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                    .map_err(|_| JoseError::Key)?;
                let der: aws_lc_rs::encoding::Pkcs8V1Der<'_> =
                    pair.as_der().map_err(|_| JoseError::Key)?;
                der.as_ref().to_vec()
            }
        };
        let key = SigningKey::from_pkcs8(alg, kid, &der)?;
        Ok((key, der))
    }

    pub fn from_pkcs8(alg: Alg, kid: String, der: &[u8]) -> Result<SigningKey, JoseError> {
        let pair = match alg {
            Alg::EdDSA => Pair::Ed25519(
                Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(|_| JoseError::Key)?,
            ),
            Alg::ES256 => Pair::Es256(
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der)
                    .map_err(|_| JoseError::Key)?,
            ),
            Alg::RS256 => Pair::Rs256(RsaKeyPair::from_pkcs8(der).map_err(|_| JoseError::Key)?),
        };
        Ok(SigningKey { kid, alg, pair })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// The public half as a JWK (RFC 7517), with `kid`, `alg` and `use: sig`.
    pub fn public_jwk(&self) -> Jwk {
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        let mut jwk = Jwk {
            kty: String::new(),
            kid: self.kid.clone(),
            alg: self.alg.as_str().to_owned(),
            use_: Some("sig".to_owned()),
            crv: None,
            x: None,
            y: None,
            n: None,
            e: None,
        };
        match &self.pair {
            Pair::Ed25519(p) => {
                jwk.kty = "OKP".into();
                jwk.crv = Some("Ed25519".into());
                jwk.x = Some(b64(p.public_key().as_ref()));
            }
            Pair::Es256(p) => {
                // Uncompressed point: 0x04 || X (32) || Y (32).
                let point = p.public_key().as_ref();
                jwk.kty = "EC".into();
                jwk.crv = Some("P-256".into());
                jwk.x = point.get(1..33).map(b64);
                jwk.y = point.get(33..65).map(b64);
            }
            Pair::Rs256(p) => {
                let public = p.public_key();
                jwk.kty = "RSA".into();
                jwk.n = Some(b64(public.modulus().big_endian_without_leading_zero()));
                jwk.e = Some(b64(public.exponent().big_endian_without_leading_zero()));
            }
        }
        jwk
    }

    /// Signs `claims` as a compact JWS with header `{alg, typ, kid}`.
    pub fn sign<C: Serialize>(&self, typ: &str, claims: &C) -> Result<String, JoseError> {
        let header = serde_json::json!({"alg": self.alg.as_str(), "typ": typ, "kid": self.kid});
        let mut out = String::with_capacity(512);
        out.push_str(
            &URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).map_err(|_| JoseError::Key)?),
        );
        out.push('.');
        out.push_str(
            &URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).map_err(|_| JoseError::BadClaims)?),
        );
        let signature = self.sign_bytes(out.as_bytes())?;
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(signature));
        Ok(out)
    }

    fn sign_bytes(&self, input: &[u8]) -> Result<Vec<u8>, JoseError> {
        let rng = SystemRandom::new();
        match &self.pair {
            Pair::Ed25519(p) => Ok(p.sign(input).as_ref().to_vec()),
            Pair::Es256(p) => Ok(p
                .sign(&rng, input)
                .map_err(|_| JoseError::Key)?
                .as_ref()
                .to_vec()),
            Pair::Rs256(p) => {
                let mut sig = vec![0u8; p.public_modulus_len()];
                p.sign(&signature::RSA_PKCS1_SHA256, &rng, input, &mut sig)
                    .map_err(|_| JoseError::Key)?;
                Ok(sig)
            }
        }
    }
}

/// A public JWK as published in the JWKS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    pub kid: String,
    pub alg: String,
    #[serde(rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
}

/// A public key for verification, bound to the one algorithm its JWK declares, parsed
/// once (a verification then costs only the signature check).
#[derive(Debug, Clone)]
pub struct VerifyingKey {
    pub kid: String,
    pub alg: Alg,
    public: std::sync::Arc<signature::ParsedPublicKey>,
}

impl VerifyingKey {
    /// Builds a key from a JWK; its `kty`, `crv` and `alg` must agree, and an RSA key
    /// must have at least 2048 bits (RFC 7518 §3.3).
    pub fn from_jwk(jwk: &Jwk) -> Result<VerifyingKey, JoseError> {
        let alg = Alg::parse(&jwk.alg).ok_or(JoseError::AlgorithmNotAllowed)?;
        let dec = |v: &Option<String>| -> Result<Vec<u8>, JoseError> {
            URL_SAFE_NO_PAD
                .decode(v.as_deref().ok_or(JoseError::Key)?)
                .map_err(|_| JoseError::Key)
        };
        let public = match (alg, jwk.kty.as_str(), jwk.crv.as_deref()) {
            (Alg::EdDSA, "OKP", Some("Ed25519")) => {
                signature::ParsedPublicKey::new(&signature::ED25519, dec(&jwk.x)?)
                    .map_err(|_| JoseError::Key)?
            }
            (Alg::ES256, "EC", Some("P-256")) => {
                let mut point = vec![4u8];
                point.extend(dec(&jwk.x)?);
                point.extend(dec(&jwk.y)?);
                signature::ParsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .map_err(|_| JoseError::Key)?
            }
            (Alg::RS256, "RSA", None) => {
                let (n, e) = (dec(&jwk.n)?, dec(&jwk.e)?);
                if n.len() < 256 {
                    return Err(JoseError::Key);
                }
                signature::RsaPublicKeyComponents { n: &n, e: &e }
                    .to_parsed_public_key(&signature::RSA_PKCS1_2048_8192_SHA256)
                    .map_err(|_| JoseError::Key)?
            }
            _ => return Err(JoseError::Key),
        };
        Ok(VerifyingKey {
            kid: jwk.kid.clone(),
            alg,
            public: std::sync::Arc::new(public),
        })
    }

    fn verify_bytes(&self, input: &[u8], sig: &[u8]) -> bool {
        self.public.verify_sig(input, sig).is_ok()
    }
}

/// The parts of a JWS header we read.
#[derive(Debug, Clone, Deserialize)]
pub struct Header {
    pub alg: String,
    pub typ: Option<String>,
    pub kid: Option<String>,
}

/// Verifies a compact JWS against `keys` and returns its claims. The key is chosen by
/// `kid` and must be bound to the header's `alg`; `expected_typ` is compared exactly
/// (case-insensitively, as RFC 7515 §4.1.9 allows for media types).
pub fn verify(
    token: &str,
    keys: &[VerifyingKey],
    expected_typ: &'static str,
) -> Result<serde_json::Map<String, serde_json::Value>, JoseError> {
    if token.len() > MAX_JWT_LEN {
        return Err(JoseError::TooLarge);
    }
    // JWT-14: only the compact alphabet; JWT-03: exactly three segments (no JWE).
    if !token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(JoseError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JoseError::Malformed);
    };
    let header_bytes = URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| JoseError::Malformed)?;
    let header_value: serde_json::Value =
        serde_json::from_slice(&header_bytes).map_err(|_| JoseError::BadHeader)?;
    let header_obj = header_value.as_object().ok_or(JoseError::BadHeader)?;
    for forbidden in ["jku", "x5u", "jwk", "x5c", "crit", "zip", "b64"] {
        if header_obj.contains_key(forbidden) {
            return Err(JoseError::ForbiddenHeader(forbidden));
        }
    }
    let header: Header = serde_json::from_value(header_value).map_err(|_| JoseError::BadHeader)?;
    let alg = Alg::parse(&header.alg).ok_or(JoseError::AlgorithmNotAllowed)?;
    if !header
        .typ
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case(expected_typ))
    {
        return Err(JoseError::WrongType(expected_typ));
    }
    let kid = header.kid.as_deref().ok_or(JoseError::UnknownKey)?;
    let key = keys
        .iter()
        .find(|k| k.kid == kid)
        .ok_or(JoseError::UnknownKey)?;
    if key.alg != alg {
        return Err(JoseError::AlgorithmNotAllowed);
    }
    let sig = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| JoseError::Malformed)?;
    let signed_len = h.len() + 1 + p.len();
    if !key.verify_bytes(&token.as_bytes()[..signed_len], &sig) {
        return Err(JoseError::BadSignature);
    }
    let payload = URL_SAFE_NO_PAD
        .decode(p)
        .map_err(|_| JoseError::Malformed)?;
    match serde_json::from_slice(&payload) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        _ => Err(JoseError::BadClaims),
    }
}

/// OIDC Core §3.1.3.6 `at_hash`: the left half of the hash of the access token,
/// base64url, with the hash of the ID token's algorithm: SHA-256 for RS256 and ES256,
/// SHA-512 for EdDSA with Ed25519 (the hash Ed25519 itself uses).
pub fn at_hash(id_token_alg: Alg, access_token: &str) -> String {
    use aws_lc_rs::digest::{SHA256, SHA512, digest};
    let d = match id_token_alg {
        Alg::EdDSA => digest(&SHA512, access_token.as_bytes()),
        Alg::ES256 | Alg::RS256 => digest(&SHA256, access_token.as_bytes()),
    };
    let bytes = d.as_ref();
    URL_SAFE_NO_PAD.encode(&bytes[..bytes.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(alg: Alg) -> (SigningKey, VerifyingKey) {
        let (k, _) = SigningKey::generate(alg, format!("k-{}", alg.as_str())).unwrap();
        let v = VerifyingKey::from_jwk(&k.public_jwk()).unwrap();
        (k, v)
    }

    #[test]
    fn sign_and_verify_each_algorithm() {
        for alg in Alg::ALL {
            let (k, v) = pair(alg);
            let t = k.sign("at+jwt", &serde_json::json!({"sub": "u"})).unwrap();
            let claims = verify(&t, std::slice::from_ref(&v), "at+jwt").unwrap();
            assert_eq!(claims["sub"], "u");
        }
    }

    #[test]
    fn pkcs8_round_trip() {
        for alg in Alg::ALL {
            let (k, der) = SigningKey::generate(alg, "x".into()).unwrap();
            let k2 = SigningKey::from_pkcs8(alg, "x".into(), &der).unwrap();
            assert_eq!(k.public_jwk(), k2.public_jwk());
        }
    }

    #[test]
    fn rejections() {
        let (k, v) = pair(Alg::EdDSA);
        let keys = std::slice::from_ref(&v);
        let t = k.sign("at+jwt", &serde_json::json!({"sub": "u"})).unwrap();
        assert_eq!(verify(&t, keys, "JWT"), Err(JoseError::WrongType("JWT")));
        // Change a character inside the signature (the last one carries padding bits
        // and may not decode at all).
        let i = t.len() - 10;
        let c = if &t[i..=i] == "A" { "B" } else { "A" };
        let tampered = format!("{}{c}{}", &t[..i], &t[i + 1..]);
        assert_eq!(
            verify(&tampered, keys, "at+jwt"),
            Err(JoseError::BadSignature)
        );
        let b = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let body = b(serde_json::json!({"sub": "u"}));
        for (header, err) in [
            (
                serde_json::json!({"alg": "none", "typ": "at+jwt", "kid": "k-EdDSA"}),
                JoseError::AlgorithmNotAllowed,
            ),
            (
                serde_json::json!({"alg": "HS256", "typ": "at+jwt", "kid": "k-EdDSA"}),
                JoseError::AlgorithmNotAllowed,
            ),
            (
                serde_json::json!({"alg": "eddsa", "typ": "at+jwt", "kid": "k-EdDSA"}),
                JoseError::AlgorithmNotAllowed,
            ),
            (
                serde_json::json!({"alg": "ES256", "typ": "at+jwt", "kid": "k-EdDSA"}),
                JoseError::AlgorithmNotAllowed,
            ),
            (
                serde_json::json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "other"}),
                JoseError::UnknownKey,
            ),
            (
                serde_json::json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "k-EdDSA", "jku": "https://e/"}),
                JoseError::ForbiddenHeader("jku"),
            ),
        ] {
            let forged = format!("{}.{}.", b(header), body);
            assert_eq!(verify(&forged, keys, "at+jwt"), Err(err));
        }
        assert_eq!(
            verify("a.b.c.d.e", keys, "at+jwt"),
            Err(JoseError::Malformed)
        );
        // JWT-06: compression is refused; JWT-07: only UTF-8 headers and claims, even
        // under a valid signature.
        let zip = format!(
            "{}.{}.",
            b(serde_json::json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "k-EdDSA", "zip": "DEF"})),
            body
        );
        assert_eq!(
            verify(&zip, keys, "at+jwt"),
            Err(JoseError::ForbiddenHeader("zip"))
        );
        let bad_header = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(b"{\"alg\":\"EdDSA\xff\"}"),
            body
        );
        assert_eq!(
            verify(&bad_header, keys, "at+jwt"),
            Err(JoseError::BadHeader)
        );
        let header = b(serde_json::json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "k-EdDSA"}));
        let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(b"{\"sub\":\"\xff\"}"));
        let sig = URL_SAFE_NO_PAD.encode(k.sign_bytes(input.as_bytes()).unwrap());
        assert_eq!(
            verify(&format!("{input}.{sig}"), keys, "at+jwt"),
            Err(JoseError::BadClaims)
        );
        assert_eq!(
            verify("{\"a\":1}.b.c", keys, "at+jwt"),
            Err(JoseError::Malformed)
        );
        assert_eq!(
            verify(&"a".repeat(MAX_JWT_LEN + 1), keys, "at+jwt"),
            Err(JoseError::TooLarge)
        );
    }

    #[test]
    fn at_hash_matches_oidc_example() {
        // OIDC Core Appendix A.3 example values.
        assert_eq!(
            at_hash(Alg::RS256, "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
    }
}
