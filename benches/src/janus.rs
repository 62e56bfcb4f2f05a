//! Signaling backends for Janus' VideoRoom plugin (Janus 1.x, WebSocket transport), so the same
//! scenarios run against Janus (benches/janus/start.sh starts one).
//!
//! Janus publishes and subscribes on separate peer connections, so there are two backends with
//! the shape of [`crate::signal::fanout`]:
//! - [`publisher`] creates the room if needed, joins it as a publisher with a fixed feed id, sends
//!   [`SigIn::Joined`] so the connection offers, and publishes that offer; Janus' answer comes
//!   back as [`SigIn::Answer`].
//! - [`subscriber`] waits until every feed it should receive is publishing (`listparticipants`),
//!   joins as a subscriber to all of them at once (the multistream `streams` list, each video at
//!   the simulcast substream asked for), delivers Janus' offer as [`SigIn::Offer`] and starts the
//!   subscription with the connection's answer.
//!
//! Each backend has its own WebSocket and Janus session, kept alive every
//! [`KEEPALIVE`]. Janus' errors become [`SigIn::Error`]; a hangup of the peer connection, the end
//! of the session or of the socket become [`SigIn::Closed`].

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::signal::{SigIn, SigOut};

/// Janus ends a session after 60 s without a request on it.
pub const KEEPALIVE: Duration = Duration::from_secs(20);
/// How often a subscriber asks whether its feeds publish yet.
const FEED_POLL: Duration = Duration::from_millis(250);
/// VideoRoom's "room already exists" error.
const ERROR_ROOM_EXISTS: i64 = 427;
/// VideoRoom's "no such room" error (a subscriber may ask before the first publisher created it).
const ERROR_NO_SUCH_ROOM: i64 = 426;

/// Where and as whom one backend joins.
#[derive(Debug, Clone)]
pub struct JanusJoin {
    /// The WebSocket transport, `ws://HOST:PORT`.
    pub ws_url: String,
    /// Numeric VideoRoom id.
    pub room: u64,
    pub display: String,
}

/// A publisher: its feed id, and how many publishers the room it creates must admit.
#[derive(Debug, Clone)]
pub struct PublisherJoin {
    pub join: JanusJoin,
    pub feed: u64,
    pub room_publishers: usize,
}

/// A subscriber: the feeds it receives and the simulcast substream it asks for.
#[derive(Debug, Clone)]
pub struct SubscriberJoin {
    pub join: JanusJoin,
    pub feeds: Vec<u64>,
    pub substream: u8,
}

/// The simulcast substream for a `max_quality` setting: `low` 0, `medium` 1, otherwise the top.
pub fn substream_for(max_quality: Option<&str>) -> u8 {
    match max_quality {
        Some("low") => 0,
        Some("medium") => 1,
        _ => 2,
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One WebSocket with one Janus session and one VideoRoom handle.
struct Session {
    ws: Ws,
    session_id: u64,
    handle_id: u64,
    next_transaction: u64,
}

impl Session {
    async fn open(url: &str, name: &str) -> Result<Self, String> {
        let mut request = url
            .into_client_request()
            .map_err(|e| format!("websocket url {url}: {e}"))?;
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static("janus-protocol"),
        );
        let (ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .map_err(|e| format!("websocket connect: {e}"))?;
        let mut s = Self {
            ws,
            session_id: 0,
            handle_id: 0,
            next_transaction: 0,
        };
        let created = s.call(json!({"janus": "create"})).await?;
        s.session_id = id_of(&created)?;
        let attached = s
            .call(json!({"janus": "attach", "plugin": "janus.plugin.videoroom", "opaque_id": name}))
            .await?;
        s.handle_id = id_of(&attached)?;
        Ok(s)
    }

    /// Sends a Janus request with a new transaction (and the session and handle, once known).
    async fn send(&mut self, mut msg: Value) -> Result<String, String> {
        self.next_transaction += 1;
        let transaction = format!("t{}", self.next_transaction);
        msg["transaction"] = json!(transaction);
        if self.session_id != 0 {
            msg["session_id"] = json!(self.session_id);
        }
        if self.handle_id != 0 && msg["janus"] == "message" {
            msg["handle_id"] = json!(self.handle_id);
        }
        tracing::debug!(session = self.session_id, "to janus: {msg}");
        self.ws
            .send(Message::text(msg.to_string()))
            .await
            .map_err(|e| format!("websocket send: {e}"))?;
        Ok(transaction)
    }

    /// The next JSON message from Janus.
    async fn recv(&mut self) -> Result<Value, String> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    tracing::debug!(session = self.session_id, "from janus: {t}");
                    return serde_json::from_str(&t).map_err(|e| format!("bad json {t}: {e}"));
                }
                Some(Ok(Message::Close(c))) => {
                    return Err(format!("janus closed the socket: {c:?}"))
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("websocket: {e}")),
                None => return Err("websocket ended".into()),
            }
        }
    }

    /// Sends a request and waits for its outcome: Janus' `success`, or for an asynchronous
    /// plugin request the `event` after the `ack`. Janus' `error` is an error.
    async fn call(&mut self, msg: Value) -> Result<Value, String> {
        let transaction = self.send(msg).await?;
        loop {
            let m = self.recv().await?;
            if m["transaction"] != transaction.as_str() {
                continue;
            }
            match m["janus"].as_str().unwrap_or_default() {
                "ack" => continue,
                "error" => return Err(janus_error(&m)),
                _ => return Ok(m),
            }
        }
    }

    /// A VideoRoom request; the plugin's answer (`plugindata.data`) and the JSEP, if any.
    async fn request(
        &mut self,
        body: Value,
        jsep: Option<Value>,
    ) -> Result<(Value, Option<Value>), String> {
        let mut msg = json!({"janus": "message", "body": body});
        if let Some(jsep) = jsep {
            msg["jsep"] = jsep;
        }
        let m = self.call(msg).await?;
        let data = m["plugindata"]["data"].clone();
        let jsep = m.get("jsep").cloned();
        Ok((data, jsep))
    }

    /// Destroys the session (waiting a moment for Janus to confirm, so it does not see the
    /// socket close first) and closes the socket.
    async fn close(mut self) {
        let destroy = self.call(json!({"janus": "destroy"}));
        let _ = tokio::time::timeout(Duration::from_secs(1), destroy).await;
        let _ = self.ws.close(None).await;
    }
}

