//! The media driver: one task, one UDP socket, every `rtc` peer connection placed on it.
//!
//! It owns its connections outright; signaling sessions talk to it with [`Command`]s and hear back
//! through each participant's [`Event`] channel. Per datagram it:
//! 1. stamps the arrival time,
//! 2. finds the connection: by source address once that address was pinned (the connection
//!    answered a connectivity check from it with a binding success), else by the server ufrag in a
//!    STUN binding request; anything else is dropped and counted,
//! 3. hands the datagram to the connection and then *services* it: sends what it wrote, handles
//!    its events (tracks opening, state changes) and the media it decrypted.
//!
//! Media routing (start at [`Driver::on_rtp`]): a publisher's RTP packet is unwrapped once on its
//! published track, then each subscriber's forwarder decides (start at a keyframe, rewrite the
//! sequence number) and the packet, with the subscriber's SSRC and payload type and no header
//! extensions, is written to that subscriber's connection. The payload is shared, not copied.
//!
//! Each connection's timer lives in one [`TimerQueue`]; nothing scans all connections.
//!
//! Several drivers (one per core by default) share the rooms: a participant lives on one, and a
//! track's packets cross to another driver once per driver that has subscribers to it, over a
//! bounded queue (see [`mesh`]).

pub mod mesh;
pub mod port;
mod runtime;
mod select;
mod tcp;
mod timers;

pub(crate) use runtime::spawn;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rand::distr::{Alphanumeric, SampleString};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent, RTCTrackEventInit};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::{RTCIceConnectionState, RTCPeerConnectionState};
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::peer_connection::RTCPeerConnection;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{
    RTCRtpReceiverId, RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverId,
    RTCRtpTransceiverInit,
};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::api::{
    Candidate, Command, DriverStats, ErrorKind, Event, JoinInfo, JoinRequest, LayerReport,
    MediaKind, Observation, ParticipantInfo, ParticipantKey, Permissions, SfuConfig, SfuError,
    TrackInfo, TrackSettings, TrackSource,
};
use crate::engine::classify::{
    classify, is_nominating_check, is_stun_binding_request, is_stun_binding_success,
    stun_binding_local_ufrag, DatagramKind,
};
use crate::engine::codec::Codec;
use crate::engine::keyframe::KeyframeThrottle;
use crate::engine::layers::{CongestionHold, LayerState, Quality, Reason, Wants};
use crate::engine::rewriter::{DropReason, PacketIn, RtpRewriter, Verdict};
use crate::engine::seq::SeqUnwrapper;
use crate::engine::speaker::{self, LevelMeter};
use crate::engine::vp8;
use crate::ice_lite;
use crate::peer::{self, Bandwidth, SimulcastSsrcs};
use mesh::{driver_of, global_key, Load, Mesh, MeshMsg, MeshPacket, RemoteTrack};
use port::{owner_of_ufrag, Crossing, RemoteFlows};
use select::{layer_order, report_layer};
use timers::TimerQueue;

/// Connectivity checks kept per connection until its remote description is applied.
const MAX_EARLY_CHECKS: usize = 8;
/// Nominating checks (and answers to rtc's triggered checks) kept per connection between two
/// services of it (see [`crate::ice_lite`]).
const MAX_NOMINATIONS: usize = 8;
/// Source addresses pinned per connection at most (its candidate pairs: loopback, LAN, a new
/// network after a move); past this, the one confirmed longest ago is unpinned.
const MAX_PINNED_ADDRS: usize = 4;
/// How often layer choices, bitrates and dynacast are re-evaluated.
const TICK: Duration = Duration::from_millis(250);
/// A layer with no packet for this long is not being sent.
const LAYER_IDLE: Duration = Duration::from_millis(1000);
/// A layer nobody needs is paused at the publisher after this long (so brief dips do not flap).
const DYNACAST_PAUSE_AFTER: Duration = Duration::from_secs(2);
/// How long a subscriber that is still connecting keeps a track's top layer on (dynacast): long
/// enough for a negotiation and ICE, bounded for a client that never answers.
const DYNACAST_CONNECTING: Duration = Duration::from_secs(10);
/// A REMB older than this no longer counts as an estimate.
const REMB_MAX_AGE: Duration = Duration::from_secs(5);
/// The budget when a subscriber gives no feedback at all (neither TWCC nor REMB).
const NO_ESTIMATE_BPS: f64 = 1e9;

type TrackKey = u64;

/// One participant's connection and what the driver knows about it.
struct Peer {
    id: String,
    identity: String,
    name: String,
    room: String,
    permissions: Permissions,
    /// rtc's receiver track ids of tracks refused (no grant, track limit): their packets are
    /// dropped and the refusal is not repeated for each simulcast layer.
    refused: HashSet<String>,
    pc: RTCPeerConnection,
    events: mpsc::UnboundedSender<Event>,
    ufrag: String,
    /// Source addresses pinned to this connection.
    addrs: Vec<Flow>,
    /// The deadline currently scheduled in the timer queue: the earlier of rtc's own timer and
    /// the consent deadline.
    timer: Option<Instant>,
    /// When the client last had a connectivity check accepted, and from which address. Media
    /// and DTLS go to that address: the client's current path, which may differ from the pair
    /// rtc selected first.
    consent: Option<(Instant, Flow)>,
    /// Whether the peer is waiting in the service queue.
    queued: bool,
    /// Only this publisher's tracks are subscribed (see [`JoinRequest::subscribe_to`]).
    subscribe_to: Option<String>,
    /// Never offered to (see [`JoinRequest::answer_only`]).
    answer_only: bool,
    /// When the first remote description was applied (for [`SfuConfig::connect_timeout`]): a participant
    /// that has not negotiated yet (a viewer in an empty room) has nothing to connect.
    negotiated_at: Option<Instant>,
    connected: bool,
    /// The server's offer awaits the client's answer.
    offer_outstanding: bool,
    /// Tracks were added or removed since the last offer.
    negotiation_needed: bool,
    candidates_sent: bool,
    /// Client candidates that arrived before any remote description.
    early_candidates: Vec<RTCIceCandidateInit>,
    /// Whether a remote description (the client's offer or answer) has been applied: before
    /// that rtc cannot check a connectivity check's credentials and drops it.
    remote_set: bool,
    /// Connectivity checks that arrived before any remote description, replayed once one is
    /// applied (a client that answers the server's offer starts checking at once, and its checks
    /// can overtake the answer, which travels through signaling).
    early_checks: Vec<(Vec<u8>, Flow)>,
    /// Nominating checks (USE-CANDIDATE) handed to rtc since this connection was last serviced:
    /// given to rtc again once its triggered check for them is answered (see [`crate::ice_lite`]).
    nominations: Vec<(Vec<u8>, Flow)>,
    /// The answers the driver made to rtc's triggered checks, to hand to rtc (see
    /// [`crate::ice_lite`]).
    stand_in_answers: Vec<(Vec<u8>, Flow)>,
    /// rtc's receiver track id → the published track.
    published: HashMap<String, TrackKey>,
    /// Subscribed tracks: track → the sender on this connection.
    subscribed: HashMap<TrackKey, Subscription>,
    /// This connection's sender SSRCs → the track each carries (to route PLI/FIR upstream).
    track_by_ssrc: HashMap<u32, TrackKey>,
    /// What the client said it publishes on each mid (`track_source`).
    sources: HashMap<String, TrackSource>,
    /// The downlink estimate from transport-wide feedback (written inside rtc).
    bandwidth: Arc<Bandwidth>,
    /// SSRCs of the simulcast layers this client publishes (see `peer::HideSimulcastReports`).
    simulcast_ssrcs: SimulcastSsrcs,
    /// The latest REMB from this client, for clients without transport-wide feedback.
    remb: Option<(Instant, f64)>,
    hold: CongestionHold,
    /// The video budget used at the last allocation.
    budget: Option<f64>,
}

struct Subscription {
    /// Included in an offer the client has not answered yet.
    offered: bool,
    /// Included in an offer the client answered.
    negotiated: bool,
    /// The sender's encoding carries the track's codec (see [`Driver::pin_sender_codecs`]).
    codec_pinned: bool,
}

/// A published track: its incoming streams (one per simulcast layer) and its subscribers'
/// forwarders.
struct Track {
    id: String,
    kind: MediaKind,
    source: TrackSource,
    publisher: ParticipantKey,
    /// The publisher's participant id (the publisher may live on another driver).
    publisher_id: String,
    room: String,
    /// Where the packets come from.
    origin: Origin,
    /// Local tracks: the drivers holding a proxy of this track, with the layers (bit per layer
    /// index) their subscribers need.
    sinks: Vec<(usize, u32)>,
    /// Proxies: the demand last sent to the origin.
    demand_sent: Option<u32>,
    /// The publisher's transceiver, for dynacast messages.
    mid: Option<String>,
    codec: Codec,
    rtc_codec: RTCRtpCodec,
    /// In arrival order; a layer's index here is its id in every forwarder's rewriter.
    layers: Vec<Layer>,
    /// Layer ids ordered low to high.
    order: Vec<u8>,
    published_at: Instant,
    /// The rids last asked of the publisher (dynacast); `None` before the first request.
    requested: Option<Vec<String>>,
    /// Audio: the negotiated id of the audio-level header extension, and the smoothed level.
    audio_level_ext: Option<u8>,
    level: LevelMeter,
    /// Muted by an administrator: its packets are dropped at the origin, its forwarders paused.
    muted: bool,
    forwarders: Vec<Forwarder>,
}

/// Where a track's packets come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// A publisher on this driver, through this receiver of its connection.
    Local(RTCRtpReceiverId),
    /// Another driver (the index): this track is a proxy.
    Remote(usize),
}

/// What a driver knows of a room's participants and tracks on other drivers.
#[derive(Default)]
struct RemoteRoom {
    /// Key → the participant (without tracks).
    members: HashMap<ParticipantKey, ParticipantInfo>,
    tracks: HashMap<TrackKey, RemoteTrack>,
}

/// One simulcast layer (or the only stream) of a published track.
struct Layer {
    /// Empty for a track without simulcast.
    rid: String,
    ssrc: u32,
    unwrapper: SeqUnwrapper,
    keyframes: KeyframeThrottle,
    last_packet: Option<Instant>,
    /// Bytes received since the last tick, and the smoothed rate.
    bytes: u64,
    bitrate: f64,
    width: u32,
    height: u32,
    /// Since when no subscriber needs it (dynacast).
    unneeded_since: Option<Instant>,
}

impl Layer {
    fn new(rid: String, ssrc: u32) -> Self {
        Self {
            rid,
            ssrc,
            unwrapper: SeqUnwrapper::new(),
            keyframes: KeyframeThrottle::default(),
            last_packet: None,
            bytes: 0,
            bitrate: 0.0,
            width: 0,
            height: 0,
            unneeded_since: None,
        }
    }

