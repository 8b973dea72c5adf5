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
#[derive(Debug, Clone, Default)]
pub struct Params {
    map: HashMap<String, String>,
}

impl Params {
    /// Parses a query string or form body. Duplicate names are `invalid_request`.
    pub fn parse(input: &[u8]) -> Result<Params, OAuthError> {
        let mut map = HashMap::new();
        for (count, (name, value)) in url::form_urlencoded::parse(input).enumerate() {
            if count >= MAX_PARAMS {
                return Err(OAuthError::invalid_request("too many parameters"));
            }
            if value.len() > MAX_PARAM_LEN || name.len() > 128 {
                return Err(OAuthError::invalid_request(format!(
                    "parameter {} is too long",
                    printable_name(&name)
                )));
            }
            if map.contains_key(name.as_ref()) {
                return Err(OAuthError::invalid_request(format!(
                    "parameter {} is repeated",
                    printable_name(&name)
                )));
            }
            map.insert(name.into_owned(), value.into_owned());
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

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.map.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
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
    fn oversized_values_are_rejected() {
        let long = format!("a={}", "x".repeat(MAX_PARAM_LEN + 1));
        assert!(Params::parse(long.as_bytes()).is_err());
        let ok = format!("state={}", "x".repeat(1024));
        assert!(Params::parse(ok.as_bytes()).is_ok());
    }
}
