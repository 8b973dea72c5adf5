//! PKCE (RFC 7636) with S256 only. Required for every client (OAuth 2.1, RFC 9700 §2.1.1).

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::OAuthError;
use crate::secret::ct_eq;

/// A `code_challenge` for method S256: the base64url SHA-256 of a verifier, so exactly
/// 43 characters of the base64url alphabet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeChallenge(String);

impl CodeChallenge {
    /// Parses `code_challenge` and `code_challenge_method` from an authorization request.
    /// A missing method means `plain` (RFC 7636 §4.3), which we refuse (BCP-05 policy).
    pub fn parse(challenge: Option<&str>, method: Option<&str>) -> Result<Self, OAuthError> {
        let challenge = challenge.ok_or_else(|| {
            OAuthError::invalid_request("code_challenge is required (PKCE with S256)")
        })?;
        match method {
            Some("S256") => {}
            Some("plain") | None => {
                return Err(OAuthError::invalid_request(
                    "code_challenge_method must be S256; plain is not supported",
                ));
            }
            Some(_) => {
                return Err(OAuthError::invalid_request(
                    "unsupported code_challenge_method; only S256 is supported",
                ));
            }
        }
        if challenge.len() != 43 || !challenge.bytes().all(is_base64url) {
            return Err(OAuthError::invalid_request(
                "code_challenge must be 43 base64url characters (S256)",
            ));
        }
        Ok(CodeChallenge(challenge.to_owned()))
    }

    /// Rebuilds a challenge read back from storage.
    pub fn from_stored(s: String) -> Self {
        CodeChallenge(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// RFC 7636 §4.6: BASE64URL(SHA256(verifier)) == challenge, in constant time.
    /// A mismatch is `invalid_grant` (§4.6).
    pub fn verify(&self, verifier: &CodeVerifier) -> Result<PkceVerified, OAuthError> {
        let computed =
            URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, verifier.0.as_bytes()));
        if ct_eq(computed.as_bytes(), self.0.as_bytes()) {
            Ok(PkceVerified(()))
        } else {
            Err(OAuthError::invalid_grant(
                "code_verifier does not match the code_challenge",
            ))
        }
    }
}

/// A `code_verifier`: 43 to 128 characters from `[A-Za-z0-9-._~]` (RFC 7636 §4.1).
#[derive(Clone)]
pub struct CodeVerifier(String);

impl CodeVerifier {
    pub fn parse(s: &str) -> Result<Self, OAuthError> {
        let ok_len = (43..=128).contains(&s.len());
        let ok_chars = s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
        if ok_len && ok_chars {
            Ok(CodeVerifier(s.to_owned()))
        } else {
            Err(OAuthError::invalid_grant(
                "code_verifier must be 43 to 128 characters of [A-Za-z0-9-._~]",
            ))
        }
    }
}

/// Proof that the PKCE check ran and passed; only [`CodeChallenge::verify`] builds it,
/// and minting tokens for a code requires it.
#[derive(Debug)]
pub struct PkceVerified(());

fn is_base64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7636 Appendix B.
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    #[test]
    fn rfc7636_appendix_b_vector_verifies() {
        let c = CodeChallenge::parse(Some(CHALLENGE), Some("S256")).unwrap();
        assert!(c.verify(&CodeVerifier::parse(VERIFIER).unwrap()).is_ok());
    }

    #[test]
    fn wrong_verifier_is_invalid_grant() {
        let c = CodeChallenge::parse(Some(CHALLENGE), Some("S256")).unwrap();
        let other = CodeVerifier::parse(&"a".repeat(43)).unwrap();
        assert_eq!(
            c.verify(&other).unwrap_err().code,
            crate::ErrorCode::InvalidGrant
        );
    }

    #[test]
    fn plain_and_missing_method_are_refused() {
        assert!(CodeChallenge::parse(Some(CHALLENGE), Some("plain")).is_err());
        assert!(CodeChallenge::parse(Some(CHALLENGE), None).is_err());
        assert!(CodeChallenge::parse(None, Some("S256")).is_err());
        assert!(CodeChallenge::parse(Some("short"), Some("S256")).is_err());
        assert!(
            CodeChallenge::parse(Some(&format!("{}=", &CHALLENGE[..42])), Some("S256")).is_err()
        );
    }

    #[test]
    fn verifier_grammar() {
        assert!(CodeVerifier::parse(&"a".repeat(42)).is_err());
        assert!(CodeVerifier::parse(&"a".repeat(129)).is_err());
        assert!(CodeVerifier::parse(&format!("{}+", "a".repeat(43))).is_err());
        assert!(CodeVerifier::parse(&"a~._-".repeat(9)).is_ok());
    }
}
