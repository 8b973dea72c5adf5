//! Random values, digests and constant-time comparison: the one helper every secret
//! comparison goes through (REL-08).

use aws_lc_rs::digest;
use aws_lc_rs::rand::SecureRandom;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq;

/// What a credential's `Debug` shows instead of its value, so that no `{:?}` can put
/// a code, token, verifier or secret into a log.
pub const REDACTED: &str = "<redacted>";

/// 32 random bytes, base64url without padding (43 characters): 256 bits of entropy,
/// above RFC 6749 §10.10 and TM-04.
pub fn random_token(rng: &dyn SecureRandom) -> Result<String, aws_lc_rs::error::Unspecified> {
    let mut bytes = [0u8; 32];
    rng.fill(&mut bytes)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// SHA-256 of a value, base64url: how refresh secrets, session ids and client
/// secrets are stored (TM-05). A slow hash adds nothing to a 256-bit random value.
pub fn digest(value: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, value.as_bytes()))
}

/// Lower-case hex: how user and grant ids are written.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// Constant-time equality of two byte strings.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Constant-time check that `presented` hashes to `stored_digest`.
pub fn digest_matches(presented: &str, stored_digest: &str) -> bool {
    ct_eq(digest(presented).as_bytes(), stored_digest.as_bytes())
}

/// HMAC-SHA256 of `message` under `key`, base64url.
pub fn mac(key: &[u8], message: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    URL_SAFE_NO_PAD.encode(aws_lc_rs::hmac::sign(&key, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_and_distinct() {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let a = random_token(&rng).unwrap();
        let b = random_token(&rng).unwrap();
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
    }

    #[test]
    fn digests_compare() {
        let d = digest("secret");
        assert!(digest_matches("secret", &d));
        assert!(!digest_matches("Secret", &d));
        assert!(!ct_eq(b"a", b"ab"));
    }
}
