//! Redirect URIs: what may be registered, and exact matching (RFC 9700 §4.1.3,
//! BCP-01). The only relaxation is the one RFC 8252 §7.3 requires: for loopback IP
//! literals over http the port may vary at request time.

use crate::OAuthError;

/// Longest redirect URI accepted (REL-05).
pub const MAX_REDIRECT_URI_LEN: usize = 2048;

const LOOPBACK_HOSTS: [&str; 2] = ["http://127.0.0.1", "http://[::1]"];

/// A redirect URI that passed registration rules. The string is kept exactly as
/// registered: comparison is by simple string comparison (RFC 3986 §6.2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectUri(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RedirectUriError {
    #[error("redirect URI is not an absolute URI")]
    NotAbsolute,
    #[error("redirect URI must not contain a fragment (RFC 6749 §3.1.2)")]
    Fragment,
    #[error("redirect URI must not contain user information")]
    UserInfo,
    #[error(
        "plain http is allowed only for loopback IP literals (127.0.0.1, [::1]); use https (RFC 9700 §2.6)"
    )]
    PlainHttp,
    #[error(
        "redirect URI scheme is not allowed; use https, loopback http, or a private-use scheme like com.example.app"
    )]
    Scheme,
    #[error("redirect URI is longer than 2048 characters")]
    TooLong,
}

impl RedirectUri {
    /// Checks a URI offered for registration.
    pub fn register(s: &str) -> Result<RedirectUri, RedirectUriError> {
        if s.len() > MAX_REDIRECT_URI_LEN {
            return Err(RedirectUriError::TooLong);
        }
        if s.contains('#') {
            return Err(RedirectUriError::Fragment);
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(RedirectUriError::NotAbsolute);
        }
        let url = url::Url::parse(s).map_err(|_| RedirectUriError::NotAbsolute)?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(RedirectUriError::UserInfo);
        }
        match url.scheme() {
            "https" => {
                if url.host_str().is_none_or(str::is_empty) {
                    return Err(RedirectUriError::NotAbsolute);
                }
            }
            "http" => {
                if loopback_prefix(s).is_none() {
                    return Err(RedirectUriError::PlainHttp);
                }
            }
            // RFC 8252 §7.1: private-use schemes are reverse domain names, so they
            // contain a period; this also keeps out javascript:, data:, file: and the like.
            scheme if scheme.contains('.') => {}
            _ => return Err(RedirectUriError::Scheme),
        }
        Ok(RedirectUri(s.to_owned()))
    }

    /// Rebuilds a URI read back from storage (it passed [`RedirectUri::register`]).
    pub fn from_stored(s: String) -> Self {
        RedirectUri(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Does `presented` (from an authorization request) select this registered URI?
    pub fn matches(&self, presented: &str) -> bool {
        if self.0 == presented {
            return true;
        }
        // RFC 8252 §7.3: any port for a loopback IP literal over http; the rest of the
        // URI still has to be identical.
        match (loopback_prefix(&self.0), loopback_prefix(presented)) {
            (Some((host_a, rest_a)), Some((host_b, rest_b))) => {
                host_a == host_b && rest_a == rest_b
            }
            _ => false,
        }
    }
}

/// For `http://127.0.0.1[:port]rest` or `http://[::1][:port]rest`, the host prefix and
/// the part after the port. The rest must be empty or start with `/`, `?`.
fn loopback_prefix(s: &str) -> Option<(&'static str, &str)> {
    for host in LOOPBACK_HOSTS {
        if let Some(after) = s.strip_prefix(host) {
            let rest = match after.strip_prefix(':') {
                Some(port_and_rest) => {
                    let digits = port_and_rest.bytes().take_while(u8::is_ascii_digit).count();
                    let port: u32 = port_and_rest[..digits].parse().ok()?;
                    if digits > 5 || port == 0 || port > 65535 {
                        return None;
                    }
                    &port_and_rest[digits..]
                }
                None => after,
            };
            if rest.is_empty() || rest.starts_with('/') || rest.starts_with('?') {
                return Some((host, rest));
            }
        }
    }
    None
}

/// Appends response parameters to a redirect URI, keeping its existing query
/// (RFC 6749 §3.1.2: the query component must be retained).
pub fn with_query(uri: &str, params: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(uri.len() + 128);
    out.push_str(uri);
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        ser.append_pair(k, v);
    }
    let query = ser.finish();
    if !query.is_empty() {
        out.push(if uri.contains('?') { '&' } else { '?' });
        out.push_str(&query);
    }
    out
}

