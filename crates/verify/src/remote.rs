//! The only HTTP this crate does: discovery (RFC 8414), the JWKS (RFC 7517) and the
//! revocation feed, each a bounded GET with a timeout and no redirects.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use latchkey_core::jose::Alg;
use reqwest::header::{self, HeaderValue};
use serde::Deserialize;

use crate::error::SetupError;
use crate::jwks::{self, KeySet};
use crate::revocation::FeedPage;

const TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BODY: usize = 1 << 20;
const MAX_FEED_BODY: usize = 8 << 20;

pub(crate) fn client() -> Result<reqwest::Client, SetupError> {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("latchkey-verify/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| SetupError::Http {
            url: String::new(),
            reason: e.to_string(),
        })
}

/// An issuer or endpoint URL is `https`, or plain `http` on a loopback host (a test or
/// a sidecar), or anything `http` when the caller said so with a `danger_` option.
pub(crate) fn check_url(url: &str, accept_http: bool) -> Result<(), &'static str> {
    let parsed = url::Url::parse(url).map_err(|_| "not an absolute URL")?;
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err("has a query or fragment");
    }
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if accept_http => Ok(()),
        "http" => match parsed.host() {
            Some(url::Host::Ipv4(ip)) if ip.is_loopback() => Ok(()),
            Some(url::Host::Ipv6(ip)) if ip.is_loopback() => Ok(()),
            Some(url::Host::Domain("localhost")) => Ok(()),
            _ => Err("plain http is accepted only on loopback"),
        },
        _ => Err("scheme is not https"),
    }
}

fn http_error(url: &str, reason: impl std::fmt::Display) -> SetupError {
    SetupError::Http {
        url: url.to_owned(),
        reason: reason.to_string(),
    }
}

/// GETs `url`, returning the status, the `Cache-Control` header and at most `limit`
/// bytes of body.
async fn get(
    http: &reqwest::Client,
    url: &str,
    authorization: Option<&HeaderValue>,
    limit: usize,
) -> Result<(u16, Option<String>, Vec<u8>), SetupError> {
    let mut request = http
        .get(url)
        .header(header::ACCEPT, HeaderValue::from_static("application/json"));
    if let Some(auth) = authorization {
        request = request.header(header::AUTHORIZATION, auth.clone());
    }
    let mut response = request.send().await.map_err(|e| {
        let hint = if url.starts_with("https:") && !cfg!(feature = "rustls") {
            " (https needs the `rustls` feature of latchkey-verify)"
        } else {
            ""
        };
        http_error(url, format_args!("{e}{hint}"))
    })?;
    let status = response.status().as_u16();
    let cache_control = response
        .headers()
        .get(header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(http_error(url, "response is too large"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| http_error(url, e))? {
        if body.len() + chunk.len() > limit {
            return Err(http_error(url, "response is too large"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, cache_control, body))
}

#[derive(Deserialize)]
struct Metadata {
    issuer: String,
    jwks_uri: String,
}

/// Reads the issuer's metadata (RFC 8414 §3, falling back to OIDC Discovery §4) and
/// returns its `jwks_uri`. The document's `issuer` must be the configured issuer
/// exactly (RFC 8414 §3.3).
pub(crate) async fn discover(
    http: &reqwest::Client,
    issuer: &str,
    accept_http: bool,
) -> Result<String, SetupError> {
    let mut last = None;
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ] {
        let url = format!("{issuer}{path}");
        let (status, _, body) = get(http, &url, None, MAX_BODY).await?;
        if status != 200 {
            last = Some(http_error(&url, format_args!("status {status}")));
            continue;
        }
        let meta: Metadata = serde_json::from_slice(&body)
            .map_err(|_| SetupError::Discovery("no issuer or jwks_uri string"))?;
        if meta.issuer != issuer {
            return Err(SetupError::Discovery(
                "its issuer is not the configured issuer",
            ));
        }
        check_url(&meta.jwks_uri, accept_http).map_err(SetupError::Discovery)?;
        return Ok(meta.jwks_uri);
    }
    Err(last.unwrap_or(SetupError::Discovery("not found")))
}

/// Fetches the JWKS and the lifetime its `Cache-Control` grants.
pub(crate) async fn fetch_jwks(
    http: &reqwest::Client,
    jwks_uri: &str,
    allowed: Option<&[Alg]>,
) -> Result<(KeySet, Option<Duration>), SetupError> {
    let (status, cache_control, body) = get(http, jwks_uri, None, MAX_BODY).await?;
    if status != 200 {
        return Err(http_error(jwks_uri, format_args!("status {status}")));
    }
    let keys = KeySet::parse(&body, allowed)?;
    Ok((keys, jwks::cache_lifetime(cache_control.as_deref())))
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))` (RFC 6749 §2.3.1), marked
/// sensitive so no HTTP log shows it.
pub(crate) fn basic_credentials(
    client_id: &str,
    client_secret: &str,
) -> Result<HeaderValue, SetupError> {
    let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let raw = format!("{}:{}", encode(client_id), encode(client_secret));
    let mut value = HeaderValue::try_from(format!("Basic {}", STANDARD.encode(raw)))
        .map_err(|_| SetupError::Config("client credentials cannot be sent"))?;
    value.set_sensitive(true);
    Ok(value)
}

/// One poll of `GET {feed_url}?since=N`.
pub(crate) async fn poll_feed(
    http: &reqwest::Client,
    feed_url: &str,
    authorization: &HeaderValue,
    since: Option<i64>,
) -> Result<FeedPage, SetupError> {
    let url = match since {
        Some(n) => format!("{feed_url}?since={n}"),
        None => feed_url.to_owned(),
    };
    let (status, _, body) = get(http, &url, Some(authorization), MAX_FEED_BODY).await?;
    match status {
        200 => serde_json::from_slice(&body).map_err(|_| {
            SetupError::Feed(format!(
                "{feed_url} answered a body that is not a feed page"
            ))
        }),
        401 | 403 => Err(SetupError::Feed(format!(
            "{feed_url} refused the client credentials (status {status})"
        ))),
        other => Err(SetupError::Feed(format!(
            "{feed_url} answered status {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(check_url("https://id.example", false).is_ok());
        assert!(check_url("http://127.0.0.1:8080", false).is_ok());
        assert!(check_url("http://[::1]:8080", false).is_ok());
        assert!(check_url("http://localhost:8080", false).is_ok());
        assert!(check_url("http://id.example", false).is_err());
        assert!(check_url("http://id.example", true).is_ok());
        assert!(check_url("ftp://id.example", true).is_err());
        assert!(check_url("https://id.example/?a=b", false).is_err());
        assert!(check_url("id.example", false).is_err());
    }

    #[test]
    fn basic_is_form_encoded_and_sensitive() {
        let v = basic_credentials("a b", "p:w").unwrap();
        assert!(v.is_sensitive());
        let b64 = v.to_str().unwrap().strip_prefix("Basic ").unwrap();
        assert_eq!(STANDARD.decode(b64).unwrap(), b"a+b:p%3Aw");
    }
}