    fn active(&self, now: Instant) -> bool {
        self.last_packet
            .is_some_and(|t| now.saturating_duration_since(t) < LAYER_IDLE)
    }
}

/// Where a rid sits in the usual simulcast naming schemes (q/h/f, l/m/h, 0/1/2), low first.
/// The scheme is told by a rid only it uses (`q` or `f`; `l` or `m`), so `q` ranks low even while
/// it is the only layer that has started.
fn rid_rank(rid: &str, all: &[&str]) -> usize {
    let scheme: &[&str] = if all.contains(&"f") || all.contains(&"q") {
        &["q", "h", "f"]
    } else if all.contains(&"l") || all.contains(&"m") {
        &["l", "m", "h"]
    } else {
        &["0", "1", "2"]
    };
    scheme
        .iter()
        .position(|r| *r == rid)
        .unwrap_or(scheme.len())
}

struct Forwarder {
    subscriber: ParticipantKey,
    sender_id: RTCRtpSenderId,
    ssrc: u32,
    /// The subscriber leg's payload type, once negotiated.
    payload_type: u8,
    active: bool,
    /// When it was made, in milliseconds after its track's `published_at` (4 bytes, which
    /// keep the struct at two cache lines): a subscriber still connecting keeps the top layer
    /// on for [`DYNACAST_CONNECTING`] from then.
    created_ms: u32,
    rewriter: RtpRewriter,
    wants: Wants,
    /// The layer the allocator would forward if the publisher sent everything (dynacast).
    ideal: Option<u8>,
    reason: Reason,
    /// The last (current, target, reason) reported to the subscriber, as quality names: a
    /// layer's name can change as more layers start (with only `q` seen, it is the top one).
    reported: Option<(Option<Quality>, Option<Quality>, Reason)>,
}

/// A datagram (or ICE-TCP frame) the driver wants sent, in the order it wants them sent.
pub struct Transmit {
    pub flow: Flow,
    pub data: BytesMut,
}

/// Where a driver's media sockets are and what it announces.
pub struct DriverAddrs {
    /// The UDP socket's bound address.
    pub udp: SocketAddr,
    /// The UDP host candidates announced (the bound address, or the announced IPs).
    pub host_candidates: Vec<SocketAddr>,
    /// ICE-TCP: the listener's bound address and its passive candidates.
    pub tcp: Option<SocketAddr>,
    pub tcp_candidates: Vec<SocketAddr>,
}

impl DriverAddrs {
    /// The candidates of sockets bound at `udp` (and `tcp`): their own addresses, or the
    /// configured announced IPs with their ports.
    pub fn announced(config: &SfuConfig, udp: SocketAddr, tcp: Option<SocketAddr>) -> Self {
        let announce = |bound: SocketAddr| -> Vec<SocketAddr> {
            if config.announce_ips.is_empty() {
                vec![bound]
            } else {
                config
                    .announce_ips
                    .iter()
                    .map(|ip| SocketAddr::new(*ip, bound.port()))
                    .collect()
            }
        };
        Self {
            udp,
            host_candidates: announce(udp),
            tcp,
            tcp_candidates: tcp.map(announce).unwrap_or_default(),
        }
    }
}

/// One media driver's state: every connection placed on it, the tracks and rooms they are in.
/// Socket-free: fed with `handle_*`, told the time, drained with [`Driver::poll_transmit`]
/// (see `runtime` for the IO around it).
pub struct Driver {
    /// What to send, in order (drained by the runtime after each [`Driver::settle`]).
    transmits: std::collections::VecDeque<Transmit>,
    /// The driver's one random source (ids, ufrags, SSRCs, injected loss): seeded, so a test
    /// harness replays a run.
    rng: StdRng,
    /// The local address handed to `rtc` with a datagram, by (IPv6, loopback) of its source:
    /// one of the host candidates. rtc accepts a datagram only on an address that is one of its
    /// local candidates, and the socket's own address is not one when it is a wildcard (or when
    /// a different address is announced, as behind a 1:1 NAT).
    rtc_local: [[SocketAddr; 2]; 2],
    host_candidates: Vec<SocketAddr>,
    inject_loss: f64,
    inject_loss_out: f64,
    peers: HashMap<ParticipantKey, Peer>,
    tracks: HashMap<TrackKey, Track>,
    rooms: HashMap<String, Vec<ParticipantKey>>,
    by_ufrag: HashMap<String, ParticipantKey>,
    by_addr: HashMap<Flow, ParticipantKey>,
    /// Flows this driver's socket receives for other drivers' connections (shared port).
    remote_flows: RemoteFlows,
    /// Every driver binds the same UDP port (see `port`): datagrams may have to cross.
    shared_port: bool,
    /// ICE-TCP: the passive candidates (one port per driver), the address handed to rtc with a
    /// frame, and the open connections' writers.
    tcp_candidates: Vec<SocketAddr>,
    rtc_local_tcp: [[SocketAddr; 2]; 2],
    /// Public track id → track.
    track_ids: HashMap<String, TrackKey>,
    /// Each room's active speaker.
    speakers: HashMap<String, ParticipantKey>,
    timers: TimerQueue<ParticipantKey>,
    next_tick: Instant,
    /// Peers to service (their writes, events and reads to drain).
    queue: Vec<ParticipantKey>,
    /// Peers to remove once the current step is done, with the reason.
    removals: Vec<(ParticipantKey, String)>,
    /// Reused buffers for draining a connection.
    event_buf: Vec<RTCPeerConnectionEvent>,
    read_buf: Vec<TaggedRTCMessage>,
    next_key: u64,
    stats: DriverStats,
    mesh: Mesh,
    /// Participants on this driver, for placement.
    load: Load,
    /// Rooms' participants and tracks on other drivers.
    remote_rooms: HashMap<String, RemoteRoom>,
    /// Tracks a participant may publish (0: no limit).
    max_tracks: usize,
    /// [`SfuConfig::consent_timeout`]: Chromium checks its selected pair every 2.5 s or so; a
    /// client that loses its network entirely is caught sooner by the signaling heartbeat.
    consent_timeout: Duration,
    /// [`SfuConfig::connect_timeout`]: nothing holds a place in a room for ever.
    connect_timeout: Duration,
    observer: Option<mpsc::UnboundedSender<Observation>>,
}

/// For each (IPv6, loopback) kind of source address, the host candidate a client of that kind
/// most likely sent to: same family and same loopback-ness, else same family, else the first.
fn rtc_local_addrs(bound: SocketAddr, candidates: &[SocketAddr]) -> [[SocketAddr; 2]; 2] {
    let pick = |v6: bool, loopback: bool| {
        candidates
            .iter()
            .max_by_key(|c| {
                (
                    c.is_ipv6() == v6,
                    c.ip().is_loopback() == loopback,
                    std::cmp::Reverse(candidates.iter().position(|x| x == *c)),
                )
            })
            .copied()
            .unwrap_or(bound)
    };
    [
        [pick(false, false), pick(false, true)],
        [pick(true, false), pick(true, true)],
    ]
}

/// Where a client's packets come from and go to: a UDP source address, or an ICE-TCP
/// connection (by its peer address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    pub addr: SocketAddr,
    pub tcp: bool,
}

impl Flow {
    pub fn udp(addr: SocketAddr) -> Flow {
        Flow { addr, tcp: false }
    }

    pub fn tcp(addr: SocketAddr) -> Flow {
        Flow { addr, tcp: true }
    }
}

impl std::fmt::Display for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addr = SocketAddr::new(self.addr.ip().to_canonical(), self.addr.port());
        if self.tcp {
            write!(f, "tcp:{addr}")
        } else {
            write!(f, "{addr}")
        }
    }
}

/// Runs `f` on one connection; a panic inside `rtc` is contained to that connection.
fn guarded<T>(f: impl FnOnce() -> T) -> Option<T> {
    catch_unwind(AssertUnwindSafe(f)).ok()
}

fn random_id(rng: &mut StdRng, prefix: &str) -> String {
    format!("{prefix}{}", Alphanumeric.sample_string(rng, 12))
}

impl Driver {
    /// A driver linked to the others by `mesh`, at time `now`, drawing its randomness from `seed`.
    pub fn new(
        config: &SfuConfig,
        addrs: DriverAddrs,
        mesh: Mesh,
        load: Load,
        seed: u64,
        now: Instant,
    ) -> Self {
        Self {
            transmits: std::collections::VecDeque::new(),
            rng: StdRng::seed_from_u64(seed),
            rtc_local: rtc_local_addrs(addrs.udp, &addrs.host_candidates),
            rtc_local_tcp: match addrs.tcp {
                Some(bound) => rtc_local_addrs(bound, &addrs.tcp_candidates),
                None => rtc_local_addrs(addrs.udp, &[]),
            },
            host_candidates: addrs.host_candidates,
            tcp_candidates: addrs.tcp_candidates,
            inject_loss: config.inject_loss,
            inject_loss_out: config.inject_loss_out,
            peers: HashMap::new(),
            tracks: HashMap::new(),
            rooms: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            remote_flows: RemoteFlows::default(),
            shared_port: !config.port_per_driver && config.media_drivers > 1,
            track_ids: HashMap::new(),
            speakers: HashMap::new(),
            timers: TimerQueue::new(),
            next_tick: now + TICK,
            queue: Vec::new(),
            removals: Vec::new(),
            event_buf: Vec::new(),
            read_buf: Vec::new(),
            next_key: 1,
            stats: DriverStats::default(),
            mesh,
            load,
            remote_rooms: HashMap::new(),
            max_tracks: config.max_tracks_per_participant,
            consent_timeout: config.consent_timeout,
            connect_timeout: config.connect_timeout,
            observer: config.observer.clone(),
        }
    }

    /// A datagram read from this driver's socket (or a frame of one of its ICE-TCP
    /// connections), at `now`. What it causes is queued; [`Driver::settle`] drains the
    /// connections it touched.
    pub fn handle_datagram(&mut self, now: Instant, flow: Flow, data: &[u8]) {
        self.on_datagram_from(data, flow, now, false);
    }

    /// A datagram another driver's socket received for one of this driver's connections.
    pub fn handle_crossed(&mut self, now: Instant, flow: Flow, data: &[u8]) {
        self.on_datagram_from(data, flow, now, true);
    }

    /// A packet of a track published on another driver.
    pub fn handle_mesh_packet(&mut self, p: MeshPacket) {
        self.on_mesh_packet(p);
    }

    /// An ICE-TCP connection closed: a later connection from the same address is a new flow.
    pub fn handle_tcp_closed(&mut self, peer: SocketAddr) {
        self.by_addr.remove(&Flow::tcp(peer));
    }

