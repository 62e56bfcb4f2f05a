//! Connections: one `rtc` peer connection per participant, and the way a datagram finds it.
//!
//! Owns the demultiplexing (by source address once pinned, else by the server ufrag of a STUN
//! check; a shared port's datagrams for another driver cross to it once), consent (a client whose
//! checks stop is removed), the checks that arrive before a remote description, and *servicing*
//! a connection: draining what rtc wrote (queued as transmits), its events and its decrypted media.
//! Decides nothing about media: RTP goes to `forward`, RTCP feedback to `forward`, tracks opening
//! to `tracks`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rand::Rng;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::TaggedRTCMessage;
use rtc::peer_connection::state::{RTCIceConnectionState, RTCPeerConnectionState};
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::peer_connection::RTCPeerConnection;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tracing::debug;

use super::data::PeerData;
use super::mesh::MeshMsg;
use super::negotiation::Subscription;
use super::port::{owner_of_ufrag, Crossing, RemoteFlows};
use super::timers::TimerQueue;
use super::{guarded, Driver, DriverAddrs, Flow, TrackKey, Transmit};
use crate::api::{ParticipantKey, Permissions, SfuConfig, TrackSource};
use crate::engine::classify::{
    classify, is_nominating_check, is_stun_binding_request, is_stun_binding_success,
    stun_binding_local_ufrag, DatagramKind,
};
use crate::engine::layers::CongestionHold;
use crate::ice_lite;
use crate::peer::{Bandwidth, SimulcastSsrcs};

/// Connectivity checks kept per connection until its remote description is applied.
pub(super) const MAX_EARLY_CHECKS: usize = 8;

/// Nominating checks (and answers to rtc's triggered checks) kept per connection between two
/// services of it (see [`crate::ice_lite`]).
pub(super) const MAX_NOMINATIONS: usize = 8;

/// Source addresses pinned per connection at most (its candidate pairs: loopback, LAN, a new
/// network after a move); past this, the one confirmed longest ago is unpinned.
pub(super) const MAX_PINNED_ADDRS: usize = 4;

/// A driver's connections and the ways to them.
pub(super) struct Connections {
    pub(super) peers: HashMap<ParticipantKey, Peer>,
    /// The server ufrag of each connection: a STUN check names its connection by it.
    pub(super) by_ufrag: HashMap<String, ParticipantKey>,
    /// Source addresses (and ICE-TCP connections) pinned to a connection.
    pub(super) by_addr: HashMap<Flow, ParticipantKey>,
    /// Flows this driver's socket receives for other drivers' connections (shared port).
    pub(super) remote_flows: RemoteFlows,
    /// Every driver binds the same UDP port (see `port`): datagrams may have to cross.
    pub(super) shared_port: bool,
    /// The local address handed to `rtc` with a datagram, by (IPv6, loopback) of its source:
    /// one of the host candidates. rtc accepts a datagram only on an address that is one of its
    /// local candidates, and the socket's own address is not one when it is a wildcard (or when
    /// a different address is announced, as behind a 1:1 NAT).
    pub(super) rtc_local: [[SocketAddr; 2]; 2],
    /// The same for ICE-TCP frames.
    pub(super) rtc_local_tcp: [[SocketAddr; 2]; 2],
    /// The UDP host candidates and ICE-TCP passive candidates announced to clients.
    pub(super) host_candidates: Vec<SocketAddr>,
    pub(super) tcp_candidates: Vec<SocketAddr>,
    /// Each connection's next deadline.
    pub(super) timers: TimerQueue<ParticipantKey>,
    /// Connections to service (their writes, events and reads to drain).
    pub(super) queue: Vec<ParticipantKey>,
    /// Connections to remove once the current step is done, with the reason.
    pub(super) removals: Vec<(ParticipantKey, String)>,
    /// Reused buffers for draining a connection.
    pub(super) event_buf: Vec<RTCPeerConnectionEvent>,
    pub(super) read_buf: Vec<TaggedRTCMessage>,
    /// [`SfuConfig::consent_timeout`]: Chromium checks its selected pair every 2.5 s or so; a
    /// client that loses its network entirely is caught sooner by the signaling heartbeat.
    pub(super) consent_timeout: Duration,
    /// [`SfuConfig::connect_timeout`]: nothing holds a place in a room for ever.
    pub(super) connect_timeout: Duration,
}

impl Connections {
    pub(super) fn new(config: &SfuConfig, addrs: DriverAddrs) -> Self {
        Self {
            peers: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            remote_flows: RemoteFlows::default(),
            shared_port: !config.port_per_driver && config.media_drivers > 1,
            rtc_local: rtc_local_addrs(addrs.udp, &addrs.host_candidates),
            rtc_local_tcp: match addrs.tcp {
                Some(bound) => rtc_local_addrs(bound, &addrs.tcp_candidates),
                None => rtc_local_addrs(addrs.udp, &[]),
            },
            host_candidates: addrs.host_candidates,
            tcp_candidates: addrs.tcp_candidates,
            timers: TimerQueue::new(),
            queue: Vec::new(),
            removals: Vec::new(),
            event_buf: Vec::new(),
            read_buf: Vec::new(),
            consent_timeout: config.consent_timeout,
            connect_timeout: config.connect_timeout,
        }
    }
}

