//! Multi-node mode: a join that reached a node other than its room's is proxied there, so that
//! clients need only the cluster's one URL (a Kubernetes Service, a load balancer). The WebSocket
//! is relayed frame by frame to the room's node (`/ws`, marked with
//! [`FORWARDED_HEADER`](crate::cluster::FORWARDED_HEADER)); only signaling takes the extra hop,
//! media goes straight to the room's node at the addresses it announces.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as Up;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::{debug, info};

use crate::cluster::{Cluster, NodeInfo, Route, RouteError, FORWARDED_HEADER, NODE_TTL};
use crate::protocol::{ErrorCode, ServerMessage};

/// The WebSocket to the room's node.
pub type Upstream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long connecting to another node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Opens the WebSocket to `node` for a join proxied from node `me`.
async fn connect(node: &NodeInfo, me: &str) -> Result<Upstream, String> {
    let url = format!("{}/ws", node.url.replacen("http", "ws", 1));
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("{url}: {e}"))?;
    let value = me
        .parse()
        .map_err(|e| format!("node id {me:?} as a header: {e}"))?;
    request.headers_mut().insert(FORWARDED_HEADER, value);
    match tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(request)).await {
        Ok(Ok((socket, _))) => Ok(socket),
        Ok(Err(e)) => Err(format!("{url}: {e}")),
        Err(_) => Err(format!("{url}: no answer within {CONNECT_TIMEOUT:?}")),
    }
}

/// Where a join for `room` goes: `None` here, or the open WebSocket to the room's node. A node
/// that does not answer is waited for until it leaves the directory (it died: its entry
/// expires), and then the room is placed again.
pub async fn open(
    cluster: &Cluster,
    room: &str,
    forwarded: bool,
) -> Result<Option<Upstream>, RouteError> {
    let deadline = Instant::now() + NODE_TTL + Duration::from_secs(2);
    loop {
        let node = match cluster.route(room, forwarded).await? {
            Route::Local => return Ok(None),
            Route::Remote(node) => node,
        };
        match connect(&node, cluster.node_id()).await {
            Ok(socket) => {
                debug!(room, node = %node.id, "join proxied to the room's node");
                return Ok(Some(socket));
            }
            Err(e) if Instant::now() < deadline => {
                info!(room, node = %node.id, %e, "the room's node does not answer; waiting for it to leave the directory");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(RouteError::Directory(format!("node {}: {e}", node.id))),
        }
    }
}

/// How often the proxy pings the client, and how long a silent client lives (as the session's
/// own liveness check: the room's node only sees this proxy, which answers its pings).
const PING_INTERVAL: Duration = Duration::from_secs(1);
const SILENCE_TIMEOUT: Duration = Duration::from_secs(4);

/// Relays the client's socket (`sink`, `stream`) and `upstream` both ways, starting with the
/// client's `first` message (its join), until either side ends. If the room's node goes away,
/// the client is told `node_lost` and the socket closes (1012): its client joins again.
pub async fn relay<S, R, E>(upstream: Upstream, first: Utf8Bytes, mut sink: S, mut stream: R)
where
    S: Sink<Message> + Unpin,
    R: Stream<Item = Result<Message, E>> + Unpin,
    E: std::fmt::Display,
{
    let (mut up_tx, mut up_rx) = upstream.split();
    if up_tx.send(Up::text(first.as_str())).await.is_err() {
        return node_lost(&mut sink).await;
    }
    let mut last_heard = Instant::now();
    let mut ping = tokio::time::interval(PING_INTERVAL);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = stream.next() => {
                last_heard = Instant::now();
                let sent = match msg {
                    Some(Ok(Message::Text(t))) => up_tx.send(Up::text(t.as_str())).await,
                    Some(Ok(Message::Binary(b))) => up_tx.send(Up::Binary(b)).await,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(()),
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                        let _ = up_tx.send(Up::Close(None)).await;
                        return;
                    }
                };
                if sent.is_err() {
                    return node_lost(&mut sink).await;
                }
            }
            msg = up_rx.next() => match msg {
                Some(Ok(Up::Text(t))) => {
                    if sink.send(Message::Text(t.as_str().into())).await.is_err() {
                        let _ = up_tx.send(Up::Close(None)).await;
                        return;
                    }
                }
                Some(Ok(Up::Binary(b))) => {
                    let _ = sink.send(Message::Binary(b)).await;
                }
                Some(Ok(Up::Close(frame))) => {
                    let frame = frame.map(|f| CloseFrame {
                        code: u16::from(f.code),
                        reason: f.reason.as_str().into(),
                    });
                    let _ = sink.send(Message::Close(frame)).await;
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return node_lost(&mut sink).await,
            },
            _ = ping.tick() => {
                if last_heard.elapsed() > SILENCE_TIMEOUT {
                    info!("no sign of life from the proxied client; closing");
                    let _ = up_tx.send(Up::Close(None)).await;
                    let _ = sink.send(Message::Close(Some(CloseFrame {
                        code: 1001,
                        reason: Utf8Bytes::from_static("timeout"),
                    }))).await;
                    return;
                }
                let _ = sink.send(Message::Ping(Default::default())).await;
            }
        }
    }
}

