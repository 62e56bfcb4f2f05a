//! Thin glue to `rtc`: how the server's peer connections are configured.
//!
//! Every setting here answers a trap recorded in `shared/WEBRTC-RS-NOTES.md`: ICE-lite with the DTLS
//! server role and a per-connection ufrag (so one UDP port can serve every connection), a 1024-packet
//! SRTP replay window and a bounded NACK generator (so retransmissions survive on publishers'
//! legs), and an interceptor that lets subscribers' PLI/FIR reach the application.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rtc::ice::tcp_type::TcpType;
use rtc::interceptor::{
    Attribute, BandwidthEstimator, CongestionControlBuilder, EstimatorStats, Gcc, Interceptor,
    NackGeneratorBuilder, NackResponderBuilder, Packet, PacketReport, Registry, Slot, StreamInfo,
    TaggedPacket,
};
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_rtcp_reports, configure_simulcast_extension_headers, configure_twcc,
};
use rtc::peer_connection::configuration::media_engine::{
    MediaEngine, MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8,
};
use rtc::peer_connection::configuration::setting_engine::{
    SctpMaxMessageSize, SettingEngineBuilder,
};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCDtlsRole, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::sansio::Protocol;
use rtc::shared::error::Error as RtcError;

use crate::engine::retransmit::{RetransmitGuard, RtxDecision};

/// libwebrtc's and Firefox's SRTP replay window; rtc's default of 64 rejects legitimate late
/// retransmissions of a video burst (the stall described in the notes).
const SRTP_REPLAY_WINDOW: usize = 1024;
/// A lost packet is asked for at most this many times, then given up on.
const MAX_NACKS_PER_PACKET: u16 = 10;
/// ICE timeouts are switched off in `rtc` (zero disables them) and liveness is the driver's job:
/// rtc 0.21's controlled agent keeps the *first* nominated pair for ever and counts only STUN on
/// that pair as a sign of life, so when Chromium later moves to another of its candidate pairs
/// (it checks from loopback and from its LAN address) rtc declared healthy connections failed
/// after its timeouts. The driver instead follows the client's latest accepted check (see
/// `driver/mod.rs`, consent and active path).
const ICE_NO_TIMEOUT: Duration = Duration::ZERO;
/// Where the downlink estimate of a new connection starts: optimistic, so a subscriber on a good
/// link gets the layer its screen asks for at once; a poor link shows congestion within a second
/// and the estimate falls to what it delivers.
const BWE_INITIAL_BPS: f64 = 3_000_000.0;
const BWE_MIN_BPS: f64 = 100_000.0;
const BWE_MAX_BPS: f64 = 50_000_000.0;

/// The downlink estimate of one connection, written by its congestion controller inside the
/// interceptor chain and read by the driver's layer allocator.
#[derive(Debug, Default)]
pub struct Bandwidth {
    bps: AtomicU64,
    updates: AtomicU64,
    /// The round trip implied by the latest feedback, in microseconds (0: not known yet).
    rtt_us: AtomicU64,
    /// Retransmissions sent, and held back by [`RetransmitGuard`] (see [`Bandwidth::retransmissions`]).
    resent: AtomicU64,
    held_back: AtomicU64,
}

impl Bandwidth {
    /// The latest estimate in bits per second, once transport-wide feedback produced one.
    pub(crate) fn estimate(&self) -> Option<f64> {
        (self.updates.load(Ordering::Relaxed) > 0).then(|| self.bps.load(Ordering::Relaxed) as f64)
    }

