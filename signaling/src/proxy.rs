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
