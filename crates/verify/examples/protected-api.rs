//! A protected API: three routes, each stating in one line what token it needs.
//!
//! ```sh
//! cargo run --release -p latchkey-verify --example protected-api -- \
//!     --issuer http://127.0.0.1:8080 --listen 127.0.0.1:8081 --audience http://127.0.0.1:8080 \
//!     --client-id ID --client-secret SECRET
//! curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8081/whoami
//! ```
//!
//! - `GET /read` needs scope `api:read`
//! - `POST /write` needs scope `api:write`
//! - `GET /whoami` needs any valid token and answers its verified claims as JSON
//!
//! It follows the issuer's revocation feed with the credentials of a confidential client
//! (`--client-id`/`--client-secret`, or `LATCHKEY_CLIENT_ID`/`LATCHKEY_CLIENT_SECRET`).
//! Without them it says so and checks signatures only; `--no-feed` does that on purpose.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use latchkey_verify::{Claims, Policy, Verified, Verifier};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(about = "A demo API protected by Latchkey access tokens")]
struct Args {
    /// The issuer URL, exactly as in its tokens' `iss`.
    #[arg(long)]
    issuer: String,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// This API's identifier, compared with the tokens' `aud`.
    #[arg(long)]
    audience: String,
    /// Client id for the revocation feed.
    #[arg(long, env = "LATCHKEY_CLIENT_ID")]
    client_id: Option<String>,
    /// Client secret for the revocation feed.
    #[arg(long, env = "LATCHKEY_CLIENT_SECRET", hide_env_values = true)]
    client_secret: Option<String>,
    /// Check signatures only; do not follow the revocation feed.
    #[arg(long)]
    no_feed: bool,
    /// Seconds between two polls of the revocation feed.
    #[arg(long, default_value_t = 5)]
    poll_interval: u64,
    /// Accept a plain-http issuer on a non-loopback host (private networks only).
    #[arg(long)]
    danger_accept_http_issuer: bool,
}

/// The API's routes. Each states what it needs; the handlers only see verified claims.
fn app(verifier: &Verifier) -> Router {
    Router::new()
        .route(
            "/read",
            get(read).layer(verifier.require(Policy::scope("api:read"))),
        )
        .route(
            "/write",
            post(write).layer(verifier.require(Policy::scope("api:write"))),
        )
        .route(
            "/whoami",
            get(whoami).layer(verifier.require(Policy::any())),
        )
}

async fn read(token: Verified) -> Json<serde_json::Value> {
    Json(json!({"data": "the things you may read", "for": token.subject}))
}

async fn write(token: Verified) -> Json<serde_json::Value> {
    Json(json!({"written": true, "by": token.subject}))
}

async fn whoami(token: Verified) -> Json<Claims> {
    Json(Claims::clone(&token))
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let mut builder = Verifier::from_issuer(&args.issuer, &args.audience);
    if args.danger_accept_http_issuer {
        builder = builder.danger_accept_http_issuer();
    }
    match (&args.client_id, &args.client_secret, args.no_feed) {
        (_, _, true) => {
            eprintln!(
                "revocation feed: off (--no-feed); revoked tokens are accepted until their exp"
            );
        }
        (Some(id), Some(secret), false) => {
            builder = builder
                .follow_revocations(id, secret)
                .poll_interval(Duration::from_secs(args.poll_interval.max(1)));
        }
        _ => {
            eprintln!(
                "revocation feed: CANNOT FOLLOW, no client credentials (--client-id and \
                 --client-secret, or LATCHKEY_CLIENT_ID and LATCHKEY_CLIENT_SECRET).\n\
                 Checking signatures only: revoked tokens are accepted until their exp. \
                 Pass --no-feed to silence this."
            );
        }
    }
    let verifier = match builder.build().await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    if verifier.follows_revocations() {
        eprintln!(
            "revocation feed: following {}/revocations",
            args.issuer.trim_end_matches('/')
        );
    }
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().map_or(args.listen, |a| a);
    println!(
        "protected API on http://{addr} (issuer {}, audience {})",
        verifier.issuer(),
        args.audience
    );
    if let Err(e) = axum::serve(listener, app(&verifier)).await {
        eprintln!("server failed: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
