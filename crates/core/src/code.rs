//! Authorization codes that carry their own request (RFC 6749 §4.1.2).
//!
//! A code is the authorization it answers (client, user, session, redirect URI, scope,
//! nonce, PKCE challenge, resource, times), sealed with AES-256-GCM-SIV under a key only
//! the servers hold, so issuing one writes nothing. What makes a code single-use is
//! the grant it yields, which the code names: redeeming it inserts that grant, and a
//! second redemption finds the grant already there and revokes it (the store's
//! `redeem_code`, one conditional statement: REL-01, RFC 9700 §4.2.4). State stays
//! per grant (DESIGN §1): an authorization writes one row, when it is redeemed.
//!
//! To the client and to everything a code passes through (the browser's history, a
//! proxy's log) it is opaque: the user id, session and nonce inside cannot be read,
//! and without the key no code can be made or altered (TM-05: nothing in the database
//! redeems one; TM-17: a forged code is refused by one AEAD open, no store access).
//!
//! Layout, base64url without padding:
//! `version (1) ‖ id (16: the creation second, 5 bytes big-endian, then 11 random
//! bytes) ‖ ciphertext ‖ tag (16)`. The version and id are the associated data; the
//! grant the code yields is the id in hex ([`new_grant_id`]'s shape), so a new grant
//! sorts after older ones in the grants' primary key.

use aws_lc_rs::aead::{AES_256_GCM_SIV, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::SecureRandom;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::model::AuthorizationCode;
use crate::pkce::CodeChallenge;
use crate::scope::Scope;
use crate::secret::hex;

const VERSION: u8 = 1;
/// Bytes of a grant id: the creation second (5) and 88 random bits.
const ID_LEN: usize = 16;
const HEADER_LEN: usize = 1 + ID_LEN;
const TAG_LEN: usize = 16;
/// The longest code: what the longest authorization request the server accepts seals
/// to (a nonce and a resource of [`crate::params::MAX_PARAM_LEN`], a redirect URI of
/// [`crate::redirect_uri::MAX_REDIRECT_URI_LEN`], a scope of
/// [`crate::scope::MAX_SCOPE_LEN`], and room for the ids), in base64url. A code this
/// size would need a 4 KiB nonce; a usual one is 200 to 300 characters. Longer input
/// is refused before it is decoded, so a refusal costs little whatever is sent.
pub const MAX_CODE_LEN: usize = (HEADER_LEN + MAX_BODY_LEN + TAG_LEN).div_ceil(3) * 4;
const MAX_BODY_LEN: usize = 2 * crate::params::MAX_PARAM_LEN
    + crate::redirect_uri::MAX_REDIRECT_URI_LEN
    + crate::scope::MAX_SCOPE_LEN
    + 1024;
/// What the sealing key is derived from the server's MAC key for.
const KEY_PURPOSE: &[u8] = b"latchkey authorization code sealing key v1";

/// The longest a code may live, whatever a node is configured with (RFC 6749 §4.1.2:
/// "a maximum authorization code lifetime of 10 minutes is RECOMMENDED").
pub const MAX_CODE_TTL: i64 = 600;
/// How far apart the clocks of the nodes (and of the hosts admin commands run on) may
/// be without weakening single use: see [`GRANT_KEPT_AFTER_END`].
pub const CLOCK_LEEWAY: i64 = 300;
/// How long a grant's row must stay after the grant ended (expired or was revoked).
/// The row is what keeps the code that made it from being redeemed again, so it must
/// outlive the code by every node's clock: the longest life a code can have, whatever
/// `code_ttl` the node that issued it had, plus the clocks' leeway.
pub const GRANT_KEPT_AFTER_END: i64 = MAX_CODE_TTL + CLOCK_LEEWAY;

/// A new grant id: the creation second (5 bytes, big-endian) and 88 random bits, in
/// hex (32 characters). The second comes first so that a new grant appends to the
/// grants' primary-key index instead of landing on a random page of it; the random
/// part keeps ids unguessable. The time is no secret: every token of the grant carries
/// `auth_time` and `iat`.
pub fn new_grant_id(
    rng: &dyn SecureRandom,
    now: i64,
) -> Result<String, aws_lc_rs::error::Unspecified> {
    let mut id = [0u8; ID_LEN];
    id[..5].copy_from_slice(&u64::try_from(now).unwrap_or(0).to_be_bytes()[3..]);
    rng.fill(&mut id[5..])?;
    Ok(hex(&id))
}

/// Why a code that opened may not be redeemed, checked before it is consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unredeemable {
    /// Issued later than `now` by more than [`CLOCK_LEEWAY`], by a node whose clock
    /// runs that far ahead. Single use holds only while a grant's row outlives its
    /// code by every node's clock ([`GRANT_KEPT_AFTER_END`]).
    FromTheFuture,
    /// Past its `expires_at` (RFC 6749 §4.1.2, TM-01). If it was redeemed while it
    /// lived, presenting it again is a reuse all the same (RFC 9700 §4.2.4).
    Expired,
}

