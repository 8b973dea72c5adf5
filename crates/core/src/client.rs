//! Registered clients and client authentication (RFC 6749 §2.3, OIDC Core §9).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::OAuthError;
use crate::jose::Alg;
use crate::redirect_uri::RedirectUri;
use crate::scope::Scope;
use crate::secret::digest_matches;

/// RFC 6749 §2.1 client types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    Confidential,
    Public,
}

impl ClientKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientKind::Confidential => "confidential",
            ClientKind::Public => "public",
        }
    }
    pub fn parse(s: &str) -> Option<ClientKind> {
        match s {
            "confidential" => Some(ClientKind::Confidential),
            "public" => Some(ClientKind::Public),
            _ => None,
        }
    }
}

/// The grant types Latchkey implements. No implicit and no password grant
/// (RFC 9700 §2.1.2, §2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GrantType {
    AuthorizationCode,
    RefreshToken,
    ClientCredentials,
}

impl GrantType {
    pub const ALL: [GrantType; 3] = [
        GrantType::AuthorizationCode,
        GrantType::RefreshToken,
        GrantType::ClientCredentials,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GrantType::AuthorizationCode => "authorization_code",
            GrantType::RefreshToken => "refresh_token",
            GrantType::ClientCredentials => "client_credentials",
        }
    }

    pub fn parse(s: &str) -> Option<GrantType> {
        GrantType::ALL.into_iter().find(|g| g.as_str() == s)
    }
}

/// Token endpoint authentication methods (OIDC Core §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
    None,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::ClientSecretPost => "client_secret_post",
            AuthMethod::None => "none",
        }
    }
    pub fn parse(s: &str) -> Option<AuthMethod> {
        [
            AuthMethod::ClientSecretBasic,
            AuthMethod::ClientSecretPost,
            AuthMethod::None,
        ]
        .into_iter()
        .find(|m| m.as_str() == s)
    }
}

/// A registered client.
#[derive(Debug, Clone)]
pub struct Client {
    pub client_id: String,
    pub name: String,
    pub kind: ClientKind,
    /// SHA-256 digest of the generated secret; `None` for public clients.
    pub secret_hash: Option<String>,
    pub redirect_uris: Vec<RedirectUri>,
    pub grant_types: Vec<GrantType>,
    /// The scopes this client may request.
    pub scopes: Scope,
    /// Token endpoint authentication methods this client may use.
    pub auth_methods: Vec<AuthMethod>,
    /// An admin vouched for this client: its users are not asked for consent.
    pub first_party: bool,
    /// Registered `post_logout_redirect_uri` values (OIDC RP-Initiated Logout §2).
    pub post_logout_redirect_uris: Vec<RedirectUri>,
    /// Audiences this client serves as a resource server: it may introspect tokens
    /// issued for them and read the revocation feed.
    pub audiences: Vec<String>,
    /// Resource indicators (RFC 8707) this client may request tokens for; each becomes
    /// the `aud` of such tokens.
    pub resources: Vec<String>,
    pub access_token_ttl: i64,
    pub id_token_alg: Alg,
    pub created_at: i64,
}

impl Client {
    pub fn allows_grant(&self, g: GrantType) -> bool {
        self.grant_types.contains(&g)
    }

    /// The registered redirect URI that `presented` selects, if any.
    pub fn redirect_uri(&self, presented: &str) -> Option<&RedirectUri> {
        self.redirect_uris.iter().find(|r| r.matches(presented))
    }

    /// Checks a requested scope against what the client may ask for. `None` means the
    /// client's own scopes (RFC 6749 §3.3 "pre-defined default value").
    pub fn permitted_scope(&self, requested: Option<&str>) -> Result<Scope, OAuthError> {
        let Some(requested) = requested else {
            return Ok(self.scopes.clone());
        };
        let scope = Scope::parse(requested)?;
        let extra: Vec<&str> = scope.not_in(&self.scopes).collect();
        if !extra.is_empty() {
            return Err(OAuthError::invalid_scope(format!(
                "this client may not request: {}",
                extra.join(" ")
            )));
        }
        Ok(scope)
    }

    /// Checks a `resource` parameter (RFC 8707 §2): an absolute URI without a fragment,
    /// registered for this client. `None` stays `None` (the default audience applies).
    pub fn permitted_resource(
        &self,
        requested: Option<&str>,
    ) -> Result<Option<String>, OAuthError> {
        let Some(r) = requested else { return Ok(None) };
        let err = |d: &str| OAuthError::new(crate::ErrorCode::InvalidTarget, d);
        let absolute = url::Url::parse(r).is_ok_and(|u| !u.cannot_be_a_base());
        if !absolute || r.contains('#') {
            return Err(err("resource must be an absolute URI without a fragment"));
        }
        if !self.resources.iter().any(|x| x == r) {
            return Err(err("this client may not request tokens for that resource"));
        }
        Ok(Some(r.to_owned()))
    }

