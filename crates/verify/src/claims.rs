//! The claims of a verified access token (RFC 9068 §2.2) and the checks every token
//! passes whatever the route: `iss`, `aud`, `exp`, `nbf`, `iat`.

use std::fmt;

use serde::Serialize;
use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};

use crate::error::TokenError;

/// The claims of an access token whose signature, issuer, audience and lifetime have
/// been checked. Standard claims are typed fields; every other claim is in
/// [`extra`](Claims::extra).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Claims {
    /// `iss`: the issuer, exactly as configured.
    pub issuer: String,
    /// `sub`: the user, or `client:<client_id>` for a client-credentials token.
    pub subject: String,
    /// `aud`: the audiences the token names; one of them is this API's.
    pub audience: Vec<String>,
    /// `client_id` (RFC 9068 §2.2): the client the token was issued to.
    pub client_id: String,
    /// `scope` (RFC 9068 §2.2.3), split on spaces.
    pub scopes: Vec<String>,
    /// `gid`: the grant the token belongs to; absent for client-credentials tokens.
    pub grant_id: Option<String>,
    /// `iat`, seconds since the Unix epoch.
    pub issued_at: i64,
    /// `exp`, seconds since the Unix epoch.
    pub expires_at: i64,
    /// `nbf`, when present.
    pub not_before: Option<i64>,
    /// `auth_time` (RFC 9068 §2.2.1), when present.
    pub auth_time: Option<i64>,
    /// `jti`: the token's unique id.
    pub token_id: String,
    /// The `kid` of the key that signed the token (from its header).
    pub key_id: String,
    /// Every other claim, as sent.
    pub extra: Map<String, Value>,
}

impl Claims {
    /// Whether the token grants `scope` (exact, case-sensitive comparison, RFC 6749 §3.3).
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// What the claim checks compare against.
pub(crate) struct Expected<'a> {
    pub issuer: &'a str,
    pub audience: &'a str,
    pub leeway: i64,
    pub now: i64,
}

/// A JSON object read in one pass that refuses repeated members (a claim set with
/// duplicate names is ambiguous: RFC 7519 §4 says reject it or take the last; we reject).
struct ClaimMap(Map<String, Value>);

impl<'de> Deserialize<'de> for ClaimMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ClaimMap, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ClaimMap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<ClaimMap, A::Error> {
                let mut map = Map::new();
                while let Some(name) = access.next_key::<String>()? {
                    let value: Value = access.next_value()?;
                    if map.insert(name, value).is_some() {
                        return Err(de::Error::custom("repeated claim"));
                    }
                }
                Ok(ClaimMap(map))
            }
        }
        d.deserialize_map(V)
    }
}

