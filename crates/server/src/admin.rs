//! Admin operations behind `latchkey client …` and `latchkey user …`. They work on the
//! store directly, so they run while a server uses the same data directory; each change
//! bumps the store's change counter, and servers drop their cached clients and users
//! within `client_check_interval_ms` (see `cache.rs`).

use latchkey_core::client::{AuthMethod, Client, ClientKind, GrantType};
use latchkey_core::jose::Alg;
use latchkey_core::model::{User, normalize_username};
use latchkey_core::redirect_uri::RedirectUri;
use latchkey_core::scope::Scope;
use latchkey_core::secret::{digest, random_token};
use latchkey_store::{Store, StoreError};

pub struct NewClient {
    pub name: String,
    pub redirect_uris: Vec<String>,
    pub public: bool,
    pub grant_types: Option<String>,
    pub scopes: Option<String>,
    pub first_party: bool,
    pub post_logout_redirect_uris: Vec<String>,
    /// Audiences this client serves as a resource server.
    pub audiences: Vec<String>,
    /// Resource indicators (RFC 8707) this client may request tokens for.
    pub resources: Vec<String>,
    /// `id_token_signed_response_alg` (OIDC Registration §2); RS256 when absent.
    pub id_token_alg: Option<String>,
}

pub struct CreatedClient {
    pub client: Client,
    /// Shown once; only its digest is stored.
    pub secret: Option<String>,
}

pub async fn create_client(
    store: &dyn Store,
    new: NewClient,
    now: i64,
) -> Result<CreatedClient, String> {
    let name = new.name.trim().to_owned();
    if name.is_empty() || name.len() > 200 {
        return Err("--name must be 1 to 200 characters".into());
    }
    let mut redirect_uris = Vec::new();
    for u in &new.redirect_uris {
        redirect_uris
            .push(RedirectUri::register(u).map_err(|e| format!("--redirect-uri {u}: {e}"))?);
    }
    let mut post_logout_redirect_uris = Vec::new();
    for u in &new.post_logout_redirect_uris {
        post_logout_redirect_uris.push(
            RedirectUri::register(u).map_err(|e| format!("--post-logout-redirect-uri {u}: {e}"))?,
        );
    }
    for a in &new.audiences {
        if a.is_empty() || a.len() > 512 || a.contains(char::is_whitespace) {
            return Err(format!(
                "--serves-audience {a}: an audience is a non-empty string without spaces"
            ));
        }
    }
    for r in &new.resources {
        let ok = url::Url::parse(r).is_ok_and(|u| !u.cannot_be_a_base()) && !r.contains('#');
        if !ok {
            return Err(format!(
                "--resource {r}: a resource indicator is an absolute URI without a fragment (RFC 8707)"
            ));
        }
    }
    let id_token_alg = match new.id_token_alg.as_deref() {
        None => Alg::RS256,
        Some(a) => {
            Alg::parse(a).ok_or_else(|| format!("--id-token-alg {a}: use RS256, ES256 or EdDSA"))?
        }
    };
    let grant_types = match &new.grant_types {
        None => vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
        Some(s) => s
            .split(',')
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .map(|g| GrantType::parse(g).ok_or_else(|| format!("unknown grant type {g}; use authorization_code, refresh_token, client_credentials")))
            .collect::<Result<Vec<_>, _>>()?,
    };
    if grant_types.is_empty() {
        return Err("--grant-types must name at least one grant type".into());
    }
    if grant_types.contains(&GrantType::AuthorizationCode) && redirect_uris.is_empty() {
        return Err("a client using authorization_code needs at least one --redirect-uri".into());
    }
    if new.public && grant_types.contains(&GrantType::ClientCredentials) {
        return Err("a public client cannot use client_credentials (it has no secret)".into());
    }
    let scopes = Scope::parse(new.scopes.as_deref().unwrap_or("openid profile email"))
        .map_err(|e| format!("--scopes: {}", e.description()))?;
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let client_id = new_client_id(&rng)?;
    let (kind, secret, auth_methods) = if new.public {
        (ClientKind::Public, None, vec![AuthMethod::None])
    } else {
        (
            ClientKind::Confidential,
            Some(random_token(&rng).map_err(|_| "random source failed")?),
            vec![AuthMethod::ClientSecretBasic, AuthMethod::ClientSecretPost],
        )
    };
    let client = Client {
        client_id,
        name,
        kind,
        secret_hash: secret.as_deref().map(digest),
        redirect_uris,
        grant_types,
        scopes,
        auth_methods,
        first_party: new.first_party,
        post_logout_redirect_uris,
        audiences: new.audiences,
        resources: new.resources,
        access_token_ttl: 300,
        id_token_alg,
        created_at: now,
    };
    store
        .create_client(&client)
        .await
        .map_err(|e| format!("cannot store the client: {e}"))?;
    Ok(CreatedClient { client, secret })
}

pub struct NewUser {
    pub username: String,
    pub password: String,
    pub email: Option<String>,
    pub name: Option<String>,
}

pub async fn create_user(store: &dyn Store, new: NewUser, now: i64) -> Result<User, String> {
    let username = normalize_username(&new.username);
    if username.is_empty() || username.len() > 100 || username.chars().any(char::is_control) {
        return Err("--username must be 1 to 100 printable characters".into());
    }
    if new.password.chars().count() < 8 {
        return Err("the password must be at least 8 characters".into());
    }
    if new.password.len() > 1024 {
        return Err("the password must be at most 1024 bytes".into());
    }
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let password = new.password;
    let password_hash = tokio::task::spawn_blocking(move || {
        crate::password::hash(&password, &aws_lc_rs::rand::SystemRandom::new())
    })
    .await
    .map_err(|e| e.to_string())??;
    let mut id = [0u8; 16];
    aws_lc_rs::rand::SecureRandom::fill(&rng, &mut id).map_err(|_| "random source failed")?;
    let user = User {
        user_id: latchkey_core::secret::hex(&id),
        username,
        password_hash,
        email: new.email,
        email_verified: false,
        name: new.name,
        disabled: false,
        created_at: now,
    };
    match store.create_user(&user).await {
        Ok(()) => Ok(user),
        Err(StoreError::Conflict) => Err(format!("a user named {} already exists", user.username)),
        Err(e) => Err(format!("cannot store the user: {e}")),
    }
}

/// A new client id: 22 base64url characters (132 random bits) that never begin with
/// `-`, which a command line takes for an option (`latchkey client delete -x…` fails).
fn new_client_id(rng: &aws_lc_rs::rand::SystemRandom) -> Result<String, String> {
    for _ in 0..16 {
        let token = random_token(rng).map_err(|_| "random source failed")?;
        if !token.starts_with('-') {
            return Ok(token[..22].to_owned());
        }
    }
    Err("random source failed".into())
}

/// Finds a user by id or by username.
pub async fn find_user(store: &dyn Store, id_or_name: &str) -> Result<Option<User>, String> {
    if let Some(u) = store.user(id_or_name).await.map_err(|e| e.to_string())? {
        return Ok(Some(u));
    }
    store
        .user_by_username(&normalize_username(id_or_name))
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One id in 64 drawn as plain base64url would begin with `-`; a test of the
    /// command line failed that way (`client delete -xuV…`: "unexpected argument").
    #[test]
    fn client_ids_never_begin_with_a_dash() {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        for _ in 0..5000 {
            let id = new_client_id(&rng).unwrap();
            assert_eq!(id.len(), 22);
            assert!(!id.starts_with('-'), "{id}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
        }
    }
}