    /// Authenticates the client with what it presented (RFC 6749 §2.3.1, OIDC Core §9).
    /// Every failure is `invalid_client`.
    pub fn authenticate(
        &self,
        presented: &PresentedCredentials,
    ) -> Result<ClientAuthenticated, OAuthError> {
        if !self.auth_methods.contains(&presented.method) {
            return Err(OAuthError::invalid_client(format!(
                "client authentication method {} is not registered for this client",
                presented.method.as_str()
            )));
        }
        match (self.kind, &self.secret_hash, &presented.secret) {
            (ClientKind::Public, _, None) => Ok(ClientAuthenticated {
                client_id: self.client_id.clone(),
            }),
            (ClientKind::Confidential, Some(hash), Some(secret))
                if digest_matches(secret, hash) =>
            {
                Ok(ClientAuthenticated {
                    client_id: self.client_id.clone(),
                })
            }
            (ClientKind::Confidential, _, None) => Err(OAuthError::invalid_client(
                "client authentication is required",
            )),
            _ => Err(OAuthError::invalid_client("client authentication failed")),
        }
    }
}

/// Proof that a client authenticated at the token endpoint (or is a public client that
/// identified itself). Only [`Client::authenticate`] builds it.
#[derive(Debug, Clone)]
pub struct ClientAuthenticated {
    client_id: String,
}

impl ClientAuthenticated {
    pub fn client_id(&self) -> &str {
        &self.client_id
    }
}

/// The client credentials of one request, taken from the Authorization header or the body.
#[derive(Clone)]
pub struct PresentedCredentials {
    pub client_id: String,
    pub secret: Option<String>,
    pub method: AuthMethod,
    /// Whether HTTP Basic was used; a failure then answers with `WWW-Authenticate`.
    pub used_basic: bool,
}

/// The client id and how it authenticated, never the secret.
impl std::fmt::Debug for PresentedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresentedCredentials")
            .field("client_id", &self.client_id)
            .field(
                "secret",
                &self.secret.as_ref().map(|_| crate::secret::REDACTED),
            )
            .field("method", &self.method)
            .field("used_basic", &self.used_basic)
            .finish()
    }
}

impl PresentedCredentials {
    /// Reads the credentials from an `Authorization` header and the body parameters.
    /// Using two methods at once is `invalid_request` (RFC 6749 §2.3).
    pub fn from_request(
        authorization: Option<&str>,
        body_client_id: Option<&str>,
        body_secret: Option<&str>,
    ) -> Result<PresentedCredentials, OAuthError> {
        if let Some(header) = authorization {
            if body_secret.is_some() {
                return Err(OAuthError::invalid_request(
                    "use one client authentication method, not both Basic and client_secret",
                ));
            }
            let (id, secret) = parse_basic(header)?;
            if let Some(body_id) = body_client_id
                && body_id != id
            {
                return Err(OAuthError::invalid_request(
                    "client_id in the body differs from the Authorization header",
                ));
            }
            return Ok(PresentedCredentials {
                client_id: id,
                secret: Some(secret),
                method: AuthMethod::ClientSecretBasic,
                used_basic: true,
            });
        }
        let client_id = body_client_id
            .ok_or_else(|| OAuthError::invalid_client("client authentication is required"))?
            .to_owned();
        Ok(match body_secret {
            Some(s) => PresentedCredentials {
                client_id,
                secret: Some(s.to_owned()),
                method: AuthMethod::ClientSecretPost,
                used_basic: false,
            },
            None => PresentedCredentials {
                client_id,
                secret: None,
                method: AuthMethod::None,
                used_basic: false,
            },
        })
    }
}

/// RFC 6749 §2.3.1: `Basic base64(urlencode(id) ":" urlencode(secret))`.
fn parse_basic(header: &str) -> Result<(String, String), OAuthError> {
    let bad = || OAuthError::invalid_client("malformed Basic authorization header");
    let (scheme, value) = header.trim().split_once(' ').ok_or_else(bad)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(OAuthError::invalid_client(
            "unsupported authorization scheme; use Basic",
        ));
    }
    let decoded = STANDARD.decode(value.trim()).map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(bad)?;
    let id = form_decode(id).ok_or_else(bad)?;
    let secret = form_decode(secret).ok_or_else(bad)?;
    if id.is_empty() {
        return Err(bad());
    }
    Ok((id, secret))
}

