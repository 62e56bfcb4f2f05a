//! One simulated participant's media connection: an `rtc` sans-IO peer connection on its own UDP
//! socket, driven by one task that also generates the synthetic media and measures what arrives.
//!
//! No interceptors are registered (no NACK, no reports, no transport-wide feedback): the load
//! tester spends its CPU on the packets themselves, and what the server forwards is measured
//! raw. The server then sees receivers without bandwidth feedback and gives them the layer their
//! settings ask for (see docs/benchmarks.md).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCDtlsRole, RTCIceCandidate,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::sansio::Protocol;
use rtc::shared::marshal::MarshalSize;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use testkit::client::{media_engine, OPUS_PT, URI_AUDIO_LEVEL, URI_MID, URI_RID, VP8_PT};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use crate::media::{self, Stamp, Vp8Layer, AUDIO_INTERVAL, LAYERS, VIDEO_FPS};
use crate::signal::{SigIn, SigOut};

/// Socket buffers of each client socket (the kernel caps them at net.core.[rw]mem_max).
const SOCKET_BUFFER: usize = 1 << 20;
const ICE_CHECK_INTERVAL: Duration = Duration::from_millis(50);
/// At most this many error messages are kept; the rest are only counted.
const MAX_ERROR_LOG: usize = 50;

/// Counters every connection of a run adds to; read by the progress bar and the report.
pub struct Counters {
    /// RTP packets and their datagram bytes sent by publishers.
    pub sent_packets: AtomicU64,
    pub sent_bytes: AtomicU64,
    /// RTP packets received (after SRTP) and their datagram bytes.
    pub recv_packets: AtomicU64,
    pub recv_bytes: AtomicU64,
    /// Packets the received streams' sequence numbers say should have arrived.
    pub expected_packets: AtomicU64,
    /// Connections that reached `Connected`.
    pub connected: AtomicU64,
    /// (participant, track) pairs that received at least one packet.
    pub tracks_reached: AtomicU64,
    /// Signaling errors, failed connections and refused writes.
    pub errors: AtomicU64,
    /// One-way latency of received packets, in microseconds.
    pub latency_us: Mutex<Histogram<u64>>,
    /// Time from the start of a participant's join to its first media packet, in microseconds.
    pub join_us: Mutex<Histogram<u64>>,
    /// Time from the start of a join to the media connection being up (ICE and DTLS done).
    pub connect_us: Mutex<Histogram<u64>>,
    pub error_log: Mutex<Vec<String>>,
}

impl Default for Counters {
    fn default() -> Self {
        let hist = || Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
        Self {
            sent_packets: AtomicU64::new(0),
            sent_bytes: AtomicU64::new(0),
            recv_packets: AtomicU64::new(0),
            recv_bytes: AtomicU64::new(0),
            expected_packets: AtomicU64::new(0),
            connected: AtomicU64::new(0),
            tracks_reached: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency_us: Mutex::new(hist()),
            join_us: Mutex::new(hist()),
            connect_us: Mutex::new(hist()),
            error_log: Mutex::new(Vec::new()),
        }
    }
}

impl Counters {
    pub fn error(&self, who: &str, what: impl std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut log = self.error_log.lock().expect("error log");
        if log.len() < MAX_ERROR_LOG {
            log.push(format!("{who}: {what}"));
        }
    }
}

/// What one connection publishes.
#[derive(Debug, Clone, Copy)]
pub struct Publish {
    pub audio: bool,
    /// Simulcast layers of [`LAYERS`] to send, from the lowest (0 = no video).
    pub video_layers: usize,
}

/// One connection of a run.
pub struct ConnSpec {
    pub name: String,
    pub bind_ip: IpAddr,
    pub publish: Option<Publish>,
    /// When the participant started joining (its join time counts from here).
    pub started: Instant,
}

/// What a connection reports when it ends.
#[derive(Debug, Default, Clone)]
pub struct ConnReport {
    pub connected: bool,
    /// Distinct tracks (by id) this connection received media on.
    pub tracks_received: usize,
    pub join_time: Option<Duration>,
}

struct AudioOut {
    sender: RTCRtpSenderId,
    ssrc: u32,
    seq: u16,
    timestamp: u32,
    counter: u32,
}

