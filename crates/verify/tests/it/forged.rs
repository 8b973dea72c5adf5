//! The table: malformed, forged and otherwise unacceptable tokens, each refused with the
//! right error and the right `error_description` (RFC 6750 §3), against a verifier that
//! fetched a real JWKS over HTTP and follows a real revocation feed.

use std::time::Duration;

use aws_lc_rs::hmac;
use latchkey_core::jose::Alg;
use latchkey_verify::{Policy, RevokedBy, TokenError, VerifyError};
use serde_json::{Value, json};

use crate::support::{self, FEED_CLIENT, FEED_SECRET, NOW, Signer, TestIssuer, b64};

fn with(base: &Value, changes: &[(&str, Value)]) -> Value {
    let mut v = base.clone();
    for (k, val) in changes {
        v[*k] = val.clone();
    }
    v
}

fn without(base: &Value, claim: &str) -> Value {
    let mut v = base.clone();
    v.as_object_mut().unwrap().remove(claim);
    v
}

fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

/// HS256 over the token's signing input with `secret` as the key (the classic
/// "verify with the public key as an HMAC secret" confusion, RFC 8725 §2.1).
fn hs256(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), input.as_bytes());
    format!("{input}.{}", b64(tag.as_ref()))
}

/// Flips the low bits of the last character so the segment decodes to the same bytes
/// only under a lax (non-canonical) base64 decoder.
fn noncanonical_last_char(token: &str) -> String {
    let mut t = token.to_owned();
    let last = t.pop().unwrap();
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let i = alphabet.iter().position(|c| *c as char == last).unwrap();
    t.push(alphabet[i ^ 1] as char);
    t
}