fn form_decode(s: &str) -> Option<String> {
    // Reuse the form decoder on a single pair; escape the two characters it splits on.
    let escaped = s.replace('&', "%26").replace('=', "%3D");
    url::form_urlencoded::parse(format!("v={escaped}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::digest;

    fn client(kind: ClientKind) -> Client {
        Client {
            client_id: "c1".into(),
            name: "App".into(),
            kind,
            secret_hash: (kind == ClientKind::Confidential).then(|| digest("s3cret")),
            redirect_uris: vec![RedirectUri::register("https://app.example/cb").unwrap()],
            grant_types: vec![GrantType::AuthorizationCode],
            scopes: Scope::parse("openid email").unwrap(),
            auth_methods: match kind {
                ClientKind::Confidential => {
                    vec![AuthMethod::ClientSecretBasic, AuthMethod::ClientSecretPost]
                }
                ClientKind::Public => vec![AuthMethod::None],
            },
            first_party: false,
            post_logout_redirect_uris: vec![],
            audiences: vec![],
            resources: vec!["https://api.example.com".into()],
            access_token_ttl: 300,
            id_token_alg: Alg::RS256,
            created_at: 0,
        }
    }

    fn basic(id: &str, secret: &str) -> String {
        format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
    }

    #[test]
    fn confidential_client_needs_its_secret() {
        let c = client(ClientKind::Confidential);
        let ok =
            PresentedCredentials::from_request(Some(&basic("c1", "s3cret")), None, None).unwrap();
        assert!(c.authenticate(&ok).is_ok());
        let wrong =
            PresentedCredentials::from_request(Some(&basic("c1", "nope")), None, None).unwrap();
        assert_eq!(
            c.authenticate(&wrong).unwrap_err().code,
            crate::ErrorCode::InvalidClient
        );
        let none = PresentedCredentials::from_request(None, Some("c1"), None).unwrap();
        assert!(c.authenticate(&none).is_err());
        let post = PresentedCredentials::from_request(None, Some("c1"), Some("s3cret")).unwrap();
        assert!(c.authenticate(&post).is_ok());
    }

    #[test]
    fn public_client_must_not_present_a_secret() {
        let c = client(ClientKind::Public);
        let none = PresentedCredentials::from_request(None, Some("c1"), None).unwrap();
        assert!(c.authenticate(&none).is_ok());
        let post = PresentedCredentials::from_request(None, Some("c1"), Some("x")).unwrap();
        assert!(c.authenticate(&post).is_err());
    }

    #[test]
    fn two_methods_at_once_is_invalid_request() {
        let e = PresentedCredentials::from_request(Some(&basic("c1", "s")), Some("c1"), Some("s"))
            .unwrap_err();
        assert_eq!(e.code, crate::ErrorCode::InvalidRequest);
    }

    #[test]
    fn basic_values_are_form_decoded() {
        let (id, secret) = parse_basic(&basic("my%20id", "a%3Ab+c")).unwrap();
        assert_eq!(id, "my id");
        assert_eq!(secret, "a:b c");
        assert!(parse_basic("Bearer x").is_err());
        assert!(parse_basic("Basic !!!").is_err());
    }

    #[test]
    fn resources_are_limited_to_the_client() {
        let c = client(ClientKind::Confidential);
        assert_eq!(c.permitted_resource(None).unwrap(), None);
        assert_eq!(
            c.permitted_resource(Some("https://api.example.com"))
                .unwrap()
                .as_deref(),
            Some("https://api.example.com")
        );
        for bad in [
            "https://other.example.com",
            "https://api.example.com/",
            "https://api.example.com#x",
            "api",
            "urn:x",
        ] {
            assert_eq!(
                c.permitted_resource(Some(bad)).unwrap_err().code,
                crate::ErrorCode::InvalidTarget,
                "{bad}"
            );
        }
    }

    #[test]
    fn scope_requests_are_limited_to_the_client() {
        let c = client(ClientKind::Confidential);
        assert_eq!(
            c.permitted_scope(Some("email")).unwrap().to_string(),
            "email"
        );
        assert_eq!(
            c.permitted_scope(Some("email admin")).unwrap_err().code,
            crate::ErrorCode::InvalidScope
        );
        assert_eq!(c.permitted_scope(None).unwrap().to_string(), "email openid");
    }
}