/// One participant's connection and what the driver knows about it.
pub(super) struct Peer {
    /// Receives the room's audio mixed (one track) instead of each microphone; its mix.
    pub(super) mixed_audio: bool,
    pub(super) mix_track: Option<TrackKey>,
    /// Receives the room's composite picture instead of each camera and screen share.
    pub(super) mixed_video: bool,
    /// The remote ICE generation's ufrag and the candidates taken for it (see
    /// `negotiation::MAX_REMOTE_CANDIDATES`).
    pub(super) remote_candidates: (String, u32),
    pub(super) id: String,
    pub(super) identity: String,
    pub(super) name: String,
    pub(super) room: String,
    pub(super) permissions: Permissions,
    /// rtc's receiver track ids of tracks refused (no grant, track limit): their packets are
    /// dropped and the refusal is not repeated for each simulcast layer.
    pub(super) refused: HashSet<String>,
    pub(super) pc: RTCPeerConnection,
    pub(super) ufrag: String,
    /// Source addresses pinned to this connection.
    pub(super) addrs: Vec<Flow>,
    /// The deadline currently scheduled in the timer queue: the earlier of rtc's own timer and
    /// the consent deadline.
    pub(super) timer: Option<Instant>,
    /// When the client last had a connectivity check accepted, and from which address. Media
    /// and DTLS go to that address: the client's current path, which may differ from the pair
    /// rtc selected first.
    pub(super) consent: Option<(Instant, Flow)>,
    /// Whether the peer is waiting in the service queue.
    pub(super) queued: bool,
    /// Only this publisher's tracks are subscribed (see [`JoinRequest::subscribe_to`](crate::api::JoinRequest::subscribe_to)).
    pub(super) subscribe_to: Option<String>,
    /// Never offered to (see [`JoinRequest::answer_only`](crate::api::JoinRequest::answer_only)).
    pub(super) answer_only: bool,
    /// When the first remote description was applied (for [`SfuConfig::connect_timeout`]): a participant
    /// that has not negotiated yet (a viewer in an empty room) has nothing to connect.
    pub(super) negotiated_at: Option<Instant>,
    pub(super) connected: bool,
    /// The server's offer awaits the client's answer.
    pub(super) offer_outstanding: bool,
    /// Tracks were added or removed since the last offer.
    pub(super) negotiation_needed: bool,
    pub(super) candidates_sent: bool,
    /// Client candidates that arrived before any remote description.
    pub(super) early_candidates: Vec<RTCIceCandidateInit>,
    /// Whether a remote description (the client's offer or answer) has been applied: before
    /// that rtc cannot check a connectivity check's credentials and drops it.
    pub(super) remote_set: bool,
    /// Connectivity checks that arrived before any remote description, replayed once one is
    /// applied (a client that answers the server's offer starts checking at once, and its checks
    /// can overtake the answer, which travels through signaling).
    pub(super) early_checks: Vec<(Vec<u8>, Flow)>,
    /// Nominating checks (USE-CANDIDATE) handed to rtc since this connection was last serviced:
    /// given to rtc again once its triggered check for them is answered (see [`crate::ice_lite`]).
    pub(super) nominations: Vec<(Vec<u8>, Flow)>,
    /// The answers the driver made to rtc's triggered checks, to hand to rtc (see
    /// [`crate::ice_lite`]).
    pub(super) stand_in_answers: Vec<(Vec<u8>, Flow)>,
    /// rtc's receiver track id → the published track.
    pub(super) published: HashMap<String, TrackKey>,
    /// Subscribed tracks: track → the sender on this connection.
    pub(super) subscribed: HashMap<TrackKey, Subscription>,
    /// This connection's sender SSRCs → the track each carries (to route PLI/FIR upstream).
    pub(super) track_by_ssrc: HashMap<u32, TrackKey>,
    /// What the client said it publishes on each mid (`track_source`).
    pub(super) sources: HashMap<String, TrackSource>,
    /// The downlink estimate from transport-wide feedback (written inside rtc).
    pub(super) bandwidth: Arc<Bandwidth>,
    /// SSRCs of the simulcast layers this client publishes (see `peer::HideSimulcastReports`).
    pub(super) simulcast_ssrcs: SimulcastSsrcs,
    /// The latest REMB from this client, for clients without transport-wide feedback.
    pub(super) remb: Option<(Instant, f64)>,
    pub(super) hold: CongestionHold,
    /// The video budget used at the last allocation.
    pub(super) budget: Option<f64>,
    /// Its data channels, once its client offered an application section (see `data`).
    pub(super) data: Option<PeerData>,
}