/// The room's node went away under a proxied session.
async fn node_lost<S: Sink<Message> + Unpin>(sink: &mut S) {
    info!("the room's node closed the proxied session abruptly; telling the client to rejoin");
    let msg = ServerMessage::Error {
        code: ErrorCode::NodeLost,
        message: "the server holding this room stopped; join again".into(),
    };
    if let Ok(text) = serde_json::to_string(&msg) {
        let _ = sink.send(Message::Text(text.into())).await;
    }
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code: u16::from(CloseCode::Restart),
            reason: Utf8Bytes::from_static("node lost"),
        })))
        .await;
}

/// The largest request body proxied to another node (WHIP offers, admin requests).
const MAX_FORWARD_BODY: usize = 1 << 20;

/// Hop-by-hop headers (RFC 9110 7.6.1), not passed on by a proxy.
fn hop_by_hop(name: &axum::http::HeaderName) -> bool {
    use axum::http::header;
    [
        header::CONNECTION,
        header::HOST,
        header::TRANSFER_ENCODING,
        header::CONTENT_LENGTH,
        header::UPGRADE,
        header::TE,
        header::TRAILER,
        header::PROXY_AUTHORIZATION,
    ]
    .contains(name)
        || name.as_str() == "keep-alive"
}

/// A JSON error as the admin API gives them (WHIP/WHEP clients read the status).
fn unavailable(code: &str, message: String) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        [(axum::http::header::RETRY_AFTER, "2")],
        axum::Json(serde_json::json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
}

/// Sends `parts` + `body` to the same path on `node` and returns its answer.
pub async fn forward(
    cluster: &Cluster,
    node: &NodeInfo,
    parts: &axum::http::request::Parts,
    body: axum::body::Bytes,
) -> axum::response::Response {
    let path = parts
        .extensions
        .get::<axum::extract::OriginalUri>()
        .map_or(&parts.uri, |o| &o.0)
        .path_and_query()
        .map_or("/", |p| p.as_str());
    let url = format!("{}{path}", node.url);
    let mut request = cluster.http().request(parts.method.clone(), &url);
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) {
            request = request.header(name, value);
        }
    }
    let response = request
        .header(FORWARDED_HEADER, cluster.node_id())
        .body(body)
        .send()
        .await;
    let response = match response {
        Ok(r) => r,
        Err(e) => {
            info!(%url, %e, "the room's node does not answer a proxied request");
            return unavailable(
                "node_unreachable",
                format!("the node holding this room ({}) does not answer", node.id),
            );
        }
    };
    let mut out = axum::response::Response::builder().status(response.status());
    for (name, value) in response.headers() {
        if !hop_by_hop(name) {
            out = out.header(name, value);
        }
    }
    let bytes = response.bytes().await.unwrap_or_default();
    out.body(axum::body::Body::from(bytes))
        .unwrap_or_else(|_| unavailable("internal_error", "bad proxied response".into()))
}