fn id_of(m: &Value) -> Result<u64, String> {
    m["data"]["id"]
        .as_u64()
        .ok_or_else(|| format!("no id in {m}"))
}

fn janus_error(m: &Value) -> String {
    format!(
        "janus error {}: {}",
        m["error"]["code"],
        m["error"]["reason"].as_str().unwrap_or("")
    )
}

/// A VideoRoom error in a plugin answer, if it is one.
fn plugin_error(data: &Value) -> Option<(i64, String)> {
    let code = data["error_code"].as_i64()?;
    Some((code, data["error"].as_str().unwrap_or("").to_owned()))
}

fn check(data: Value) -> Result<Value, String> {
    match plugin_error(&data) {
        Some((code, why)) => Err(format!("videoroom error {code}: {why}")),
        None => Ok(data),
    }
}

/// Runs `setup` unless the run stops first; `None` when it stopped or failed (the connection
/// was told).
async fn set_up<T>(
    setup: impl std::future::Future<Output = Result<T, String>>,
    to_conn: &mpsc::UnboundedSender<SigIn>,
    stop: &mut watch::Receiver<bool>,
) -> Option<T> {
    tokio::select! {
        r = setup => match r {
            Ok(t) => Some(t),
            Err(e) => {
                let _ = to_conn.send(SigIn::Closed(e));
                None
            }
        },
        _ = stop.changed() => None,
    }
}

/// Runs one publishing connection's Janus session until `stop` or until it ends.
pub async fn publisher(
    p: PublisherJoin,
    to_conn: mpsc::UnboundedSender<SigIn>,
    from_conn: mpsc::UnboundedReceiver<SigOut>,
    mut stop: watch::Receiver<bool>,
) {
    let setup = async {
        let mut s = Session::open(&p.join.ws_url, &p.join.display).await?;
        // The room's first publisher creates it, sized for the scenario.
        let (exists, _) = s
            .request(json!({"request": "exists", "room": p.join.room}), None)
            .await?;
        if exists["exists"] != true {
            let (created, _) = s
                .request(
                    json!({
                        "request": "create",
                        "room": p.join.room,
                        "description": "fanout-loadtest",
                        "publishers": p.room_publishers,
                        "audiocodec": "opus",
                        "videocodec": "vp8",
                        "is_private": true,
                    }),
                    None,
                )
                .await?;
            match plugin_error(&created) {
                None | Some((ERROR_ROOM_EXISTS, _)) => {} // or another publisher was first
                Some((code, why)) => {
                    return Err(format!("creating room {}: {code} {why}", p.join.room))
                }
            }
        }
        let (joined, _) = s
            .request(
                json!({
                    "request": "join",
                    "ptype": "publisher",
                    "room": p.join.room,
                    "id": p.feed,
                    "display": p.join.display,
                }),
                None,
            )
            .await?;
        check(joined).map_err(|e| format!("joining room {}: {e}", p.join.room))?;
        Ok(s)
    };
    let Some(s) = set_up(setup, &to_conn, &mut stop).await else {
        return;
    };
    if to_conn.send(SigIn::Joined).is_err() {
        s.close().await;
        return;
    }
    event_loop(s, Role::Publisher, to_conn, from_conn, stop).await;
}

