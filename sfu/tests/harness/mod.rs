//! A deterministic harness for the media driver: real [`Driver`]s and real `rtc` client peer
//! connections, connected by an in-memory network on a virtual clock. No sockets, no threads, no
//! tokio runtime, no sleeping: a test of 30 s of consent timeout runs in milliseconds.
//!
//! - [`Net::new`] makes `n` drivers linked by their mesh (each at its own fake address
//!   `10.0.1.N:7882`, seeded), [`Net::join`] a client at `10.0.0.N:5000` (a label only) that
//!   joins a room on one driver through [`Driver::join`]; what the driver tells it comes out of
//!   [`Driver::poll_event`], as the runtime hands it to a signaling session.
//! - The clients play their signaling part by themselves: they answer `Event::Offer`, apply
//!   `Event::Answer`, add `Event::Candidate`, and log every event in [`Client::events`].
//! - [`Net::publish_video`] adds a sendonly VP8 track (one layer, or simulcast with rids) and
//!   offers it; once connected the client sends a synthetic 30 fps stream whose every packet is
//!   recorded in [`VideoSource::sent`] (payloads carry their layer, frame and packet number).
//! - [`Net::run_for`] / [`Net::run_until`] step the world: move datagrams both ways until
//!   nothing moves (drivers settled after their inputs, mesh inboxes pumped), then advance the
//!   clock to the earliest deadline of any driver, client or media source.
//! - [`Net::drop_down`] and [`Net::drop_up`] decide per datagram (driver → client, client →
//!   driver) whether the network loses it; [`Client::silent`] cuts a client off entirely.
//! - What a subscriber decrypted is in [`Client::received`], for assertions on what a decoder
//!   would see.

#![allow(dead_code)] // every test file uses a different part of it

mod client;
mod data;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_VP8;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use sfu::api::Command;
use sfu::driver::mesh::{self, Inbox};
use sfu::driver::{Driver, DriverAddrs, Flow};
use sfu::engine::classify::{classify, DatagramKind};
use sfu::{DriverStats, JoinRequest, Permissions, SfuConfig};
use tokio::sync::oneshot;

pub use client::*;
pub use data::*;

pub const SERVER_PORT: u16 = 7882;
/// Rounds of moving datagrams without the clock moving, at most, before the harness calls it a
/// livelock.
const MAX_QUIET_ROUNDS: usize = 10_000;

/// One driver and the ends of its queues.
pub struct Node {
    pub driver: Driver,
    pub inbox: Inbox,
    pub addr: SocketAddr,
}

/// A datagram on the simulated network, as the loss functions see it.
pub struct Datagram<'a> {
    /// Index of the client it comes from or goes to.
    pub client: usize,
    pub data: &'a [u8],
    pub now: Instant,
}

impl Datagram<'_> {
    /// The RTP sequence number and SSRC, if this is an RTP datagram (SRTP leaves the header in
    /// the clear).
    pub fn rtp(&self) -> Option<(u16, u32)> {
        if classify(self.data) != DatagramKind::Rtp || self.data.len() < 12 {
            return None;
        }
        let d = self.data;
        Some((
            u16::from_be_bytes([d[2], d[3]]),
            u32::from_be_bytes([d[8], d[9], d[10], d[11]]),
        ))
    }
}