struct VideoOut {
    sender: RTCRtpSenderId,
    layers: Vec<Vp8Layer>,
    sending: Vec<bool>,
}

/// Header extension ids and mids of the connection's own sending sections, read from its SDP
/// once negotiated.
#[derive(Default, Clone)]
struct SendIds {
    audio_level: Option<u8>,
    mid_ext: Option<u8>,
    rid_ext: Option<u8>,
    audio_mid: Option<Bytes>,
    video_mid: Option<String>,
}

pub struct Conn {
    spec: ConnSpec,
    pc: RTCPeerConnection,
    socket: UdpSocket,
    local: SocketAddr,
    counters: Arc<Counters>,
    sig_in: mpsc::UnboundedReceiver<SigIn>,
    sig_out: mpsc::UnboundedSender<SigOut>,
    stop: watch::Receiver<bool>,
    connected: bool,
    offer_outstanding: bool,
    reoffer: bool,
    negotiated: bool,
    ids: SendIds,
    audio: Option<AudioOut>,
    video: Option<VideoOut>,
    media_start: Option<Instant>,
    audio_sent: u64,
    video_frames: u64,
    streams: HashMap<u32, media::SeqTracker>,
    tracks: HashSet<String>,
    first_media: Option<Instant>,
    signaling_closed: bool,
}

fn bind_socket(ip: IpAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol as SockProto, Socket, Type};
    let addr = SocketAddr::new(ip, 0);
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(SockProto::UDP))?;
    // Best effort: the kernel caps the sizes at net.core.[rw]mem_max.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// The id of header extension `uri` in an SDP (rtc numbers an extension the same in every
/// section).
fn extmap_id(sdp: &str, uri: &str) -> Option<u8> {
    sdp.lines()
        .filter_map(|l| l.strip_prefix("a=extmap:"))
        .find(|l| l.split_whitespace().nth(1) == Some(uri))
        .and_then(|l| l.split([' ', '/']).next())
        .and_then(|id| id.parse().ok())
}

/// The mid of the first `m=<kind>` section whose direction is `sendonly` or `sendrecv`.
fn sending_mid(sdp: &str, kind: &str) -> Option<String> {
    let mut in_kind = false;
    let mut mid = None;
    for line in sdp.lines() {
        if let Some(m) = line.strip_prefix("m=") {
            in_kind = m.starts_with(kind);
            mid = None;
        } else if in_kind {
            if let Some(v) = line.strip_prefix("a=mid:") {
                mid = Some(v.trim().to_owned());
            } else if (line == "a=sendonly" || line == "a=sendrecv") && mid.is_some() {
                return mid;
            }
        }
    }
    None
}