    /// The round trip implied by the latest transport-wide feedback.
    pub(crate) fn rtt(&self) -> Option<Duration> {
        match self.rtt_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// Retransmissions this connection sent, and held back (storm guard).
    pub(crate) fn retransmissions(&self) -> (u64, u64) {
        (
            self.resent.load(Ordering::Relaxed),
            self.held_back.load(Ordering::Relaxed),
        )
    }
}

/// rtc's Google Congestion Control, publishing every new estimate to a [`Bandwidth`].
struct ReportingGcc {
    gcc: Gcc,
    out: Arc<Bandwidth>,
}

impl BandwidthEstimator for ReportingGcc {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        self.gcc.on_reports(now, reports);
        if !reports.is_empty() {
            let st = self.gcc.stats();
            tracing::debug!(
                delay_based = ?st.delay_based_bitrate,
                loss_based = ?st.loss_based_bitrate,
                loss = ?st.packet_loss,
                reports = reports.len(),
                lost = reports.iter().filter(|r| !r.arrived).count(),
                "downlink estimate"
            );
            self.out
                .bps
                .store(self.gcc.target_bitrate() as u64, Ordering::Relaxed);
            if let Some(rtt) = st.round_trip_time {
                self.out
                    .rtt_us
                    .store((rtt.as_micros() as u64).max(1), Ordering::Relaxed);
            }
            self.out.updates.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn target_bitrate(&self) -> f64 {
        self.gcc.target_bitrate()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.gcc.handle_timeout(now)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.gcc.poll_timeout()
    }

    fn stats(&self) -> EstimatorStats {
        self.gcc.stats()
    }
}

/// What a [`Tap`] does to the packets passing one place of the interceptor chain.
trait TapRule: Send + Sync {
    /// A packet from the client, on its way to the application.
    fn on_read(&mut self, _msg: &mut TaggedPacket) {}
    /// A packet on its way to the client; `false` drops it.
    fn on_write(&mut self, _msg: &mut TaggedPacket) -> bool {
        true
    }
    /// A local (sent) stream went away.
    fn on_local_stream_gone(&mut self, _info: &StreamInfo) {}
}

/// An interceptor that passes everything through, except what its rule changes or drops: no
/// timers, no packets of its own.
struct Tap<R> {
    rule: R,
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

impl<R> Tap<R> {
    fn new(rule: R) -> Self {
        Self {
            rule,
            reads: VecDeque::new(),
            writes: VecDeque::new(),
        }
    }
}

impl<R: TapRule> Protocol<TaggedPacket, TaggedPacket, ()> for Tap<R> {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = RtcError;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        self.rule.on_read(&mut msg);
        self.reads.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.reads.pop_front()
    }

    fn handle_write(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if self.rule.on_write(&mut msg) {
            self.writes.push_back(msg);
        }
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.writes.pop_front()
    }

