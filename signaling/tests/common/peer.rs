//! A real webrtc-rs client peer that negotiates by itself: answers the server's offers as the
//! polite side, trickles candidates both ways, reports its tracks and state.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::Slot;
use serde_json::{json, Value};
use testkit::client::KeyframeRequestTap;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    register_default_interceptors, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCIceCandidateInit, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSessionDescription, Registry, SettingEngineBuilder,
};

use super::SignalingClient;

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
        let fields = token.map_or(json!({}), |t| json!({ "token": t }));
        Self::join_peer(url, room, name, fields, ClientPeer::new().await).await
    }

    /// [`RtcClient::join`] with more fields in `join` (a JSON object: `{"mixed": "audio"}`).
    pub async fn join_with(url: &str, room: &str, name: &str, fields: Value) -> RtcClient {
        Self::join_peer(url, room, name, fields, ClientPeer::new().await).await
    }

    /// [`RtcClient::join`] with the client's media socket bound to `udp_addr`.
    pub async fn join_from(url: &str, room: &str, name: &str, udp_addr: &str) -> RtcClient {
        Self::join_peer(
            url,
            room,
            name,
            json!({}),
            ClientPeer::bound(udp_addr).await,
        )
        .await
    }

    async fn join_peer(
        url: &str,
        room: &str,
        name: &str,
        fields: Value,
        peer: ClientPeer,
    ) -> RtcClient {
        let ClientPeer {
            pc,
            candidates: cand_rx,
            tracks: track_rx,
            state: state_rx,
        } = peer;

        let mut sig = SignalingClient::connect(url).await;
        let joined = sig.join_with(room, name, fields).await;
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