/// For each (IPv6, loopback) kind of source address, the host candidate a client of that kind
/// most likely sent to: same family and same loopback-ness, else same family, else the first.
pub(super) fn rtc_local_addrs(
    bound: SocketAddr,
    candidates: &[SocketAddr],
) -> [[SocketAddr; 2]; 2] {
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

impl Driver {
    pub(super) fn fire_timers(&mut self, now: Instant) {
        while let Some((at, key)) = self.conns.timers.pop_due(now) {
            let Some(peer) = self.conns.peers.get_mut(&key) else {
                continue;
            };
            if peer.timer != Some(at) {
                continue; // stale entry
            }
            peer.timer = None;
            if peer
                .consent
                .is_some_and(|(at, _)| now >= at + self.conns.consent_timeout)
            {
                self.conns
                    .removals
                    .push((key, "media consent expired".into()));
                continue;
            }
            match guarded(|| peer.pc.handle_timeout(now)) {
                Some(Ok(())) => {}
                Some(Err(err)) => debug!(participant = %key, %err, "handle_timeout"),
                None => self.fail_peer(key, "panic in handle_timeout"),
            }
            self.enqueue(key);
        }
    }

    /// A datagram from `flow`: read from this driver's socket, or `crossed` from the driver whose
    /// socket the kernel gave it to (see `port`; it is not sent on again).
    pub(super) fn on_datagram_from(
        &mut self,
        data: &[u8],
        flow: Flow,
        now: Instant,
        crossed: bool,
    ) {
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
        let key = match self.conns.by_addr.get(&flow) {
            Some(&key) => key,
            None => {
                let ufrag = stun_binding_local_ufrag(data);
                match ufrag.and_then(|u| self.conns.by_ufrag.get(u)) {
                    Some(&key) => key,
                    None => {
                        if !crossed && self.conns.shared_port && !flow.tcp {
                            // Another driver's connection? A check says whose by its ufrag;
                            // anything else by what this driver learned from earlier checks.
                            let owner = match ufrag.and_then(owner_of_ufrag) {
                                Some(owner)
                                    if owner != self.mesh.index && owner < self.mesh.len() =>
                                {
                                    self.conns.remote_flows.check_seen(flow, owner);
                                    Some(owner)
                                }
                                Some(_) => None,
                                None => self.conns.remote_flows.owner(&flow),
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
    pub(super) fn cross(&mut self, owner: usize, data: &[u8], flow: Flow, now: Instant) {
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
    pub(super) fn deliver(&mut self, key: ParticipantKey, data: &[u8], flow: Flow, now: Instant) {
        let src = flow.addr;
        let Some(peer) = self.conns.peers.get_mut(&key) else {
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
                    &self.conns.rtc_local_tcp
                } else {
                    &self.conns.rtc_local
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
                debug!(participant = %key, %src, %err, "datagram rejected");
            }
            None => self.fail_peer(key, "panic in handle_read"),
        }
        self.enqueue(key);
    }

    /// Drains one connection: sends its datagrams, then handles its events and decrypted media.
    pub(super) fn service(&mut self, key: ParticipantKey, now: Instant) {
        let mut events = std::mem::take(&mut self.conns.event_buf);
        let mut reads = std::mem::take(&mut self.conns.read_buf);
        let stand_in;
        let nominations;
        {
            let Some(peer) = self.conns.peers.get_mut(&key) else {
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
                                if self.conns.by_addr.get(&old) == Some(&key) {
                                    self.conns.by_addr.remove(&old);
                                    if self.conns.shared_port && !old.tcp {
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
                            self.conns.by_addr.insert(dst, key);
                            if self.conns.shared_port && !dst.tcp {
                                // The driver whose socket receives this flow sends it here.
                                self.conns.remote_flows.forget(&dst);
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
                    let consent_deadline =
                        peer.consent.map(|(at, _)| at + self.conns.consent_timeout);
                    let deadline = match (deadline, consent_deadline) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    if deadline != peer.timer {
                        peer.timer = deadline;
                        if let Some(at) = deadline {
                            self.conns.timers.schedule(at, key);
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
            if let Some(peer) = self.conns.peers.get_mut(&key) {
                peer.nominations.clear();
            }
        }
        for ev in events.drain(..) {
            self.on_peer_event(key, ev, now);
        }
        for msg in reads.drain(..) {
            self.on_peer_message(key, msg);
        }
        self.conns.event_buf = events;
        self.conns.read_buf = reads;
    }

    pub(super) fn on_peer_event(
        &mut self,
        key: ParticipantKey,
        ev: RTCPeerConnectionEvent,
        now: Instant,
    ) {
        match ev {
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                debug!(participant = %key, %state, "connection state");
                match state {
                    RTCPeerConnectionState::Connected => {
                        if let Some(peer) = self.conns.peers.get_mut(&key) {
                            peer.connected = true;
                        }
                        self.activate_forwarders(key, now);
                    }
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                        self.conns
                            .removals
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
                if let Some(peer) = self.conns.peers.get_mut(&key) {
                    if let Some(Err(err)) = guarded(|| peer.pc.handle_timeout(now)) {
                        debug!(participant = %key, %err, "handle_timeout after ICE connected");
                    }
                }
                self.enqueue(key);
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                debug!(participant = %key, ssrc = init.ssrc, track = %init.track_id, "track opened");
                self.publish_track(key, init, now);
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnClose(track_id)) => {
                let tkey = self
                    .conns
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
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

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
