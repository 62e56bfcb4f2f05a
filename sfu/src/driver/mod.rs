//! The media driver: every `rtc` peer connection placed on one core, as a state machine without
//! sockets.
//!
//! Inputs are `handle_*` and are told the time: `Driver::handle_datagram` (a datagram or an
//! ICE-TCP frame from a flow), `Driver::handle_crossed` (one another driver's socket received
//! for this driver), `Driver::handle_mesh_packet`, `Driver::handle_command` (signaling
//! sessions, the engine handle, other drivers) and `Driver::handle_timeout`. After a batch of
//! inputs, `Driver::settle` services the connections they touched; outputs are drained with
//! `Driver::poll_transmit` (datagrams to send, in order), `Driver::poll_event` (what to tell
//! each participant) and `Driver::poll_timeout`. Randomness (ids, ufrags, SSRCs,
//! injected loss) comes from one seeded source. `runtime` is the thread, tokio and sockets
//! around it; the harness in `sfu/tests/` drives it without any.
//!
//! State by owner, each owner in its file: `connections::Connections` (the peer connections, the
//! demultiplexing by ufrag and pinned flows, consent, their timers and servicing rtc),
//! `tracks::Tracks` (tracks published here and proxies of tracks published elsewhere, each with
//! its forwarders), `rooms::Rooms` (members, active speakers, what other drivers hold) and
//! `mesh::Mesh` (the other drivers). The steps that work across owners have a file each:
//! `forward` (the forward step), `negotiation` (offers and answers) and `select` (layer choice,
//! dynacast, speakers). Each connection's timer lives in one `timers::TimerQueue`; nothing scans
//! all connections.
//!
//! Several drivers (one per core by default) share the rooms: a participant lives on one, and a
//! track's packets cross to another driver once per driver that has subscribers to it, over a
//! bounded queue (see `mesh`).

mod connections;
mod data;
pub mod forward;
pub mod mesh;
mod mixing;
mod negotiation;
mod recording;
pub(crate) use recording::room_tap_ids as recording_tap_ids;
pub mod port;
mod rooms;
mod runtime;
mod select;
pub mod tap;
mod tcp;
mod timers;
mod tracks;

pub(crate) use runtime::spawn;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rand::distr::{Alphanumeric, SampleString};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::mpsc;
use tracing::warn;

use crate::api::{
    Command, DriverStats, Event, JoinInfo, JoinRequest, MutedBy, Observation, ParticipantKey,
    SfuConfig, SfuError,
};
use connections::Connections;
use mesh::{global_key, Load, Mesh, MeshPacket};
use rooms::Rooms;
use tracks::{Origin, Tracks};

/// How often layer choices, bitrates and dynacast are re-evaluated.
const TICK: Duration = Duration::from_millis(250);

/// A layer with no packet for this long is not being sent.
const LAYER_IDLE: Duration = Duration::from_millis(1000);

/// A REMB older than this no longer counts as an estimate.
const REMB_MAX_AGE: Duration = Duration::from_secs(5);

/// The budget when a subscriber gives no feedback at all (neither TWCC nor REMB).
const NO_ESTIMATE_BPS: f64 = 1e9;

/// A published track's (or a proxy's) key: unique across drivers, names its origin driver (see
/// [`mesh`]). Not the public track id (`TR_…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrackKey(pub u64);

impl std::fmt::Display for TrackKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "t{:x}", self.0)
    }
}

/// Events for this driver's participants, in the order they happened (drained by
/// [`Driver::poll_event`]).
#[derive(Default)]
pub(super) struct Outbox(VecDeque<(ParticipantKey, Event)>);

