//! Signaling backends: how a simulated connection exchanges SDP with the server under test.
//!
//! A connection ([`crate::client`]) only knows [`SigIn`] and [`SigOut`]; a backend task turns them
//! into the server's protocol. [`fanout`] speaks Fanout's WebSocket protocol (docs/protocol.md).

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

/// What a backend tells its connection.
#[derive(Debug)]
pub enum SigIn {
    /// The participant is in the room: a publisher may offer now.
    Joined,
    /// The server offers (new tracks to receive); the connection answers.
    Offer(String),
    /// The server answers the connection's offer.
    Answer(String),
    /// Dynacast: which of the encodings on transceiver `mid` anyone receives.
    Layers {
        mid: String,
        active: Vec<String>,
        paused: Vec<String>,
    },
    /// The server reported an error; counted, the connection goes on.
    Error(String),
    /// Signaling is gone; the connection ends.
    Closed(String),
}

/// What a connection asks its backend to send.
#[derive(Debug)]
pub enum SigOut {
    Offer(String),
    Answer(String),
}

/// Options of the Fanout backend.
#[derive(Debug, Clone)]
pub struct FanoutJoin {
    /// `ws://host:port/ws`.
    pub ws_url: String,
    pub room: String,
    pub name: String,
    /// Sent as `track_settings` `max_quality` for every video track received, if set.
    pub max_quality: Option<String>,
    pub token: Option<String>,
}

/// `ws://host:port` (or with a path) → the signaling endpoint `ws://host:port/ws`.
pub fn ws_endpoint(url: &str) -> String {
    let trimmed = url.trim_end_matches('/');
    let after_scheme = trimmed.split_once("://").map_or(trimmed, |(_, rest)| rest);
    if after_scheme.contains('/') {
        trimmed.to_owned()
    } else {
        format!("{trimmed}/ws")
    }
}

/// Runs one participant's Fanout WebSocket session until `stop` or until the socket closes.
pub async fn fanout(
    join: FanoutJoin,
    to_conn: mpsc::UnboundedSender<SigIn>,
    mut from_conn: mpsc::UnboundedReceiver<SigOut>,
    mut stop: watch::Receiver<bool>,
) {
    tracing::debug!(name = %join.name, "websocket connecting");
    let (mut ws, _) = match tokio_tungstenite::connect_async(join.ws_url.as_str()).await {
        Ok(ok) => ok,
        Err(err) => {
            let _ = to_conn.send(SigIn::Closed(format!("websocket connect: {err}")));
            return;
        }
    };
    let mut msg = json!({"type": "join", "v": 1, "room": join.room, "name": join.name});
    if let Some(token) = &join.token {
        msg["token"] = json!(token);
    }
    tracing::debug!(name = %join.name, "websocket open");
    if ws.send(Message::text(msg.to_string())).await.is_err() {
        let _ = to_conn.send(SigIn::Closed("websocket send failed".into()));
        return;
    }
    let settings = |track: &Value| -> Option<String> {
        let q = join.max_quality.as_ref()?;
        (track["kind"] == "video").then(|| {
            json!({"type": "track_settings", "track_id": track["id"], "max_quality": q}).to_string()
        })
    };
    loop {
        let out = tokio::select! {
            _ = stop.changed() => {
                let _ = ws.send(Message::text(json!({"type": "leave"}).to_string())).await;
                let _ = ws.close(None).await;
                return;
            }
            out = from_conn.recv() => match out {
                Some(SigOut::Offer(sdp)) => vec![json!({"type": "offer", "sdp": sdp}).to_string()],
                Some(SigOut::Answer(sdp)) => vec![json!({"type": "answer", "sdp": sdp}).to_string()],
                None => {
                    let _ = ws.close(None).await;
                    return;
                }
            },
            frame = ws.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(c))) => {
                        let _ = to_conn.send(SigIn::Closed(format!("server closed the socket: {c:?}")));
                        return;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(err)) => {
                        let _ = to_conn.send(SigIn::Closed(format!("websocket: {err}")));
                        return;
                    }
                    None => {
                        let _ = to_conn.send(SigIn::Closed("websocket ended".into()));
                        return;
                    }
                };
                let Ok(m) = serde_json::from_str::<Value>(&text) else {
                    let _ = to_conn.send(SigIn::Error(format!("bad json from server: {text}")));
                    continue;
                };
                let mut replies = Vec::new();
                let sdp = || m["sdp"].as_str().unwrap_or_default().to_owned();
                let sent = match m["type"].as_str().unwrap_or_default() {
                    "joined" => {
                        tracing::debug!(name = %join.name, "joined");
                        for p in m["participants"].as_array().into_iter().flatten() {
                            for t in p["tracks"].as_array().into_iter().flatten() {
                                replies.extend(settings(t));
                            }
                        }
                        to_conn.send(SigIn::Joined)
                    }
                    "track_published" => {
                        replies.extend(settings(&m["track"]));
                        Ok(())
                    }
                    "offer" => to_conn.send(SigIn::Offer(sdp())),
                    "answer" => to_conn.send(SigIn::Answer(sdp())),
                    "publisher_layers" => {
                        let rids = |k: &str| -> Vec<String> {
                            m[k].as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(|r| r.as_str().map(str::to_owned))
                                .collect()
                        };
                        to_conn.send(SigIn::Layers {
                            mid: m["mid"].as_str().unwrap_or_default().to_owned(),
                            active: rids("active"),
                            paused: rids("paused"),
                        })
                    }
                    "error" => to_conn.send(SigIn::Error(format!(
                        "{}: {}",
                        m["code"].as_str().unwrap_or("?"),
                        m["message"].as_str().unwrap_or("")
                    ))),
                    _ => Ok(()),
                };
                if sent.is_err() {
                    let _ = ws.close(None).await;
                    return;
                }
                replies
            }
        };
        for text in out {
            if ws.send(Message::text(text)).await.is_err() {
                let _ = to_conn.send(SigIn::Closed("websocket send failed".into()));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ws_endpoint;

    #[test]
    fn the_signaling_path_is_added_only_when_missing() {
        assert_eq!(ws_endpoint("ws://127.0.0.1:7880"), "ws://127.0.0.1:7880/ws");
        assert_eq!(
            ws_endpoint("ws://127.0.0.1:7880/"),
            "ws://127.0.0.1:7880/ws"
        );
        assert_eq!(ws_endpoint("ws://h:1/ws"), "ws://h:1/ws");
    }
}
