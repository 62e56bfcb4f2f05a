//! The HTTP front end: WebSocket signaling, health and readiness, metrics, the admin API, the
//! dev-only token and debug endpoints, and the demo page; and [`build`], which starts the engine
//! and everything around it from the [`Settings`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::StreamExt;
use rand::distr::{Alphanumeric, SampleString};
use serde::Deserialize;
use sfu::{Sfu, SfuConfig};
use tower_http::services::{ServeDir, ServeFile};
use tracing::{info, warn};

use crate::auth::{Grants, TokenAuthority};
use crate::config::Settings;
use crate::drain::Drain;
use crate::error::ErrorCode;
use crate::metrics::Metrics;
use crate::rooms::{RoomPolicy, Rooms};
use crate::session::{self, SessionContext, SessionLimits};
pub use crate::state::AppState;
use crate::webhooks::{self, WebhookConfig};

/// The engine's configuration from `settings`.
pub fn engine_config(settings: &Settings) -> SfuConfig {
    SfuConfig {
        media_bind: settings.media_bind(),
        announce_ips: settings.announce_ips(),
        ice_tcp_port: settings.ice_tcp_port,
        inject_loss: settings.inject_loss / 100.0,
        media_drivers: settings.media_driver_count(),
        port_per_driver: settings.udp_port_per_driver,
        max_tracks_per_participant: settings.max_tracks_per_participant,
        consent_timeout: settings.consent_timeout,
        data: sfu::DataLimits {
            max_reliable: settings.data_max_reliable,
            max_lossy: settings.data_max_lossy,
            messages_per_sec: settings.data_messages_per_second,
            bytes_per_sec: settings.data_bytes_per_second,
            lossy_backlog: settings.data_lossy_backlog,
            reliable_backlog: settings.data_reliable_backlog,
        },
        ..SfuConfig::default()
    }
}

/// Starts the media engine and what the front end needs around it (room registry, webhooks,
/// metrics, token authority) from `settings`.
pub fn build(settings: &Settings) -> Result<AppState, String> {
    build_with(settings, engine_config(settings))
}

/// [`build`] with the engine configured as given (tests inject faults through it).
pub fn build_with(settings: &Settings, engine: SfuConfig) -> Result<AppState, String> {
    install_crypto_provider();
    let metrics = Arc::new(Metrics::new());
    let hooks = match (&settings.api_secret, settings.webhook_urls.is_empty()) {
        (Some(secret), false) => Some(webhooks::start(
            WebhookConfig {
                urls: settings.webhook_urls.clone(),
                secret: secret.clone(),
                timeout: settings.webhook_timeout,
                retries: settings.webhook_retries,
            },
            metrics.webhook_deliveries.clone(),
        )),
        _ => None,
    };
    let rooms = Rooms::new(
        RoomPolicy {
            max_rooms: settings.max_rooms,
            max_participants: settings.max_participants,
            auto_create: settings.auto_create_rooms,
            empty_timeout: settings.room_empty_timeout,
            departure_timeout: settings.room_departure_timeout,
        },
        hooks,
    );
    let (observer, mut observations) = tokio::sync::mpsc::unbounded_channel();
    let media_bind = engine.media_bind;
    let sfu = Sfu::start(SfuConfig {
        observer: Some(observer),
        ..engine
    })
    .map_err(|e| format!("cannot bind the media port {media_bind}: {e}"))?;
    let registry = rooms.clone();
    tokio::spawn(async move {
        while let Some(o) = observations.recv().await {
            registry.observe(o);
        }
    });
    let auth = match (&settings.api_key, &settings.api_secret) {
        (Some(key), Some(secret)) => TokenAuthority::new(key, secret),
        _ => {
            // Only in --dev (validation requires keys otherwise): a secret nobody else knows,
            // so that /dev/token works and no outside token verifies.
            let secret = Alphanumeric.sample_string(&mut rand::rng(), 48);
            TokenAuthority::new("dev", &secret)
        }
    };
    let ice = crate::ice::IceServers::from_settings(settings);
    let drain = Drain::default();
    let cluster = match crate::cluster::ClusterConfig::from_settings(settings, &sfu.media_addrs()) {
        Some(config) => Some(crate::cluster::Cluster::start(
            config,
            rooms.clone(),
            drain.clone(),
            metrics.clone(),
        )?),
        None => None,
    };
    let recordings = crate::recordings::Recordings::new(
        settings.recordings_dir.clone(),
        sfu.clone(),
        rooms.clone(),
    );
    Ok(AppState {
        session: SessionContext {
            sfu,
            ice,
            rooms,
            auth,
            dev: settings.dev,
            limits: SessionLimits {
                max_message_bytes: settings.max_message_bytes,
                max_messages_per_second: settings.max_messages_per_second,
                join_timeout: settings.join_timeout,
            },
            drain,
            metrics,
            cluster,
        },
        dev: settings.dev,
        whip: Default::default(),
        dev_real_keys: settings.dev && settings.api_key.is_some(),
        sockets: crate::sockets::Sockets::new(
            settings.max_connections,
            settings.max_connections_per_ip,
        ),
        recordings,
    })
}

