//! Shared harness for end-to-end tests: the real server in-process on loopback, a JSON
//! signaling client over tokio-tungstenite, and a real webrtc-rs client peer that negotiates by
//! itself (answers the server's offers as the polite side, trickles candidates both ways).
//!
//! Every wait takes a timeout and fails with the context it was waiting for. Client peers bind
//! exactly `127.0.0.1:0` (one loopback host candidate) with mDNS off; close them at the end of a
//! test (`RtcClient::close`), since webrtc-rs leaks tasks and sockets of unclosed connections.

#![allow(dead_code)]

pub mod process;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use fanout_signaling::config::Settings;
use fanout_signaling::server::{self, AppState};
use futures_util::{SinkExt, StreamExt};
use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::Slot;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RtpCodecKind};
use serde_json::{json, Value};
use sfu::{Sfu, SfuConfig};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    register_default_interceptors, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCIceCandidateInit, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSessionDescription, Registry, SettingEngineBuilder,
};

use testkit::client::KeyframeRequestTap;
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
        let mut msg = json!({"type": "join", "v": 1, "room": room, "name": name});
        if let Some(t) = token {
            msg["token"] = json!(t);
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

// ── A webrtc-rs client peer ──────────────────────────────────────────────────────────────────

/// The payload type negotiated for a sender (its first codec).
pub async fn negotiated_pt(sender: &Arc<dyn webrtc::rtp_transceiver::RtpSender>) -> u8 {
    sender
        .get_parameters()
        .await
        .expect("sender parameters")
        .rtp_parameters
        .codecs
        .first()
        .expect("a negotiated codec")
        .payload_type
}

/// The id `sdp` gives the header extension `uri` (first match).
pub fn sdp_extension_id(sdp: &str, uri: &str) -> u8 {
    sdp.lines()
        .find(|l| l.starts_with("a=extmap:") && l.contains(uri))
        .and_then(|l| l["a=extmap:".len()..].split([' ', '/']).next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no {uri} in {sdp}"))
}

struct Handler {
    candidates: mpsc::UnboundedSender<RTCIceCandidateInit>,
    tracks: mpsc::UnboundedSender<Arc<dyn TrackRemote>>,
    state: watch::Sender<RTCPeerConnectionState>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        match event.candidate.to_json() {
            Ok(init) => {
                let _ = self.candidates.send(init);
            }
            Err(err) => eprintln!("client: cannot serialize a local candidate: {err}"),
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.state.send(state);
    }

    // Called on the connection's driver task: hand the track over, never block here.
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.tracks.send(track);
    }
}

enum Command {
    /// Create and send an offer; reply once the server's answer is applied.
    Publish(oneshot::Sender<()>),
    /// The same with new ICE credentials (an ICE restart).
    RestartIce(oneshot::Sender<()>),
    Send(Value),
}

/// A bare client peer (127.0.0.1:0 only, mDNS off, Opus + VP8, default interceptors plus the
/// keyframe-request tap) and what its handler reports: local candidates, remote tracks, state.
pub struct ClientPeer {
    pub pc: Arc<dyn PeerConnection>,
    pub candidates: mpsc::UnboundedReceiver<RTCIceCandidateInit>,
    pub tracks: mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
    pub state: watch::Receiver<RTCPeerConnectionState>,
}

impl ClientPeer {
    pub async fn new() -> ClientPeer {
        Self::bound("127.0.0.1:0").await
    }

    /// A client peer whose one socket binds `udp_addr` (e.g. `[::1]:0` for an IPv6-only client).
    pub async fn bound(udp_addr: &str) -> ClientPeer {
        let mut me = testkit::client::media_engine().expect("the client media engine");
        let registry = register_default_interceptors(Registry::new(), &mut me)
            .expect("default interceptors")
            .with(Slot::from(14_000), KeyframeRequestTap::default());
        let (cand_tx, candidates) = mpsc::unbounded_channel();
        let (track_tx, tracks) = mpsc::unbounded_channel();
        let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
        let pc = PeerConnectionBuilder::new()
            .with_media_engine(me)
            .with_interceptor_registry(registry)
            .with_setting_engine(
                SettingEngineBuilder::new()
                    .with_multicast_dns_mode(MulticastDnsMode::Disabled)
                    .build(),
            )
            .with_handler(Arc::new(Handler {
                candidates: cand_tx,
                tracks: track_tx,
                state: state_tx,
            }))
            .with_udp_addrs(vec![udp_addr.to_owned()])
            .build()
            .await
            .expect("client peer connection builds");
        ClientPeer {
            pc: Arc::new(pc),
            candidates,
            tracks,
            state,
        }
    }
}

/// A real webrtc-rs peer with its signaling socket. A background task answers the server's
/// offers (rolling back a colliding offer of its own, as the polite side, and offering again
/// afterwards), applies answers, and trickles candidates both ways. Every other server message
/// (`participant_joined`, `track_published`, `error`, ...) is queued for the test.
pub struct RtcClient {
    pub name: String,
    pub participant_id: String,
    pub joined: Value,
    pub pc: Arc<dyn PeerConnection>,
    commands: mpsc::UnboundedSender<Command>,
    messages: mpsc::UnboundedReceiver<Value>,
    backlog: VecDeque<Value>,
    pub tracks: mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
    state: watch::Receiver<RTCPeerConnectionState>,
    task: tokio::task::JoinHandle<()>,
}

impl RtcClient {
    /// Builds the peer (127.0.0.1:0 only, mDNS off, Opus + VP8, default interceptors plus the
    /// keyframe-request tap), connects the socket and joins `room`.
    pub async fn join(url: &str, room: &str, name: &str) -> RtcClient {
        Self::join_token(url, room, name, None).await
    }

    /// [`RtcClient::join`] with an access token.
    pub async fn join_token(url: &str, room: &str, name: &str, token: Option<&str>) -> RtcClient {
        Self::join_peer(url, room, name, token, ClientPeer::new().await).await
    }

    /// [`RtcClient::join`] with the client's media socket bound to `udp_addr`.
    pub async fn join_from(url: &str, room: &str, name: &str, udp_addr: &str) -> RtcClient {
        Self::join_peer(url, room, name, None, ClientPeer::bound(udp_addr).await).await
    }

    async fn join_peer(
        url: &str,
        room: &str,
        name: &str,
        token: Option<&str>,
        peer: ClientPeer,
    ) -> RtcClient {
        let ClientPeer {
            pc,
            candidates: cand_rx,
            tracks: track_rx,
            state: state_rx,
        } = peer;

        let mut sig = SignalingClient::connect(url).await;
        let joined = sig.join_token(room, name, token).await;
        let participant_id = joined["participant_id"]
            .as_str()
            .expect("joined has participant_id")
            .to_owned();

        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (msg_tx, msg_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(negotiate(
            name.to_owned(),
            pc.clone(),
            sig,
            cmd_rx,
            cand_rx,
            msg_tx,
        ));
        RtcClient {
            name: name.to_owned(),
            participant_id,
            joined,
            pc,
            commands: cmd_tx,
            messages: msg_rx,
            backlog: VecDeque::new(),
            tracks: track_rx,
            state: state_rx,
            task,
        }
    }

    /// Restarts ICE (an offer with new credentials) and waits until the server's answer is
    /// applied.
    pub async fn restart_ice(&self, timeout: Duration) {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::RestartIce(tx))
            .expect("negotiation task alive");
        tokio::time::timeout(timeout, rx)
            .await
            .expect("the server answers the ICE restart in time")
            .expect("negotiation task alive");
    }

    /// Offers the peer's current tracks and waits until the server's answer is applied.
    pub async fn publish(&self, timeout: Duration) {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Publish(tx))
            .expect("negotiation task alive");
        tokio::time::timeout(timeout, rx)
            .await
            .unwrap_or_else(|_| panic!("{}: no answer to its offer within {timeout:?}", self.name))
            .expect("negotiation task alive");
    }

    pub fn send(&self, msg: Value) {
        let _ = self.commands.send(Command::Send(msg));
    }

    pub fn leave(&self) {
        self.send(json!({"type": "leave"}));
    }

    /// Waits for the peer connection to reach `Connected`.
    pub async fn wait_connected(&mut self, timeout: Duration) {
        let reached = tokio::time::timeout(
            timeout,
            self.state
                .wait_for(|s| *s == RTCPeerConnectionState::Connected),
        )
        .await
        .map(|r| r.is_ok());
        assert!(
            matches!(reached, Ok(true)),
            "{}: not connected within {timeout:?} (state {})",
            self.name,
            *self.state.borrow()
        );
    }

    pub fn connection_state(&self) -> RTCPeerConnectionState {
        *self.state.borrow()
    }

    /// The next non-negotiation server message of type `ty`; others read meanwhile stay queued.
    pub async fn recv_type(&mut self, ty: &str, timeout: Duration) -> Value {
        if let Some(i) = self.backlog.iter().position(|m| m["type"] == ty) {
            return self.backlog.remove(i).unwrap();
        }
        let deadline = Instant::now() + timeout;
        let mut skipped = Vec::new();
        let found = loop {
            match tokio::time::timeout_at(deadline, self.messages.recv()).await {
                Ok(Some(m)) if m["type"] == ty => break m,
                Ok(Some(m)) => skipped.push(m),
                Ok(None) => panic!(
                    "{}: signaling ended while waiting for {ty:?}; got {skipped:?}",
                    self.name
                ),
                Err(_) => panic!(
                    "{}: no {ty:?} within {timeout:?}; got {skipped:?}",
                    self.name
                ),
            }
        };
        self.backlog.extend(skipped);
        found
    }

    /// The next non-negotiation server message, queued ones first; `None` if none arrives
    /// within `timeout` or signaling ended.
    pub async fn recv_any(&mut self, timeout: Duration) -> Option<Value> {
        if let Some(m) = self.backlog.pop_front() {
            return Some(m);
        }
        tokio::time::timeout(timeout, self.messages.recv())
            .await
            .ok()
            .flatten()
    }

    /// Takes the receiver of remote tracks (`on_track`), e.g. to hand it to a recorder task.
    pub fn take_tracks(&mut self) -> mpsc::UnboundedReceiver<Arc<dyn TrackRemote>> {
        std::mem::replace(&mut self.tracks, mpsc::unbounded_channel().1)
    }

    /// Every non-negotiation message received so far, without waiting.
    pub fn drain_messages(&mut self) -> Vec<Value> {
        let mut out: Vec<Value> = self.backlog.drain(..).collect();
        while let Ok(m) = self.messages.try_recv() {
            out.push(m);
        }
        out
    }

    /// Closes the peer connection and stops the signaling task.
    pub async fn close(self) {
        // Stop negotiating first: a server offer racing the close would fail against a closed
        // connection.
        self.task.abort();
        let _ = self.task.await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.pc.close()).await;
    }
}