impl Outbox {
    pub(super) fn tell(&mut self, key: ParticipantKey, event: Event) {
        self.0.push_back((key, event));
    }
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
    transmits: VecDeque<Transmit>,
    /// What to tell participants, in order (drained by the runtime like `transmits`).
    events: Outbox,
    /// The driver's one random source (ids, ufrags, SSRCs, injected loss): seeded, so a test
    /// harness replays a run.
    rng: StdRng,
    /// The connections and the ways to them (see `connections`).
    conns: Connections,
    /// The tracks published here and the proxies of tracks published on other drivers (see
    /// `tracks`); each holds its forwarders (see `forward`).
    tracks: Tracks,
    /// Rooms: their members here, their active speakers, what is known of them elsewhere (see
    /// `rooms`).
    rooms: Rooms,
    /// The other drivers (see `mesh`).
    mesh: Mesh,
    /// Participants on this driver, for placement.
    load: Load,
    inject_loss: f64,
    inject_loss_out: f64,
    data_limits: crate::api::DataLimits,
    next_tick: Instant,
    next_key: u64,
    stats: DriverStats,
    observer: Option<mpsc::UnboundedSender<Observation>>,
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
            transmits: VecDeque::new(),
            events: Outbox::default(),
            rng: StdRng::seed_from_u64(seed),
            conns: Connections::new(config, addrs),
            tracks: Tracks::new(config),
            rooms: Rooms::default(),
            mesh,
            load,
            inject_loss: config.inject_loss,
            inject_loss_out: config.inject_loss_out,
            data_limits: config.data.clone(),
            next_tick: now + TICK,
            next_key: 1,
            stats: DriverStats::default(),
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
        self.conns.by_addr.remove(&Flow::tcp(peer));
    }

    /// Whether `flow` belongs to a participant (one of its connectivity checks was accepted).
    pub fn is_bound(&self, flow: Flow) -> bool {
        self.conns.by_addr.contains_key(&flow)
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
        self.conns
            .timers
            .next_deadline()
            .map_or(self.next_tick, |d| d.min(self.next_tick))
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for a participant of this driver: its signaling session hears it (the
    /// last one for a participant is [`Event::Closed`]).
    pub fn poll_event(&mut self) -> Option<(ParticipantKey, Event)> {
        self.events.0.pop_front()
    }

    /// A participant joins a room on this driver: its key and what it learns of the room, or
    /// why not. What it is told afterwards comes out of [`Driver::poll_event`] under that key.
    pub fn join(
        &mut self,
        now: Instant,
        request: JoinRequest,
    ) -> Result<(ParticipantKey, JoinInfo), SfuError> {
        self.join_room(request, now)
    }

    /// The runtime could not send a datagram it was given (counted).
    pub fn note_send_failed(&mut self) {
        self.stats.datagrams_send_failed += 1;
    }

    /// The server stops: every participant is removed (their close is queued to send).
    pub fn close(&mut self, now: Instant) {
        let keys: Vec<_> = self.conns.peers.keys().copied().collect();
        for key in keys {
            self.remove_peer(key, "server stopping", now);
        }
    }

    /// A key for a participant or track, unique across drivers.
    fn new_key(&mut self) -> ParticipantKey {
        let key = ParticipantKey(global_key(self.mesh.index, self.next_key));
        self.next_key += 1;
        key
    }

    /// Services queued peers until nothing is left, then performs removals.
    pub fn settle(&mut self, now: Instant) {
        while self.settle_step(now) {}
    }

    /// One step of [`Driver::settle`]: services one queued connection or, with none left,
    /// performs the removals; `false` once nothing is left. The runtime sends what each step
    /// queued before the next one, while the datagrams rtc just wrote are still in the cache
    /// (sending a whole settle's worth at the end measured ~5 % more CPU per forwarded packet).
    pub fn settle_step(&mut self, now: Instant) -> bool {
        if let Some(key) = self.conns.queue.pop() {
            self.service(key, now);
            return true;
        }
        if !self.conns.removals.is_empty() {
            let removals = std::mem::take(&mut self.conns.removals);
            for (key, reason) in removals {
                self.remove_peer(key, &reason, now);
            }
            return true;
        }
        if self.conns.timers.len() > 4 * self.conns.peers.len() + 64 {
            let peers = &self.conns.peers;
            self.conns
                .timers
                .compact(|at, key| peers.get(&key).is_some_and(|p| p.timer == Some(at)));
        }
        false
    }

    fn enqueue(&mut self, key: ParticipantKey) {
        if let Some(peer) = self.conns.peers.get_mut(&key) {
            if !peer.queued {
                peer.queued = true;
                self.conns.queue.push(key);
            }
        }
    }

    fn fail_peer(&mut self, key: ParticipantKey, reason: &str) {
        self.stats.connection_panics += 1;
        warn!(
            participant = %key,
            reason, "connection failed inside rtc; removing it"
        );
        self.conns.removals.push((key, reason.to_owned()));
    }

    fn on_command(&mut self, cmd: Command, now: Instant) {
        match cmd {
            // The runtime keeps a join's event channel (see `runtime::dispatch`) and delivers
            // what `poll_event` yields to it; a join handled here is heard only there.
            Command::Join { request, reply, .. } => {
                let _ = reply.send(self.join_room(request, now));
            }
            Command::MuteTrack {
                room,
                track_id,
                muted,
                reply,
            } => {
                let _ = reply.send(self.mute_track(&room, &track_id, muted, MutedBy::Admin, now));
            }
            Command::Offer { key, sdp } => self.on_remote_offer(key, sdp, now),
            Command::Answer { key, sdp } => self.on_remote_answer(key, sdp, now),
            Command::Candidate { key, candidate } => self.on_remote_candidate(key, candidate),
            Command::Leave { key } => self.remove_peer(key, "left", now),
            Command::TrackSettings { key, settings } => self.on_track_settings(key, settings, now),
            Command::TrackSource { key, mid, source } => {
                self.on_track_source(key, mid, source, now)
            }
            Command::EnableData { key } => self.enable_data(key, now),
            Command::Mute { key, mid, muted } => self.self_mute(key, &mid, muted, now),
            Command::Debug { reply } => {
                let _ = reply.send(self.snapshot(now));
            }
            Command::Mesh(msg) => self.on_mesh(msg, now),
            Command::Tap {
                room,
                track_id,
                tap,
                reply,
            } => {
                let _ = reply.send(self.attach_tap(&room, &track_id, tap, now));
            }
            Command::Untap { id, reply } => {
                let _ = reply.send(self.detach_tap(id) | self.stop_room_recording(id));
            }
            Command::RecordRoom { room, tap, reply } => {
                let _ = reply.send(self.record_room(&room, tap, now));
            }
            Command::SendData {
                room,
                message,
                reply,
            } => {
                let _ = reply.send(self.send_server_data(&room, message, now));
            }
            Command::Stats { reply } => {
                let mut stats = self.stats.clone();
                stats.participants = self.conns.peers.len();
                stats.rooms = self.rooms.members.len();
                stats.subscriptions = self.tracks.all.values().map(|t| t.forwarders.len()).sum();
                stats.published_tracks = self
                    .tracks
                    .all
                    .values()
                    .filter(|t| matches!(t.origin, Origin::Local(_)))
                    .count();
                stats.layers_paused = self
                    .tracks
                    .all
                    .values()
                    .filter_map(|t| t.requested.as_ref().map(|r| (t, r)))
                    .map(|(t, r)| t.layers.iter().filter(|l| !r.contains(&l.rid)).count() as u64)
                    .sum();
                for peer in self.conns.peers.values() {
                    let (sent, held) = peer.bandwidth.retransmissions();
                    stats.retransmissions_sent += sent;
                    stats.retransmissions_held_back += held;
                }
                let _ = reply.send(stats);
            }
        }
    }
}