    fn handle_timeout(&mut self, _now: Instant) -> Result<(), Self::Error> {
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Self::Time> {
        None
    }
}

impl<R: TapRule> Interceptor for Tap<R> {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.rule.on_local_stream_gone(info);
    }
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// Lets subscribers' keyframe requests (PLI, FIR) out of the interceptor chain to the application,
/// which relays them to the publisher, REMB (the downlink estimate of receivers that do not
/// send transport-wide feedback) and NACKs (answered by the NACK responder before this point;
/// the application only counts them). Everything else stays with the interceptors.
struct DeliverKeyframeRequests;

impl TapRule for DeliverKeyframeRequests {
    fn on_read(&mut self, msg: &mut TaggedPacket) {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let wanted = packets.iter().any(|p| {
                p.as_any().downcast_ref::<PictureLossIndication>().is_some()
                    || p.as_any().downcast_ref::<FullIntraRequest>().is_some()
                    || p.as_any()
                        .downcast_ref::<ReceiverEstimatedMaximumBitrate>()
                        .is_some()
                    || p.as_any().downcast_ref::<TransportLayerNack>().is_some()
            });
            if wanted {
                msg.message.add(Attribute::DeliverToApplication);
            }
        }
    }
}

/// Holds back retransmissions that would feed a storm (see [`RetransmitGuard`]): sits wire-ward
/// of rtc's NACK responder, so it sees both the original packets and the responder's resends
/// (the same SSRC and sequence number again; no RTX is negotiated).
struct GuardRetransmissions {
    guard: RetransmitGuard,
    bandwidth: Arc<Bandwidth>,
}

impl TapRule for GuardRetransmissions {
    fn on_write(&mut self, msg: &mut TaggedPacket) -> bool {
        let Packet::Rtp(p) = &msg.message.packet else {
            return true;
        };
        let decision = self.guard.on_send(
            p.header.ssrc,
            p.header.sequence_number,
            p.payload.len() + 12,
            msg.now,
            self.bandwidth.estimate(),
            self.bandwidth.rtt(),
        );
        match decision {
            RtxDecision::Original => true,
            RtxDecision::Resend => {
                self.bandwidth.resent.fetch_add(1, Ordering::Relaxed);
                true
            }
            _ => {
                self.bandwidth.held_back.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    fn on_local_stream_gone(&mut self, info: &StreamInfo) {
        self.guard.forget(info.ssrc);
    }
}

/// The SSRCs of simulcast layers a client publishes (identified by rid, not declared in SDP).
pub type SimulcastSsrcs = Arc<Mutex<HashSet<u32>>>;

/// Keeps report blocks about simulcast layers out of the RTCP the server sends.
///
/// rtc 0.21 forgets the SSRC it learned for each rid whenever a remote description is applied
/// (every renegotiation), and then binds an unknown SSRC again only from a packet carrying the
/// mid and rid header extensions. Chromium stops sending those extensions on a stream once a
/// report block acknowledges its SSRC. Without report blocks Chromium keeps sending mid and rid,
/// so a layer survives renegotiation. What Chromium loses is the round-trip time and loss it
/// would read from those blocks for the layers; its bandwidth estimate runs on transport-wide
/// feedback, which is unaffected.
struct HideSimulcastReports {
    ssrcs: SimulcastSsrcs,
}

impl TapRule for HideSimulcastReports {
    fn on_write(&mut self, msg: &mut TaggedPacket) -> bool {
        if let Packet::Rtcp(packets) = &mut msg.message.packet {
            let guard = self.ssrcs.lock();
            if let Some(hidden) = guard.as_deref().ok().filter(|s| !s.is_empty()) {
                for p in packets.iter_mut() {
                    let any = p.as_any();
                    if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
                        if rr.reports.iter().any(|r| hidden.contains(&r.ssrc)) {
                            let mut rr = rr.clone();
                            rr.reports.retain(|r| !hidden.contains(&r.ssrc));
                            *p = Box::new(rr);
                        }
                    } else if let Some(sr) = any.downcast_ref::<SenderReport>() {
                        if sr.reports.iter().any(|r| hidden.contains(&r.ssrc)) {
                            let mut sr = sr.clone();
                            sr.reports.retain(|r| !hidden.contains(&r.ssrc));
                            *p = Box::new(sr);
                        }
                    }
                }
            }
        }
        true
    }
}

fn video_feedback() -> Vec<RTCPFeedback> {
    ["goog-remb", "ccm fir", "nack", "nack pli"]
        .iter()
        .map(|fb| {
            let (typ, parameter) = fb.split_once(' ').unwrap_or((fb, ""));
            RTCPFeedback {
                typ: typ.to_owned(),
                parameter: parameter.to_owned(),
            }
        })
        .collect()
}

/// The codecs Fanout forwards, in order of preference: Opus; VP8, then H.264 (constrained
/// baseline and baseline, packetization mode 1, which is what browsers send).
pub fn media_engine() -> Result<MediaEngine, RtcError> {
    let mut me = MediaEngine::default();
    me.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_OPUS.to_owned(),
                clock_rate: 48000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                rtcp_feedback: vec![],
            },
            payload_type: 111,
        },
        RtpCodecKind::Audio,
    )?;
    let video = [
        (MIME_TYPE_VP8, "", 96),
        (
            MIME_TYPE_H264,
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
            102,
        ),
        (
            MIME_TYPE_H264,
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f",
            127,
        ),
    ];
    for (mime, fmtp, pt) in video {
        me.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: mime.to_owned(),
                    clock_rate: 90000,
                    channels: 0,
                    sdp_fmtp_line: fmtp.to_owned(),
                    rtcp_feedback: video_feedback(),
                },
                payload_type: pt,
            },
            RtpCodecKind::Video,
        )?;
    }
    Ok(me)
}

/// RTP header extensions in Chromium's own numbering. rtc numbers extensions 1, 2, 3… in the order
/// they are registered whenever it offers a kind not negotiated yet; Chromium refuses to see an id
/// change meaning on one connection, even one it proposed in an offer the server ignored (offer
/// collision), so the server's numbers must be Chromium's. These are Chromium's ids for an offer
/// with audio first and then (simulcast) video, as the client library publishes: 1–4 shared with
/// audio, 10 and 11 the rid and repaired-rid of simulcast.
///
/// Only the extensions the server uses are offered or accepted (`Use::Both`, `Use::Audio`); the
/// others (`Use::Placeholder`) are registered for no kind, so they only keep Chromium's ids free:
/// Firefox takes every id a server's offer names as used for good and numbers its own extensions
/// in the ids left (1–14, one-byte headers only), and a server offering all twelve of Chromium's
/// left it too few: its next offer failed ("invalid extension id 15").
const HEADER_EXTENSIONS: &[(&str, Use)] = &[
    ("urn:ietf:params:rtp-hdrext:ssrc-audio-level", Use::Audio), // 1
    (
        "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
        Use::Both,
    ), // 2
    (
        "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
        Use::Both,
    ), // 3
    ("urn:ietf:params:rtp-hdrext:sdes:mid", Use::Both),          // 4
    (
        "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay",
        Use::Placeholder,
    ), // 5
    (
        "http://www.webrtc.org/experiments/rtp-hdrext/video-content-type",
        Use::Placeholder,
    ), // 6
    (
        "http://www.webrtc.org/experiments/rtp-hdrext/video-timing",
        Use::Placeholder,
    ), // 7
    (
        "http://www.webrtc.org/experiments/rtp-hdrext/color-space",
        Use::Placeholder,
    ), // 8
    (
        "http://www.webrtc.org/experiments/rtp-hdrext/video-layers-allocation00",
        Use::Placeholder,
    ), // 9
    ("urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id", Use::Video), // 10
    (
        "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
        Use::Video,
    ), // 11
];