async fn negotiate(
    name: String,
    pc: Arc<dyn PeerConnection>,
    mut sig: SignalingClient,
    mut commands: mpsc::UnboundedReceiver<Command>,
    mut candidates: mpsc::UnboundedReceiver<RTCIceCandidateInit>,
    messages: mpsc::UnboundedSender<Value>,
) {
    // Our offer awaiting the server's answer, and who to tell when it comes.
    let mut have_local_offer = false;
    let mut publish_waiters: Vec<oneshot::Sender<()>> = Vec::new();
    // An offer of ours was rolled back in a collision: offer again once stable.
    let mut reoffer = false;
    loop {
        tokio::select! {
            msg = sig.next() => {
                let Some(msg) = msg else {
                    let _ = messages.send(json!({"type": "_socket_closed"}));
                    return;
                };
                match msg["type"].as_str().unwrap_or("") {
                    "offer" => {
                        let sdp = msg["sdp"].as_str().unwrap_or_default().to_owned();
                        let answered =
                            answer_offer(&pc, &mut sig, sdp, &mut have_local_offer, &mut reoffer);
                        if let Err(err) = answered.await {
                            let error = format!("cannot answer the server's offer: {err}");
                            report(&name, &messages, error);
                        }
                    }
                    "answer" => {
                        let sdp = msg["sdp"].as_str().unwrap_or_default().to_owned();
                        let applied = match RTCSessionDescription::answer(sdp) {
                            Ok(answer) => pc.set_remote_description(answer).await,
                            Err(err) => Err(err),
                        };
                        match applied {
                            Ok(()) => {
                                have_local_offer = false;
                                for w in publish_waiters.drain(..) {
                                    let _ = w.send(());
                                }
                            }
                            Err(err) => {
                                let error = format!("cannot apply the server's answer: {err}");
                                report(&name, &messages, error);
                            }
                        }
                    }
                    "candidate" => {
                        let c = &msg["candidate"];
                        let init = RTCIceCandidateInit {
                            candidate: c["candidate"].as_str().unwrap_or("").to_owned(),
                            sdp_mid: c["sdpMid"].as_str().map(str::to_owned),
                            sdp_mline_index: c["sdpMLineIndex"].as_u64().map(|v| v as u16),
                            username_fragment: c["usernameFragment"].as_str().map(str::to_owned),
                            ..Default::default()
                        };
                        if let Err(err) = pc.add_ice_candidate(init).await {
                            eprintln!("{name}: server candidate rejected: {err}");
                        }
                    }
                    _ => {
                        if msg["type"] == "error" {
                            eprintln!("{name}: server error: {msg}");
                        }
                        let _ = messages.send(msg);
                    }
                }
            }
            cmd = commands.recv() => match cmd {
                Some(Command::RestartIce(done)) => {
                    publish_waiters.push(done);
                    let restart = Some(rtc::peer_connection::configuration::RTCOfferOptions {
                        ice_restart: true,
                    });
                    match send_offer_with(&pc, &mut sig, restart).await {
                        Ok(()) => have_local_offer = true,
                        Err(err) => report(&name, &messages, format!("cannot restart ICE: {err}")),
                    }
                }
                Some(Command::Publish(done)) => {
                    publish_waiters.push(done);
                    if !have_local_offer {
                        match send_offer(&pc, &mut sig).await {
                            Ok(()) => have_local_offer = true,
                            Err(err) => report(&name, &messages, format!("cannot offer: {err}")),
                        }
                    }
                }
                Some(Command::Send(v)) => {
                    sig.try_send(v).await;
                }
                None => return,
            },
            Some(c) = candidates.recv() => {
                let mut cand = json!({"candidate": c.candidate, "sdpMLineIndex": c.sdp_mline_index.unwrap_or(0)});
                if let Some(mid) = c.sdp_mid.filter(|m| !m.is_empty()) {
                    cand["sdpMid"] = json!(mid);
                }
                if let Some(ufrag) = c.username_fragment {
                    cand["usernameFragment"] = json!(ufrag);
                }
                sig.try_send(json!({"type": "candidate", "candidate": cand})).await;
            }
        }
    }
}