#[tokio::test]
async fn forged_and_malformed_tokens_are_refused() {
    let old = Signer::new(Alg::EdDSA, "k-old");
    let ed = Signer::new(Alg::EdDSA, "k-ed");
    let es = Signer::new(Alg::ES256, "k-es");
    let rs = Signer::new(Alg::RS256, "k-rs");
    let issuer = TestIssuer::start(&[&old, &ed, &es, &rs]).await;
    issuer.revoke("grant", "g-revoked", NOW - 30);
    issuer.revoke("user", "u-deleted", NOW - 20);
    issuer.revoke("client", "c-deleted", NOW - 10);
    issuer.revoke("key", "k-old", NOW - 5);
    let verifier = issuer
        .builder()
        .follow_revocations(FEED_CLIENT, FEED_SECRET)
        .poll_interval(Duration::from_secs(3600))
        .build()
        .await
        .unwrap();

    // An attacker's own keys, one of them claiming a kid the issuer uses.
    let impostor = Signer::new(Alg::EdDSA, "k-ed");
    let impostor_es = Signer::new(Alg::ES256, "k-es");
    let stranger = Signer::new(Alg::EdDSA, "k-unknown");

    let c = support::claims(&issuer.url);
    let good = ed.token(&c);
    let good_parts: Vec<&str> = good.split('.').collect();
    let other = ed.token(&with(&c, &[("sub", json!("admin"))]));
    let other_sig = other.rsplit('.').next().unwrap();
    let ed_public = {
        let jwk = ed.jwk();
        base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            jwk["x"].as_str().unwrap(),
        )
        .unwrap()
    };
    let h = ed.header();
    let hdr = |changes: &[(&str, Value)]| with(&h, changes);

    use TokenError as E;
    let rows: Vec<(&str, String, TokenError)> = vec![
        ("empty", String::new(), E::Malformed),
        (
            "alg none, empty signature",
            format!(
                "{}.{}.",
                b64(hdr(&[("alg", json!("none"))]).to_string()),
                good_parts[1]
            ),
            E::AlgorithmNotAllowed,
        ),
        (
            "alg None, signature kept",
            format!(
                "{}.{}.{}",
                b64(hdr(&[("alg", json!("None"))]).to_string()),
                good_parts[1],
                good_parts[2]
            ),
            E::AlgorithmNotAllowed,
        ),
        (
            "HS256 keyed with the Ed25519 public key bytes",
            hs256(&hdr(&[("alg", json!("HS256"))]), &c, &ed_public),
            E::AlgorithmNotAllowed,
        ),
        (
            "HS256 keyed with the published JWK text",
            hs256(
                &with(&rs.header(), &[("alg", json!("HS256"))]),
                &c,
                rs.jwk().to_string().as_bytes(),
            ),
            E::AlgorithmNotAllowed,
        ),
        (
            "lowercase eddsa",
            format!(
                "{}.{}.{}",
                b64(hdr(&[("alg", json!("eddsa"))]).to_string()),
                good_parts[1],
                good_parts[2]
            ),
            E::AlgorithmNotAllowed,
        ),
        (
            "ES256 header on the EdDSA key (algorithm confusion)",
            impostor_es.raw(&hdr(&[("alg", json!("ES256"))]), c.to_string().as_bytes()),
            E::AlgorithmMismatch,
        ),
        (
            "RS256 header on the ES256 key",
            format!(
                "{}.{}.{}",
                b64(with(&es.header(), &[("alg", json!("RS256"))]).to_string()),
                good_parts[1],
                good_parts[2]
            ),
            E::AlgorithmMismatch,
        ),
        (
            "signature by a key not in the JWKS, under a known kid",
            impostor.token(&c),
            E::BadSignature,
        ),
        ("unknown kid", stranger.token(&c), E::UnknownKey),
        (
            "no kid",
            ed.raw(
                &json!({"alg": "EdDSA", "typ": "at+jwt"}),
                c.to_string().as_bytes(),
            ),
            E::MissingKeyId,
        ),
        (
            "jku header",
            stranger.raw(
                &hdr(&[("jku", json!("https://evil.example/jwks.json"))]),
                c.to_string().as_bytes(),
            ),
            E::ForbiddenHeader("jku"),
        ),
        (
            "x5u header",
            ed.raw(
                &hdr(&[("x5u", json!("https://evil.example/cert.pem"))]),
                c.to_string().as_bytes(),
            ),
            E::ForbiddenHeader("x5u"),
        ),
        (
            "embedded jwk (the attacker's own key)",
            stranger.raw(&hdr(&[("jwk", stranger.jwk())]), c.to_string().as_bytes()),
            E::ForbiddenHeader("jwk"),
        ),
        (
            "x5c header",
            ed.raw(&hdr(&[("x5c", json!(["MIIB"]))]), c.to_string().as_bytes()),
            E::ForbiddenHeader("x5c"),
        ),
        (
            "crit header",
            ed.raw(
                &hdr(&[("crit", json!(["exp"])), ("exp", json!(1))]),
                c.to_string().as_bytes(),
            ),
            E::ForbiddenHeader("crit"),
        ),
        (
            "b64 false (unencoded payload)",
            ed.raw(&hdr(&[("b64", json!(false))]), c.to_string().as_bytes()),
            E::ForbiddenHeader("b64"),
        ),
        (
            "typ JWT (an ID token's type)",
            ed.key.sign("JWT", &c).unwrap(),
            E::WrongType,
        ),
        (
            "no typ",
            ed.raw(
                &json!({"alg": "EdDSA", "kid": "k-ed"}),
                c.to_string().as_bytes(),
            ),
            E::WrongType,
        ),
        (
            "tampered payload (sub changed, signature kept)",
            format!(
                "{}.{}.{}",
                good_parts[0],
                b64(with(&c, &[("sub", json!("admin"))]).to_string()),
                good_parts[2]
            ),
            E::BadSignature,
        ),
        (
            "tampered payload (scope widened)",
            format!(
                "{}.{}.{}",
                good_parts[0],
                b64(with(&c, &[("scope", json!("openid api:read api:write"))]).to_string()),
                good_parts[2]
            ),
            E::BadSignature,
        ),
        (
            "signature of another token",
            format!("{}.{}.{}", good_parts[0], good_parts[1], other_sig),
            E::BadSignature,
        ),
        (
            "truncated signature",
            format!(
                "{}.{}.{}",
                good_parts[0],
                good_parts[1],
                &good_parts[2][..40]
            ),
            E::BadSignature,
        ),
        (
            "non-canonical base64 in the signature",
            noncanonical_last_char(&good),
            E::Malformed,
        ),
        (
            "wrong iss",
            ed.token(&with(&c, &[("iss", json!("https://evil.example"))])),
            E::WrongIssuer,
        ),
        (
            "iss with a trailing slash",
            ed.token(&with(&c, &[("iss", json!(format!("{}/", issuer.url)))])),
            E::WrongIssuer,
        ),
        (
            "wrong aud",
            ed.token(&with(&c, &[("aud", json!("https://other.example"))])),
            E::WrongAudience,
        ),
        (
            "aud array without this API",
            ed.token(&with(
                &c,
                &[("aud", json!(["https://a.example", "https://b.example"]))],
            )),
            E::WrongAudience,
        ),
        (
            "expired",
            ed.token(&with(&c, &[("exp", json!(NOW - 60))])),
            E::Expired,
        ),
        (
            "expired exactly at the leeway",
            ed.token(&with(&c, &[("exp", json!(NOW - 10))])),
            E::Expired,
        ),
        (
            "nbf in the future",
            ed.token(&with(&c, &[("nbf", json!(NOW + 60))])),
            E::NotYetValid,
        ),
        (
            "iat in the future",
            ed.token(&with(&c, &[("iat", json!(NOW + 60))])),
            E::IssuedInFuture,
        ),
        (
            "missing exp",
            ed.token(&without(&c, "exp")),
            E::MissingClaim("exp"),
        ),
        (
            "non-numeric exp",
            ed.token(&with(&c, &[("exp", json!("9999999999"))])),
            E::InvalidClaim("exp"),
        ),
        (
            "fractional exp",
            ed.token(&with(&c, &[("exp", json!(9_999_999_999.5))])),
            E::InvalidClaim("exp"),
        ),
        (
            "missing iat",
            ed.token(&without(&c, "iat")),
            E::MissingClaim("iat"),
        ),
        (
            "missing sub",
            ed.token(&without(&c, "sub")),
            E::MissingClaim("sub"),
        ),
        (
            "missing aud",
            ed.token(&without(&c, "aud")),
            E::MissingClaim("aud"),
        ),
        (
            "missing client_id",
            ed.token(&without(&c, "client_id")),
            E::MissingClaim("client_id"),
        ),
        (
            "numeric sub",
            ed.token(&with(&c, &[("sub", json!(42))])),
            E::InvalidClaim("sub"),
        ),
        (
            "bad base64 in the header",
            format!("{}!.{}.{}", good_parts[0], good_parts[1], good_parts[2]),
            E::Malformed,
        ),
        (
            "padded base64",
            format!("{}=.{}.{}", good_parts[0], good_parts[1], good_parts[2]),
            E::Malformed,
        ),
        (
            "header segment of impossible length",
            format!("A.{}.{}", good_parts[1], good_parts[2]),
            E::Malformed,
        ),
        (
            "extra segments (JWE-like)",
            format!("{good}.{}.{}", good_parts[1], good_parts[2]),
            E::Malformed,
        ),
        (
            "two segments",
            format!("{}.{}", good_parts[0], good_parts[1]),
            E::Malformed,
        ),
        (
            "whitespace inside",
            format!("{} .{}.{}", good_parts[0], good_parts[1], good_parts[2]),
            E::Malformed,
        ),
        (
            "oversized token",
            format!("{good}{}", "A".repeat(latchkey_verify::MAX_TOKEN_LEN)),
            E::TooLarge,
        ),
        (
            "header is not JSON",
            format!("{}.{}.{}", b64("alg=EdDSA"), good_parts[1], good_parts[2]),
            E::BadHeader,
        ),
        (
            "header is a JSON array",
            format!(
                "{}.{}.{}",
                b64(r#"["EdDSA","at+jwt","k-ed"]"#),
                good_parts[1],
                good_parts[2]
            ),
            E::BadHeader,
        ),
        (
            "repeated alg in the header",
            ed.raw_header_text(
                r#"{"alg":"EdDSA","typ":"at+jwt","kid":"k-ed","alg":"none"}"#,
                &c,
            ),
            E::BadHeader,
        ),
        (
            "deeply nested JSON in the header (ignored member), forged",
            format!(
                "{}.{}.{}",
                b64(format!(
                    r#"{{"alg":"EdDSA","typ":"at+jwt","kid":"k-ed","x":{}}}"#,
                    nested(2000)
                )),
                good_parts[1],
                good_parts[2]
            ),
            E::BadSignature,
        ),
        (
            "deeply nested JSON in the claims, validly signed",
            ed.raw(&h, format!(r#"{{"sub":{}}}"#, nested(1000)).as_bytes()),
            E::BadClaims,
        ),
        (
            "claims are a JSON array",
            ed.raw(&h, b"[1,2,3]"),
            E::BadClaims,
        ),
        (
            "claims are not JSON",
            ed.raw(&h, b"sub=admin"),
            E::BadClaims,
        ),
        (
            "repeated sub claim",
            ed.raw(
                &h,
                c.to_string()
                    .replacen('{', r#"{"sub":"admin","#, 1)
                    .as_bytes(),
            ),
            E::BadClaims,
        ),
        (
            "sender-constrained (cnf) token presented as bearer",
            ed.token(&with(
                &c,
                &[(
                    "cnf",
                    json!({"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}),
                )],
            )),
            E::SenderConstrained,
        ),
        (
            "revoked grant (feed caught up)",
            es.token(&with(&c, &[("gid", json!("g-revoked"))])),
            E::Revoked(RevokedBy::Grant),
        ),
        (
            "deleted user",
            rs.token(&with(
                &c,
                &[("sub", json!("u-deleted")), ("gid", json!("g-2"))],
            )),
            E::Revoked(RevokedBy::User),
        ),
        (
            "deleted client, client-credentials token",
            ed.token(&with(
                &without(&c, "gid"),
                &[
                    ("sub", json!("client:c-deleted")),
                    ("client_id", json!("c-deleted")),
                ],
            )),
            E::Revoked(RevokedBy::Client),
        ),
        (
            "token of a revoked signing key",
            old.token(&c),
            E::Revoked(RevokedBy::Key),
        ),
    ];
    assert!(rows.len() >= 30, "{} rows", rows.len());

    let mut failures = Vec::new();
    for (name, token, expected) in &rows {
        let got = verifier.verify(token, &Policy::any()).await;
        let want = VerifyError::InvalidToken(expected.clone());
        match &got {
            Err(e) if *e == want => {
                let challenge = e.www_authenticate();
                let description = expected.to_string();
                assert_eq!(e.status(), 401, "{name}");
                assert_eq!(
                    challenge,
                    format!("Bearer error=\"invalid_token\", error_description=\"{description}\""),
                    "{name}"
                );
                assert!(
                    !challenge.contains(token.as_str()) || token.is_empty(),
                    "{name}"
                );
            }
            other => failures.push(format!("{name}: expected {want:?}, got {other:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The table ran through the feed and the cache; the valid token still passes.
    assert!(verifier.verify(&good, &Policy::any()).await.is_ok());
}

trait RawHeader {
    fn raw_header_text(&self, header: &str, claims: &Value) -> String;
}

impl RawHeader for Signer {
    fn raw_header_text(&self, header: &str, claims: &Value) -> String {
        let input = format!("{}.{}", b64(header), b64(claims.to_string()));
        let sig = self.sign_bytes(input.as_bytes());
        format!("{input}.{}", b64(sig))
    }
}

#[tokio::test]
async fn descriptions_name_the_reason() {
    // The few descriptions an API operator will meet most, spelled out.
    let ed = Signer::new(Alg::EdDSA, "k");
    let v = support::static_verifier(&[&ed]).await;
    let c = support::claims(support::STATIC_ISSUER);
    let cases = [
        (with(&c, &[("exp", json!(NOW - 60))]), "token has expired"),
        (
            with(&c, &[("aud", json!("x"))]),
            "token audience is not this API",
        ),
        (
            with(&c, &[("iss", json!("x"))]),
            "token issuer is not trusted",
        ),
    ];
    for (claims, text) in cases {
        let e = v
            .verify(&ed.token(&claims), &Policy::any())
            .await
            .unwrap_err();
        assert!(
            e.www_authenticate().contains(text),
            "{}",
            e.www_authenticate()
        );
    }
    let forged = Signer::new(Alg::EdDSA, "k").token(&c);
    let e = v.verify(&forged, &Policy::any()).await.unwrap_err();
    assert!(
        e.www_authenticate()
            .contains("token signature is not valid")
    );
    let unknown = Signer::new(Alg::EdDSA, "nope").token(&c);
    let e = v.verify(&unknown, &Policy::any()).await.unwrap_err();
    assert!(
        e.www_authenticate()
            .contains("token is signed by an unknown key")
    );
}