/// Parses a verified payload and runs the route-independent checks.
pub(crate) fn check(payload: &[u8], kid: &str, want: &Expected<'_>) -> Result<Claims, TokenError> {
    if !crate::jws::starts_object(payload) {
        return Err(TokenError::BadClaims);
    }
    let ClaimMap(mut map) = serde_json::from_slice(payload).map_err(|_| TokenError::BadClaims)?;
    let issuer = take_string(&mut map, "iss")?;
    let subject = take_string(&mut map, "sub")?;
    let audience = take_audience(&mut map)?;
    let client_id = take_string(&mut map, "client_id")?;
    let expires_at = take_time(&mut map, "exp")?.ok_or(TokenError::MissingClaim("exp"))?;
    let issued_at = take_time(&mut map, "iat")?.ok_or(TokenError::MissingClaim("iat"))?;
    let not_before = take_time(&mut map, "nbf")?;
    let auth_time = take_time(&mut map, "auth_time")?;
    let token_id = take_string(&mut map, "jti")?;
    let grant_id = take_optional_string(&mut map, "gid")?;
    let scopes = take_optional_string(&mut map, "scope")?
        .map(|s| {
            s.split(' ')
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();

    if issuer != want.issuer {
        return Err(TokenError::WrongIssuer);
    }
    if !audience.iter().any(|a| a == want.audience) {
        return Err(TokenError::WrongAudience);
    }
    if want.now >= expires_at.saturating_add(want.leeway) {
        return Err(TokenError::Expired);
    }
    if not_before.is_some_and(|nbf| want.now.saturating_add(want.leeway) < nbf) {
        return Err(TokenError::NotYetValid);
    }
    if issued_at > want.now.saturating_add(want.leeway) {
        return Err(TokenError::IssuedInFuture);
    }
    if map.contains_key("cnf") {
        return Err(TokenError::SenderConstrained);
    }
    Ok(Claims {
        issuer,
        subject,
        audience,
        client_id,
        scopes,
        grant_id,
        issued_at,
        expires_at,
        not_before,
        auth_time,
        token_id,
        key_id: kid.to_owned(),
        extra: map,
    })
}

fn take_optional_string(
    map: &mut Map<String, Value>,
    name: &'static str,
) -> Result<Option<String>, TokenError> {
    match map.remove(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(TokenError::InvalidClaim(name)),
    }
}

fn take_string(map: &mut Map<String, Value>, name: &'static str) -> Result<String, TokenError> {
    take_optional_string(map, name)?.ok_or(TokenError::MissingClaim(name))
}

/// A NumericDate (RFC 7519 §2). Latchkey writes whole seconds; a fraction, a string or
/// anything else is refused rather than guessed at.
fn take_time(map: &mut Map<String, Value>, name: &'static str) -> Result<Option<i64>, TokenError> {
    match map.remove(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or(TokenError::InvalidClaim(name)),
        Some(_) => Err(TokenError::InvalidClaim(name)),
    }
}

/// `aud` is one string or an array of strings (RFC 7519 §4.1.3).
fn take_audience(map: &mut Map<String, Value>) -> Result<Vec<String>, TokenError> {
    match map.remove("aud") {
        None => Err(TokenError::MissingClaim("aud")),
        Some(Value::String(s)) => Ok(vec![s]),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(TokenError::InvalidClaim("aud")),
            })
            .collect(),
        Some(_) => Err(TokenError::InvalidClaim("aud")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_700_000_000;

    fn want() -> Expected<'static> {
        Expected {
            issuer: "https://id.example",
            audience: "https://api.example",
            leeway: 10,
            now: NOW,
        }
    }

    fn base() -> Value {
        json!({
            "iss": "https://id.example", "sub": "u1", "aud": "https://api.example",
            "client_id": "c1", "scope": "a  b", "iat": NOW - 5, "exp": NOW + 300,
            "jti": "j1", "gid": "g1", "auth_time": NOW - 100, "acr": "1"
        })
    }

    fn run(v: &Value) -> Result<Claims, TokenError> {
        check(v.to_string().as_bytes(), "k", &want())
    }

    #[test]
    fn typed_fields_and_extra() {
        let c = run(&base()).unwrap();
        assert_eq!(c.scopes, vec!["a", "b"]);
        assert_eq!(c.grant_id.as_deref(), Some("g1"));
        assert_eq!(c.auth_time, Some(NOW - 100));
        assert_eq!(c.extra.get("acr"), Some(&json!("1")));
        assert!(c.has_scope("b") && !c.has_scope("c"));
    }

    #[test]
    fn leeway_edges() {
        let with = |k: &str, v: i64| {
            let mut b = base();
            b[k] = v.into();
            run(&b).map(|c| c.subject)
        };
        assert!(with("exp", NOW - 9).is_ok());
        assert_eq!(with("exp", NOW - 10), Err(TokenError::Expired));
        assert!(with("nbf", NOW + 10).is_ok());
        assert_eq!(with("nbf", NOW + 11), Err(TokenError::NotYetValid));
        assert!(with("iat", NOW + 10).is_ok());
        assert_eq!(with("iat", NOW + 11), Err(TokenError::IssuedInFuture));
    }

    #[test]
    fn audience_array() {
        let mut b = base();
        b["aud"] = json!(["other", "https://api.example"]);
        assert!(run(&b).is_ok());
        b["aud"] = json!(["other"]);
        assert_eq!(run(&b), Err(TokenError::WrongAudience));
        b["aud"] = json!([1]);
        assert_eq!(run(&b), Err(TokenError::InvalidClaim("aud")));
    }

    #[test]
    fn repeated_claims_are_refused() {
        let raw = br#"{"iss":"https://id.example","sub":"u","sub":"admin"}"#;
        assert_eq!(check(raw, "k", &want()), Err(TokenError::BadClaims));
    }
}