/// Multi-node: a request about a room (`{room}` in its path: the admin API, WHIP, WHEP) that
/// reaches a node other than the room's is proxied there; `POST /whip/{room}` (a publisher
/// joining) and `POST /api/rooms` (create) place a room that is nowhere yet, as a join does.
/// Requests marked as proxied, and everything on a single node, are served here.
pub async fn by_room(
    axum::extract::State(state): axum::extract::State<crate::server::AppState>,
    params: Option<axum::extract::Path<std::collections::HashMap<String, String>>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::Method;
    let Some(cluster) = state.session.cluster.clone() else {
        return next.run(request).await;
    };
    if request.headers().contains_key(FORWARDED_HEADER) || request.method() == Method::OPTIONS {
        return next.run(request).await;
    }
    let room = params.and_then(|p| p.0.get("room").cloned());
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, MAX_FORWARD_BODY).await {
        Ok(b) => b,
        Err(_) => {
            use axum::response::IntoResponse;
            return (
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large",
            )
                .into_response();
        }
    };
    let path = parts
        .extensions
        .get::<axum::extract::OriginalUri>()
        .map_or(parts.uri.path(), |o| o.0.path())
        .to_owned();
    let (room, place) = match room {
        Some(room) => {
            let place = parts.method == Method::POST && path.starts_with("/whip/");
            (room, place)
        }
        // POST /api/rooms names its room in the body; GET /api/rooms lists every node's rooms
        // itself.
        None if parts.method == Method::POST => {
            match serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("name")?.as_str().map(str::to_owned))
            {
                Some(name) => (name, true),
                None => {
                    return next
                        .run(axum::extract::Request::from_parts(parts, body.into()))
                        .await
                }
            }
        }
        None => {
            return next
                .run(axum::extract::Request::from_parts(parts, body.into()))
                .await
        }
    };
    // Only a request that may create the room places it (the local handler answers the others
    // with their precise error).
    let place = place && may_create(&state, &parts, &path, &room);
    let route = if place {
        cluster.route(&room, false).await.map(Some)
    } else {
        cluster.locate(&room).await
    };
    match route {
        Ok(Some(Route::Remote(node))) => forward(&cluster, &node, &parts, body).await,
        Ok(_) => {
            next.run(axum::extract::Request::from_parts(parts, body.into()))
                .await
        }
        Err(e) => unavailable("cluster_unavailable", e.to_string()),
    }
}

/// Whether the request's token lets it create `room`: a WHIP publisher's join token (none
/// needed in `--dev`), an admin token for `POST /api/rooms`.
fn may_create(
    state: &crate::server::AppState,
    parts: &axum::http::request::Parts,
    path: &str,
    room: &str,
) -> bool {
    let token = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim());
    let auth = &state.session.auth;
    if path.starts_with("/whip/") {
        (token.is_none() && state.dev) || auth.verify_join(token, room).is_ok()
    } else {
        auth.verify_admin(token, Some(room)).is_ok()
    }
}

/// Multi-node: every other live node's rooms (`GET /api/rooms` there, with the caller's
/// credentials), each tagged with its node; and the nodes that did not answer.
pub async fn remote_rooms(
    cluster: &Cluster,
    authorization: Option<&axum::http::HeaderValue>,
) -> Result<(Vec<serde_json::Value>, Vec<String>), RouteError> {
    let nodes = cluster.nodes().await?;
    let requests = nodes
        .into_iter()
        .filter(|n| n.id != cluster.node_id())
        .map(|node| async move {
            let mut request = cluster
                .http()
                .get(format!("{}/api/rooms", node.url))
                .header(FORWARDED_HEADER, cluster.node_id());
            if let Some(auth) = authorization {
                request = request.header(axum::http::header::AUTHORIZATION, auth);
            }
            let listed = async {
                let response = request.send().await.ok()?;
                if !response.status().is_success() {
                    return None;
                }
                let body: serde_json::Value =
                    serde_json::from_slice(&response.bytes().await.ok()?).ok()?;
                body.get("rooms")?.as_array().cloned()
            }
            .await;
            (node.id, listed)
        });
    let mut rooms = Vec::new();
    let mut unreachable = Vec::new();
    for (id, listed) in futures_util::future::join_all(requests).await {
        match listed {
            Some(list) => rooms.extend(list.into_iter().map(|mut room| {
                if let Some(obj) = room.as_object_mut() {
                    obj.entry("node").or_insert_with(|| id.clone().into());
                }
                room
            })),
            None => unreachable.push(id),
        }
    }
    Ok((rooms, unreachable))
}
