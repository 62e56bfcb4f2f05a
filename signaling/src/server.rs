//! The HTTP front end: the WebSocket signaling endpoint, health, and the demo page.

use std::future::Future;
use std::path::PathBuf;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::StreamExt;
use tokio::net::TcpListener;
use tower_http::services::{ServeDir, ServeFile};

use crate::protocol::MAX_MESSAGE_BYTES;
use crate::session::{self, SessionContext};

#[derive(Clone)]
pub struct AppState {
    pub session: SessionContext,
    pub dev: bool,
}

/// The router. `static_dir` holds the built demo page (`client-web/dist`).
pub fn app(state: AppState, static_dir: Option<PathBuf>) -> Router {
    let mut router = Router::new()
        .route("/ws", get(ws_handler))
        .route("/healthz", get(|| async { "ok" }));
    if state.dev {
        // Participant names and room layouts: dev only until the admin API (with tokens) exists.
        router = router.route("/debug/rooms", get(debug_rooms));
    }
    let router = match static_dir {
        Some(dir) if dir.join("index.html").is_file() => {
            let index = dir.join("index.html");
            router.fallback_service(ServeDir::new(dir).fallback(ServeFile::new(index)))
        }
        _ => router.route("/", get(not_built)),
    };
    router.with_state(state)
}

async fn not_built() -> Html<&'static str> {
    Html(
        "<!doctype html><title>Fanout</title><p>The demo page is not built. Run \
         <code>scripts/run</code> (or <code>cd client-web &amp;&amp; npm ci &amp;&amp; npm run build</code>) \
         and pass <code>--static-dir client-web/dist</code>.</p>",
    )
}

/// Every room, participant, track, layer and forwarding decision (with its reason), as JSON.
async fn debug_rooms(State(state): State<AppState>) -> Response {
    match state.session.sfu.debug().await {
        Ok(snapshot) => axum::Json(snapshot).into_response(),
        Err(err) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("media engine unavailable: {err}"),
        )
            .into_response(),
    }
}

async fn ws_handler(State(state): State<AppState>, upgrade: WebSocketUpgrade) -> Response {
    // The transport accepts frames well above the protocol's limit so that an oversized message
    // gets the protocol's `message_too_large` error instead of a bare transport close.
    upgrade
        .max_message_size(16 * MAX_MESSAGE_BYTES)
        .max_frame_size(16 * MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| {
            let (sink, stream) = socket.split();
            session::run(state.session, sink, stream)
        })
        .into_response()
}

/// Serves until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