/// Which kinds of media an extension of [`HEADER_EXTENSIONS`] is offered and accepted for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Use {
    Audio,
    Video,
    Both,
    /// Neither: the entry only keeps its id (see [`HEADER_EXTENSIONS`]).
    Placeholder,
}

pub fn register_header_extensions(me: &mut MediaEngine) -> Result<(), RtcError> {
    for &(uri, use_) in HEADER_EXTENSIONS {
        let kinds: &[RtpCodecKind] = match use_ {
            Use::Audio => &[RtpCodecKind::Audio],
            Use::Video => &[RtpCodecKind::Video],
            Use::Both => &[RtpCodecKind::Audio, RtpCodecKind::Video],
            Use::Placeholder => &[RtpCodecKind::Unspecified],
        };
        for &kind in kinds {
            me.register_header_extension(
                RTCRtpHeaderExtensionCapability {
                    uri: uri.to_owned(),
                },
                kind,
                None,
            )?;
        }
    }
    Ok(())
}

/// The default interceptor set of `rtc`, rebuilt by hand with the NACK generator bounded, plus the
/// keyframe-request tap and, for the downlink, transport-wide sequence numbers on everything sent
/// and a congestion controller (GCC) fed by the client's feedback.
fn interceptors(
    me: &mut MediaEngine,
    bandwidth: Arc<Bandwidth>,
    simulcast: SimulcastSsrcs,
) -> Result<Registry, RtcError> {
    // First, so that the helpers below find these extensions already in place.
    register_header_extensions(me)?;
    let registry = Registry::new()
        .with(Slot::NackResponder, NackResponderBuilder::new().build())
        // Wire-ward of the responder (its resends pass through), application-ward of the pacer.
        .with(
            Slot::from(3_500),
            Tap::new(GuardRetransmissions {
                guard: RetransmitGuard::new(),
                bandwidth: bandwidth.clone(),
            }),
        )
        .with(
            Slot::NackGenerator,
            NackGeneratorBuilder::new()
                .with_max_nacks_per_packet(MAX_NACKS_PER_PACKET)
                .build(),
        )
        // Application-ward of the default chain, as rtc's rtcp-processing example places its tap.
        .with(Slot::from(14_000), Tap::new(DeliverKeyframeRequests))
        // Wire-ward of the receiver and sender report interceptors, which generate the reports.
        .with(
            Slot::from(9_500),
            Tap::new(HideSimulcastReports { ssrcs: simulcast }),
        );
    configure_simulcast_extension_headers(me)?;
    let registry = configure_twcc(registry, me)?.with(
        Slot::CongestionControl,
        CongestionControlBuilder::new(ReportingGcc {
            gcc: Gcc::new(BWE_INITIAL_BPS, BWE_MIN_BPS, BWE_MAX_BPS),
            out: bandwidth,
        })
        .build(),
    );
    Ok(configure_rtcp_reports(registry))
}

/// A new server-side peer connection, ICE-lite with the given credentials (ufrag, password),
/// already holding the host candidates of the shared media socket, its SCTP messages bounded
/// by `sctp_max_message`.
pub fn new_peer_connection(
    now: Instant,
    (ufrag, pwd): (&str, &str),
    host_candidates: &[SocketAddr],
    tcp_candidates: &[SocketAddr],
    bandwidth: Arc<Bandwidth>,
    simulcast: SimulcastSsrcs,
    sctp_max_message: u32,
) -> Result<RTCPeerConnection, RtcError> {
    let mut me = media_engine()?;
    let registry = interceptors(&mut me, bandwidth, simulcast)?;
    let se = SettingEngineBuilder::new()
        .with_lite(true)
        .with_answering_dtls_role(RTCDtlsRole::Server)
        .with_ice_credentials(ufrag.to_owned(), pwd.to_owned())
        .with_srtp_replay_protection_window(SRTP_REPLAY_WINDOW)
        // rtc bounds what it sends by this too: a 64 KiB message with its sender's stamp is larger.
        .with_sctp_max_message_size(SctpMaxMessageSize::Bounded(sctp_max_message))
        .with_ice_timeouts(
            Some(ICE_NO_TIMEOUT),
            Some(ICE_NO_TIMEOUT),
            Some(ICE_NO_TIMEOUT),
        )
        .build();
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(me)
        .with_setting_engine(se)
        .with_interceptor_registry(registry)
        .build(now)?;
    for init in host_candidate_inits(host_candidates, tcp_candidates)? {
        pc.add_local_candidate(init)?;
    }
    Ok(pc)
}