pub fn check_registration(s: &str) -> Result<RedirectUri, OAuthError> {
    RedirectUri::register(s).map_err(|e| OAuthError::invalid_request(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_rules() {
        assert!(RedirectUri::register("https://c.example/cb").is_ok());
        assert!(RedirectUri::register("http://127.0.0.1/cb").is_ok());
        assert!(RedirectUri::register("http://127.0.0.1:8080/cb").is_ok());
        assert!(RedirectUri::register("http://[::1]:8080/cb").is_ok());
        assert!(RedirectUri::register("com.example.app:/cb").is_ok());
        assert_eq!(
            RedirectUri::register("http://c.example/cb"),
            Err(RedirectUriError::PlainHttp)
        );
        assert_eq!(
            RedirectUri::register("http://localhost/cb"),
            Err(RedirectUriError::PlainHttp)
        );
        assert_eq!(
            RedirectUri::register("http://127.0.0.1.evil.example/cb"),
            Err(RedirectUriError::PlainHttp)
        );
        assert_eq!(
            RedirectUri::register("https://c.example/cb#f"),
            Err(RedirectUriError::Fragment)
        );
        assert_eq!(
            RedirectUri::register("https://x@c.example/cb"),
            Err(RedirectUriError::UserInfo)
        );
        assert_eq!(
            RedirectUri::register("javascript:alert(1)"),
            Err(RedirectUriError::Scheme)
        );
        assert_eq!(
            RedirectUri::register("/cb"),
            Err(RedirectUriError::NotAbsolute)
        );
    }

    #[test]
    fn exact_match_bcp01() {
        let r = RedirectUri::register("https://c.example/cb").unwrap();
        assert!(r.matches("https://c.example/cb"));
        for bad in [
            "https://c.example/CB",
            "https://c.example/cb/",
            "https://c.example/cb?x=1",
            "https://c.example/cb#f",
            "https://c.example/c%62",
            "https://c.example:443/cb",
            "https://x@c.example/cb",
            "https://C.example/cb",
            "http://c.example/cb",
        ] {
            assert!(!r.matches(bad), "{bad} must not match");
        }
    }

    #[test]
    fn loopback_port_may_vary_rfc8252() {
        let r = RedirectUri::register("http://127.0.0.1/cb").unwrap();
        assert!(r.matches("http://127.0.0.1:51004/cb"));
        assert!(!r.matches("http://127.0.0.1:51004/cb?x=1"));
        assert!(!r.matches("http://localhost:51004/cb"));
        assert!(!r.matches("http://127.0.0.1:0/cb"));
        assert!(!r.matches("http://127.0.0.1:99999/cb"));
        assert!(!r.matches("http://127.0.0.1:51004@evil.example/cb"));
        assert!(!r.matches("http://[::1]:51004/cb"));
        let v6 = RedirectUri::register("http://[::1]:80/cb").unwrap();
        assert!(v6.matches("http://[::1]:1234/cb"));
    }

    #[test]
    fn query_is_kept_when_adding_parameters() {
        assert_eq!(
            with_query("https://c/cb", &[("code", "a b")]),
            "https://c/cb?code=a+b"
        );
        assert_eq!(
            with_query("https://c/cb?x=1", &[("state", "s")]),
            "https://c/cb?x=1&state=s"
        );
    }
}