/// The router. `static_dir` holds the built demo page (`client-web/dist`).
pub fn app(state: AppState, static_dir: Option<PathBuf>) -> Router {
    let mut router = Router::new()
        .route("/ws", get(ws_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .nest(
            "/api",
            crate::admin::router().route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                crate::forward::by_room,
            )),
        )
        .merge(
            crate::whip::router().route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                crate::forward::by_room,
            )),
        );
    if state.dev {
        router = router
            .route("/debug/rooms", get(debug_rooms))
            .route("/dev/token", get(dev_token));
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

/// Ready while taking new participants: not while draining, not without a media engine.
async fn readyz(State(state): State<AppState>) -> Response {
    if state.drain().is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    match tokio::time::timeout(Duration::from_secs(2), state.sfu().driver_stats()).await {
        Ok(Ok(_)) => "ready".into_response(),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "media engine not responding",
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    match state.metrics().render(state.sfu(), state.rooms()).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(err) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("media engine unavailable: {err}"),
        )
            .into_response(),
    }
}

/// Every room, participant, track, layer and forwarding decision (with its reason), as JSON.
async fn debug_rooms(State(state): State<AppState>) -> Response {
    match state.sfu().debug().await {
        Ok(snapshot) => axum::Json(snapshot).into_response(),
        Err(err) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("media engine unavailable: {err}"),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct DevTokenQuery {
    room: String,
    name: Option<String>,
    identity: Option<String>,
}

/// `--dev` only: a participant token for the demo page (every grant but admin, 6 hours).
/// Whether `/dev/token` serves a request from `peer`: always with the throwaway dev secret; with
/// real keys (`--dev` beside `api_key`/`api_secret`, e.g. a cluster in development) only this
/// host's loopback clients, since those tokens would work on any server holding the keys.
fn dev_token_allowed(real_keys: bool, peer: Option<std::net::IpAddr>) -> bool {
    !real_keys || peer.is_some_and(|ip| ip.is_loopback())
}

async fn dev_token(
    State(state): State<AppState>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    Query(q): Query<DevTokenQuery>,
) -> Response {
    let peer = peer.map(|axum::Extension(axum::extract::ConnectInfo(a))| a.ip());
    if !dev_token_allowed(state.dev_real_keys, peer) {
        return crate::error::ApiError::new(
            ErrorCode::NotFound,
            "with real keys, /dev/token answers only this host's loopback clients",
        )
        .into_response();
    }
    let identity = q
        .identity
        .unwrap_or_else(|| format!("dev-{}", Alphanumeric.sample_string(&mut rand::rng(), 8)));
    match state.session.auth.create(
        &identity,
        q.name.as_deref(),
        Some(&q.room),
        Grants::default(),
        Duration::from_secs(6 * 3600),
    ) {
        Ok(token) => {
            axum::Json(serde_json::json!({ "token": token, "identity": identity })).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

/// Counts an open signaling WebSocket for as long as it lives.
struct Connection(Arc<Metrics>);

impl Connection {
    fn open(metrics: &Arc<Metrics>) -> Connection {
        metrics.websocket_connections.inc();
        Connection(metrics.clone())
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.0.websocket_connections.dec();
    }
}

async fn ws_handler(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    // Only a cluster's nodes relay joins to each other; elsewhere the header means nothing.
    let origin = if state.session.cluster.is_some()
        && headers.contains_key(crate::cluster::FORWARDED_HEADER)
    {
        session::Origin::Node
    } else {
        session::Origin::Client
    };
    // Another node's relayed joins are its clients': not counted against its own address.
    let ip = peer
        .map(|axum::Extension(axum::extract::ConnectInfo(addr))| addr.ip())
        .filter(|_| origin == session::Origin::Client);
    let slot = match state.sockets.open(ip) {
        Ok(slot) => slot,
        Err(full) => {
            let message = match full {
                crate::sockets::Full::Server => {
                    "this server has as many signaling connections as it takes"
                }
                crate::sockets::Full::Address => "too many signaling connections from this address",
            };
            state
                .session
                .metrics
                .signaling_error(ErrorCode::TooManyConnections);
            return crate::error::ApiError::new(ErrorCode::TooManyConnections, message)
                .into_response();
        }
    };
    // The transport accepts frames well above the protocol's limit so that an oversized message
    // gets the protocol's `message_too_large` error instead of a bare transport close.
    let limit = 16 * state.session.limits.max_message_bytes;
    upgrade
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| async move {
            let _slot = slot;
            let _open = Connection::open(state.metrics());
            let (sink, stream) = socket.split();
            session::run(state.session, origin, sink, stream).await;
        })
        .into_response()
}

/// Makes ring the process-wide rustls crypto provider (the media stack builds ring already; the
/// HTTPS server and the webhook client need a provider chosen once).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// How HTTP is served: plain, or TLS from the configured certificate.
pub type Handle = axum_server::Handle<std::net::SocketAddr>;

/// The rustls configuration from `tls_cert` and `tls_key`, if set.
pub async fn tls_config(
    settings: &Settings,
) -> Result<Option<axum_server::tls_rustls::RustlsConfig>, String> {
    load_tls(
        "tls_cert`/`tls_key",
        settings.tls_cert.as_deref(),
        settings.tls_key.as_deref(),
    )
    .await
}

/// The certificate of TURN over TLS: `turn_tls_cert`/`turn_tls_key` if set, else `http`'s
/// (the HTTPS one from [`tls_config`]).
pub async fn turn_tls_config(
    settings: &Settings,
    http: Option<&axum_server::tls_rustls::RustlsConfig>,
) -> Result<Option<std::sync::Arc<rustls::ServerConfig>>, String> {
    let own = load_tls(
        "turn_tls_cert`/`turn_tls_key",
        settings.turn_tls_cert.as_deref(),
        settings.turn_tls_key.as_deref(),
    )
    .await?;
    Ok(own.as_ref().or(http).map(|t| t.get_inner()))
}

async fn load_tls(
    keys: &str,
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
) -> Result<Option<axum_server::tls_rustls::RustlsConfig>, String> {
    let (Some(cert), Some(key)) = (cert, key) else {
        return Ok(None);
    };
    install_crypto_provider();
    axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
        .await
        .map(Some)
        .map_err(|e| {
            format!(
                "invalid configuration: `{keys}`: cannot load {} and {}: {e}",
                cert.display(),
                key.display()
            )
        })
}

/// Serves `app` on `listener` until `handle` shuts it down.
pub async fn serve(
    listener: std::net::TcpListener,
    app: Router,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    handle: Handle,
) -> std::io::Result<()> {
    // The client's address reaches the handlers (the per-address socket cap).
    let service = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    match tls {
        Some(tls) => {
            axum_server::from_tcp_rustls(listener, tls)?
                .handle(handle)
                .serve(service)
                .await
        }
        None => {
            axum_server::from_tcp(listener)?
                .handle(handle)
                .serve(service)
                .await
        }
    }
}

/// What ended a drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainEnd {
    /// Every room emptied.
    Empty,
    /// The drain timeout passed; the remaining participants were disconnected.
    Timeout,
    /// A second signal asked to stop at once.
    Forced,
}

/// Drains the server: readiness fails and joins are refused at once; the rooms in progress go
/// on until they empty, `timeout` passes, or `force` resolves (a second signal); then every
/// session is closed (`server_shutdown`) and, after a moment for the goodbyes to go out, HTTP
/// stops.
pub async fn drain(
    state: &AppState,
    handle: &Handle,
    timeout: Duration,
    force: impl std::future::Future<Output = ()>,
) -> DrainEnd {
    state.drain().start();
    state.metrics().draining.set(1);
    let (_, participants) = state.rooms().counts();
    info!(participants, timeout = ?timeout, "draining: no new participants; waiting for rooms to empty");
    let deadline = tokio::time::Instant::now() + timeout;
    tokio::pin!(force);
    let end = loop {
        let (_, participants) = state.rooms().counts();
        if participants == 0 {
            break DrainEnd::Empty;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break DrainEnd::Timeout,
            _ = &mut force => break DrainEnd::Forced,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    };
    match end {
        DrainEnd::Empty => info!("every room is empty; stopping"),
        DrainEnd::Timeout => {
            warn!("drain timeout passed; disconnecting the remaining participants")
        }
        DrainEnd::Forced => warn!("second signal; stopping now"),
    }
    // A cluster's node leaves the directory first: the participants it is about to disconnect
    // rejoin through the other nodes, which place their rooms again.
    if let Some(cluster) = &state.session.cluster {
        cluster.leave().await;
    }
    state.drain().close_all();
    // Let the sessions send their goodbyes and the engine close the peer connections.
    let wait = if end == DrainEnd::Forced { 0 } else { 20 };
    for _ in 0..wait {
        if state.rooms().counts().1 == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    handle.graceful_shutdown(Some(Duration::from_secs(1)));
    end
}

#[cfg(test)]
mod tests {
    use super::dev_token_allowed;

    #[test]
    fn dev_tokens_signed_with_real_keys_go_to_loopback_clients_only() {
        let outside = Some("192.0.2.7".parse().unwrap());
        for local in ["127.0.0.1", "::1"] {
            assert!(dev_token_allowed(true, Some(local.parse().unwrap())));
        }
        assert!(!dev_token_allowed(true, outside));
        assert!(!dev_token_allowed(true, None));
        // The throwaway dev secret signs tokens no other server accepts: anyone may have one.
        assert!(dev_token_allowed(false, outside));
    }
}