/// Whether `code` may be redeemed at `now`, as far as its times go.
pub fn check_times(code: &AuthorizationCode, now: i64) -> Result<(), Unredeemable> {
    if issued_at(code).is_none_or(|t| t > now.saturating_add(CLOCK_LEEWAY)) {
        return Err(Unredeemable::FromTheFuture);
    }
    if now >= code.expires_at {
        return Err(Unredeemable::Expired);
    }
    Ok(())
}

/// The second a code was issued, from the grant id it names (its first 5 bytes).
fn issued_at(code: &AuthorizationCode) -> Option<i64> {
    let id = unhex(&code.grant_id)?;
    let mut second = [0u8; 8];
    second[3..].copy_from_slice(&id[..5]);
    i64::try_from(u64::from_be_bytes(second)).ok()
}

fn unhex(text: &str) -> Option<[u8; ID_LEN]> {
    let raw = text.as_bytes();
    if raw.len() != 2 * ID_LEN {
        return None;
    }
    let digit = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let mut out = [0u8; ID_LEN];
    for (i, pair) in raw.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodeError {
    #[error("the code's grant id is not a new_grant_id")]
    BadGrantId,
    #[error("sealing the code failed")]
    Seal,
    #[error("the authorization request is too long to seal into a code")]
    TooLong,
    #[error("the code sealing key could not be made")]
    Key,
}

/// Seals and opens authorization codes. Every node derives the same key from the
/// server-wide MAC key, so a code issued by one node is redeemed at any other.
pub struct CodeSealer(LessSafeKey);

impl std::fmt::Debug for CodeSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CodeSealer(..)")
    }
}

impl CodeSealer {
    /// The sealer whose key is HMAC-SHA256(`mac_key`, purpose ‖ 0 ‖ issuer): a key of
    /// its own, so no MAC the server makes with `mac_key` is ever a code key and the
    /// reverse, and one per issuer, so a code made by a copy of the data serving
    /// another issuer (a staging clone) does not redeem here.
    pub fn from_mac_key(mac_key: &[u8], issuer: &str) -> Result<CodeSealer, CodeError> {
        let mut input = Vec::with_capacity(KEY_PURPOSE.len() + 1 + issuer.len());
        input.extend_from_slice(KEY_PURPOSE);
        input.push(0);
        input.extend_from_slice(issuer.as_bytes());
        let derived = aws_lc_rs::hmac::sign(
            &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, mac_key),
            &input,
        );
        let key =
            UnboundKey::new(&AES_256_GCM_SIV, derived.as_ref()).map_err(|_| CodeError::Key)?;
        Ok(CodeSealer(LessSafeKey::new(key)))
    }

    /// The code for `code`, whose `grant_id` must come from [`new_grant_id`].
    pub fn seal(&self, code: &AuthorizationCode) -> Result<String, CodeError> {
        let id = unhex(&code.grant_id).ok_or(CodeError::BadGrantId)?;
        let scope = code.scope.to_string();
        let mut out = Vec::with_capacity(HEADER_LEN + 320);
        out.push(VERSION);
        out.extend_from_slice(&id);
        let mut w = Writer(&mut out);
        w.text(Some(&code.client_id));
        w.text(Some(&code.user_id));
        w.text(code.session_hash.as_deref());
        w.text(Some(&code.redirect_uri));
        w.text(Some(&scope));
        w.text(code.nonce.as_deref());
        w.text(Some(code.code_challenge.as_str()));
        w.int(code.auth_time);
        w.int(code.expires_at);
        w.text(code.resource.as_deref());
        if out.len() > HEADER_LEN + MAX_BODY_LEN {
            return Err(CodeError::TooLong);
        }
        let (header, body) = out.split_at_mut(HEADER_LEN);
        let tag = self
            .0
            .seal_in_place_separate_tag(nonce(&id), Aad::from(&*header), body)
            .map_err(|_| CodeError::Seal)?;
        out.extend_from_slice(tag.as_ref());
        Ok(URL_SAFE_NO_PAD.encode(out))
    }

    /// What `text` was sealed from, or `None` for anything this server did not issue
    /// or that was altered. Its times are checked by [`check_times`], the rest of a
    /// redemption by [`crate::token::check_code_redemption`].
    pub fn open(&self, text: &str) -> Option<AuthorizationCode> {
        if text.len() > MAX_CODE_LEN {
            return None;
        }
        let mut raw = URL_SAFE_NO_PAD.decode(text).ok()?;
        if raw.len() < HEADER_LEN + TAG_LEN || raw[0] != VERSION {
            return None;
        }
        let (header, sealed) = raw.split_at_mut(HEADER_LEN);
        let mut id = [0u8; ID_LEN];
        id.copy_from_slice(&header[1..]);
        let plain = self
            .0
            .open_in_place(nonce(&id), Aad::from(&*header), sealed)
            .ok()?;
        let mut r = Reader(plain);
        let code = AuthorizationCode {
            grant_id: hex(&id),
            client_id: r.text()??,
            user_id: r.text()??,
            session_hash: r.text()?,
            redirect_uri: r.text()??,
            scope: Scope::parse(&r.text()??).ok()?,
            nonce: r.text()?,
            code_challenge: CodeChallenge::from_stored(r.text()??),
            auth_time: r.int()?,
            expires_at: r.int()?,
            resource: r.text()?,
        };
        r.0.is_empty().then_some(code)
    }
}