/// Decides whether the network loses a datagram.
pub type LossFn = Box<dyn FnMut(&Datagram<'_>) -> bool>;

/// The simulated world: drivers, clients, the network between them, and the clock.
pub struct Net {
    pub now: Instant,
    pub nodes: Vec<Node>,
    pub clients: Vec<Client>,
    pub config: SfuConfig,
    /// Loss from drivers to clients; `true` drops the datagram.
    pub drop_down: Option<LossFn>,
    /// Loss from clients to drivers; `true` drops the datagram.
    pub drop_up: Option<LossFn>,
    /// Datagrams that found no one at their destination address.
    pub undeliverable: usize,
    /// Which of the drivers sharing an address gets a client's datagrams (modulo their number),
    /// by client index, as the kernel's `SO_REUSEPORT` hash does. The default, the one after the
    /// client's index, sends clients placed alternately on two drivers to the wrong socket.
    pub kernel_hash: Box<dyn Fn(usize) -> usize>,
}

impl Net {
    /// `n` drivers linked by their mesh, each with its own port (`port_per_driver`).
    pub fn new(n: usize) -> Net {
        Net::with_config(
            n,
            SfuConfig {
                media_drivers: n,
                port_per_driver: true,
                ..SfuConfig::default()
            },
        )
    }

    /// `n` drivers on one address and port (the default shared port): a client's datagrams reach
    /// the socket [`Net::kernel_hash`] picks, which may not be its driver's.
    pub fn shared_port(n: usize) -> Net {
        Net::with_config(
            n,
            SfuConfig {
                media_drivers: n,
                port_per_driver: false,
                ..SfuConfig::default()
            },
        )
    }

    /// `n` drivers with `config`; each at its own address unless the port is shared.
    pub fn with_config(n: usize, config: SfuConfig) -> Net {
        let now = Instant::now();
        let shared = !config.port_per_driver && n > 1;
        let nodes = mesh::link(n)
            .into_iter()
            .enumerate()
            .map(|(i, link)| {
                let host = if shared { 1 } else { i as u8 + 1 };
                let addr = SocketAddr::from(([10, 0, 1, host], SERVER_PORT));
                let addrs = DriverAddrs::announced(&config, addr, None);
                let (driver, inbox) = link.into_driver(&config, addrs, 0x5eed + i as u64, now);
                Node {
                    driver,
                    inbox,
                    addr,
                }
            })
            .collect();
        Net {
            now,
            nodes,
            clients: Vec::new(),
            config,
            drop_down: None,
            drop_up: None,
            undeliverable: 0,
            kernel_hash: Box::new(|client| client + 1),
        }
    }

    /// A new client joins `room` on driver `driver`; returns its index.
    pub fn join(&mut self, driver: usize, name: &str, room: &str) -> usize {
        self.join_as(driver, name, room, Permissions::default())
    }

    /// [`Net::join`] with the grants of its token.
    pub fn join_as(
        &mut self,
        driver: usize,
        name: &str,
        room: &str,
        permissions: Permissions,
    ) -> usize {
        self.join_with(
            driver,
            JoinRequest {
                room: room.to_owned(),
                identity: name.to_owned(),
                name: name.to_owned(),
                permissions,
                subscribe_to: None,
                answer_only: false,
                mixed_audio: false,
                mixed_video: false,
            },
        )
    }

    /// A client joins with `request` as it is (a WHIP or WHEP client: `answer_only`).
    pub fn join_with(&mut self, driver: usize, request: JoinRequest) -> usize {
        let name = request.name.clone();
        let i = self.clients.len();
        let addr = SocketAddr::from(([10, 0, 0, i as u8 + 1], 5000));
        let now = self.now;
        let node = &mut self.nodes[driver];
        let (key, join_info) = node.driver.join(now, request).expect("join accepted");
        node.driver.settle(now);
        self.clients.push(Client {
            name,
            addr,
            driver,
            key,
            join_info,
            pc: client_pc(now, addr, i),
            events: Vec::new(),
            received: Vec::new(),
            connected: false,
            silent: false,
            video: None,
            errors: Vec::new(),
            data: None,
        });
        i
    }

    /// Sends a command to a driver, through its command channel (handled at the next step).
    pub fn command(&self, driver: usize, cmd: Command) {
        let _ = self.nodes[driver].inbox.commands_tx.send(cmd);
    }

    /// A client publishes a VP8 track: one encoding per `(rid, ssrc)` (a single one with an
    /// empty rid for no simulcast). Offers it; media starts once the client is connected.
    pub fn publish_video(&mut self, client: usize, layers: &[(&str, u32)]) {
        let now = self.now;
        let c = &mut self.clients[client];
        let vp8 = RTCRtpCodec {
            mime_type: MIME_TYPE_VP8.to_owned(),
            clock_rate: VIDEO_CLOCK,
            ..Default::default()
        };
        let encodings = layers
            .iter()
            .map(|&(rid, ssrc)| RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    rid: rid.to_owned(),
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: vp8.clone(),
                ..Default::default()
            })
            .collect();
        let track = MediaStreamTrack::new(
            format!("{}-stream", c.name),
            format!("{}-video", c.name),
            "camera".into(),
            RtpCodecKind::Video,
            encodings,
        );
        let tid =
            c.pc.add_transceiver_from_track(
                track,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Sendonly,
                    streams: vec![format!("{}-stream", c.name)],
                    send_encodings: vec![],
                }),
            )
            .expect("add a sendonly transceiver");
        let sender =
            c.pc.rtp_transceiver(tid)
                .and_then(|t| t.sender())
                .expect("the transceiver has a sender");
        let offer = c.pc.create_offer(None).expect("create an offer");
        c.pc.set_local_description(now, offer.clone())
            .expect("apply the offer");
        c.video = Some(VideoSource {
            sender,
            layers: layers
                .iter()
                .enumerate()
                .map(|(i, &(rid, ssrc))| LayerOut {
                    rid: rid.to_owned(),
                    ssrc,
                    next_seq: 1000 * (i as u16 + 1),
                    picture_id: 100 * (i as u16 + 1),
                })
                .collect(),
            packets_per_frame: 3,
            keyframe_every: 30,
            sent: Vec::new(),
            plis: 0,
            answer_plis: true,
            paused: vec![false; layers.len()],
            frame: 0,
            timestamp: 3000,
            next_at: None,
            keyframe_asked: false,
        });
        let key = c.key;
        let driver = c.driver;
        self.command(
            driver,
            Command::Offer {
                key,
                sdp: offer.sdp,
            },
        );
    }

    /// A client leaves (as its signaling session would on close); its connection stays as it
    /// is, so what it keeps sending shows what the driver does with a departed client's packets.
    pub fn leave(&mut self, client: usize) {
        let c = &self.clients[client];
        let (driver, key) = (c.driver, c.key);
        self.command(driver, Command::Leave { key });
    }

    /// A driver's counters (after handling what is queued for it).
    pub fn stats(&mut self, driver: usize) -> DriverStats {
        let (reply, mut rx) = oneshot::channel();
        let now = self.now;
        self.nodes[driver]
            .driver
            .handle_command(now, Command::Stats { reply });
        rx.try_recv().expect("stats answered at once")
    }

    /// Runs the world for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until_or(until, |_| false);
    }

    /// Runs until `done` holds (checked whenever the network is quiet), at most `limit` of
    /// virtual time; panics if it never does.
    pub fn run_until(&mut self, limit: Duration, what: &str, done: impl Fn(&Net) -> bool) {
        let until = self.now + limit;
        if !self.run_until_or(until, done) {
            panic!("{what}: not within {limit:?} of virtual time");
        }
    }

    /// Steps until `done` or the clock would pass `until`; whether `done` held.
    fn run_until_or(&mut self, until: Instant, done: impl Fn(&Net) -> bool) -> bool {
        loop {
            self.exchange();
            if done(self) {
                return true;
            }
            let next = self.next_deadline();
            if next > until {
                self.now = until;
                return false;
            }
            self.now = self.now.max(next);
            self.fire_timers();
        }
    }

    /// The earliest deadline of anything in the world.
    fn next_deadline(&mut self) -> Instant {
        let drivers = self.nodes.iter().map(|n| n.driver.poll_timeout());
        let clients = self
            .clients
            .iter_mut()
            .filter(|c| !c.silent)
            .flat_map(|c| {
                [
                    c.pc.poll_timeout(),
                    c.video.as_ref().and_then(|v| v.next_at),
                ]
            })
            .flatten();
        drivers.chain(clients).min().unwrap_or(self.now)
    }

    fn fire_timers(&mut self) {
        let now = self.now;
        for node in &mut self.nodes {
            if node.driver.poll_timeout() <= now {
                node.driver.handle_timeout(now);
                node.driver.settle(now);
            }
        }
        for c in self.clients.iter_mut().filter(|c| !c.silent) {
            if c.pc.poll_timeout().is_some_and(|t| t <= now) {
                if let Err(e) = c.pc.handle_timeout(now) {
                    c.errors.push(format!("handle_timeout: {e}"));
                }
            }
            send_frames(c, now);
        }
    }

    /// Moves everything that is ready to move, at the current instant, until nothing does.
    fn exchange(&mut self) {
        for _ in 0..MAX_QUIET_ROUNDS {
            let mut moved = false;
            moved |= self.pump_inboxes();
            moved |= self.clients_to_drivers();
            moved |= self.drivers_to_clients();
            moved |= self.client_signaling();
            if !moved {
                return;
            }
        }
        panic!("the network never went quiet");
    }

    /// Feeds each driver what its queues hold (as the runtime does), then settles it.
    fn pump_inboxes(&mut self) -> bool {
        let now = self.now;
        let mut moved = false;
        for node in &mut self.nodes {
            while let Ok(cmd) = node.inbox.commands.try_recv() {
                node.driver.handle_command(now, cmd);
                moved = true;
            }
            while let Ok(p) = node.inbox.media.try_recv() {
                node.driver.handle_mesh_packet(p);
                moved = true;
            }
            while let Ok(c) = node.inbox.crossing.try_recv() {
                node.driver.handle_crossed(c.at, c.flow, &c.data);
                moved = true;
            }
            node.driver.settle(now);
        }
        moved
    }

    fn clients_to_drivers(&mut self) -> bool {
        let now = self.now;
        let mut moved = false;
        for (i, c) in self.clients.iter_mut().enumerate() {
            while let Some(out) = c.pc.poll_write() {
                moved = true;
                if c.silent {
                    continue;
                }
                let dg = Datagram {
                    client: i,
                    data: &out.message,
                    now,
                };
                if self.drop_up.as_mut().is_some_and(|f| f(&dg)) {
                    continue;
                }
                let dst = out.transport.peer_addr;
                let sockets = self.nodes.iter().filter(|n| n.addr == dst).count().max(1);
                let pick = (self.kernel_hash)(i) % sockets;
                match self.nodes.iter_mut().filter(|n| n.addr == dst).nth(pick) {
                    Some(node) => {
                        node.driver
                            .handle_datagram(now, Flow::udp(c.addr), &out.message);
                    }
                    None => self.undeliverable += 1,
                }
            }
        }
        for node in &mut self.nodes {
            node.driver.settle(now);
        }
        moved
    }

    fn drivers_to_clients(&mut self) -> bool {
        let now = self.now;
        let mut moved = false;
        for node in &mut self.nodes {
            while let Some(t) = node.driver.poll_transmit() {
                moved = true;
                let Some(i) = self.clients.iter().position(|c| c.addr == t.flow.addr) else {
                    self.undeliverable += 1;
                    continue;
                };
                let c = &mut self.clients[i];
                if c.silent {
                    continue;
                }
                let dg = Datagram {
                    client: i,
                    data: &t.data,
                    now,
                };
                if self.drop_down.as_mut().is_some_and(|f| f(&dg)) {
                    continue;
                }
                let msg = TaggedBytesMut {
                    now,
                    transport: TransportContext {
                        local_addr: c.addr,
                        peer_addr: node.addr,
                        ecn: None,
                        transport_protocol: TransportProtocol::UDP,
                    },
                    message: t.data,
                };
                // A client drops what it cannot use (a late DTLS record, a replayed packet),
                // as a browser does.
                let _ = c.pc.handle_read(msg);
            }
        }
        for c in &mut self.clients {
            moved |= drain_client(c, now);
        }
        moved
    }

    /// Each client plays its part of the signaling for the events the drivers sent it.
    fn client_signaling(&mut self) -> bool {
        let now = self.now;
        let mut moved = false;
        for node in &mut self.nodes {
            while let Some((key, ev)) = node.driver.poll_event() {
                moved = true;
                let Some(c) = self.clients.iter_mut().find(|c| c.key == key) else {
                    continue;
                };
                if !c.silent {
                    if let Some(cmd) = signal(c, &ev, now) {
                        let _ = node.inbox.commands_tx.send(cmd);
                    }
                }
                c.events.push(ev);
            }
        }
        moved
    }
}

