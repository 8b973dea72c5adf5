//! The HTML pages, rendered by askama (compiled templates, auto-escaped).

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use latchkey_core::OAuthError;

use super::html;
use crate::state::AppState;

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage<'a> {
    pub client_name: Option<&'a str>,
    pub error: Option<&'a str>,
    pub username: &'a str,
    pub csrf_token: &'a str,
    pub authz: &'a str,
}

#[derive(Template)]
#[template(path = "consent.html")]
pub struct ConsentPage<'a> {
    pub client_name: &'a str,
    pub username: &'a str,
    pub redirect_host: &'a str,
    pub scopes: Vec<(String, String)>,
    pub csrf_token: &'a str,
    pub authz: &'a str,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    code: &'a str,
    description: &'a str,
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage<'a> {
    issuer: &'a str,
    demo: bool,
}

#[derive(Template)]
#[template(path = "demo.html")]
pub struct DemoPage {
    pub userinfo: String,
    pub id_token_claims: String,
    pub access_token_claims: String,
    pub token_response: String,
}

/// Renders a template, falling back to a plain error if rendering fails.
pub fn render<T: Template>(status: StatusCode, page: &T) -> Response {
    match page.render() {
        Ok(body) => html(status, body),
        Err(e) => {
            tracing::error!(error = %e, "template rendering failed");
            html(
                StatusCode::INTERNAL_SERVER_ERROR,
                "<!doctype html><title>Error</title><p>Internal error.</p>".to_owned(),
            )
        }
    }
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage<'a> {
    title: &'a str,
    text: &'a str,
    link: Option<(&'a str, &'a str)>,
}

/// A page that tells the user something, with an optional link onwards.
pub fn message_page(
    status: StatusCode,
    title: &str,
    text: &str,
    link: Option<(&str, &str)>,
) -> Response {
    render(status, &MessagePage { title, text, link })
}

/// 404 for unknown paths, as a page rather than an empty body.
pub async fn not_found() -> Response {
    message_page(
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no page at this address.",
        Some(("/", "Latchkey home")),
    )
}

pub fn error_page(status: StatusCode, err: &OAuthError) -> Response {
    let title = match err.code {
        latchkey_core::ErrorCode::InvalidClient => "Unknown application",
        latchkey_core::ErrorCode::TemporarilyUnavailable => "Try again in a moment",
        _ => "This request cannot be completed",
    };
    render(
        status,
        &ErrorPage {
            title,
            code: err.code.as_str(),
            description: err.description(),
        },
    )
}

pub async fn home(State(state): State<AppState>) -> Response {
    render(
        StatusCode::OK,
        &HomePage {
            issuer: &state.issuer,
            demo: state.demo.is_some(),
        },
    )
}