    /// A command from the engine handle, a signaling session or another driver.
    pub fn handle_command(&mut self, now: Instant, cmd: Command) {
        self.on_command(cmd, now);
    }

    /// Fires the connection timers that are due and, every [`TICK`], re-evaluates layers,
    /// bitrates, dynacast and speakers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.fire_timers(now);
        if now >= self.next_tick {
            self.next_tick = now + TICK;
            self.tick(now);
        }
    }

    /// When [`Driver::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Instant {
        self.timers
            .next_deadline()
            .map_or(self.next_tick, |d| d.min(self.next_tick))
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The runtime could not send a datagram it was given (counted).
    pub fn note_send_failed(&mut self) {
        self.stats.datagrams_send_failed += 1;
    }

    /// The server stops: every participant is removed (their close is queued to send).
    pub fn close(&mut self, now: Instant) {
        let keys: Vec<_> = self.peers.keys().copied().collect();
        for key in keys {
            self.remove_peer(key, "server stopping", now);
        }
    }

    /// A key for a participant or track, unique across drivers.
    fn new_key(&mut self) -> u64 {
        let key = global_key(self.mesh.index, self.next_key);
        self.next_key += 1;
        key
    }

    /// Services queued peers until nothing is left, then performs removals.
    pub fn settle(&mut self, now: Instant) {
        loop {
            while let Some(key) = self.queue.pop() {
                self.service(key, now);
            }
            if self.removals.is_empty() {
                break;
            }
            let removals = std::mem::take(&mut self.removals);
            for (key, reason) in removals {
                self.remove_peer(key, &reason, now);
            }
        }
        if self.timers.len() > 4 * self.peers.len() + 64 {
            let peers = &self.peers;
            self.timers
                .compact(|at, key| peers.get(&key).is_some_and(|p| p.timer == Some(at)));
        }
    }

    fn enqueue(&mut self, key: ParticipantKey) {
        if let Some(peer) = self.peers.get_mut(&key) {
            if !peer.queued {
                peer.queued = true;
                self.queue.push(key);
            }
        }
    }

    fn fail_peer(&mut self, key: ParticipantKey, reason: &str) {
        self.stats.connection_panics += 1;
        warn!(
            participant = key,
            reason, "connection failed inside rtc; removing it"
        );
        self.removals.push((key, reason.to_owned()));
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some((at, key)) = self.timers.pop_due(now) {
            let Some(peer) = self.peers.get_mut(&key) else {
                continue;
            };
            if peer.timer != Some(at) {
                continue; // stale entry
            }
            peer.timer = None;
            if peer
                .consent
                .is_some_and(|(at, _)| now >= at + self.consent_timeout)
            {
                self.removals.push((key, "media consent expired".into()));
                continue;
            }
            match guarded(|| peer.pc.handle_timeout(now)) {
                Some(Ok(())) => {}
                Some(Err(err)) => debug!(participant = key, %err, "handle_timeout"),
                None => self.fail_peer(key, "panic in handle_timeout"),
            }
            self.enqueue(key);
        }
    }

    /// A datagram from `flow`: read from this driver's socket, or `crossed` from the driver whose
    /// socket the kernel gave it to (see `port`; it is not sent on again).
    fn on_datagram_from(&mut self, data: &[u8], flow: Flow, now: Instant, crossed: bool) {
        if !crossed {
            self.stats.datagrams_in += 1;
            self.stats.bytes_in += data.len() as u64;
        }
        if self.inject_loss > 0.0
            && classify(data) == DatagramKind::Rtp
            && self.rng.random::<f64>() < self.inject_loss
        {
            self.stats.datagrams_dropped_injected += 1;
            self.stats.bytes_dropped.injected += data.len() as u64;
            return;
        }
        let key = match self.by_addr.get(&flow) {
            Some(&key) => key,
            None => {
                let ufrag = stun_binding_local_ufrag(data);
                match ufrag.and_then(|u| self.by_ufrag.get(u)) {
                    Some(&key) => key,
                    None => {
                        if !crossed && self.shared_port && !flow.tcp {
                            // Another driver's connection? A check says whose by its ufrag;
                            // anything else by what this driver learned from earlier checks.
                            let owner = match ufrag.and_then(owner_of_ufrag) {
                                Some(owner)
                                    if owner != self.mesh.index && owner < self.mesh.len() =>
                                {
                                    self.remote_flows.check_seen(flow, owner);
                                    Some(owner)
                                }
                                Some(_) => None,
                                None => self.remote_flows.owner(&flow),
                            };
                            if let Some(owner) = owner {
                                self.cross(owner, data, flow, now);
                                return;
                            }
                        }
                        self.stats.datagrams_unknown_source += 1;
                        self.stats.bytes_dropped.unknown_source += data.len() as u64;
                        return;
                    }
                }
            }
        };
        self.deliver(key, data, flow, now);
    }

    /// Hands a datagram to driver `owner`, whose connection it is (shared port): a full queue
    /// drops it, counted.
    fn cross(&mut self, owner: usize, data: &[u8], flow: Flow, now: Instant) {
        let crossing = Crossing {
            flow,
            data: Bytes::copy_from_slice(data),
            at: now,
        };
        match self.mesh.crossing[owner].try_send(crossing) {
            Ok(()) => self.stats.datagrams_crossed += 1,
            Err(_) => {
                self.stats.datagrams_dropped_crossing += 1;
                self.stats.bytes_dropped.crossing += data.len() as u64;
            }
        }
    }

    /// Hands a datagram from `flow` to connection `key`.
    fn deliver(&mut self, key: ParticipantKey, data: &[u8], flow: Flow, now: Instant) {
        let src = flow.addr;
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        if !peer.remote_set {
            if peer.early_checks.len() < MAX_EARLY_CHECKS && classify(data) == DatagramKind::Stun {
                peer.early_checks.push((data.to_vec(), flow));
            }
            return;
        }
        if is_nominating_check(data) && peer.nominations.len() < MAX_NOMINATIONS {
            peer.nominations.push((data.to_vec(), flow));
        }
        let msg = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: if flow.tcp {
                    &self.rtc_local_tcp
                } else {
                    &self.rtc_local
                }[usize::from(src.is_ipv6())][usize::from(src.ip().is_loopback())],
                peer_addr: src,
                ecn: None,
                transport_protocol: if flow.tcp {
                    TransportProtocol::TCP
                } else {
                    TransportProtocol::UDP
                },
            },
            message: BytesMut::from(data),
        };
        match guarded(|| peer.pc.handle_read(msg)) {
            Some(Ok(())) => {}
            Some(Err(err)) => {
                self.stats.handle_read_errors += 1;
                self.stats.bytes_dropped.rejected += data.len() as u64;
                debug!(participant = key, %src, %err, "datagram rejected");
            }
            None => self.fail_peer(key, "panic in handle_read"),
        }
        self.enqueue(key);
    }

    /// Drains one connection: sends its datagrams, then handles its events and decrypted media.
    fn service(&mut self, key: ParticipantKey, now: Instant) {
        let mut events = std::mem::take(&mut self.event_buf);
        let mut reads = std::mem::take(&mut self.read_buf);
        let stand_in;
        let nominations;
        {
            let Some(peer) = self.peers.get_mut(&key) else {
                return;
            };
            peer.queued = false;
            let drained = guarded(|| {
                while let Some(out) = peer.pc.poll_write() {
                    let mut dst = Flow {
                        addr: out.transport.peer_addr,
                        tcp: out.transport.transport_protocol == TransportProtocol::TCP,
                    };
                    if is_stun_binding_request(&out.message) {
                        // A triggered check: a lite agent sends none, so the driver answers it
                        // for the client (see `crate::ice_lite`).
                        let answer = peer
                            .pc
                            .remote_description()
                            .and_then(|d| ice_lite::ice_pwd(&d.sdp).map(str::to_owned))
                            .and_then(|pwd| {
                                ice_lite::answer_for_client(
                                    &out.message,
                                    &pwd,
                                    out.transport.local_addr,
                                )
                            });
                        if let Some(answer) = answer {
                            if peer.stand_in_answers.len() < MAX_NOMINATIONS {
                                peer.stand_in_answers.push((answer, dst));
                            }
                        }
                        continue;
                    }
                    if is_stun_binding_success(&out.message) {
                        // The connection accepted a check from `dst`: pin the address, and make
                        // it the client's current path.
                        if let Some(i) = peer.addrs.iter().position(|a| *a == dst) {
                            // Most recently confirmed last.
                            let a = peer.addrs.remove(i);
                            peer.addrs.push(a);
                        } else {
                            if peer.addrs.len() >= MAX_PINNED_ADDRS {
                                // The address confirmed longest ago goes (a client that moved
                                // networks several times): the table stays bounded.
                                let old = peer.addrs.remove(0);
                                if self.by_addr.get(&old) == Some(&key) {
                                    self.by_addr.remove(&old);
                                    if self.shared_port && !old.tcp {
                                        let index = self.mesh.index;
                                        self.mesh.broadcast(|| MeshMsg::FlowUnpinned {
                                            flow: old,
                                            driver: index,
                                        });
                                    }
                                }
                                debug!(participant = %peer.id, %old, "source address unpinned");
                            }
                            peer.addrs.push(dst);
                            self.by_addr.insert(dst, key);
                            if self.shared_port && !dst.tcp {
                                // The driver whose socket receives this flow sends it here.
                                self.remote_flows.forget(&dst);
                                let index = self.mesh.index;
                                self.mesh.broadcast(|| MeshMsg::FlowPinned {
                                    flow: dst,
                                    driver: index,
                                });
                            }
                            debug!(participant = %peer.id, %dst, "source address pinned");
                        }
                        peer.consent = Some((now, dst));
                    } else if classify(&out.message) != DatagramKind::Stun {
                        if let Some((_, active)) = peer.consent {
                            dst = active;
                        }
                        if self.inject_loss_out > 0.0
                            && classify(&out.message) == DatagramKind::Rtp
                            && self.rng.random::<f64>() < self.inject_loss_out
                        {
                            self.stats.datagrams_dropped_injected_out += 1;
                            self.stats.bytes_dropped.injected += out.message.len() as u64;
                            continue;
                        }
                    }
                    self.stats.datagrams_out += 1;
                    self.stats.bytes_out += out.message.len() as u64;
                    self.transmits.push_back(Transmit {
                        flow: dst,
                        data: out.message,
                    });
                }
                while let Some(ev) = peer.pc.poll_event() {
                    events.push(ev);
                }
                while let Some(msg) = peer.pc.poll_read() {
                    reads.push(msg);
                }
                peer.pc.poll_timeout()
            });
            stand_in = std::mem::take(&mut peer.stand_in_answers);
            nominations = std::mem::take(&mut peer.nominations);
            match drained {
                Some(deadline) => {
                    let consent_deadline = peer.consent.map(|(at, _)| at + self.consent_timeout);
                    let deadline = match (deadline, consent_deadline) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    if deadline != peer.timer {
                        peer.timer = deadline;
                        if let Some(at) = deadline {
                            self.timers.schedule(at, key);
                        }
                    }
                }
                None => self.fail_peer(key, "panic while draining"),
            }
        }
        if !stand_in.is_empty() {
            // rtc's triggered checks are answered: the pairs succeeded, and the nominating
            // checks that triggered them now select their pair (and are answered) when rtc
            // sees them again. Replayed checks are not recorded again, so this ends here.
            for (answer, flow) in stand_in {
                self.deliver(key, &answer, flow, now);
            }
            for (check, flow) in nominations {
                self.deliver(key, &check, flow, now);
            }
            if let Some(peer) = self.peers.get_mut(&key) {
                peer.nominations.clear();
            }
        }
        for ev in events.drain(..) {
            self.on_peer_event(key, ev, now);
        }
        for msg in reads.drain(..) {
            self.on_peer_message(key, msg);
        }
        self.event_buf = events;
        self.read_buf = reads;
    }

    fn on_peer_event(&mut self, key: ParticipantKey, ev: RTCPeerConnectionEvent, now: Instant) {
        match ev {
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                debug!(participant = key, %state, "connection state");
                match state {
                    RTCPeerConnectionState::Connected => {
                        if let Some(peer) = self.peers.get_mut(&key) {
                            peer.connected = true;
                        }
                        self.activate_forwarders(key, now);
                    }
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                        self.removals
                            .push((key, format!("media connection {state}")));
                    }
                    _ => {}
                }
            }
            RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(
                RTCIceConnectionState::Connected,
            ) => {
                // When the server is the DTLS client (the client answered `a=setup:passive`),
                // rtc prepares the ClientHello as ICE connects but hands it out only from
                // `handle_timeout`, whose next deadline may be far off: run it now (this cut the
                // join time of such clients by ~150 ms).
                if let Some(peer) = self.peers.get_mut(&key) {
                    if let Some(Err(err)) = guarded(|| peer.pc.handle_timeout(now)) {
                        debug!(participant = key, %err, "handle_timeout after ICE connected");
                    }
                }
                self.enqueue(key);
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                debug!(participant = key, ssrc = init.ssrc, track = %init.track_id, "track opened");
                self.publish_track(key, init, now);
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnClose(track_id)) => {
                let tkey = self
                    .peers
                    .get_mut(&key)
                    .and_then(|p| p.published.remove(&track_id));
                if let Some(tkey) = tkey {
                    self.unpublish_track(tkey, now);
                }
            }
            _ => {}
        }
    }

    fn on_peer_message(&mut self, key: ParticipantKey, msg: TaggedRTCMessage) {
        match msg.message {
            RTCMessage::RtpPacket(track_id, packet) => self.on_rtp(key, &track_id, packet, msg.now),
            RTCMessage::RtcpPacket(_, packets) => {
                for p in &packets {
                    let any = p.as_any();
                    let media_ssrc = if let Some(pli) = any.downcast_ref::<PictureLossIndication>()
                    {
                        self.stats.keyframe_requests_received += 1;
                        pli.media_ssrc
                    } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
                        self.stats.keyframe_requests_received += 1;
                        fir.fir.first().map_or(fir.media_ssrc, |e| e.ssrc)
                    } else if any.downcast_ref::<TransportLayerNack>().is_some() {
                        // Answered inside rtc (NACK responder); delivered here to be counted.
                        self.stats.nacks_received += 1;
                        continue;
                    } else if let Some(remb) = any.downcast_ref::<ReceiverEstimatedMaximumBitrate>()
                    {
                        if let Some(peer) = self.peers.get_mut(&key) {
                            peer.remb = Some((msg.now, f64::from(remb.bitrate)));
                        }
                        continue;
                    } else {
                        continue;
                    };
                    let tkey = self
                        .peers
                        .get(&key)
                        .and_then(|p| p.track_by_ssrc.get(&media_ssrc));
                    let Some(&tkey) = tkey else {
                        continue;
                    };
                    // The subscriber lost its picture: a keyframe of the layer it receives (or
                    // is about to).
                    let layer = self.tracks.get(&tkey).and_then(|t| {
                        t.forwarders
                            .iter()
                            .find(|f| f.subscriber == key)
                            .and_then(|f| f.rewriter.current().or(f.rewriter.target()))
                    });
                    if let Some(layer) = layer {
                        self.request_keyframe(tkey, layer, msg.now);
                    }
                }
            }
            _ => {}
        }
    }

    /// The hot path: one publisher packet to every subscriber of its track, on this driver and
    /// (once per driver) on the drivers holding a proxy of it.
    fn on_rtp(&mut self, key: ParticipantKey, track_id: &str, packet: rtp::Packet, now: Instant) {
        let Some(&tkey) = self.peers.get(&key).and_then(|p| p.published.get(track_id)) else {
            return;
        };
        let Some(track) = self.tracks.get(&tkey) else {
            return;
        };
        if track.muted {
            self.stats.rtp_dropped_muted += 1;
            self.stats.bytes_dropped.muted += packet.payload.len() as u64;
            return;
        }
        let Some(layer_id) = track
            .layers
            .iter()
            .position(|l| l.ssrc == packet.header.ssrc)
        else {
            return;
        };
        let audio_level = track.audio_level_ext.and_then(|id| {
            packet
                .header
                .get_extension(id)
                .and_then(|e| speaker::parse_audio_level(&e))
        });
        let p = MeshPacket {
            track: tkey,
            layer: layer_id as u8,
            seq: packet.header.sequence_number,
            timestamp: packet.header.timestamp,
            marker: packet.header.marker,
            padding: packet.header.padding,
            payload: packet.payload,
            audio_level,
            at: now,
        };
        for &(driver, _) in &track.sinks {
            let Some(queue) = self.mesh.media.get(driver) else {
                continue;
            };
            match queue.try_send(p.clone()) {
                Ok(()) => self.stats.mesh_packets_out += 1,
                Err(_) => {
                    self.stats.mesh_dropped += 1;
                    self.stats.bytes_dropped.driver_queue_full += p.payload.len() as u64;
                }
            }
        }
        self.route(p);
    }

    /// A packet of a track published on another driver, for this driver's proxy of it.
    fn on_mesh_packet(&mut self, p: MeshPacket) {
        self.stats.mesh_packets_in += 1;
        let known = self.tracks.get(&p.track).is_some_and(|t| {
            matches!(t.origin, Origin::Remote(_)) && usize::from(p.layer) < t.layers.len()
        });
        if known {
            self.route(p);
        }
    }

    /// Ingests one packet on its track (layer state, keyframes, size, audio level) and hands it
    /// to every forwarder of the track on this driver.
    fn route(&mut self, p: MeshPacket) {
        let (tkey, now) = (p.track, p.at);
        let Some(track) = self.tracks.get_mut(&tkey) else {
            return;
        };
        if track.muted {
            return;
        }
        let layer_id = usize::from(p.layer);
        if let Some(level) = p.audio_level {
            track.level.observe(now, level);
        }
        let layer = &mut track.layers[layer_id];
        let ext_seq = layer.unwrapper.unwrap(p.seq);
        layer.last_packet = Some(now);
        layer.bytes += p.payload.len() as u64 + 12;
        let keyframe = track.codec.is_keyframe_start(&p.payload);
        let descriptor = if track.codec == Codec::Vp8 {
            if keyframe {
                if let Some((w, h)) = vp8::keyframe_size(&p.payload) {
                    (layer.width, layer.height) = (w, h);
                }
            }
            vp8::Vp8Descriptor::parse(&p.payload)
        } else {
            None
        };
        let input = PacketIn {
            layer: layer_id as u8,
            ext_seq,
            timestamp: p.timestamp,
            keyframe,
            at: now,
            picture_id: descriptor.and_then(|d| d.picture_id),
            tl0_pic_idx: descriptor.and_then(|d| d.tl0_pic_idx),
        };
        // Layers whose keyframe some forwarder waits for (bit per layer id).
        let mut wanted_keyframes = 0u32;
        for fwd in track.forwarders.iter_mut().filter(|f| f.active) {
            let verdict = fwd.rewriter.process(&input);
            let rw = match verdict {
                Verdict::Forward(rw) => rw,
                Verdict::Drop(DropReason::WaitingForKeyframe) => {
                    if let Some(t) = fwd.rewriter.target() {
                        wanted_keyframes |= 1 << t;
                    }
                    continue;
                }
                Verdict::Drop(_) => {
                    if fwd.rewriter.waiting_for_keyframe() {
                        if let Some(t) = fwd.rewriter.target() {
                            wanted_keyframes |= 1 << t;
                        }
                    }
                    continue;
                }
            };
            if rw.switched && track.kind == MediaKind::Video {
                if fwd.reported.is_some_and(|(cur, _, _)| cur.is_some()) {
                    self.stats.layer_switches += 1;
                }
                report_layer(&self.peers, &track.id, &track.layers, &track.order, fwd);
            }
            // The payload is shared unless this subscriber's picture ids need rewriting.
            let payload = match (rw.vp8, descriptor) {
                (Some((pid, tl0)), Some(d)) => {
                    let mut copy = BytesMut::from(&p.payload[..]);
                    d.write(&mut copy, pid, tl0);
                    copy.freeze()
                }
                _ => p.payload.clone(),
            };
            let out = rtp::Packet {
                header: rtp::header::Header {
                    version: 2,
                    padding: p.padding,
                    marker: p.marker,
                    payload_type: fwd.payload_type,
                    sequence_number: rw.seq,
                    timestamp: rw.timestamp,
                    ssrc: fwd.ssrc,
                    ..Default::default()
                },
                payload,
            };
            let Some(sub) = self.peers.get_mut(&fwd.subscriber) else {
                continue;
            };
            let written = guarded(|| {
                sub.pc
                    .rtp_sender(fwd.sender_id)
                    .map(|mut s| s.write_rtp(now, out))
            });
            match written {
                Some(Some(Ok(()))) => {
                    self.stats.rtp_forwarded += 1;
                    self.stats.rtp_forwarded_bytes += p.payload.len() as u64;
                }
                Some(_) => {
                    self.stats.forward_errors += 1;
                    self.stats.bytes_dropped.forward_error += p.payload.len() as u64;
                }
                None => {
                    self.stats.connection_panics += 1;
                    self.removals
                        .push((fwd.subscriber, "panic in write_rtp".into()));
                }
            }
            if !sub.queued {
                sub.queued = true;
                self.queue.push(fwd.subscriber);
            }
        }
        for l in 0..32u8 {
            if wanted_keyframes & (1 << l) != 0 {
                self.request_keyframe(tkey, l, now);
            }
        }
    }

    /// Sends a PLI for one layer of the track to its publisher, at most once per throttle
    /// interval per layer.
    fn request_keyframe(&mut self, tkey: TrackKey, layer: u8, now: Instant) {
        let Some(track) = self.tracks.get_mut(&tkey) else {
            return;
        };
        if !track.codec.is_video() {
            return;
        }
        let Some(l) = track.layers.get_mut(usize::from(layer)) else {
            return;
        };
        if !l.keyframes.request(now) {
            return;
        }
        let publisher = track.publisher;
        let media_ssrc = l.ssrc;
        let receiver_id = match track.origin {
            Origin::Local(receiver_id) => receiver_id,
            Origin::Remote(driver) => {
                // The origin throttles too; its publisher gets one PLI for all drivers.
                self.mesh
                    .send(driver, MeshMsg::Keyframe { track: tkey, layer });
                return;
            }
        };
        let Some(peer) = self.peers.get_mut(&publisher) else {
            return;
        };
        let pli = PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc,
        };
        let sent = guarded(|| {
            peer.pc
                .rtp_receiver(receiver_id)
                .map(|mut r| r.write_rtcp(now, vec![Box::new(pli)]))
        });
        if matches!(sent, Some(Some(Ok(())))) {
            self.stats.keyframe_requests += 1;
        }
        self.enqueue(publisher);
    }

    fn on_command(&mut self, cmd: Command, now: Instant) {
        match cmd {
            Command::Join {
                request,
                events,
                reply,
            } => {
                let _ = reply.send(self.join(request, events, now));
            }
            Command::MuteTrack {
                room,
                track_id,
                muted,
                reply,
            } => {
                let _ = reply.send(self.mute_track(&room, &track_id, muted, now));
            }
            Command::Offer { key, sdp } => self.on_remote_offer(key, sdp, now),
            Command::Answer { key, sdp } => self.on_remote_answer(key, sdp, now),
            Command::Candidate { key, candidate } => self.on_remote_candidate(key, candidate),
            Command::Leave { key } => self.remove_peer(key, "left", now),
            Command::TrackSettings { key, settings } => self.on_track_settings(key, settings, now),
            Command::TrackSource { key, mid, source } => {
                self.on_track_source(key, mid, source, now)
            }
            Command::Debug { reply } => {
                let _ = reply.send(self.snapshot(now));
            }
            Command::Mesh(msg) => self.on_mesh(msg, now),
            Command::Stats { reply } => {
                let mut stats = self.stats.clone();
                stats.participants = self.peers.len();
                stats.rooms = self.rooms.len();
                stats.subscriptions = self.tracks.values().map(|t| t.forwarders.len()).sum();
                stats.published_tracks = self
                    .tracks
                    .values()
                    .filter(|t| matches!(t.origin, Origin::Local(_)))
                    .count();
                stats.layers_paused = self
                    .tracks
                    .values()
                    .filter_map(|t| t.requested.as_ref().map(|r| (t, r)))
                    .map(|(t, r)| t.layers.iter().filter(|l| !r.contains(&l.rid)).count() as u64)
                    .sum();
                for peer in self.peers.values() {
                    let (sent, held) = peer.bandwidth.retransmissions();
                    stats.retransmissions_sent += sent;
                    stats.retransmissions_held_back += held;
                }
                let _ = reply.send(stats);
            }
        }
    }

    fn join(
        &mut self,
        request: JoinRequest,
        events: mpsc::UnboundedSender<Event>,
        now: Instant,
    ) -> Result<(ParticipantKey, JoinInfo), SfuError> {
        let JoinRequest {
            room,
            identity,
            name,
            permissions,
            subscribe_to,
            answer_only,
        } = request;
        let key = self.new_key();
        let id = random_id(&mut self.rng, "PA_");
        // The ufrag names this driver: a check that reaches another driver's socket (shared
        // port) is sent on here.
        let ufrag = port::ufrag_for(
            self.mesh.index,
            &Alphanumeric.sample_string(&mut self.rng, 14),
        );
        let pwd = Alphanumeric.sample_string(&mut self.rng, 32);
        let bandwidth = Arc::new(Bandwidth::default());
        let simulcast_ssrcs = SimulcastSsrcs::default();
        let pc = guarded(|| {
            peer::new_peer_connection(
                now,
                &ufrag,
                &pwd,
                &self.host_candidates,
                &self.tcp_candidates,
                bandwidth.clone(),
                simulcast_ssrcs.clone(),
            )
        })
        .ok_or_else(|| SfuError::PeerConnection("panic".into()))?
        .map_err(|e| SfuError::PeerConnection(e.to_string()))?;

        let existing_members = self.rooms.get(&room).cloned().unwrap_or_default();
        let mut participants: Vec<ParticipantInfo> = existing_members
            .iter()
            .filter_map(|k| self.peers.get(k))
            .map(|p| self.info_of(p))
            .collect();
        if let Some(remote) = self.remote_rooms.get(&room) {
            for (&member, info) in &remote.members {
                participants.push(ParticipantInfo {
                    tracks: remote
                        .tracks
                        .values()
                        .filter(|t| t.publisher == member)
                        .map(|t| t.info.clone())
                        .collect(),
                    ..info.clone()
                });
            }
        }
        self.rooms.entry(room.clone()).or_default().push(key);

        let peer = Peer {
            id: id.clone(),
            identity: identity.clone(),
            name: name.clone(),
            room: room.clone(),
            permissions,
            refused: HashSet::new(),
            pc,
            events,
            ufrag: ufrag.clone(),
            addrs: Vec::new(),
            timer: None,
            consent: None,
            queued: false,
            negotiated_at: None,
            subscribe_to,
            answer_only,
            connected: false,
            offer_outstanding: false,
            negotiation_needed: false,
            candidates_sent: false,
            early_candidates: Vec::new(),
            remote_set: false,
            early_checks: Vec::new(),
            nominations: Vec::new(),
            stand_in_answers: Vec::new(),
            published: HashMap::new(),
            subscribed: HashMap::new(),
            track_by_ssrc: HashMap::new(),
            sources: HashMap::new(),
            bandwidth,
            simulcast_ssrcs,
            remb: None,
            hold: CongestionHold::default(),
            budget: None,
        };
        let joined = ParticipantInfo {
            id: id.clone(),
            identity,
            name,
            tracks: Vec::new(),
        };
        self.by_ufrag.insert(ufrag, key);
        self.peers.insert(key, peer);
        self.load.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for other in &existing_members {
            self.send_event(*other, Event::ParticipantJoined(joined.clone()));
        }
        self.mesh.broadcast(|| MeshMsg::Joined {
            room: room.clone(),
            key,
            info: joined.clone(),
        });
        // Auto-subscribe to everything already published in the room, here or on other drivers.
        let remote_tracks: Vec<TrackKey> = self
            .remote_rooms
            .get(&room)
            .map(|r| r.tracks.keys().copied().collect())
            .unwrap_or_default();
        for tkey in remote_tracks {
            self.ensure_proxy(tkey, &room);
        }
        let existing_tracks: Vec<TrackKey> = self
            .tracks
            .iter()
            .filter(|(_, t)| t.room == room && t.publisher != key)
            .map(|(k, _)| *k)
            .collect();
        for tkey in existing_tracks {
            self.subscribe(key, tkey, now);
        }
        info!(participant = %id, %room, "joined");
        self.enqueue(key);
        Ok((
            key,
            JoinInfo {
                participant_id: id,
                participants,
            },
        ))
    }

    fn info_of(&self, peer: &Peer) -> ParticipantInfo {
        let tracks = peer
            .published
            .values()
            .filter_map(|k| self.tracks.get(k))
            .map(|t| TrackInfo {
                id: t.id.clone(),
                kind: t.kind,
                source: t.source,
                muted: t.muted,
            })
            .collect();
        ParticipantInfo {
            id: peer.id.clone(),
            identity: peer.identity.clone(),
            name: peer.name.clone(),
            tracks,
        }
    }

    fn send_event(&self, key: ParticipantKey, event: Event) {
        if let Some(peer) = self.peers.get(&key) {
            let _ = peer.events.send(event);
        }
    }

    fn send_error(&self, key: ParticipantKey, kind: ErrorKind, message: String) {
        self.send_event(key, Event::Error { kind, message });
    }

    fn publish_track(&mut self, key: ParticipantKey, init: RTCTrackEventInit, now: Instant) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        if peer.refused.contains(&init.track_id) {
            return;
        }
        let rid = init.rid.clone().unwrap_or_default();
        if !rid.is_empty() {
            if let Ok(mut ssrcs) = peer.simulcast_ssrcs.lock() {
                ssrcs.insert(init.ssrc);
            }
        }
        if let Some(&tkey) = peer.published.get(&init.track_id) {
            // Another simulcast layer of a known track.
            if let Some(track) = self.tracks.get_mut(&tkey) {
                if track.layers.iter().all(|l| l.ssrc != init.ssrc) && track.layers.len() < 8 {
                    info!(track = %track.id, %rid, ssrc = init.ssrc, "simulcast layer");
                    track.layers.push(Layer::new(rid, init.ssrc));
                    track.order = layer_order(&track.layers);
                    let layers: Vec<(String, u32)> = track
                        .layers
                        .iter()
                        .map(|l| (l.rid.clone(), l.ssrc))
                        .collect();
                    self.mesh.broadcast(|| MeshMsg::Layers {
                        track: tkey,
                        layers: layers.clone(),
                    });
                }
            }
            return;
        }
        let Some((kind, rtc_codec)) = peer.pc.rtp_receiver(init.receiver_id).and_then(|r| {
            let track = r.track();
            let kind = match track.kind() {
                RtpCodecKind::Audio => MediaKind::Audio,
                _ => MediaKind::Video,
            };
            track.codec(init.ssrc).cloned().map(|c| (kind, c))
        }) else {
            warn!(participant = %peer.id, ssrc = init.ssrc, "a track opened without a known codec; not published");
            return;
        };
        let Some(codec) = Codec::from_mime(&rtc_codec.mime_type) else {
            warn!(mime = %rtc_codec.mime_type, "published codec not forwarded");
            return;
        };
        let mid = peer
            .pc
            .rtp_transceiver(RTCRtpTransceiverId::from(init.receiver_id))
            .and_then(|t| t.mid().clone());
        let audio_level_ext = peer.pc.rtp_receiver(init.receiver_id).and_then(|mut r| {
            r.get_parameters()
                .rtp_parameters
                .header_extensions
                .iter()
                .find(|e| e.uri == "urn:ietf:params:rtp-hdrext:ssrc-audio-level")
                .map(|e| e.id as u8)
        });
        let source = mid
            .as_ref()
            .and_then(|m| peer.sources.get(m).copied())
            .unwrap_or(match kind {
                MediaKind::Audio => TrackSource::Microphone,
                MediaKind::Video => TrackSource::Camera,
            });
        let refusal = if !peer.permissions.may_publish(source) {
            Some((
                ErrorKind::PublishDenied,
                if peer.permissions.publish {
                    format!("this participant may not publish {}", source.as_str())
                } else {
                    "this participant may not publish".to_owned()
                },
            ))
        } else if self.max_tracks > 0 && peer.published.len() >= self.max_tracks {
            Some((
                ErrorKind::TrackLimit,
                format!(
                    "a participant may publish at most {} tracks",
                    self.max_tracks
                ),
            ))
        } else {
            None
        };
        if let Some((kind, message)) = refusal {
            info!(participant = %peer.id, source = source.as_str(), %message, "track refused");
            peer.refused.insert(init.track_id);
            let _ = peer.events.send(Event::Error { kind, message });
            return;
        }
        let tkey = global_key(self.mesh.index, self.next_key);
        self.next_key += 1;
        let track_id = random_id(&mut self.rng, "TR_");
        peer.published.insert(init.track_id, tkey);
        let publisher_id = peer.id.clone();
        let room = peer.room.clone();
        info!(participant = %publisher_id, track = %track_id, codec = %rtc_codec.mime_type, ssrc = init.ssrc, %rid, "track published");
        let remote = RemoteTrack {
            room: room.clone(),
            publisher: key,
            publisher_id: publisher_id.clone(),
            info: TrackInfo {
                id: track_id.clone(),
                kind,
                source,
                muted: false,
            },
            codec,
            rtc_codec: rtc_codec.clone(),
            layers: vec![(rid.clone(), init.ssrc)],
            published_at: now,
        };
        self.mesh.broadcast(|| MeshMsg::TrackPublished {
            track: tkey,
            remote: remote.clone(),
        });
        let layers = vec![Layer::new(rid, init.ssrc)];
        self.track_ids.insert(track_id.clone(), tkey);
        self.tracks.insert(
            tkey,
            Track {
                id: track_id.clone(),
                kind,
                source,
                publisher: key,
                publisher_id: publisher_id.clone(),
                room: room.clone(),
                origin: Origin::Local(init.receiver_id),
                sinks: Vec::new(),
                demand_sent: None,
                mid,
                codec,
                rtc_codec,
                order: layer_order(&layers),
                layers,
                published_at: now,
                requested: None,
                audio_level_ext: audio_level_ext.filter(|_| kind == MediaKind::Audio),
                level: LevelMeter::default(),
                muted: false,
                forwarders: Vec::new(),
            },
        );
        let others: Vec<ParticipantKey> = self
            .rooms
            .get(&room)
            .map(|m| m.iter().copied().filter(|k| *k != key).collect())
            .unwrap_or_default();
        let track = TrackInfo {
            id: track_id,
            kind,
            source,
            muted: false,
        };
        self.observe(|| Observation::TrackPublished {
            room: room.clone(),
            participant_id: publisher_id.clone(),
            track: track.clone(),
        });
        for other in others {
            self.send_event(
                other,
                Event::TrackPublished {
                    participant_id: publisher_id.clone(),
                    track: track.clone(),
                },
            );
            self.subscribe(other, tkey, now);
        }
    }

    /// Adds the track to the subscriber's connection and renegotiates.
    fn subscribe(&mut self, sub_key: ParticipantKey, tkey: TrackKey, now: Instant) {
        let Some(track) = self.tracks.get_mut(&tkey) else {
            return;
        };
        let publisher_id = track.publisher_id.clone();
        let Some(sub) = self.peers.get_mut(&sub_key) else {
            return;
        };
        if !sub.permissions.subscribe
            || sub
                .subscribe_to
                .as_ref()
                .is_some_and(|p| *p != track.publisher_id)
            || (sub.answer_only && sub.remote_set)
        {
            return;
        }
        let ssrc = self.rng.random::<u32>();
        let kind = match track.kind {
            MediaKind::Audio => RtpCodecKind::Audio,
            MediaKind::Video => RtpCodecKind::Video,
        };
        // The publisher's participant id is the MediaStream id (msid), so the client can tell
        // whose media an incoming track is.
        let local_track = MediaStreamTrack::new(
            publisher_id.clone(),
            track.id.clone(),
            track.id.clone(),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                // No codec here: a codec on the encoding becomes the m-line's only codec, and
                // rtc then restricts the whole connection to what that m-line negotiated, so a
                // later track in another codec (VP8 next to H.264) could not be added. The
                // forwarder picks the payload type by MIME type after negotiation.
                ..Default::default()
            }],
        );
        let init = RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Sendonly,
            streams: vec![publisher_id],
            send_encodings: vec![],
        };
        let added = guarded(|| {
            let tid = sub.pc.add_transceiver_from_track(local_track, Some(init))?;
            Ok::<_, rtc::shared::error::Error>(sub.pc.rtp_transceiver(tid).and_then(|t| t.sender()))
        });
        let sender_id = match added {
            Some(Ok(Some(id))) => id,
            Some(Ok(None)) => return,
            Some(Err(err)) => {
                warn!(%err, "could not add a track to a subscriber");
                return;
            }
            None => {
                self.fail_peer(sub_key, "panic in add_transceiver");
                return;
            }
        };
        sub.subscribed.insert(
            tkey,
            Subscription {
                offered: false,
                negotiated: false,
                codec_pinned: false,
            },
        );
        sub.track_by_ssrc.insert(ssrc, tkey);
        sub.negotiation_needed = true;
        track.forwarders.push(Forwarder {
            subscriber: sub_key,
            sender_id,
            ssrc,
            payload_type: 0,
            active: false,
            created_ms: u32::try_from(
                now.saturating_duration_since(track.published_at)
                    .as_millis(),
            )
            .unwrap_or(u32::MAX),
            rewriter: RtpRewriter::new(self.rng.random(), track.rtc_codec.clock_rate),
            wants: Wants::default(),
            ideal: None,
            reason: Reason::DisplaySize,
            reported: None,
        });
        self.maybe_offer(sub_key, now);
    }

    /// Removes a published track from every subscriber and tells the room.
    fn unpublish_track(&mut self, tkey: TrackKey, now: Instant) {
        let Some(track) = self.tracks.remove(&tkey) else {
            return;
        };
        self.track_ids.remove(&track.id);
        if matches!(track.origin, Origin::Local(_)) {
            self.mesh
                .broadcast(|| MeshMsg::TrackUnpublished { track: tkey });
            self.observe(|| Observation::TrackUnpublished {
                room: track.room.clone(),
                participant_id: track.publisher_id.clone(),
                track_id: track.id.clone(),
            });
        }
        let room_members = self.rooms.get(&track.room).cloned().unwrap_or_default();
        for member in room_members.into_iter().filter(|k| *k != track.publisher) {
            self.send_event(
                member,
                Event::TrackUnpublished {
                    participant_id: track.publisher_id.clone(),
                    track_id: track.id.clone(),
                },
            );
        }
        for fwd in &track.forwarders {
            if let Some(sub) = self.peers.get_mut(&fwd.subscriber) {
                sub.subscribed.remove(&tkey);
                sub.track_by_ssrc.remove(&fwd.ssrc);
                let _ = guarded(|| sub.pc.remove_track(fwd.sender_id));
                sub.negotiation_needed = true;
            }
            self.maybe_offer(fwd.subscriber, now);
        }
    }

    /// Sends the server's offer if the subscriber's tracks changed and no offer is outstanding.
    fn maybe_offer(&mut self, key: ParticipantKey, now: Instant) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        if !peer.negotiation_needed || peer.offer_outstanding || peer.answer_only {
            return;
        }
        let result = guarded(|| {
            let offer = peer.pc.create_offer(None)?;
            peer.pc.set_local_description(now, offer)?;
            Ok::<_, rtc::shared::error::Error>(peer.pc.local_description().map(|d| d.sdp))
        });
        match result {
            Some(Ok(Some(sdp))) => {
                peer.negotiation_needed = false;
                peer.offer_outstanding = true;
                for sub in peer.subscribed.values_mut() {
                    sub.offered = true;
                }
                let _ = peer.events.send(Event::Offer(sdp));
                self.pin_sender_codecs(key);
                self.send_candidates_once(key);
            }
            Some(Ok(None)) => {}
            Some(Err(err)) => {
                warn!(participant = key, %err, "could not create an offer");
                self.send_error(
                    key,
                    ErrorKind::Internal,
                    format!("server offer failed: {err}"),
                );
            }
            None => self.fail_peer(key, "panic in create_offer"),
        }
        self.enqueue(key);
    }

    /// Gives each newly offered subscriber sender's encoding the track's codec, between the offer
    /// and the answer. Senders are created without one (a codec on the encoding at offer time
    /// pins the m-line to it and, through the answer, narrows the codecs of the whole
    /// connection), but rtc binds a sender's stream to the interceptors (NACK responder, sender
    /// reports, transport-wide sequence numbers for the bandwidth estimate) only when its
    /// encoding's codec matches a negotiated one, which it checks when the answer arrives.
    fn pin_sender_codecs(&mut self, key: ParticipantKey) {
        let Some(peer) = self.peers.get(&key) else {
            return;
        };
        let mut pins = Vec::new();
        for (tkey, sub) in &peer.subscribed {
            if sub.codec_pinned || !sub.offered {
                continue;
            }
            let Some(track) = self.tracks.get(tkey) else {
                continue;
            };
            let Some(fwd) = track.forwarders.iter().find(|f| f.subscriber == key) else {
                continue;
            };
            let publisher_id = track.publisher_id.clone();
            let kind = match track.kind {
                MediaKind::Audio => RtpCodecKind::Audio,
                MediaKind::Video => RtpCodecKind::Video,
            };
            let coded = MediaStreamTrack::new(
                publisher_id,
                track.id.clone(),
                track.id.clone(),
                kind,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        ssrc: Some(fwd.ssrc),
                        ..Default::default()
                    },
                    codec: track.rtc_codec.clone(),
                    ..Default::default()
                }],
            );
            pins.push((*tkey, fwd.sender_id, coded));
        }
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        for (tkey, sender_id, coded) in pins {
            let replaced = guarded(|| {
                peer.pc
                    .rtp_sender(sender_id)
                    .map(|mut s| s.replace_track(coded))
            });
            match replaced {
                Some(Some(Ok(()))) => {
                    if let Some(sub) = peer.subscribed.get_mut(&tkey) {
                        sub.codec_pinned = true;
                    }
                }
                other => debug!(participant = key, ?other, "could not pin a sender codec"),
            }
        }
    }

    /// The server's host candidates, trickled once after the first SDP it sends.
    fn send_candidates_once(&mut self, key: ParticipantKey) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        if peer.candidates_sent {
            return;
        }
        peer.candidates_sent = true;
        let mid = peer.pc.local_description().and_then(|d| first_mid(&d.sdp));
        let Ok(inits) = peer::host_candidate_inits(&self.host_candidates, &self.tcp_candidates)
        else {
            return;
        };
        for init in inits {
            let _ = peer.events.send(Event::Candidate(Candidate {
                candidate: format!(
                    "candidate:{}",
                    init.candidate.trim_start_matches("candidate:")
                ),
                sdp_mid: mid.clone(),
                sdp_mline_index: Some(0),
                username_fragment: Some(peer.ufrag.clone()),
            }));
        }
    }

    fn on_remote_offer(&mut self, key: ParticipantKey, sdp: String, now: Instant) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        if peer.offer_outstanding {
            // Perfect negotiation: the server is impolite and ignores a colliding offer; the
            // client rolls back, answers ours, and offers again.
            debug!(participant = %peer.id, "ignoring colliding client offer");
            return;
        }
        let applied = guarded(|| {
            let offer =
                RTCSessionDescription::offer(sdp).map_err(|e| (ErrorKind::InvalidSdp, e))?;
            peer.pc
                .set_remote_description(now, offer)
                .map_err(|e| (ErrorKind::InvalidSdp, e))
        });
        match applied {
            Some(Ok(())) => {}
            Some(Err((kind, err))) => {
                self.send_error(key, kind, format!("offer rejected: {err}"));
                self.enqueue(key);
                return;
            }
            None => {
                self.fail_peer(key, "panic applying an offer");
                return;
            }
        }
        let answer_only = peer.answer_only;
        if answer_only {
            // The client's offer negotiates the subscriptions (rtc pairs its m-lines with the
            // senders already added): their codecs go on the encodings before the answer, as
            // between a server offer and its answer.
            for sub in peer.subscribed.values_mut() {
                sub.offered = true;
            }
            self.pin_sender_codecs(key);
        }
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        let result = guarded(|| {
            let answer = peer
                .pc
                .create_answer(None)
                .map_err(|e| (ErrorKind::InvalidSdp, e))?;
            peer.pc
                .set_local_description(now, answer)
                .map_err(|e| (ErrorKind::Internal, e))?;
            Ok(peer.pc.local_description().map(|d| d.sdp))
        });
        if answer_only && matches!(result, Some(Ok(Some(_)))) {
            for sub in peer.subscribed.values_mut() {
                sub.negotiated = sub.offered;
            }
        }
        match result {
            Some(Ok(Some(sdp))) => {
                let _ = peer.events.send(Event::Answer(sdp));
                let early = std::mem::take(&mut peer.early_candidates);
                for c in early {
                    let _ = guarded(|| peer.pc.add_remote_candidate(c));
                }
                self.replay_early_checks(key, now);
                self.send_candidates_once(key);
                if answer_only {
                    self.activate_forwarders(key, now);
                }
                // Subscriptions offered before may now be negotiated too (an answer covers them).
                self.maybe_offer(key, now);
            }
            Some(Ok(None)) => {}
            Some(Err((kind, err))) => {
                self.send_error(key, kind, format!("offer rejected: {err}"));
            }
            None => self.fail_peer(key, "panic applying an offer"),
        }
        self.enqueue(key);
    }

    fn on_remote_answer(&mut self, key: ParticipantKey, sdp: String, now: Instant) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        if !peer.offer_outstanding {
            self.send_error(
                key,
                ErrorKind::InvalidSdp,
                "answer without an outstanding offer".into(),
            );
            return;
        }
        let result = guarded(|| {
            let answer = RTCSessionDescription::answer(sdp)?;
            peer.pc.set_remote_description(now, answer)
        });
        match result {
            Some(Ok(())) => {
                peer.offer_outstanding = false;
                for sub in peer.subscribed.values_mut() {
                    if sub.offered {
                        sub.negotiated = true;
                    }
                }
                let early = std::mem::take(&mut peer.early_candidates);
                for c in early {
                    let _ = guarded(|| peer.pc.add_remote_candidate(c));
                }
                self.replay_early_checks(key, now);
                self.activate_forwarders(key, now);
                self.maybe_offer(key, now);
            }
            Some(Err(err)) => {
                self.send_error(
                    key,
                    ErrorKind::InvalidSdp,
                    format!("answer rejected: {err}"),
                );
            }
            None => self.fail_peer(key, "panic applying an answer"),
        }
        self.enqueue(key);
    }

    fn on_remote_candidate(&mut self, key: ParticipantKey, c: Candidate) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        let init = RTCIceCandidateInit {
            candidate: c.candidate,
            sdp_mid: c.sdp_mid,
            sdp_mline_index: c.sdp_mline_index,
            username_fragment: c.username_fragment,
            ..Default::default()
        };
        if init.candidate.is_empty() {
            return; // end of candidates
        }
        if peer.pc.remote_description().is_none() {
            if peer.early_candidates.len() < 64 {
                peer.early_candidates.push(init);
            }
            return;
        }
        match guarded(|| peer.pc.add_remote_candidate(init)) {
            Some(Ok(())) => {}
            Some(Err(err)) => self.send_error(
                key,
                ErrorKind::InvalidCandidate,
                format!("candidate rejected: {err}"),
            ),
            None => self.fail_peer(key, "panic adding a candidate"),
        }
        self.enqueue(key);
    }

    /// Starts forwarding every negotiated subscription of a connected subscriber, asking each
    /// video publisher for a keyframe so the new leg starts with a picture.
    fn activate_forwarders(&mut self, key: ParticipantKey, now: Instant) {
        let Some(sub) = self.peers.get_mut(&key) else {
            return;
        };
        if !sub.connected {
            return;
        }
        let mut to_request = Vec::new();
        for (&tkey, subscription) in &sub.subscribed {
            if !subscription.negotiated {
                continue;
            }
            let Some(track) = self.tracks.get_mut(&tkey) else {
                continue;
            };
            let Some(fwd) = track.forwarders.iter_mut().find(|f| f.subscriber == key) else {
                continue;
            };
            if fwd.active {
                continue;
            }
            let mime = &track.rtc_codec.mime_type;
            let pt = sub.pc.rtp_sender(fwd.sender_id).and_then(|mut s| {
                let codecs = &s.get_parameters().rtp_parameters.codecs;
                codecs
                    .iter()
                    .find(|c| {
                        c.rtp_codec.mime_type.eq_ignore_ascii_case(mime)
                            && c.rtp_codec.sdp_fmtp_line == track.rtc_codec.sdp_fmtp_line
                    })
                    .or_else(|| {
                        codecs
                            .iter()
                            .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
                    })
                    .map(|c| c.payload_type)
            });
            let Some(pt) = pt else {
                warn!(participant = %sub.id, %mime, "subscriber leg has no matching codec");
                continue;
            };
            fwd.payload_type = pt;
            fwd.active = true;
            if track.kind == MediaKind::Audio && !track.muted {
                fwd.rewriter.set_target(Some(0));
            }
            to_request.push(tkey);
        }
        if !to_request.is_empty() {
            // Choose layers now rather than at the next tick; a keyframe of each target layer
            // is requested by the first packets that find the forwarder waiting.
            self.allocate_subscriber(key, now);
        }
    }

    fn remove_peer(&mut self, key: ParticipantKey, reason: &str, now: Instant) {
        let Some(peer) = self.peers.get(&key) else {
            return;
        };
        let published: Vec<TrackKey> = peer.published.values().copied().collect();
        let subscribed: Vec<TrackKey> = peer.subscribed.keys().copied().collect();
        for tkey in published {
            self.unpublish_track(tkey, now);
        }
        for tkey in subscribed {
            if let Some(track) = self.tracks.get_mut(&tkey) {
                track.forwarders.retain(|f| f.subscriber != key);
            }
        }
        let Some(mut peer) = self.peers.remove(&key) else {
            return;
        };
        // Its counters live on in the driver's (they only ever grow).
        let (sent, held) = peer.bandwidth.retransmissions();
        self.stats.retransmissions_sent += sent;
        self.stats.retransmissions_held_back += held;
        let _ = guarded(|| peer.pc.close());
        // Flush the close (DTLS close_notify) to the client.
        let transmits = &mut self.transmits;
        let _ = guarded(|| {
            while let Some(out) = peer.pc.poll_write() {
                let flow = Flow {
                    addr: out.transport.peer_addr,
                    tcp: out.transport.transport_protocol == TransportProtocol::TCP,
                };
                transmits.push_back(Transmit {
                    flow,
                    data: out.message,
                });
            }
        });
        self.by_ufrag.remove(&peer.ufrag);
        for addr in &peer.addrs {
            if self.by_addr.get(addr) == Some(&key) {
                self.by_addr.remove(addr);
                if self.shared_port && !addr.tcp {
                    let (flow, index) = (*addr, self.mesh.index);
                    self.mesh.broadcast(|| MeshMsg::FlowUnpinned {
                        flow,
                        driver: index,
                    });
                }
            }
        }
        let mut room_empty = false;
        if let Some(members) = self.rooms.get_mut(&peer.room) {
            members.retain(|k| *k != key);
            room_empty = members.is_empty();
        }
        self.load.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.mesh.broadcast(|| MeshMsg::Left {
            room: peer.room.clone(),
            key,
            id: peer.id.clone(),
        });
        if room_empty {
            self.rooms.remove(&peer.room);
            self.speakers.remove(&peer.room);
            self.drop_proxies(&peer.room, now);
        }
        if self.speakers.get(&peer.room) == Some(&key) {
            self.speakers.remove(&peer.room);
        }
        let members = self.rooms.get(&peer.room).cloned().unwrap_or_default();
        for member in members {
            self.send_event(
                member,
                Event::ParticipantLeft {
                    participant_id: peer.id.clone(),
                },
            );
        }
        let _ = peer.events.send(Event::Closed {
            reason: reason.to_owned(),
        });
        info!(participant = %peer.id, room = %peer.room, reason, "left");
    }
}

