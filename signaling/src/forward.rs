//! Multi-node mode: an HTTP request about a room (the admin API, WHIP, WHEP) that reached a node
//! other than its room's is forwarded there, marked with
//! [`FORWARDED_HEADER`](crate::cluster::FORWARDED_HEADER), and its answer passed back; a node
//! that does not answer is a `503`. The WebSocket counterpart, a relayed join, is `proxy`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use tracing::info;

use crate::cluster::{Cluster, NodeInfo, Route, RouteError, FORWARDED_HEADER};
use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;

/// The largest request body proxied to another node (WHIP offers, admin requests).
const MAX_FORWARD_BODY: usize = 1 << 20;

/// Hop-by-hop headers (RFC 9110 7.6.1), not passed on by a proxy.
fn hop_by_hop(name: &axum::http::HeaderName) -> bool {
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

/// A JSON error as the admin API gives them, 503 whatever the code (WHIP/WHEP clients read the
/// status), with `Retry-After`.
fn unavailable(code: ErrorCode, message: String) -> axum::response::Response {
    let mut response =
        ApiError::with_status(StatusCode::SERVICE_UNAVAILABLE, code, message).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
    response
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
                ErrorCode::NodeUnreachable,
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
        .unwrap_or_else(|_| unavailable(ErrorCode::InternalError, "bad proxied response".into()))
}

/// Multi-node: a request about a room (`{room}` in its path: the admin API, WHIP, WHEP) that
/// reaches a node other than the room's is proxied there; `POST /whip/{room}` (a publisher
/// joining) and `POST /api/rooms` (create) place a room that is nowhere yet, as a join does.
/// Requests marked as proxied, and everything on a single node, are served here.
pub async fn by_room(
    axum::extract::State(state): axum::extract::State<AppState>,
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
            return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response();
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
        Err(e) => unavailable(ErrorCode::ClusterUnavailable, e.to_string()),
    }
}

/// Whether the request's token lets it create `room`: a WHIP publisher's join token (none
/// needed in `--dev`), an admin token for `POST /api/rooms`.
fn may_create(
    state: &AppState,
    parts: &axum::http::request::Parts,
    path: &str,
    room: &str,
) -> bool {
    let token = parts
        .headers
        .get(header::AUTHORIZATION)
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
                request = request.header(header::AUTHORIZATION, auth);
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
