//! Request parameters as RFC 6749 §3.1 defines them: a parameter sent more than once
//! is an error, and a parameter sent without a value is treated as omitted.

use std::collections::HashMap;

use crate::OAuthError;

/// Longest value accepted for one parameter (REL-05). `state` and `nonce` of 384
/// characters and more must pass, so this is generous.
pub const MAX_PARAM_LEN: usize = 4096;
/// Most parameters accepted in one request.
pub const MAX_PARAMS: usize = 64;

/// Parsed `application/x-www-form-urlencoded` parameters with no duplicates.
#[derive(Clone, Default)]
pub struct Params {
    map: HashMap<String, String>,
}

impl Params {
    /// Parses a query string or form body. Duplicate names are `invalid_request`.
    pub fn parse(input: &[u8]) -> Result<Params, OAuthError> {
        let mut map = HashMap::new();
        let pairs = input.split(|b| *b == b'&').filter(|p| !p.is_empty());
        for (count, pair) in pairs.enumerate() {
            let (name, value) = match pair.iter().position(|b| *b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &b""[..]),
            };
            // Invalid UTF-8 is refused, never replaced: a replaced `state` would not
            // come back as sent (TM-16), a replaced redirect URI could match another.
            let (Some(name), Some(value)) = (form_decode(name), form_decode(value)) else {
                return Err(OAuthError::invalid_request(
                    "a parameter is not valid UTF-8 after percent-decoding",
                ));
            };
            if count >= MAX_PARAMS {
                return Err(OAuthError::invalid_request("too many parameters"));
            }
            if value.len() > max_len(&name) || name.len() > 128 {
                return Err(OAuthError::invalid_request(format!(
                    "parameter {} is too long",
                    printable_name(&name)
                )));
            }
            if map.contains_key(&name) {
                return Err(OAuthError::invalid_request(format!(
                    "parameter {} is repeated",
                    printable_name(&name)
                )));
            }
            map.insert(name, value);
        }
        Ok(Params { map })
    }

    /// The value, or `None` when absent or empty (RFC 6749 §3.1).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.map
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// A required parameter, or `invalid_request` naming it.
    pub fn required(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name)
            .ok_or_else(|| OAuthError::invalid_request(format!("missing parameter {name}")))
    }

    /// The parameters that have a value.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.map
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// The longest value of a parameter: an authorization code carries its request, so it
/// may be longer than the request's own longest value (`crate::code::MAX_CODE_LEN`).
fn max_len(name: &str) -> usize {
    if name == "code" {
        crate::code::MAX_CODE_LEN
    } else {
        MAX_PARAM_LEN
    }
}

/// The value of `name` in a request that may not parse as a whole, if it appears exactly
/// once, decodes, and is within the length limit. Used only to find where an error
/// about the other parameters may be sent (RFC 6749 §4.1.2.1).
pub fn single_value(input: &[u8], name: &str) -> Option<String> {
    let mut found = None;
    for pair in input.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let (n, v) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        if form_decode(n).as_deref() == Some(name) {
            if found.is_some() {
                return None;
            }
            found = Some(form_decode(v)?);
        }
    }
    found.filter(|v| !v.is_empty() && v.len() <= MAX_PARAM_LEN)
}

/// `application/x-www-form-urlencoded` decoding of one name or value: `+` is a space,
/// `%XX` a byte; the bytes must be UTF-8.
fn form_decode(raw: &[u8]) -> Option<String> {
    // Tokens and codes (most of a token request's bytes) have nothing to decode.
    if !raw.iter().any(|b| matches!(b, b'+' | b'%')) {
        return std::str::from_utf8(raw).ok().map(str::to_owned);
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (
                    raw.get(i + 1).copied().and_then(hex),
                    raw.get(i + 2).copied().and_then(hex),
                ) {
                    (Some(h), Some(l)) => {
                        out.push(u8::try_from(h * 16 + l).ok()?);
                        i += 2;
                    }
                    // A lone `%` stays as it is, as browsers and the WHATWG parser do.
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn printable_name(name: &str) -> String {
    name.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_rejected_and_empty_values_are_absent() {
        assert!(Params::parse(b"a=1&a=2").is_err());
        let p = Params::parse(b"a=&b=x%20y").unwrap();
        assert_eq!(p.get("a"), None);
        assert_eq!(p.get("b"), Some("x y"));
        assert!(p.required("a").is_err());
    }

    #[test]
    fn decoding_is_exact_and_refuses_bad_utf8() {
        let p = Params::parse(b"state=a%2Bb+c%25%26d&e=%C3%A9&lone=100%").unwrap();
        assert_eq!(p.get("state"), Some("a+b c%&d"));
        assert_eq!(p.get("e"), Some("\u{e9}"));
        assert_eq!(p.get("lone"), Some("100%"));
        assert!(Params::parse(b"state=%ff").is_err());
        assert!(Params::parse(b"state=\xff").is_err());
        // Nothing to decode: taken as it is, if it is UTF-8.
        let raw = Params::parse("t=eyJ.a-b_c~é".as_bytes()).unwrap();
        assert_eq!(raw.get("t"), Some("eyJ.a-b_c~é"));
        assert!(Params::parse(b"t=ok\xc3").is_err());
        assert!(Params::parse(b"st%C3ate=1").is_err());
    }

    #[test]
    fn oversized_values_are_rejected() {
        let long = format!("a={}", "x".repeat(MAX_PARAM_LEN + 1));
        assert!(Params::parse(long.as_bytes()).is_err());
        let ok = format!("state={}", "x".repeat(1024));
        assert!(Params::parse(ok.as_bytes()).is_ok());
        // A code may be as long as the longest request seals to, and no longer.
        let code = |n: usize| format!("code={}", "x".repeat(n));
        assert!(Params::parse(code(crate::code::MAX_CODE_LEN).as_bytes()).is_ok());
        assert!(Params::parse(code(crate::code::MAX_CODE_LEN + 1).as_bytes()).is_err());
    }
}
