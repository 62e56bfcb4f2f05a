//! Shared harness for end-to-end tests: the real server in-process on loopback, a JSON
//! signaling client over tokio-tungstenite, and a real webrtc-rs client peer that negotiates by
//! itself (answers the server's offers as the polite side, trickles candidates both ways).
//!
//! Every wait takes a timeout and fails with the context it was waiting for. Client peers bind
//! exactly `127.0.0.1:0` (one loopback host candidate) with mDNS off; close them at the end of a
//! test (`RtcClient::close`), since webrtc-rs leaks tasks and sockets of unclosed connections.
//!
//! Here: the server and the signaling client; `peer.rs`: the client peer; `media.rs`: synthetic
//! tracks and receive counters; `process.rs`: the server as a separate process. What the engine's
//! tests and the load tester build alike (VP8 payloads, STUN checks, the client media engine) is
//! in the `fanout-testkit` crate.

#![allow(dead_code)]

mod media;
mod peer;
pub mod process;
mod whip;

#[allow(unused_imports)] // each test binary uses some of them
pub use media::*;
pub use peer::*;
#[allow(unused_imports)]
pub use whip::*;

use std::collections::VecDeque;
use std::time::Duration;

use fanout_signaling::config::Settings;
use fanout_signaling::server::{self, AppState};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sfu::{Sfu, SfuConfig};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

#[allow(unused_imports)] // each test binary uses some of them
pub use testkit::client::{h264_codec, H264_PT, OPUS_PT, URI_AUDIO_LEVEL, VP8_PT};

/// Logs of the server (tracing) and of webrtc-rs (log, bridged) in the test's captured output.
/// `RUST_LOG` overrides the default filter.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,rtc=warn,rtc_ice=warn,rtc_dtls=warn,webrtc=warn")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

// ── The server ───────────────────────────────────────────────────────────────────────────────

/// The real Fanout server (engine + axum front end, `--dev`) on loopback ports chosen by the OS.
pub struct TestServer {
    pub sfu: Sfu,
    pub state: AppState,
    pub ws_url: String,
    pub http_url: String,
    handle: server::Handle,
}