impl Conn {
    pub fn new(
        spec: ConnSpec,
        counters: Arc<Counters>,
        sig_in: mpsc::UnboundedReceiver<SigIn>,
        sig_out: mpsc::UnboundedSender<SigOut>,
        stop: watch::Receiver<bool>,
    ) -> anyhow::Result<Self> {
        let socket = bind_socket(spec.bind_ip)?;
        let local = socket.local_addr()?;
        let now = Instant::now();
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(media_engine()?)
            // Checks paced every 50 ms as Chromium does (rtc's default is 200 ms, which alone
            // added up to 200 ms to every join), for up to 1.4 s per candidate pair as before.
            .with_setting_engine(
                SettingEngineBuilder::new()
                    .with_ice_connection_attempts(Some(ICE_CHECK_INTERVAL), Some(28))
                    // Answer as the DTLS client (`a=setup:active`), as browsers do.
                    .with_answering_dtls_role(RTCDtlsRole::Client)
                    .build(),
            )
            .build(now)?;
        let candidate = CandidateHostConfig {
            base_config: CandidateConfig {
                network: "udp".to_owned(),
                address: local.ip().to_string(),
                port: local.port(),
                component: 1,
                ..Default::default()
            },
            ..Default::default()
        }
        .new_candidate_host()?;
        pc.add_local_candidate(RTCIceCandidate::from(&candidate).to_json()?)?;
        let mut audio = None;
        let mut video = None;
        if let Some(publish) = spec.publish {
            if publish.audio {
                let ssrc = rand::random();
                let sender = pc.add_track(MediaStreamTrack::new(
                    format!("{}-stream", spec.name),
                    format!("{}-audio", spec.name),
                    "audio".into(),
                    RtpCodecKind::Audio,
                    vec![RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters {
                            ssrc: Some(ssrc),
                            ..Default::default()
                        },
                        codec: RTCRtpCodec {
                            mime_type: MIME_TYPE_OPUS.to_owned(),
                            clock_rate: 48000,
                            channels: 2,
                            ..Default::default()
                        },
                        ..Default::default()
                    }],
                ))?;
                audio = Some(AudioOut {
                    sender,
                    ssrc,
                    seq: rand::random(),
                    timestamp: rand::random(),
                    counter: 0,
                });
            }
            let n = publish.video_layers.min(LAYERS.len());
            if n > 0 {
                // The top n layers: one encoding is sent at full size, as a browser without simulcast.
                let layers: Vec<Vp8Layer> = LAYERS[LAYERS.len() - n..]
                    .iter()
                    .enumerate()
                    .map(|(i, spec)| Vp8Layer::new(i as u8, *spec, rand::random()))
                    .collect();
                let encodings = layers
                    .iter()
                    .map(|l| RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters {
                            // One encoding is sent without a rid, as a browser does.
                            rid: if n > 1 {
                                l.spec.rid.to_owned()
                            } else {
                                String::new()
                            },
                            ssrc: Some(l.ssrc),
                            ..Default::default()
                        },
                        codec: RTCRtpCodec {
                            mime_type: MIME_TYPE_VP8.to_owned(),
                            clock_rate: 90000,
                            ..Default::default()
                        },
                        ..Default::default()
                    })
                    .collect();
                let sender = pc.add_track(MediaStreamTrack::new(
                    format!("{}-stream", spec.name),
                    format!("{}-video", spec.name),
                    "video".into(),
                    RtpCodecKind::Video,
                    encodings,
                ))?;
                video = Some(VideoOut {
                    sender,
                    sending: vec![true; layers.len()],
                    layers,
                });
            }
        }
        Ok(Self {
            spec,
            pc,
            socket,
            local,
            counters,
            sig_in,
            sig_out,
            stop,
            connected: false,
            offer_outstanding: false,
            reoffer: false,
            negotiated: false,
            ids: SendIds::default(),
            audio,
            video,
            media_start: None,
            audio_sent: 0,
            video_frames: 0,
            streams: HashMap::new(),
            tracks: HashSet::new(),
            first_media: None,
            signaling_closed: false,
        })
    }

    fn publishes(&self) -> bool {
        self.audio.is_some() || self.video.is_some()
    }

    /// Drives the connection until the run stops or signaling ends.
    pub async fn run(mut self) -> ConnReport {
        let mut buf = vec![0u8; 2048];
        loop {
            let now = Instant::now();
            let mut deadline = self
                .pc
                .poll_timeout()
                .unwrap_or(now + Duration::from_secs(1));
            if let Some(next) = self.next_media_at() {
                deadline = deadline.min(next);
            }
            tokio::select! {
                biased;
                _ = self.stop.changed() => break,
                m = self.sig_in.recv(), if !self.signaling_closed => match m {
                    Some(m) => self.on_signal(m),
                    None => self.signaling_closed = true,
                },
                r = self.socket.readable() => {
                    if r.is_ok() {
                        self.read_datagrams(&mut buf);
                    }
                }
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
            let now = Instant::now();
            if self.pc.poll_timeout().is_some_and(|t| t <= now) {
                if let Err(err) = self.pc.handle_timeout(now) {
                    self.counters
                        .error(&self.spec.name, format!("handle_timeout: {err}"));
                }
            }
            self.send_due_media(now);
            self.drain();
            if self.signaling_closed && !self.connected {
                break;
            }
        }
        let _ = self.pc.close();
        ConnReport {
            connected: self.connected,
            tracks_received: self.tracks.len(),
            join_time: self
                .first_media
                .map(|t| t.saturating_duration_since(self.spec.started)),
        }
    }

    fn read_datagrams(&mut self, buf: &mut [u8]) {
        loop {
            match self.socket.try_recv_from(buf) {
                Ok((n, src)) => {
                    let now = Instant::now();
                    let msg = TaggedBytesMut {
                        now,
                        transport: TransportContext {
                            local_addr: self.local,
                            peer_addr: src,
                            ecn: None,
                            transport_protocol: TransportProtocol::UDP,
                        },
                        message: BytesMut::from(&buf[..n]),
                    };
                    if (128..192).contains(&buf[0]) && n > 1 && !(192..224).contains(&buf[1]) {
                        self.counters
                            .recv_bytes
                            .fetch_add(n as u64, Ordering::Relaxed);
                    }
                    if let Err(err) = self.pc.handle_read(msg) {
                        tracing::debug!(name = %self.spec.name, %err, "datagram rejected");
                    }
                    self.drain();
                }
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(err) => {
                    tracing::debug!(name = %self.spec.name, %err, "receive error");
                    return;
                }
            }
        }
    }

    /// Sends what the connection has to send and handles its events and received messages.
    fn drain(&mut self) {
        while let Some(out) = self.pc.poll_write() {
            let data = &out.message;
            if let Err(err) = self.socket.try_send_to(data, out.transport.peer_addr) {
                tracing::debug!(name = %self.spec.name, %err, "send failed");
            }
        }
        while let Some(ev) = self.pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = ev {
                match state {
                    RTCPeerConnectionState::Connected if !self.connected => {
                        self.connected = true;
                        self.counters.connected.fetch_add(1, Ordering::Relaxed);
                        let took = self.spec.started.elapsed().as_micros() as u64;
                        let _ = self
                            .counters
                            .connect_us
                            .lock()
                            .expect("connect")
                            .record(took.max(1));
                    }
                    RTCPeerConnectionState::Failed => {
                        self.counters
                            .error(&self.spec.name, "media connection failed");
                    }
                    _ => {}
                }
            }
        }
        while let Some(msg) = self.pc.poll_read() {
            match msg.message {
                RTCMessage::RtpPacket(track_id, packet) => self.on_rtp(&track_id, &packet, msg.now),
                RTCMessage::RtcpPacket(_, packets) => {
                    for p in &packets {
                        let any = p.as_any();
                        let ssrc = if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                            pli.media_ssrc
                        } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
                            fir.fir.first().map_or(fir.media_ssrc, |e| e.ssrc)
                        } else {
                            continue;
                        };
                        if let Some(v) = &mut self.video {
                            for l in v.layers.iter_mut().filter(|l| l.ssrc == ssrc) {
                                l.request_keyframe();
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn on_rtp(&mut self, track_id: &str, packet: &rtp::Packet, now: Instant) {
        let c = &self.counters;
        c.recv_packets.fetch_add(1, Ordering::Relaxed);
        let expected = self
            .streams
            .entry(packet.header.ssrc)
            .or_default()
            .expected_increment(packet.header.sequence_number);
        c.expected_packets.fetch_add(expected, Ordering::Relaxed);
        if let Some(stamp) = media::read_stamp(&packet.payload) {
            let latency = media::micros_since_epoch(now).saturating_sub(stamp.sent_us);
            let _ = c.latency_us.lock().expect("latency").record(latency.max(1));
        }
        if self.first_media.is_none() {
            self.first_media = Some(now);
            let join = now.saturating_duration_since(self.spec.started);
            let _ = c
                .join_us
                .lock()
                .expect("join")
                .record((join.as_micros() as u64).max(1));
        }
        if !self.tracks.contains(track_id) {
            self.tracks.insert(track_id.to_owned());
            c.tracks_reached.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn on_signal(&mut self, m: SigIn) {
        let who = self.spec.name.clone();
        match m {
            SigIn::Joined => {
                if self.publishes() {
                    self.offer();
                }
            }
            SigIn::Offer(sdp) => {
                if self.offer_outstanding {
                    // The polite side of perfect negotiation: drop our offer, answer, offer again.
                    let rollback = RTCSessionDescription::rollback(None);
                    if let Err(err) =
                        rollback.and_then(|r| self.pc.set_local_description(Instant::now(), r))
                    {
                        self.counters.error(&who, format!("rollback: {err}"));
                    }
                    self.offer_outstanding = false;
                    self.reoffer = true;
                }
                let result = RTCSessionDescription::offer(sdp)
                    .and_then(|offer| self.pc.set_remote_description(Instant::now(), offer))
                    .and_then(|()| self.pc.create_answer(None))
                    .and_then(|answer| {
                        let sdp = answer.sdp.clone();
                        self.pc.set_local_description(Instant::now(), answer)?;
                        Ok(sdp)
                    });
                match result {
                    Ok(sdp) => {
                        let _ = self.sig_out.send(SigOut::Answer(sdp));
                    }
                    Err(err) => self.counters.error(&who, format!("answering: {err}")),
                }
                if self.reoffer {
                    self.reoffer = false;
                    self.offer();
                }
            }
            SigIn::Answer(sdp) => {
                if !self.offer_outstanding {
                    return; // an answer to an offer we rolled back
                }
                self.offer_outstanding = false;
                match RTCSessionDescription::answer(sdp)
                    .and_then(|a| self.pc.set_remote_description(Instant::now(), a))
                {
                    Ok(()) => self.on_negotiated(),
                    Err(err) => self.counters.error(&who, format!("applying answer: {err}")),
                }
            }
            SigIn::Layers {
                mid,
                active,
                paused,
            } => {
                if self.ids.video_mid.as_deref() != Some(mid.as_str()) {
                    return;
                }
                if let Some(v) = &mut self.video {
                    for (l, on) in v.layers.iter().zip(v.sending.iter_mut()) {
                        if active.iter().any(|r| r == l.spec.rid) {
                            *on = true;
                        } else if paused.iter().any(|r| r == l.spec.rid) {
                            *on = false;
                        }
                    }
                }
            }
            SigIn::Error(e) => self.counters.error(&who, format!("server error {e}")),
            SigIn::Closed(why) => {
                self.signaling_closed = true;
                if !*self.stop.borrow() {
                    self.counters
                        .error(&who, format!("signaling closed: {why}"));
                }
            }
        }
    }

    fn offer(&mut self) {
        let result = self.pc.create_offer(None).and_then(|offer| {
            let sdp = offer.sdp.clone();
            self.pc.set_local_description(Instant::now(), offer)?;
            Ok(sdp)
        });
        match result {
            Ok(sdp) => {
                self.offer_outstanding = true;
                let _ = self.sig_out.send(SigOut::Offer(sdp));
            }
            Err(err) => self
                .counters
                .error(&self.spec.name, format!("creating offer: {err}")),
        }
    }

    /// The server accepted what this connection publishes: learn the ids media must carry.
    fn on_negotiated(&mut self) {
        let Some(local) = self.pc.local_description().map(|d| d.sdp) else {
            return;
        };
        self.ids = SendIds {
            audio_level: extmap_id(&local, URI_AUDIO_LEVEL),
            mid_ext: extmap_id(&local, URI_MID),
            rid_ext: extmap_id(&local, URI_RID),
            audio_mid: sending_mid(&local, "audio").map(Bytes::from),
            video_mid: sending_mid(&local, "video"),
        };
        self.negotiated = true;
    }

    fn next_media_at(&self) -> Option<Instant> {
        let start = self.media_start?;
        let mut next: Option<Instant> = None;
        if self.audio.is_some() {
            next = Some(start + AUDIO_INTERVAL * (self.audio_sent as u32));
        }
        if self.video.is_some() {
            let v = start + Duration::from_secs(1) * (self.video_frames as u32) / VIDEO_FPS;
            next = Some(next.map_or(v, |n| n.min(v)));
        }
        next
    }

    fn send_due_media(&mut self, now: Instant) {
        if !(self.connected && self.negotiated) {
            return;
        }
        let start = *self.media_start.get_or_insert(now);
        while self.audio.is_some() && start + AUDIO_INTERVAL * (self.audio_sent as u32) <= now {
            self.audio_sent += 1;
            self.send_audio(now);
        }
        while self.video.is_some()
            && start + Duration::from_secs(1) * (self.video_frames as u32) / VIDEO_FPS <= now
        {
            self.video_frames += 1;
            self.send_video(now);
        }
    }

    fn write(&mut self, sender: RTCRtpSenderId, packet: rtp::Packet, now: Instant) {
        let size = packet.header.marshal_size() + packet.payload.len() + 10;
        match self
            .pc
            .rtp_sender(sender)
            .map(|mut s| s.write_rtp(now, packet))
        {
            Some(Ok(())) => {
                self.counters.sent_packets.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .sent_bytes
                    .fetch_add(size as u64, Ordering::Relaxed);
            }
            Some(Err(err)) => self
                .counters
                .error(&self.spec.name, format!("write_rtp: {err}")),
            None => self.counters.error(&self.spec.name, "no sender"),
        }
        self.drain();
    }

    fn send_audio(&mut self, now: Instant) {
        let ids = self.ids.clone();
        let Some(a) = &mut self.audio else { return };
        let mut header = rtp::header::Header {
            version: 2,
            payload_type: OPUS_PT,
            sequence_number: a.seq,
            timestamp: a.timestamp,
            ssrc: a.ssrc,
            marker: false,
            ..Default::default()
        };
        if let Some(id) = ids.audio_level {
            // Voice activity and a level of 30 dB below full scale: a participant speaking.
            let _ = header.set_extension(id, Bytes::from_static(&[0x80 | 30]));
        }
        if let (Some(id), Some(mid)) = (ids.mid_ext, &ids.audio_mid) {
            let _ = header.set_extension(id, mid.clone());
        }
        let payload = media::audio_payload(Stamp {
            sent_us: media::micros_since_epoch(now),
            counter: a.counter,
            layer: 0,
        });
        a.seq = a.seq.wrapping_add(1);
        a.timestamp = a.timestamp.wrapping_add(960);
        a.counter = a.counter.wrapping_add(1);
        let sender = a.sender;
        self.write(
            sender,
            rtp::Packet {
                header,
                payload: payload.into(),
            },
            now,
        );
    }

    fn send_video(&mut self, now: Instant) {
        let ids = self.ids.clone();
        let Some(v) = &mut self.video else { return };
        let sender = v.sender;
        let simulcast = v.layers.len() > 1;
        let mut packets = Vec::new();
        for (l, &on) in v.layers.iter_mut().zip(&v.sending) {
            if !on {
                continue;
            }
            let (frame, _keyframe) = l.next_frame(now);
            let count = frame.len();
            for (i, payload) in frame.into_iter().enumerate() {
                let mut header = rtp::header::Header {
                    version: 2,
                    payload_type: VP8_PT,
                    sequence_number: l.seq,
                    timestamp: l.timestamp,
                    ssrc: l.ssrc,
                    marker: i + 1 == count,
                    ..Default::default()
                };
                if let (Some(id), Some(mid)) = (ids.mid_ext, &ids.video_mid) {
                    let _ = header.set_extension(id, Bytes::copy_from_slice(mid.as_bytes()));
                }
                if simulcast {
                    if let Some(id) = ids.rid_ext {
                        let _ = header.set_extension(id, Bytes::from_static(l.spec.rid.as_bytes()));
                    }
                }
                l.seq = l.seq.wrapping_add(1);
                packets.push(rtp::Packet {
                    header,
                    payload: payload.into(),
                });
            }
            l.advance();
        }
        for p in packets {
            self.write(sender, p, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdp_helpers_find_extension_ids_and_sending_mids() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\na=extmap:2 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=mid:0\r\na=sendonly\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=extmap:2/sendonly urn:ietf:params:rtp-hdrext:sdes:mid\r\na=extmap:3 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\na=recvonly\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=sendonly\r\n";
        assert_eq!(extmap_id(sdp, URI_AUDIO_LEVEL), Some(1));
        assert_eq!(extmap_id(sdp, URI_MID), Some(2));
        assert_eq!(extmap_id(sdp, URI_RID), Some(3));
        assert_eq!(extmap_id(sdp, testkit::client::URI_RRID), None);
        assert_eq!(sending_mid(sdp, "audio").as_deref(), Some("0"));
        assert_eq!(sending_mid(sdp, "video").as_deref(), Some("2"));
    }
}
