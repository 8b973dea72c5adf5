//! The compact JWS serialization (RFC 7515 §7.1), read the way RFC 8725 asks: size and
//! alphabet first, then exactly three segments, then a header that may not name its own
//! key (`jku`, `x5u`, `jwk`, `x5c`) or change processing (`crit`, `zip`, `b64`), whose
//! `alg` is one Latchkey signs with and whose `typ` is `at+jwt`. The payload is not
//! decoded here: only after the signature has been checked.

use std::borrow::Cow;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latchkey_core::jose::Alg;
use serde::{Deserialize, Deserializer};

use crate::error::TokenError;

/// Largest token accepted, in bytes; checked before any other work (RFC 8725 §3.x
/// leaves the bound to the application; Latchkey's tokens are well under 1 KiB).
pub const MAX_TOKEN_LEN: usize = latchkey_core::jose::MAX_JWT_LEN;

/// Longest decoded signature: RSA with an 8192-bit modulus.
const MAX_SIGNATURE_LEN: usize = 1024;

/// A token whose structure and header passed, signature not yet checked.
#[derive(Debug)]
pub(crate) struct Unverified<'a> {
    pub alg: Alg,
    pub kid: String,
    /// `BASE64URL(header) "." BASE64URL(payload)`, the bytes the signature covers.
    pub signing_input: &'a [u8],
    pub payload: &'a str,
    pub signature: &'a str,
}

/// The header parameters we read. Serde's derive rejects a repeated member (RFC 7515
/// §4 says a header with duplicate names must be rejected or read last-wins; we reject).
#[derive(Deserialize)]
struct RawHeader<'a> {
    #[serde(borrow)]
    alg: Cow<'a, str>,
    #[serde(borrow, default)]
    typ: Option<Cow<'a, str>>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default, deserialize_with = "present")]
    jku: bool,
    #[serde(default, deserialize_with = "present")]
    x5u: bool,
    #[serde(default, deserialize_with = "present")]
    jwk: bool,
    #[serde(default, deserialize_with = "present")]
    x5c: bool,
    #[serde(default, deserialize_with = "present")]
    crit: bool,
    #[serde(default, deserialize_with = "present")]
    zip: bool,
    #[serde(default, deserialize_with = "present")]
    b64: bool,
}

/// True whenever the member is there, whatever its value (even `null`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(d)?;
    Ok(true)
}

impl RawHeader<'_> {
    fn forbidden(&self) -> Option<&'static str> {
        [
            (self.jku, "jku"),
            (self.x5u, "x5u"),
            (self.jwk, "jwk"),
            (self.x5c, "x5c"),
            (self.crit, "crit"),
            (self.zip, "zip"),
            (self.b64, "b64"),
        ]
        .into_iter()
        .find_map(|(set, name)| set.then_some(name))
    }
}

/// Whether `bytes`, after leading JSON whitespace, starts a JSON object. Serde's derived
/// structs would also read a JSON array positionally; a JOSE header is an object.
pub(crate) fn starts_object(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .is_some_and(|b| *b == b'{')
}

/// RFC 9068 §2.1: `typ` is `at+jwt`; RFC 7515 §4.1.9 lets the `application/` prefix be
/// omitted, and media types compare case-insensitively.
fn is_access_token_type(typ: &str) -> bool {
    let typ = match typ.get(..12) {
        Some(prefix) if prefix.eq_ignore_ascii_case("application/") => &typ[12..],
        _ => typ,
    };
    typ.eq_ignore_ascii_case(latchkey_core::claims::ACCESS_TOKEN_TYP)
}

/// Reads the structure and the header of a compact JWS.
pub(crate) fn parse(token: &str) -> Result<Unverified<'_>, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLarge);
    }
    if !token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(TokenError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    if header.is_empty() || payload.is_empty() {
        return Err(TokenError::Malformed);
    }
    let header_bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenError::Malformed)?;
    if !starts_object(&header_bytes) {
        return Err(TokenError::BadHeader);
    }
    let raw: RawHeader<'_> =
        serde_json::from_slice(&header_bytes).map_err(|_| TokenError::BadHeader)?;
    if let Some(name) = raw.forbidden() {
        return Err(TokenError::ForbiddenHeader(name));
    }
    let alg = Alg::parse(&raw.alg).ok_or(TokenError::AlgorithmNotAllowed)?;
    if !raw.typ.as_deref().is_some_and(is_access_token_type) {
        return Err(TokenError::WrongType);
    }
    let kid = raw.kid.ok_or(TokenError::MissingKeyId)?;
    let signed_len = header.len() + 1 + payload.len();
    Ok(Unverified {
        alg,
        kid,
        signing_input: token.as_bytes().get(..signed_len).unwrap_or_default(),
        payload,
        signature,
    })
}

/// Decodes the signature segment into `buf`, returning the filled part.
pub(crate) fn decode_signature<'b>(
    signature: &str,
    buf: &'b mut [u8; MAX_SIGNATURE_LEN + 8],
) -> Result<&'b [u8], TokenError> {
    let n = URL_SAFE_NO_PAD
        .decode_slice(signature, buf)
        .map_err(|_| TokenError::Malformed)?;
    if n > MAX_SIGNATURE_LEN {
        return Err(TokenError::Malformed);
    }
    buf.get(..n).ok_or(TokenError::Malformed)
}

/// A buffer for [`decode_signature`].
pub(crate) fn signature_buffer() -> [u8; MAX_SIGNATURE_LEN + 8] {
    [0u8; MAX_SIGNATURE_LEN + 8]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(v: serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    fn header(v: serde_json::Value) -> Result<Alg, TokenError> {
        parse(&format!("{}.e30.", b64(v))).map(|u| u.alg)
    }

    #[test]
    fn typ_forms() {
        for typ in [
            "at+jwt",
            "AT+JWT",
            "application/at+jwt",
            "Application/At+Jwt",
        ] {
            assert_eq!(
                header(serde_json::json!({"alg": "EdDSA", "typ": typ, "kid": "k"})),
                Ok(Alg::EdDSA),
                "{typ}"
            );
        }
        for typ in [
            "JWT",
            "jwt",
            "application/jwt",
            "at+jwt ",
            "application/",
            "",
        ] {
            assert_eq!(
                header(serde_json::json!({"alg": "EdDSA", "typ": typ, "kid": "k"})),
                Err(TokenError::WrongType),
                "{typ}"
            );
        }
    }

    #[test]
    fn forbidden_even_when_null() {
        assert_eq!(
            header(serde_json::json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "k", "jwk": null})),
            Err(TokenError::ForbiddenHeader("jwk"))
        );
    }

    #[test]
    fn duplicate_and_array_headers() {
        let dup =
            URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA","alg":"none","typ":"at+jwt","kid":"k"}"#);
        assert_eq!(
            parse(&format!("{dup}.e30.")).map(|u| u.alg),
            Err(TokenError::BadHeader)
        );
        let arr = URL_SAFE_NO_PAD.encode(r#"["EdDSA","at+jwt","k"]"#);
        assert_eq!(
            parse(&format!("{arr}.e30.")).map(|u| u.alg),
            Err(TokenError::BadHeader)
        );
    }

    #[test]
    fn oversized_signature_is_malformed() {
        let mut buf = signature_buffer();
        let long = URL_SAFE_NO_PAD.encode([0u8; 1025]);
        assert_eq!(
            decode_signature(&long, &mut buf),
            Err(TokenError::Malformed)
        );
        let ok = URL_SAFE_NO_PAD.encode([7u8; 1024]);
        assert_eq!(decode_signature(&ok, &mut buf).map(<[u8]>::len), Ok(1024));
    }
}
