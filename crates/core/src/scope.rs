//! Scopes (RFC 6749 §3.3): a set of space-delimited tokens, order irrelevant.

use std::collections::BTreeSet;
use std::fmt;

use crate::OAuthError;

pub const MAX_SCOPE_LEN: usize = 1024;
pub const MAX_SCOPE_VALUES: usize = 50;

/// A set of scope tokens. Order never matters (OIDC conformance `alternate-happy-flow`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope(BTreeSet<String>);

impl Scope {
    /// Parses `scope` as sent by a client. Each token is `1*( %x21 / %x23-5B / %x5D-7E )`.
    pub fn parse(s: &str) -> Result<Scope, OAuthError> {
        if s.len() > MAX_SCOPE_LEN {
            return Err(OAuthError::invalid_scope(
                "scope is longer than 1024 characters",
            ));
        }
        let mut set = BTreeSet::new();
        for token in s.split(' ').filter(|t| !t.is_empty()) {
            if !token
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
            {
                return Err(OAuthError::invalid_scope(
                    "scope contains a character outside RFC 6749 §3.3",
                ));
            }
            set.insert(token.to_owned());
        }
        if set.len() > MAX_SCOPE_VALUES {
            return Err(OAuthError::invalid_scope("scope has more than 50 values"));
        }
        Ok(Scope(set))
    }

    pub fn from_tokens<I: IntoIterator<Item = S>, S: Into<String>>(tokens: I) -> Scope {
        Scope(tokens.into_iter().map(Into::into).collect())
    }

    pub fn contains(&self, token: &str) -> bool {
        self.0.contains(token)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn is_subset(&self, other: &Scope) -> bool {
        self.0.is_subset(&other.0)
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// The tokens of `self` that `allowed` does not contain.
    pub fn not_in<'a>(&'a self, allowed: &'a Scope) -> impl Iterator<Item = &'a str> {
        self.0.difference(&allowed.0).map(String::as_str)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for t in &self.0 {
            if !first {
                f.write_str(" ")?;
            }
            f.write_str(t)?;
            first = false;
        }
        Ok(())
    }
}

/// What a scope means, in words a user can judge on the consent page.
pub fn describe(token: &str) -> String {
    match token {
        "openid" => "Know who you are (sign you in with your account)".to_owned(),
        "profile" => "See your name and profile details".to_owned(),
        "email" => "See your email address".to_owned(),
        "offline_access" => "Keep access while you are not using it".to_owned(),
        other => format!("Use the permission \u{201c}{other}\u{201d}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_repeats_do_not_matter() {
        assert_eq!(
            Scope::parse("openid email").unwrap(),
            Scope::parse("email  openid openid").unwrap()
        );
        assert_eq!(Scope::parse("b a").unwrap().to_string(), "a b");
    }

    #[test]
    fn grammar_and_limits() {
        assert!(Scope::parse("a\"b").is_err());
        assert!(Scope::parse("a\\b").is_err());
        assert!(Scope::parse("caf\u{e9}").is_err());
        assert!(Scope::parse(&"x".repeat(1025)).is_err());
        let many: Vec<String> = (0..51).map(|i| format!("s{i}")).collect();
        assert!(Scope::parse(&many.join(" ")).is_err());
    }

    #[test]
    fn subsets() {
        let granted = Scope::parse("openid email profile").unwrap();
        assert!(Scope::parse("email").unwrap().is_subset(&granted));
        assert!(!Scope::parse("email admin").unwrap().is_subset(&granted));
        let wanted = Scope::parse("email admin").unwrap();
        assert_eq!(wanted.not_in(&granted).collect::<Vec<_>>(), vec!["admin"]);
    }
}