/// Answers a server offer; as the polite side, first rolls back an offer of ours that collided
/// with it (the server ignored ours) and offers again afterwards.
async fn answer_offer(
    pc: &Arc<dyn PeerConnection>,
    sig: &mut SignalingClient,
    sdp: String,
    have_local_offer: &mut bool,
    reoffer: &mut bool,
) -> webrtc::error::Result<()> {
    if *have_local_offer {
        pc.set_local_description(RTCSessionDescription::rollback(None)?)
            .await?;
        *have_local_offer = false;
        *reoffer = true;
    }
    pc.set_remote_description(RTCSessionDescription::offer(sdp)?)
        .await?;
    let answer = pc.create_answer(None).await?;
    pc.set_local_description(answer).await?;
    let sdp = pc
        .local_description()
        .await
        .map(|d| d.sdp)
        .unwrap_or_default();
    sig.try_send(json!({"type": "answer", "sdp": sdp})).await;
    if *reoffer {
        *reoffer = false;
        send_offer(pc, sig).await?;
        *have_local_offer = true;
    }
    Ok(())
}

async fn send_offer(
    pc: &Arc<dyn PeerConnection>,
    sig: &mut SignalingClient,
) -> webrtc::error::Result<()> {
    send_offer_with(pc, sig, None).await
}