/// Runs one receiving connection's Janus session until `stop` or until it ends.
pub async fn subscriber(
    sub: SubscriberJoin,
    to_conn: mpsc::UnboundedSender<SigIn>,
    from_conn: mpsc::UnboundedReceiver<SigOut>,
    mut stop: watch::Receiver<bool>,
) {
    let setup = async {
        let mut s = Session::open(&sub.join.ws_url, &sub.join.display).await?;
        // Janus only subscribes to feeds whose peer connection is up: wait for all of them.
        loop {
            let (data, _) = s
                .request(
                    json!({"request": "listparticipants", "room": sub.join.room}),
                    None,
                )
                .await?;
            match plugin_error(&data) {
                None => {
                    let publishing: Vec<u64> = data["participants"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|p| p["publisher"] == true)
                        .filter_map(|p| p["id"].as_u64())
                        .collect();
                    if sub.feeds.iter().all(|f| publishing.contains(f)) {
                        break;
                    }
                }
                Some((ERROR_NO_SUCH_ROOM, _)) => {}
                Some((code, why)) => return Err(format!("listparticipants: {code} {why}")),
            }
            tokio::time::sleep(FEED_POLL).await;
        }
        let streams: Vec<Value> = sub
            .feeds
            .iter()
            .map(|f| json!({"feed": f, "substream": sub.substream}))
            .collect();
        let (attached, jsep) = s
            .request(
                json!({
                    "request": "join",
                    "ptype": "subscriber",
                    "room": sub.join.room,
                    "streams": streams,
                }),
                None,
            )
            .await?;
        check(attached).map_err(|e| format!("subscribing in room {}: {e}", sub.join.room))?;
        let offer = jsep
            .and_then(|j| j["sdp"].as_str().map(str::to_owned))
            .ok_or("no offer in the subscription")?;
        Ok((s, offer))
    };
    let Some((s, offer)) = set_up(setup, &to_conn, &mut stop).await else {
        return;
    };
    if to_conn.send(SigIn::Offer(offer)).is_err() {
        s.close().await;
        return;
    }
    event_loop(s, Role::Subscriber, to_conn, from_conn, stop).await;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Publisher,
    Subscriber,
}

/// After the setup: forwards the connection's SDP to Janus and Janus' events to the connection,
/// and keeps the session alive.
async fn event_loop(
    mut s: Session,
    role: Role,
    to_conn: mpsc::UnboundedSender<SigIn>,
    mut from_conn: mpsc::UnboundedReceiver<SigOut>,
    mut stop: watch::Receiver<bool>,
) {
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.tick().await;
    loop {
        let sent = tokio::select! {
            _ = stop.changed() => {
                s.close().await;
                return;
            }
            _ = keepalive.tick() => s.send(json!({"janus": "keepalive"})).await.map(drop),
            out = from_conn.recv() => match (out, role) {
                (Some(SigOut::Offer(sdp)), Role::Publisher) => {
                    // rid_order: the connection lists its rids from the lowest layer (q, h, f);
                    // Janus assumes the highest first unless told. trickle: the offer carries
                    // every candidate.
                    let jsep = json!({
                        "type": "offer",
                        "sdp": rtp_candidates_only(&sdp),
                        "rid_order": "lmh",
                        "trickle": false,
                    });
                    let body = json!({"request": "publish"});
                    s.send(json!({"janus": "message", "body": body, "jsep": jsep}))
                        .await
                        .map(drop)
                }
                (Some(SigOut::Answer(sdp)), Role::Subscriber) => {
                    let jsep = json!({
                        "type": "answer",
                        "sdp": rtp_candidates_only(&sdp),
                        "trickle": false,
                    });
                    let body = json!({"request": "start"});
                    s.send(json!({"janus": "message", "body": body, "jsep": jsep}))
                        .await
                        .map(drop)
                }
                (Some(other), _) => {
                    let what = match other {
                        SigOut::Offer(_) => "an offer",
                        SigOut::Answer(_) => "an answer",
                    };
                    let why = format!("a Janus {role:?} connection cannot send {what}");
                    let _ = to_conn.send(SigIn::Error(why));
                    Ok(())
                }
                (None, _) => {
                    s.close().await;
                    return;
                }
            },
            m = s.recv() => match m {
                Ok(m) => match on_janus_message(&m) {
                    Some(SigIn::Closed(why)) => {
                        let _ = to_conn.send(SigIn::Closed(why));
                        s.close().await;
                        return;
                    }
                    Some(to) => to_conn.send(to).map_err(|_| "connection gone".to_owned()),
                    None => Ok(()),
                },
                Err(e) => {
                    let _ = to_conn.send(SigIn::Closed(e));
                    return;
                }
            },
        };
        if let Err(e) = sent {
            let _ = to_conn.send(SigIn::Closed(e));
            let _ = s.ws.close(None).await;
            return;
        }
    }
}