/// The sealed body: each text as a 2-byte big-endian length and its UTF-8 bytes
/// ([`ABSENT`] for none), each time as 8 bytes big-endian. No escaping, so a code
/// grows with its request byte for byte.
struct Writer<'a>(&'a mut Vec<u8>);

/// The length that marks an absent text.
const ABSENT: u16 = u16::MAX;

impl Writer<'_> {
    fn text(&mut self, value: Option<&str>) {
        // Longer than a code may hold anyway: written cut short, and `seal` refuses the
        // result for its length.
        let len = value.map_or(ABSENT, |v| {
            u16::try_from(v.len())
                .ok()
                .filter(|l| *l < ABSENT)
                .unwrap_or(ABSENT - 1)
        });
        self.0.extend_from_slice(&len.to_be_bytes());
        if let Some(v) = value {
            self.0
                .extend_from_slice(&v.as_bytes()[..usize::from(len).min(v.len())]);
        }
    }

    fn int(&mut self, value: i64) {
        self.0.extend_from_slice(&value.to_be_bytes());
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    /// `None` if the body is malformed; `Some(None)` for an absent text.
    fn text(&mut self) -> Option<Option<String>> {
        let len = u16::from_be_bytes(self.take(2)?.try_into().ok()?);
        if len == ABSENT {
            return Some(None);
        }
        let bytes = self.take(usize::from(len))?;
        Some(Some(std::str::from_utf8(bytes).ok()?.to_owned()))
    }

    fn int(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// The AEAD nonce: the id's last 12 bytes (the low byte of the second and the 88
/// random bits). GCM-SIV stays safe even if two codes shared one: it would show only
/// that their plaintexts were equal, and no two codes' plaintexts are.
fn nonce(id: &[u8; ID_LEN]) -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    n.copy_from_slice(&id[ID_LEN - NONCE_LEN..]);
    Nonce::assume_unique_for_key(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;

    fn sample(rng: &SystemRandom, now: i64) -> AuthorizationCode {
        AuthorizationCode {
            grant_id: new_grant_id(rng, now).unwrap(),
            client_id: "client-1".into(),
            user_id: "user-1".into(),
            session_hash: Some("session-hash".into()),
            redirect_uri: "https://app.example/cb?x=1".into(),
            scope: Scope::parse("openid profile").unwrap(),
            nonce: Some("n-0S6_WzA2Mj".into()),
            code_challenge: CodeChallenge::from_stored(
                "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into(),
            ),
            auth_time: now - 5,
            expires_at: now + 60,
            resource: None,
        }
    }

    #[test]
    fn a_sealed_code_opens_to_what_was_sealed() {
        let rng = SystemRandom::new();
        let sealer =
            CodeSealer::from_mac_key(b"a server mac key of some length", "https://as.example")
                .unwrap();
        let code = sample(&rng, 1_800_000_000);
        let text = sealer.seal(&code).unwrap();
        let opened = sealer.open(&text).unwrap();
        assert_eq!(opened.grant_id, code.grant_id);
        assert_eq!(opened.client_id, code.client_id);
        assert_eq!(opened.user_id, code.user_id);
        assert_eq!(opened.session_hash, code.session_hash);
        assert_eq!(opened.redirect_uri, code.redirect_uri);
        assert_eq!(opened.scope, code.scope);
        assert_eq!(opened.nonce, code.nonce);
        assert_eq!(opened.code_challenge.as_str(), code.code_challenge.as_str());
        assert_eq!(
            (opened.auth_time, opened.expires_at),
            (code.auth_time, code.expires_at)
        );
        assert_eq!(opened.resource, None);
        // Opaque: nothing of the request is readable in the code.
        for secret in ["user-1", "session-hash", "n-0S6_WzA2Mj", "app.example"] {
            let raw = URL_SAFE_NO_PAD.decode(&text).unwrap();
            assert!(
                !raw.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret}"
            );
        }
        assert!(text.len() < 300, "{}", text.len());
    }

    #[test]
    fn the_longest_request_seals_into_a_code_that_opens() {
        let rng = SystemRandom::new();
        let sealer = CodeSealer::from_mac_key(b"k", "https://as.example").unwrap();
        let mut code = sample(&rng, 1_800_000_000);
        // Characters JSON would have escaped travel as they are.
        code.nonce = Some("\"\u{1}é".repeat(crate::params::MAX_PARAM_LEN / 5));
        code.resource = Some(format!("https://api.example/{}", "r".repeat(4000)));
        code.redirect_uri = format!("https://app.example/{}", "p".repeat(2000));
        let text = sealer.seal(&code).unwrap();
        assert!(text.len() <= MAX_CODE_LEN, "{}", text.len());
        let opened = sealer.open(&text).unwrap();
        assert_eq!(opened.nonce, code.nonce);
        assert_eq!(opened.resource, code.resource);
        assert_eq!(opened.redirect_uri, code.redirect_uri);
        // Beyond what any request may hold, sealing refuses rather than making a
        // code that would not open.
        code.nonce = Some("n".repeat(3 * MAX_BODY_LEN));
        assert_eq!(sealer.seal(&code).unwrap_err(), CodeError::TooLong);
    }

    #[test]
    fn altered_foreign_or_malformed_codes_do_not_open() {
        let rng = SystemRandom::new();
        let sealer = CodeSealer::from_mac_key(b"key one", "https://as.example").unwrap();
        let text = sealer.seal(&sample(&rng, 1_800_000_000)).unwrap();
        let raw = URL_SAFE_NO_PAD.decode(&text).unwrap();
        // Every single flipped bit, in the header (the grant id), body and tag.
        for i in 0..raw.len() {
            let mut bad = raw.clone();
            bad[i] ^= 0x01;
            assert!(
                sealer.open(&URL_SAFE_NO_PAD.encode(&bad)).is_none(),
                "byte {i}"
            );
        }
        assert!(
            CodeSealer::from_mac_key(b"key two", "https://as.example")
                .unwrap()
                .open(&text)
                .is_none()
        );
        // The same MAC key serving another issuer (a copy of the data) makes other codes.
        assert!(
            CodeSealer::from_mac_key(b"key one", "https://staging.as.example")
                .unwrap()
                .open(&text)
                .is_none()
        );
        for junk in [
            "",
            "abc",
            "!!!!",
            &text[..text.len() - 1],
            &format!("{text}A"),
            &"A".repeat(MAX_CODE_LEN + 4),
        ] {
            assert!(sealer.open(junk).is_none(), "{junk:.20}");
        }
    }

    #[test]
    fn codes_are_distinct_and_name_grants_in_creation_order() {
        let rng = SystemRandom::new();
        let sealer = CodeSealer::from_mac_key(b"k", "https://as.example").unwrap();
        let early = sample(&rng, 1_800_000_000);
        let late = sample(&rng, 1_800_000_001);
        assert!(early.grant_id < late.grant_id);
        assert_eq!(issued_at(&early), Some(1_800_000_000));
        assert_eq!(issued_at(&late), Some(1_800_000_001));
        assert_eq!(check_times(&late, 1_800_000_001 - CLOCK_LEEWAY), Ok(()));
        assert_eq!(
            check_times(&late, 1_800_000_000 - CLOCK_LEEWAY),
            Err(Unredeemable::FromTheFuture)
        );
        // `sample` codes live 60 s.
        assert_eq!(check_times(&late, 1_800_000_060), Ok(()));
        assert_eq!(
            check_times(&late, 1_800_000_061),
            Err(Unredeemable::Expired)
        );
        assert!(
            early.grant_id.starts_with("006b49d200"),
            "{}",
            early.grant_id
        );
        let a = sealer.seal(&early).unwrap();
        let b = sealer.seal(&sample(&rng, 1_800_000_000)).unwrap();
        assert_ne!(a, b);
        let mut bad_id = early.clone();
        bad_id.grant_id = "not-hex".into();
        assert_eq!(sealer.seal(&bad_id).unwrap_err(), CodeError::BadGrantId);
    }
}
