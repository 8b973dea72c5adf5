//! Secrets at rest (DESIGN §5): private keys and server secrets are sealed with
//! AES-256-GCM under the master key, with a fresh random nonce per value and the
//! value's name as associated data, so a sealed value cannot be moved to another row.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::SecureRandom;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Format byte of a sealed value, so the format can change later.
const VERSION: u8 = 1;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("the master key must be 32 bytes, base64url or hex encoded")]
    BadMasterKey,
    #[error(
        "a sealed value does not open with this master key (wrong master key, or the value was altered)"
    )]
    WrongKey,
    #[error("random source failed")]
    Random,
}

/// The master key.
pub struct MasterKey(LessSafeKey);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// Parses 32 bytes given as base64url (43 characters) or hex (64 characters).
    pub fn parse(text: &str) -> Result<MasterKey, SealError> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|_| SealError::BadMasterKey)?
        } else {
            URL_SAFE_NO_PAD
                .decode(text.trim_end_matches('='))
                .map_err(|_| SealError::BadMasterKey)?
        };
        MasterKey::from_bytes(&bytes)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<MasterKey, SealError> {
        if bytes.len() != 32 {
            return Err(SealError::BadMasterKey);
        }
        let key = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| SealError::BadMasterKey)?;
        Ok(MasterKey(LessSafeKey::new(key)))
    }

    /// A new random master key, as base64url text.
    pub fn generate_text(rng: &dyn SecureRandom) -> Result<String, SealError> {
        let mut b = [0u8; 32];
        rng.fill(&mut b).map_err(|_| SealError::Random)?;
        Ok(URL_SAFE_NO_PAD.encode(b))
    }

    /// `version || nonce || ciphertext || tag`, bound to `name`.
    pub fn seal(
        &self,
        name: &str,
        plaintext: &[u8],
        rng: &dyn SecureRandom,
    ) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill(&mut nonce).map_err(|_| SealError::Random)?;
        let mut buf = plaintext.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut buf,
            )
            .map_err(|_| SealError::Random)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + buf.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        Ok(out)
    }

    pub fn open(&self, name: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let (version, rest) = sealed.split_first().ok_or(SealError::WrongKey)?;
        if *version != VERSION || rest.len() < NONCE_LEN {
            return Err(SealError::WrongKey);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::WrongKey)?;
        let mut buf = ciphertext.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(name.as_bytes()), &mut buf)
            .map_err(|_| SealError::WrongKey)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open() {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let k = MasterKey::parse(&MasterKey::generate_text(&rng).unwrap()).unwrap();
        let a = k.seal("key:k1", b"secret", &rng).unwrap();
        let b = k.seal("key:k1", b"secret", &rng).unwrap();
        assert_ne!(a, b, "fresh nonce each time");
        assert_eq!(k.open("key:k1", &a).unwrap(), b"secret");
        assert_eq!(
            k.open("key:k2", &a),
            Err(SealError::WrongKey),
            "bound to its name"
        );
        let other = MasterKey::parse(&"ab".repeat(32)).unwrap();
        assert_eq!(other.open("key:k1", &a), Err(SealError::WrongKey));
        let mut flipped = a.clone();
        flipped[20] ^= 1;
        assert_eq!(k.open("key:k1", &flipped), Err(SealError::WrongKey));
    }

    #[test]
    fn master_key_formats() {
        assert!(MasterKey::parse(&"00".repeat(32)).is_ok());
        assert!(MasterKey::parse(&"A".repeat(43)).is_ok());
        assert_eq!(
            MasterKey::parse("short").unwrap_err(),
            SealError::BadMasterKey
        );
        assert_eq!(
            MasterKey::parse(&"00".repeat(31)).unwrap_err(),
            SealError::BadMasterKey
        );
    }
}