/// The SDP with each RTP candidate once: rtc repeats the candidates in every (bundled) media
/// section and adds RTCP ones (component 2) although RTCP is muxed, and Janus warns on every
/// connection about the candidates its ICE agent did not add.
fn rtp_candidates_only(sdp: &str) -> String {
    let mut seen = std::collections::HashSet::new();
    sdp.split_inclusive('\n')
        .filter(|line| {
            line.strip_prefix("a=candidate:").is_none_or(|c| {
                c.split_whitespace().nth(1) == Some("1") && seen.insert(line.trim_end())
            })
        })
        .collect()
}

/// What a message from Janus means for the connection, if anything.
fn on_janus_message(m: &Value) -> Option<SigIn> {
    match m["janus"].as_str().unwrap_or_default() {
        "event" => {
            let data = &m["plugindata"]["data"];
            if let Some((code, why)) = plugin_error(data) {
                return Some(SigIn::Error(format!("videoroom error {code}: {why}")));
            }
            let sdp = || m["jsep"]["sdp"].as_str().unwrap_or_default().to_owned();
            match m["jsep"]["type"].as_str() {
                Some("answer") => Some(SigIn::Answer(sdp())),
                Some("offer") => Some(SigIn::Offer(sdp())),
                _ => None,
            }
        }
        "error" => Some(SigIn::Error(janus_error(m))),
        "hangup" => Some(SigIn::Closed(format!(
            "janus hung up the peer connection: {}",
            m["reason"].as_str().unwrap_or("")
        ))),
        "timeout" => Some(SigIn::Closed("janus session timed out".into())),
        "detached" => Some(SigIn::Closed("janus detached the handle".into())),
        // ack, success (keep-alives), webrtcup, media, slowlink, trickle: nothing to do.
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_quality_picks_the_substream() {
        assert_eq!(substream_for(Some("low")), 0);
        assert_eq!(substream_for(Some("medium")), 1);
        assert_eq!(substream_for(Some("high")), 2);
        assert_eq!(substream_for(None), 2);
    }

    #[test]
    fn each_rtp_candidate_is_sent_once() {
        let c1 = "a=candidate:1 1 udp 2130706431 10.0.0.1 5000 typ host\r\n";
        let c2 = "a=candidate:1 2 udp 2130706431 10.0.0.1 5000 typ host\r\n";
        let audio = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";
        let video = "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n";
        let sdp = format!("{audio}{c1}{c2}a=sendrecv\r\n{video}{c1}{c2}");
        assert_eq!(
            rtp_candidates_only(&sdp),
            format!("{audio}{c1}a=sendrecv\r\n{video}")
        );
    }

    #[test]
    fn janus_messages_map_to_what_the_connection_needs() {
        let event = |data: Value, jsep: Value| json!({"janus": "event", "plugindata": {"data": data}, "jsep": jsep});
        let answer = event(
            json!({"videoroom": "event", "configured": "ok"}),
            json!({"type": "answer", "sdp": "v=0"}),
        );
        assert!(matches!(on_janus_message(&answer), Some(SigIn::Answer(s)) if s == "v=0"));
        let offer = event(
            json!({"videoroom": "updated"}),
            json!({"type": "offer", "sdp": "v=1"}),
        );
        assert!(matches!(on_janus_message(&offer), Some(SigIn::Offer(s)) if s == "v=1"));
        let err = event(
            json!({"error_code": 428, "error": "No such feed"}),
            Value::Null,
        );
        assert!(matches!(on_janus_message(&err), Some(SigIn::Error(e)) if e.contains("428")));
        let hangup = json!({"janus": "hangup", "reason": "DTLS alert"});
        assert!(matches!(on_janus_message(&hangup), Some(SigIn::Closed(_))));
        assert!(on_janus_message(&json!({"janus": "webrtcup"})).is_none());
        assert!(on_janus_message(&json!({"janus": "ack"})).is_none());
    }
}