/// Asserts what a decoder would see on a forwarded single-layer stream: one SSRC, the payload
/// type given, sequence numbers contiguous, and from the first packet received (a keyframe's
/// first packet) on, exactly the packets `sent` in order: identical payloads, markers and
/// timestamp spacing, nothing missing up to the last one sent. Returns the SSRC.
pub fn assert_forwarded(sent: &[&Sent], got: &[&Received], payload_type: u8) -> u32 {
    let ssrc = assert_contiguous(got);
    let start = sent
        .iter()
        .position(|s| s.payload == got[0].payload)
        .expect("the first packet received was sent");
    assert!(sent[start].keyframe, "forwarding starts at a keyframe");
    let expected = &sent[start..];
    assert_eq!(got.len(), expected.len(), "every packet from the first on");
    for (r, s) in got.iter().zip(expected) {
        assert_eq!(r.payload, s.payload, "payload of sent seq {}", s.seq);
        assert_eq!(r.header.payload_type, payload_type);
        assert_eq!(
            r.header.timestamp.wrapping_sub(got[0].header.timestamp),
            s.timestamp.wrapping_sub(expected[0].timestamp),
            "timestamp spacing kept"
        );
        assert_eq!(r.header.marker, s.marker, "marker of sent seq {}", s.seq);
    }
    ssrc
}