impl Driver {
    /// Tells the engine's observer, if anyone listens.
    fn observe(&self, make: impl FnOnce() -> Observation) {
        if let Some(observer) = &self.observer {
            let _ = observer.send(make());
        }
    }

    /// Mutes or unmutes a track of `room` on this driver, as its origin or a proxy, and tells
    /// the local members. Returns whether this driver is the track's origin.
    fn mute_track(&mut self, room: &str, track_id: &str, muted: bool, now: Instant) -> bool {
        for r in self.remote_rooms.values_mut() {
            for t in r.tracks.values_mut() {
                if t.info.id == track_id {
                    t.info.muted = muted;
                }
            }
        }
        let Some(&tkey) = self.track_ids.get(track_id) else {
            return false;
        };
        let Some(track) = self.tracks.get_mut(&tkey) else {
            return false;
        };
        if track.room != room {
            return false;
        }
        let local = matches!(track.origin, Origin::Local(_));
        if track.muted == muted {
            return local;
        }
        track.muted = muted;
        info!(track = %track.id, muted, "track mute changed");
        let subscribers: Vec<ParticipantKey> = track
            .forwarders
            .iter()
            .filter(|f| f.active)
            .map(|f| f.subscriber)
            .collect();
        for fwd in track.forwarders.iter_mut().filter(|f| f.active) {
            if muted {
                // Paused at once; resumed through a new epoch (a keyframe for video), so the
                // subscriber sees contiguous sequence numbers across the silence.
                fwd.rewriter.set_target(None);
            } else if track.kind == MediaKind::Audio {
                fwd.rewriter.set_target(Some(0));
            }
        }
        let (publisher_id, kind, room) =
            (track.publisher_id.clone(), track.kind, track.room.clone());
        let track_id = track.id.clone();
        if local {
            self.observe(|| Observation::TrackMuted {
                room: room.clone(),
                participant_id: publisher_id.clone(),
                track_id: track_id.clone(),
                muted,
            });
        }
        let members = self.rooms.get(&room).cloned().unwrap_or_default();
        for m in members {
            self.send_event(
                m,
                Event::TrackMuted {
                    participant_id: publisher_id.clone(),
                    track_id: track_id.clone(),
                    muted,
                },
            );
        }
        if !muted && kind == MediaKind::Video {
            for sub in subscribers {
                self.allocate_subscriber(sub, now);
            }
        }
        local
    }