async fn send_offer_with(
    pc: &Arc<dyn PeerConnection>,
    sig: &mut SignalingClient,
    options: Option<rtc::peer_connection::configuration::RTCOfferOptions>,
) -> webrtc::error::Result<()> {
    let offer = pc.create_offer(options).await?;
    pc.set_local_description(offer).await?;
    let sdp = pc
        .local_description()
        .await
        .map(|d| d.sdp)
        .unwrap_or_default();
    sig.try_send(json!({"type": "offer", "sdp": sdp})).await;
    Ok(())
}

/// A negotiation failure on the client side: logged, and queued for the test as a
/// `_client_error` message so a waiting test fails with it in view.
fn report(name: &str, messages: &mpsc::UnboundedSender<Value>, error: String) {
    eprintln!("{name}: {error}");
    let _ = messages.send(json!({"type": "_client_error", "error": error}));
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

// ── Synthetic media ──────────────────────────────────────────────────────────────────────────

/// Adds a track of `kind` (VP8 keyframes at 30 fps, or Opus-sized audio at 50 packets/s) to
/// `publisher`, negotiates it, and sends until the returned task is aborted.
pub async fn publish_synthetic(
    publisher: &RtcClient,
    kind: RtpCodecKind,
    timeout: Duration,
) -> tokio::task::JoinHandle<()> {
    let synthetic = SyntheticTrack::add(&publisher.pc, &publisher.name, kind).await;
    publisher.publish(timeout).await;
    synthetic.start().await
}

/// A synthetic track on a client peer: added before an offer, started once negotiated.
pub struct SyntheticTrack {
    track: Arc<webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP>,
    sender: Arc<dyn webrtc::rtp_transceiver::RtpSender>,
    ssrc: u32,
    video: bool,
}

impl SyntheticTrack {
    /// Adds a track of `kind` to `pc` (stream id `stream`).
    pub async fn add(
        pc: &Arc<dyn PeerConnection>,
        stream: &str,
        kind: RtpCodecKind,
    ) -> SyntheticTrack {
        use rtc::media_stream::MediaStreamTrack;
        use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodingParameters, RTCRtpEncodingParameters};
        use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
        use webrtc::media_stream::track_local::TrackLocal;

        let ssrc = rand::random::<u32>();
        let video = kind == RtpCodecKind::Video;
        let (mime, clock) = if video {
            ("video/VP8", 90000)
        } else {
            ("audio/opus", 48000)
        };
        let id = format!("{stream}-{}", if video { "video" } else { "audio" });
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            stream.to_owned(),
            id.clone(),
            id,
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: RTCRtpCodec {
                    mime_type: mime.into(),
                    clock_rate: clock,
                    channels: if video { 0 } else { 2 },
                    ..Default::default()
                },
                ..Default::default()
            }],
        )));
        let sender = pc
            .add_track(track.clone() as Arc<dyn TrackLocal>)
            .await
            .expect("add_track");
        SyntheticTrack {
            track,
            sender,
            ssrc,
            video,
        }
    }

    /// Sends (once negotiated) until the returned task is aborted.
    pub async fn start(self) -> tokio::task::JoinHandle<()> {
        use webrtc::media_stream::track_local::TrackLocal;

        let pt = negotiated_pt(&self.sender).await;
        let SyntheticTrack {
            track, ssrc, video, ..
        } = self;
        tokio::spawn(async move {
            let (period, step) = if video { (33, 3000) } else { (20, 960) };
            let mut ticker = tokio::time::interval(Duration::from_millis(period));
            let (mut seq, mut ts) = (rand::random::<u16>(), rand::random::<u32>());
            loop {
                ticker.tick().await;
                let mut payload = if video {
                    // A VP8 keyframe start (every frame), so forwarding starts at once.
                    vec![
                        0x10, 0x30, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xb4, 0x00,
                    ]
                } else {
                    vec![0xfc]
                };
                payload.extend(std::iter::repeat_n(0xcd, if video { 300 } else { 80 }));
                let written = track
                    .write_rtp(rtc::rtp::Packet {
                        header: rtc::rtp::header::Header {
                            version: 2,
                            marker: true,
                            payload_type: pt,
                            sequence_number: seq,
                            timestamp: ts,
                            ssrc,
                            ..Default::default()
                        },
                        payload: payload.into(),
                    })
                    .await;
                if written.is_err() {
                    return;
                }
                seq = seq.wrapping_add(1);
                ts = ts.wrapping_add(step);
            }
        })
    }
}

/// Counts the RTP packets `client` receives, over all its tracks.
pub fn count_received(client: &mut RtcClient) -> Arc<std::sync::atomic::AtomicU64> {
    use std::sync::atomic::{AtomicU64, Ordering};
    use webrtc::media_stream::track_remote::TrackRemoteEvent;

    let count = Arc::new(AtomicU64::new(0));
    let mut tracks = client.take_tracks();
    let out = count.clone();
    tokio::spawn(async move {
        while let Some(track) = tracks.recv().await {
            let out = out.clone();
            tokio::spawn(async move {
                while let Some(event) = track.poll().await {
                    if let TrackRemoteEvent::OnRtpPacket(_) = event {
                        out.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    count
}

/// Waits until `count` grows by at least `by` within `timeout`; returns whether it did.
pub async fn grows(count: &std::sync::atomic::AtomicU64, by: u64, timeout: Duration) -> bool {
    use std::sync::atomic::Ordering;
    let start = count.load(Ordering::Relaxed);
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if count.load(Ordering::Relaxed) >= start + by {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

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