/// The settings of a `--dev` test server on loopback ports chosen by the OS.
pub fn dev_settings() -> Settings {
    Settings {
        dev: true,
        bind: "127.0.0.1:0".parse().unwrap(),
        udp_port: 0,
        media_drivers: Some(1),
        ..Settings::default()
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(SfuConfig {
            media_bind: "127.0.0.1:0".parse().unwrap(),
            ..SfuConfig::default()
        })
        .await
    }

    /// A server whose consent freshness runs out after `secs` (30 s by default): a test that
    /// must outlast the consent of old ICE credentials need not wait that long.
    pub async fn start_consent(secs: u64) -> TestServer {
        Self::start_with(SfuConfig {
            media_bind: "127.0.0.1:0".parse().unwrap(),
            consent_timeout: Duration::from_secs(secs),
            ..SfuConfig::default()
        })
        .await
    }

    /// A server with `n` media drivers: participants are placed on the least loaded, so
    /// consecutive joins alternate and media crosses between drivers.
    pub async fn start_drivers(n: usize) -> TestServer {
        Self::start_with(SfuConfig {
            media_bind: "127.0.0.1:0".parse().unwrap(),
            media_drivers: n,
            ..SfuConfig::default()
        })
        .await
    }

    pub async fn start_with(config: SfuConfig) -> TestServer {
        Self::start_settings(&dev_settings(), config).await
    }

    /// A server from `settings`, its engine configured by `engine` (the observer is added).
    pub async fn start_settings(settings: &Settings, engine: SfuConfig) -> TestServer {
        let state = server::build_with(settings, engine).expect("server starts");
        let listener = std::net::TcpListener::bind(settings.bind).expect("http listener binds");
        let addr = listener.local_addr().unwrap();
        let app = server::app(state.clone(), None);
        let handle = server::Handle::new();
        tokio::spawn(server::serve(listener, app, None, handle.clone()));
        TestServer {
            sfu: state.sfu().clone(),
            state,
            ws_url: format!("ws://{addr}/ws"),
            http_url: format!("http://{addr}"),
            handle,
        }
    }

    pub fn ws_url(&self) -> &str {
        &self.ws_url
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

// ── Signaling ────────────────────────────────────────────────────────────────────────────────

/// A raw signaling client's socket.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One signaling WebSocket speaking the protocol's JSON (`docs/protocol.md`).
pub struct SignalingClient {
    ws: Ws,
    /// Messages read while looking for another type, handed out first by `recv`.
    backlog: VecDeque<Value>,
}

impl SignalingClient {
    pub async fn connect(url: &str) -> SignalingClient {
        let (ws, _) = tokio::time::timeout(Duration::from_secs(5), connect_async(url))
            .await
            .expect("websocket connect timed out")
            .expect("websocket connects");
        SignalingClient {
            ws,
            backlog: VecDeque::new(),
        }
    }

    pub async fn send(&mut self, msg: Value) {
        assert!(self.try_send(msg).await, "websocket send failed");
    }

    /// Sends; `false` if the socket is gone (after `leave`, the server closes it).
    pub async fn try_send(&mut self, msg: Value) -> bool {
        self.ws
            .send(Message::Text(msg.to_string().into()))
            .await
            .is_ok()
    }

    /// The next JSON message; `None` when the socket closed or errored.
    pub async fn next(&mut self) -> Option<Value> {
        if let Some(v) = self.backlog.pop_front() {
            return Some(v);
        }
        loop {
            match self.ws.next().await? {
                Ok(Message::Text(t)) => {
                    return Some(serde_json::from_str(&t).expect("server sends JSON"));
                }
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => {} // ping/pong (tungstenite answers pings itself) or binary
            }
        }
    }

    /// The next JSON message within `timeout`.
    pub async fn recv(&mut self, timeout: Duration) -> Value {
        tokio::time::timeout(timeout, self.next())
            .await
            .unwrap_or_else(|_| panic!("no server message within {timeout:?}"))
            .expect("socket closed while waiting for a message")
    }

    /// The next message of type `ty` within `timeout`; messages of other types read meanwhile
    /// stay queued for `recv`/`next`.
    pub async fn recv_type(&mut self, ty: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        if let Some(i) = self.backlog.iter().position(|m| m["type"] == ty) {
            return self.backlog.remove(i).unwrap();
        }
        let mut skipped = Vec::new();
        let found = loop {
            let next = tokio::time::timeout_at(deadline, async {
                loop {
                    match self.ws.next().await {
                        Some(Ok(Message::Text(t))) => {
                            return Some(serde_json::from_str::<Value>(&t).expect("JSON"))
                        }
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
                        Some(Ok(_)) => {}
                    }
                }
            })
            .await;
            match next {
                Ok(Some(m)) if m["type"] == ty => break m,
                Ok(Some(m)) => skipped.push(m),
                Ok(None) => panic!("socket closed while waiting for {ty:?}; got {skipped:?}"),
                Err(_) => panic!("no {ty:?} within {timeout:?}; got {skipped:?}"),
            }
        };
        self.backlog.extend(skipped);
        found
    }

    /// Sends `join` and returns the `joined` answer.
    pub async fn join(&mut self, room: &str, name: &str) -> Value {
        self.join_token(room, name, None).await
    }

    /// Sends `join` with an access token and returns the `joined` answer.
    pub async fn join_token(&mut self, room: &str, name: &str, token: Option<&str>) -> Value {
        let fields = token.map_or(json!({}), |t| json!({ "token": t }));
        self.join_with(room, name, fields).await
    }

    /// Sends `join` with more `fields` (a JSON object) and returns the `joined` answer.
    pub async fn join_with(&mut self, room: &str, name: &str, fields: Value) -> Value {
        let mut msg = json!({"type": "join", "v": 1, "room": room, "name": name});
        if let (Some(msg), Some(fields)) = (msg.as_object_mut(), fields.as_object()) {
            msg.extend(fields.clone());
        }
        self.send(msg).await;
        self.recv_type("joined", Duration::from_secs(5)).await
    }

    /// Sends `join` and returns the error the server answers with (asserting it closes the
    /// socket after it when `closes`).
    pub async fn join_refused(&mut self, room: &str, token: Option<&str>, closes: bool) -> Value {
        let mut msg = json!({"type": "join", "v": 1, "room": room, "name": "n"});
        if let Some(t) = token {
            msg["token"] = json!(t);
        }
        self.send(msg).await;
        let err = self.recv_type("error", Duration::from_secs(5)).await;
        if closes {
            let next = tokio::time::timeout(Duration::from_secs(5), self.next())
                .await
                .expect("the server closes the socket after a refused join");
            assert!(next.is_none(), "expected the socket to close, got {next:?}");
        }
        err
    }
}

/// A minimal but valid audio-only offer, as a browser would send it.
pub const AUDIO_OFFER: &str = "v=0\r\n\
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0\r\n\
a=msid-semantic: WMS stream\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
c=IN IP4 0.0.0.0\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\n\
a=ice-ufrag:abcd\r\n\
a=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
a=fingerprint:sha-256 6B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\n\
a=setup:actpass\r\n\
a=mid:0\r\n\
a=sendonly\r\n\
a=msid:stream track\r\n\
a=rtcp-mux\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=fmtp:111 minptime=10;useinbandfec=1\r\n\
a=ssrc:1111 cname:test\r\n";

/// One STUN message read off a TURN stream (20-byte header with the attributes' length).
pub async fn read_stun<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
) -> rtc::stun::message::Message {
    use tokio::io::AsyncReadExt;
    let mut header = [0u8; 20];
    stream.read_exact(&mut header).await.unwrap();
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let mut raw = header.to_vec();
    raw.resize(20 + len, 0);
    stream.read_exact(&mut raw[20..]).await.unwrap();
    let mut m = rtc::stun::message::Message::new();
    m.raw = raw;
    m.decode().unwrap();
    m
}

/// The next JSON message on a raw signaling socket, skipping pings and binary frames, within 5 s;
/// `None` when the socket closed.
pub async fn next_json(ws: &mut Ws) -> Option<Value> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("server answers within 5 s")?;
        match msg {
            Ok(Message::Text(t)) => {
                return Some(serde_json::from_str(&t).expect("server sends JSON"))
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// The value of the first `a=NAME:` line of an SDP (panics naming it if there is none).
pub fn attribute(sdp: &str, name: &str) -> String {
    let prefix = format!("a={name}:");
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {name} in {sdp}"))
        .trim()
        .to_owned()
}

/// A bearer token for the admin API (the admin grant only), for one room or every room, signed
/// with the server's API key and secret.
pub fn admin_token(key: &str, secret: &str, room: Option<&str>) -> String {
    fanout_signaling::auth::TokenAuthority::new(key, secret)
        .create(
            "ops",
            Some("ops"),
            room,
            fanout_signaling::auth::Grants {
                admin: true,
                join: false,
                ..fanout_signaling::auth::Grants::default()
            },
            Duration::from_secs(600),
        )
        .unwrap()
}
