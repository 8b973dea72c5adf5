//! Random values, digests and constant-time comparison: the one helper every secret
//! comparison goes through (REL-08).

use aws_lc_rs::digest;
use aws_lc_rs::rand::SecureRandom;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq;

/// 32 random bytes, base64url without padding (43 characters): 256 bits of entropy,
/// above RFC 6749 §10.10 and TM-04.
pub fn random_token(rng: &dyn SecureRandom) -> Result<String, aws_lc_rs::error::Unspecified> {
    let mut bytes = [0u8; 32];
    rng.fill(&mut bytes)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// A new authorization code: its creation second (5 bytes, big-endian) and 31 random
/// bytes (248 bits, above RFC 6749 §10.10), base64url (48 characters). The second comes
/// first so that the key the code is stored under ([`code_key`]) sorts by creation: a
/// new code's index entry goes at the end of the index, beside the last one, instead
/// of on a random page of it (one page written per code).
pub fn new_code(rng: &dyn SecureRandom, now: i64) -> Result<String, aws_lc_rs::error::Unspecified> {
    let mut bytes = [0u8; CODE_BYTES];
    bytes[..5].copy_from_slice(&u64::try_from(now).unwrap_or(0).to_be_bytes()[3..]);
    rng.fill(&mut bytes[5..])?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

const CODE_BYTES: usize = 36;

/// The key a code is stored and looked up under (TM-05: never the code itself): the
/// creation second of a [`new_code`] in hex, then the code's [`digest`]. Anything else
/// presented keys by its digest alone, as codes were stored before; the two shapes
/// never meet (53 characters against 43).
pub fn code_key(code: &str) -> String {
    let mut second = [0u8; 5];
    match URL_SAFE_NO_PAD.decode(code) {
        Ok(bytes) if bytes.len() == CODE_BYTES => second.copy_from_slice(&bytes[..5]),
        _ => return digest(code),
    }
    let mut key: String = second.iter().map(|b| format!("{b:02x}")).collect();
    key.push_str(&digest(code));
    key
}

/// SHA-256 of a value, base64url: how codes, refresh secrets, session ids and client
/// secrets are stored (TM-05). A slow hash adds nothing to a 256-bit random value.
pub fn digest(value: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, value.as_bytes()))
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
    fn code_keys_sort_by_creation_and_hide_the_code() {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let early = new_code(&rng, 1_800_000_000).unwrap();
        let late = new_code(&rng, 1_800_000_001).unwrap();
        assert_eq!(early.len(), 48);
        let (ke, kl) = (code_key(&early), code_key(&late));
        assert_eq!(ke.len(), 53);
        assert!(ke < kl, "{ke} {kl}");
        assert!(ke.starts_with("006b49d200"), "{ke}");
        assert!(ke.ends_with(&digest(&early)));
        assert!(
            !ke.contains(&early[7..]),
            "the key holds no part of the code but its second"
        );
        // Two codes of one second differ in their random part.
        let again = new_code(&rng, 1_800_000_000).unwrap();
        assert_ne!(code_key(&again), ke);
        assert_eq!(&code_key(&again)[..10], &ke[..10]);
        // What is not such a code keys by its digest alone.
        for other in [
            "",
            "abc",
            &random_token(&rng).unwrap(),
            &early[..47],
            "!!!!",
        ] {
            assert_eq!(code_key(other), digest(other));
        }
    }

    #[test]
    fn digests_compare() {
        let d = digest("secret");
        assert!(digest_matches("secret", &d));
        assert!(!digest_matches("Secret", &d));
        assert!(!ct_eq(b"a", b"ab"));
    }
}