/// The SSRCs the server announced to a client in its offers (`a=ssrc:` lines).
pub fn offered_ssrcs(c: &Client) -> Vec<u32> {
    let mut ssrcs: Vec<u32> = c
        .events
        .iter()
        .filter_map(|e| match e {
            sfu::Event::Offer(sdp) => Some(sdp),
            _ => None,
        })
        .flat_map(|sdp| sdp.lines())
        .filter_map(|l| l.strip_prefix("a=ssrc:")?.split(' ').next()?.parse().ok())
        .collect();
    ssrcs.sort_unstable();
    ssrcs.dedup();
    ssrcs
}

/// Checks what a decoder would check on a forwarded stream: one SSRC, sequence numbers that
/// increase by one, and (when `sent` is given) payloads identical to what was sent, in order,
/// with nothing missing in between. Returns the subscriber SSRC.
pub fn assert_contiguous(received: &[&Received]) -> u32 {
    assert!(!received.is_empty(), "nothing received");
    let ssrc = received[0].header.ssrc;
    let mut seqs: Vec<u16> = received.iter().map(|r| r.header.sequence_number).collect();
    for r in received {
        assert_eq!(r.header.ssrc, ssrc, "one SSRC for the whole stream");
    }
    seqs.dedup();
    for w in seqs.windows(2) {
        assert_eq!(
            w[1],
            w[0].wrapping_add(1),
            "sequence numbers contiguous: {seqs:?}"
        );
    }
    ssrc
}

/// The packets of `sent`, by payload after the VP8 descriptor (which a layer switch rewrites).
pub fn by_payload_tail(sent: &[Sent]) -> HashMap<Bytes, &Sent> {
    sent.iter()
        .map(|s| (s.payload.slice(VP8_DESCRIPTOR_LEN..), s))
        .collect()
}

/// The layer a payload written by [`vp8_payload`] was sent on.
pub fn layer_of(payload: &[u8]) -> usize {
    let tail = &payload[VP8_DESCRIPTOR_LEN..];
    let at = tail
        .windows(6)
        .position(|w| w == b"layer ")
        .expect("a harness payload");
    usize::from(tail[at + 6] - b'0')
}

/// The packets of `sent`, by payload, for looking up what a received packet was.
pub fn by_payload(sent: &[Sent]) -> HashMap<Bytes, &Sent> {
    sent.iter().map(|s| (s.payload.clone(), s)).collect()
}
