//! The persisted records (DESIGN §2) and their state transitions. Storage makes each
//! transition atomic with one conditional statement; the rules live here.

use crate::UnixTime;
use crate::pkce::CodeChallenge;
use crate::scope::Scope;

#[derive(Debug, Clone)]
pub struct User {
    /// Stable, never reassigned; the `sub` claim (OIDC Core §2).
    pub user_id: String,
    /// Normalized for lookup (see [`normalize_username`]).
    pub username: String,
    pub password_hash: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    pub disabled: bool,
    pub created_at: i64,
}

/// Usernames are compared in one canonical form: Unicode NFKC, then lower case, then
/// NFKC again (lower-casing can denormalize), trimmed. So `Alice`, `ALICE `, `ａｌｉｃｅ`
/// (full-width) and `alice` are one account, and look-alike duplicates cannot be
/// registered.
pub fn normalize_username(s: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let folded: String = s.nfkc().collect::<String>().to_lowercase();
    folded.nfkc().collect::<String>().trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::normalize_username;

    #[test]
    fn usernames_fold_width_case_and_compatibility_forms() {
        for same in [
            "alice",
            "Alice",
            " ALICE ",
            "\u{ff41}\u{ff4c}\u{ff49}\u{ff43}\u{ff45}",
            "ALİCE".replace('İ', "I").as_str(),
        ] {
            assert_eq!(normalize_username(same), "alice", "{same:?}");
        }
        // The ligature ﬁ is the two letters f i under NFKC.
        assert_eq!(normalize_username("\u{fb01}x"), "fix");
        // Precomposed and combining forms of é are one name.
        assert_eq!(
            normalize_username("jos\u{e9}"),
            normalize_username("jose\u{301}")
        );
        assert_ne!(normalize_username("alice"), normalize_username("a1ice"));
    }
}

/// A browser session after login. Stored under the digest of the cookie value.
#[derive(Debug, Clone)]
pub struct Session {
    pub session_hash: String,
    pub user_id: String,
    pub auth_time: i64,
    pub expires_at: i64,
}

/// One user's authorization of one client: one row, however many tokens it yields.
#[derive(Debug, Clone)]
pub struct Grant {
    pub grant_id: String,
    pub user_id: String,
    pub client_id: String,
    pub scope: Scope,
    pub auth_time: i64,
    pub session_hash: Option<String>,
    pub nonce: Option<String>,
    /// The `aud` of the grant's access tokens (RFC 8707); `None` is the default audience.
    pub audience: Option<String>,
    /// Generation of the current refresh token; 0 when none was issued.
    pub refresh_generation: i64,
    /// Digest of the current refresh token's secret.
    pub refresh_hash: Option<String>,
    pub created_at: i64,
    pub last_used_at: i64,
    /// After this the grant is dead (refresh expiry) and may be swept.
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    /// The refresh grace retry of the current generation was spent.
    pub grace_used: bool,
}

impl Grant {
    pub fn is_active(&self, now: UnixTime) -> bool {
        self.revoked_at.is_none() && now.0 < self.expires_at
    }
}

/// What an authorization code stands for (RFC 6749 §4.1.2): the authorization it
/// answers, sealed into the code itself ([`crate::code`]), never stored.
#[derive(Debug, Clone)]
pub struct AuthorizationCode {
    /// The grant a redemption makes; a second redemption finds it and revokes it.
    pub grant_id: String,
    pub client_id: String,
    pub user_id: String,
    pub session_hash: Option<String>,
    pub redirect_uri: String,
    pub scope: Scope,
    pub nonce: Option<String>,
    pub code_challenge: CodeChallenge,
    pub auth_time: i64,
    pub expires_at: i64,
    pub resource: Option<String>,
}

/// A signing key's place in its life (DESIGN §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyState {
    Next,
    Active,
    Retiring,
    Retired,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Next => "next",
            KeyState::Active => "active",
            KeyState::Retiring => "retiring",
            KeyState::Retired => "retired",
        }
    }
    pub fn parse(s: &str) -> Option<KeyState> {
        [
            KeyState::Next,
            KeyState::Active,
            KeyState::Retiring,
            KeyState::Retired,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
    /// Whether the key belongs in the JWKS.
    pub fn is_published(self) -> bool {
        !matches!(self, KeyState::Retired)
    }
}

/// A stored signing key. The private part is PKCS#8, sealed under the master key.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    pub kid: String,
    pub alg: crate::jose::Alg,
    pub state: KeyState,
    pub private_pkcs8: Vec<u8>,
    pub created_at: i64,
    /// When the key entered its current state.
    pub state_since: i64,
}
