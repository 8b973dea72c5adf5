//! The ceiling: an axum server (same axum, tokio and runtime defaults as Latchkey) that
//! reads each request's body and answers every request with one fixed, token-shaped
//! JSON body of the size of a real client_credentials answer. What it serves per
//! second is the most this machine's HTTP stack and this load generator can do.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;

/// A client_credentials answer's shape and size (an EdDSA JWT for a resource).
fn body() -> String {
    let part = |n: usize| "x".repeat(n);
    format!(
        r#"{{"access_token":"eyJ{}.eyJ{}.{}","token_type":"Bearer","expires_in":300,"scope":"api"}}"#,
        part(80),
        part(270),
        part(86)
    )
}

async fn answer(
    state: axum::extract::State<&'static str>,
    _body: axum::body::Bytes,
) -> impl IntoResponse {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::PRAGMA, HeaderValue::from_static("no-cache")),
        ],
        state.0,
    )
}

pub fn serve(listen: &str) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let body: &'static str = Box::leak(body().into_boxed_str());
        let app = Router::new().fallback(answer).with_state(body);
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        println!("listening on http://{addr}");
        axum::serve(listener, app)
            .await
            .map_err(|e| format!("server error: {e}"))
    })
}