    /// A remote description was applied: hand rtc the checks that came before it.
    fn replay_early_checks(&mut self, key: ParticipantKey, now: Instant) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        if !peer.remote_set {
            peer.negotiated_at = Some(now);
        }
        peer.remote_set = true;
        let early = std::mem::take(&mut peer.early_checks);
        for (data, flow) in early {
            self.on_datagram_from(&data, flow, now, false);
        }
    }

    /// Makes sure this driver holds a proxy of the remote track (a local member of its room
    /// subscribes to it) and that the origin sends it the packets.
    fn ensure_proxy(&mut self, tkey: TrackKey, room: &str) {
        if self.tracks.contains_key(&tkey) {
            return;
        }
        let Some(remote) = self
            .remote_rooms
            .get(room)
            .and_then(|r| r.tracks.get(&tkey))
            .cloned()
        else {
            return;
        };
        let origin = driver_of(tkey);
        let layers: Vec<Layer> = remote
            .layers
            .iter()
            .map(|(rid, ssrc)| Layer::new(rid.clone(), *ssrc))
            .collect();
        self.track_ids.insert(remote.info.id.clone(), tkey);
        self.tracks.insert(
            tkey,
            Track {
                id: remote.info.id,
                kind: remote.info.kind,
                source: remote.info.source,
                publisher: remote.publisher,
                publisher_id: remote.publisher_id,
                room: remote.room,
                origin: Origin::Remote(origin),
                sinks: Vec::new(),
                demand_sent: None,
                mid: None,
                codec: remote.codec,
                rtc_codec: remote.rtc_codec,
                order: layer_order(&layers),
                layers,
                published_at: remote.published_at,
                requested: None,
                audio_level_ext: None,
                level: LevelMeter::default(),
                muted: remote.info.muted,
                forwarders: Vec::new(),
            },
        );
        debug!(track = tkey, origin, "proxy of a remote track");
        self.mesh.send(
            origin,
            MeshMsg::Subscribe {
                track: tkey,
                driver: self.mesh.index,
            },
        );
    }

    /// The room has no participant on this driver any more: stop receiving its remote tracks.
    fn drop_proxies(&mut self, room: &str, now: Instant) {
        let proxies: Vec<(TrackKey, usize)> = self
            .tracks
            .iter()
            .filter(|(_, t)| t.room == room)
            .filter_map(|(k, t)| match t.origin {
                Origin::Remote(d) => Some((*k, d)),
                Origin::Local(_) => None,
            })
            .collect();
        for (tkey, origin) in proxies {
            self.unpublish_track(tkey, now);
            self.mesh.send(
                origin,
                MeshMsg::Unsubscribe {
                    track: tkey,
                    driver: self.mesh.index,
                },
            );
        }
    }

    /// A control message from another driver.
    fn on_mesh(&mut self, msg: MeshMsg, now: Instant) {
        match msg {
            MeshMsg::FlowPinned { flow, driver } => self.remote_flows.pinned(flow, driver),
            MeshMsg::FlowUnpinned { flow, driver } => self.remote_flows.unpinned(flow, driver),
            MeshMsg::Joined { room, key, info } => {
                let members = self.rooms.get(&room).cloned().unwrap_or_default();
                for m in members {
                    self.send_event(m, Event::ParticipantJoined(info.clone()));
                }
                self.remote_rooms
                    .entry(room)
                    .or_default()
                    .members
                    .insert(key, info);
            }
            MeshMsg::Left { room, key, id } => {
                let mut empty = false;
                if let Some(r) = self.remote_rooms.get_mut(&room) {
                    r.members.remove(&key);
                    empty = r.members.is_empty() && r.tracks.is_empty();
                }
                if empty {
                    self.remote_rooms.remove(&room);
                }
                if self.speakers.get(&room) == Some(&key) {
                    self.speakers.remove(&room);
                }
                let members = self.rooms.get(&room).cloned().unwrap_or_default();
                for m in members {
                    self.send_event(
                        m,
                        Event::ParticipantLeft {
                            participant_id: id.clone(),
                        },
                    );
                }
            }
            MeshMsg::TrackPublished { track, remote } => {
                let room = remote.room.clone();
                let info = remote.info.clone();
                let publisher_id = remote.publisher_id.clone();
                self.remote_rooms
                    .entry(room.clone())
                    .or_default()
                    .tracks
                    .insert(track, remote);
                let members = self.rooms.get(&room).cloned().unwrap_or_default();
                if members.is_empty() {
                    return;
                }
                self.ensure_proxy(track, &room);
                for m in members {
                    self.send_event(
                        m,
                        Event::TrackPublished {
                            participant_id: publisher_id.clone(),
                            track: info.clone(),
                        },
                    );
                    self.subscribe(m, track, now);
                }
            }
            MeshMsg::Layers { track, layers } => {
                for r in self.remote_rooms.values_mut() {
                    if let Some(t) = r.tracks.get_mut(&track) {
                        t.layers = layers.clone();
                    }
                }
                if let Some(t) = self.tracks.get_mut(&track) {
                    if matches!(t.origin, Origin::Remote(_)) {
                        for (rid, ssrc) in layers.into_iter().skip(t.layers.len()) {
                            t.layers.push(Layer::new(rid, ssrc));
                        }
                        t.order = layer_order(&t.layers);
                    }
                }
            }
            MeshMsg::TrackSource { track, source } => {
                for r in self.remote_rooms.values_mut() {
                    if let Some(t) = r.tracks.get_mut(&track) {
                        t.info.source = source;
                    }
                }
                if let Some(t) = self.tracks.get_mut(&track) {
                    t.source = source;
                }
            }
            MeshMsg::TrackUnpublished { track } => {
                for r in self.remote_rooms.values_mut() {
                    r.tracks.remove(&track);
                }
                self.remote_rooms
                    .retain(|_, r| !(r.members.is_empty() && r.tracks.is_empty()));
                if self
                    .tracks
                    .get(&track)
                    .is_some_and(|t| matches!(t.origin, Origin::Remote(_)))
                {
                    self.unpublish_track(track, now);
                }
            }
            MeshMsg::Subscribe { track, driver } => {
                if let Some(t) = self.tracks.get_mut(&track) {
                    if matches!(t.origin, Origin::Local(_)) && t.sinks.iter().all(|s| s.0 != driver)
                    {
                        // Until the proxy says otherwise, it needs whatever is sent now.
                        t.sinks.push((driver, u32::MAX));
                        debug!(track = %t.id, driver, "track sent to another driver");
                    }
                }
            }
            MeshMsg::Unsubscribe { track, driver } => {
                if let Some(t) = self.tracks.get_mut(&track) {
                    t.sinks.retain(|s| s.0 != driver);
                }
            }
            MeshMsg::Keyframe { track, layer } => {
                self.request_keyframe(track, layer, now);
            }
            MeshMsg::Demand {
                track,
                driver,
                need,
            } => {
                if let Some(t) = self.tracks.get_mut(&track) {
                    if let Some(s) = t.sinks.iter_mut().find(|s| s.0 == driver) {
                        s.1 = need;
                    }
                }
            }
        }
    }
}