/// The shared socket's host candidates, as `RTCIceCandidateInit`s.
/// The media sockets' host candidates: UDP, then ICE-TCP passive ones (RFC 6544), each
/// component 1 (everything is bundled and RTCP-muxed).
pub fn host_candidate_inits(
    udp: &[SocketAddr],
    tcp: &[SocketAddr],
) -> Result<Vec<RTCIceCandidateInit>, RtcError> {
    let udp = udp.iter().map(|a| (a, "udp", TcpType::Unspecified));
    let tcp = tcp.iter().map(|a| (a, "tcp", TcpType::Passive));
    udp.chain(tcp)
        .map(|(addr, network, tcp_type)| {
            let candidate = CandidateHostConfig {
                base_config: CandidateConfig {
                    network: network.to_owned(),
                    address: addr.ip().to_string(),
                    port: addr.port(),
                    component: 1,
                    ..Default::default()
                },
                tcp_type,
            }
            .new_candidate_host()?;
            RTCIceCandidate::from(&candidate).to_json()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::media_stream::MediaStreamTrack;
    use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodingParameters, RTCRtpEncodingParameters};
    use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};

    fn sendonly(pc: &mut RTCPeerConnection, kind: RtpCodecKind, mime: &str, clock: u32, ch: u16) {
        let track = MediaStreamTrack::new(
            "stream".into(),
            format!("{mime}-track"),
            "label".into(),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(rand::random()),
                    ..Default::default()
                },
                codec: RTCRtpCodec {
                    mime_type: mime.into(),
                    clock_rate: clock,
                    channels: ch,
                    ..Default::default()
                },
                ..Default::default()
            }],
        );
        let init = RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Sendonly,
            streams: vec![],
            send_encodings: vec![],
        };
        pc.add_transceiver_from_track(track, Some(init)).unwrap();
    }

    #[test]
    fn first_server_offer_uses_chromium_extension_ids() {
        let addr: SocketAddr = "127.0.0.1:7882".parse().unwrap();
        let mut pc = new_peer_connection(
            Instant::now(),
            ("ufragufrag", "pwdpwdpwdpwdpwdpwdpwdpwd"),
            &[addr],
            &[],
            Arc::default(),
            Arc::default(),
            65536,
        )
        .unwrap();
        sendonly(&mut pc, RtpCodecKind::Audio, MIME_TYPE_OPUS, 48000, 2);
        sendonly(&mut pc, RtpCodecKind::Video, MIME_TYPE_VP8, 90000, 0);
        let offer = pc.create_offer(None).unwrap();
        let sdp = offer.sdp;
        for (id, uri) in [(3, "transport-wide-cc"), (4, "sdes:mid")] {
            let lines: Vec<&str> = sdp.lines().filter(|l| l.contains(uri)).collect();
            assert_eq!(lines.len(), 2, "{uri} in both sections: {sdp}");
            assert!(
                lines
                    .iter()
                    .all(|l| l.starts_with(&format!("a=extmap:{id} "))),
                "{lines:?}"
            );
        }
        // Chromium's ids when it offers simulcast video after audio (see HEADER_EXTENSIONS).
        for (id, uri) in [
            (1, "ssrc-audio-level"),
            (2, "abs-send-time"),
            (10, "sdes:rtp-stream-id"),
            (11, "sdes:repaired-rtp-stream-id"),
        ] {
            assert!(
                sdp.lines()
                    .any(|l| l.starts_with(&format!("a=extmap:{id} ")) && l.contains(uri)),
                "{uri} at {id}: {sdp}"
            );
        }
        // Nothing else: the placeholders keep their ids free for the client's own extensions.
        let ids: std::collections::BTreeSet<u8> = sdp
            .lines()
            .filter_map(|l| l.strip_prefix("a=extmap:"))
            .filter_map(|l| l.split([' ', '/']).next()?.parse().ok())
            .collect();
        assert_eq!(ids, [1, 2, 3, 4, 10, 11].into(), "{sdp}");
        assert!(sdp.contains("a=ice-lite"));
        assert!(sdp.contains("127.0.0.1 7882 typ host"), "{sdp}");
    }
}