fn first_mid(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.strip_prefix("a=mid:"))
        .map(|m| m.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rids_rank_by_their_scheme_even_alone() {
        assert_eq!(
            rid_rank("q", &["q"]),
            0,
            "q is low while it is the only layer seen"
        );
        assert_eq!(rid_rank("f", &["f"]), 2);
        assert_eq!(rid_rank("h", &["q", "h"]), 1);
        assert_eq!(rid_rank("h", &["l", "h"]), 2, "h of l/m/h is high");
        assert_eq!(rid_rank("m", &["m"]), 1);
        assert_eq!(rid_rank("1", &["0", "1", "2"]), 1);
    }

    #[test]
    fn rtc_sees_a_candidate_address_for_every_kind_of_source() {
        let bound: SocketAddr = "0.0.0.0:7882".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:7882".parse().unwrap();
        let lan: SocketAddr = "10.0.0.5:7882".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::5]:7882".parse().unwrap();
        let t = rtc_local_addrs(bound, &[lo, lan, v6]);
        assert_eq!(t[0][1], lo, "loopback source: the loopback candidate");
        assert_eq!(t[0][0], lan, "other IPv4 source: the LAN candidate");
        assert_eq!(t[1][0], v6, "IPv6 source: the IPv6 candidate");
        assert_eq!(t[1][1], v6, "::1 source: still IPv6");
        let only = rtc_local_addrs(bound, &[lan]);
        assert_eq!(only, [[lan, lan], [lan, lan]]);
        assert_eq!(rtc_local_addrs(lo, &[]), [[lo, lo], [lo, lo]]);
    }
}
