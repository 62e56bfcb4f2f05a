//! The client side of the harness: an `rtc` peer connection as a browser has it, its share of
//! the signaling, and a synthetic VP8 source that answers keyframe requests.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::interceptor::{Registry, Slot};
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_VP8;
use rtc::peer_connection::configuration::setting_engine::{
    SctpMaxMessageSize, SettingEngineBuilder,
};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::sansio::Protocol;
use sfu::api::Command;
use sfu::{Event, JoinInfo};
use testkit::client::{is_keyframe_request, KeyframeRequestTap};
use testkit::vp8::{self, Descriptor};

/// Frames per second of the synthetic video, and its RTP clock.
pub const FPS: u64 = 30;
pub const VIDEO_CLOCK: u32 = 90_000;

/// A packet a publisher wrote.
#[derive(Debug, Clone)]
pub struct Sent {
    /// Index of the layer in [`VideoSource::layers`].
    pub layer: usize,
    pub ssrc: u32,
    pub seq: u16,
    pub timestamp: u32,
    pub keyframe: bool,
    pub marker: bool,
    pub payload: Bytes,
}

/// A packet a subscriber decrypted.
#[derive(Debug, Clone)]
pub struct Received {
    pub track_id: String,
    pub header: rtp::header::Header,
    pub payload: Bytes,
    pub at: Instant,
}

/// One simulcast layer (or the only one) of a [`VideoSource`].
pub struct LayerOut {
    /// Empty for a track without simulcast.
    pub rid: String,
    pub ssrc: u32,
    pub(super) next_seq: u16,
    /// 15-bit VP8 picture id; each layer starts elsewhere, as a real encoder's would.
    pub(super) picture_id: u16,
}

/// A synthetic VP8 stream: `packets_per_frame` packets per frame at 30 fps on every layer, a
/// keyframe every `keyframe_every` frames and after a PLI.
pub struct VideoSource {
    pub sender: RTCRtpSenderId,
    pub layers: Vec<LayerOut>,
    pub packets_per_frame: usize,
    pub keyframe_every: u64,
    /// Every packet written, in order.
    pub sent: Vec<Sent>,
    /// PLIs the publisher received.
    pub plis: usize,
    /// Whether a PLI makes the next frame a keyframe (else only the periodic ones are).
    pub answer_plis: bool,
    /// Layers not sent (by index), to model a paused encoding.
    pub paused: Vec<bool>,
    pub(super) frame: u64,
    pub(super) timestamp: u32,
    pub(super) next_at: Option<Instant>,
    pub(super) keyframe_asked: bool,
}

/// A client: its `rtc` peer connection and what it heard and received.
pub struct Client {
    pub name: String,
    pub addr: SocketAddr,
    pub driver: usize,
    pub key: sfu::api::ParticipantKey,
    pub join_info: JoinInfo,
    pub pc: RTCPeerConnection,
    /// Every event the driver sent it, in order.
    pub events: Vec<Event>,
    /// Every RTP packet it decrypted, in order.
    pub received: Vec<Received>,
    pub connected: bool,
    /// Cut off from the network both ways (and its timers stopped): a vanished client.
    pub silent: bool,
    pub video: Option<VideoSource>,
    /// Protocol errors of its `rtc` connection (SDP it could not apply and the like).
    pub errors: Vec<String>,
    /// Its data channels, once opened ([`Net::open_data`]).
    pub data: Option<super::ClientData>,
}

impl Client {
    /// Whether it saw an event matching `f`.
    pub fn saw(&self, f: impl Fn(&Event) -> bool) -> bool {
        self.events.iter().any(f)
    }

    /// The packets it received on one track.
    pub fn received_on(&self, track_id: &str) -> Vec<&Received> {
        self.received
            .iter()
            .filter(|r| r.track_id == track_id)
            .collect()
    }

    /// The id of the first track it was told was published.
    pub fn published_track_id(&self) -> Option<String> {
        self.events.iter().find_map(|e| match e {
            Event::TrackPublished { track, .. } => Some(track.id.clone()),
            _ => None,
        })
    }
}

/// What a client's signaling does with one event: the command it sends back, if any.
pub(super) fn signal(c: &mut Client, ev: &Event, now: Instant) -> Option<Command> {
    match ev {
        Event::Offer(sdp) => {
            let applied = RTCSessionDescription::offer(sdp.clone())
                .and_then(|offer| c.pc.set_remote_description(now, offer))
                .and_then(|()| c.pc.create_answer(None))
                .and_then(|answer| {
                    c.pc.set_local_description(now, answer.clone())
                        .map(|()| answer)
                });
            match applied {
                Ok(answer) => Some(Command::Answer {
                    key: c.key,
                    sdp: answer.sdp,
                }),
                Err(e) => {
                    c.errors.push(format!("server offer: {e}"));
                    None
                }
            }
        }
        Event::Answer(sdp) => {
            let applied = RTCSessionDescription::answer(sdp.clone())
                .and_then(|answer| c.pc.set_remote_description(now, answer));
            if let Err(e) = applied {
                c.errors.push(format!("server answer: {e}"));
            }
            None
        }
        Event::Candidate(cand) => {
            // The ICE-lite server's candidate is in its SDP too; a duplicate is harmless.
            let _ = c.pc.add_remote_candidate(RTCIceCandidateInit {
                candidate: cand.candidate.clone(),
                sdp_mid: cand.sdp_mid.clone(),
                sdp_mline_index: cand.sdp_mline_index,
                username_fragment: cand.username_fragment.clone(),
                ..Default::default()
            });
            None
        }
        _ => None,
    }
}

/// Drains a client's events and decrypted messages; whether there were any.
pub(super) fn drain_client(c: &mut Client, now: Instant) -> bool {
    let mut moved = false;
    while let Some(ev) = c.pc.poll_event() {
        moved = true;
        match ev {
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(s) => {
                c.connected = s == RTCPeerConnectionState::Connected;
                if c.connected {
                    if let Some(v) = c.video.as_mut() {
                        v.next_at.get_or_insert(now);
                    }
                }
            }
            RTCPeerConnectionEvent::OnDataChannel(ev) => super::data::on_channel_event(c, ev),
            _ => {}
        }
    }
    while let Some(m) = c.pc.poll_read() {
        moved = true;
        match m.message {
            RTCMessage::RtpPacket(track_id, packet) => c.received.push(Received {
                track_id: track_id.to_string(),
                header: packet.header,
                payload: packet.payload,
                at: now,
            }),
            RTCMessage::DataChannelMessage(id, m) => super::data::on_message(c, id, m),
            RTCMessage::RtcpPacket(_, packets) => {
                let pli = packets.iter().any(|p| is_keyframe_request(p.as_any()));
                if let (true, Some(v)) = (pli, c.video.as_mut()) {
                    v.plis += 1;
                    v.keyframe_asked = v.answer_plis;
                }
            }
            _ => {}
        }
    }
    moved
}

/// Writes the frames a client's video source is due to send by `now`.
pub(super) fn send_frames(c: &mut Client, now: Instant) {
    let Some(v) = c.video.as_mut() else {
        return;
    };
    while let Some(at) = v.next_at.filter(|&at| at <= now) {
        v.next_at = Some(at + Duration::from_micros(1_000_000 / FPS));
        let keyframe = v.keyframe_asked || v.frame % v.keyframe_every == 0;
        v.keyframe_asked = false;
        let (pt, mid_ext, rid_ext) = {
            let mut sender = c.pc.rtp_sender(v.sender).expect("the video sender");
            let params = &sender.get_parameters().rtp_parameters;
            let pt = params
                .codecs
                .iter()
                .find(|x| x.rtp_codec.mime_type.eq_ignore_ascii_case(MIME_TYPE_VP8))
                .map(|x| x.payload_type)
                .expect("VP8 negotiated");
            let ext_id = |uri: &str| {
                params
                    .header_extensions
                    .iter()
                    .find(|e| e.uri == uri)
                    .map(|e| e.id as u8)
            };
            (
                pt,
                ext_id("urn:ietf:params:rtp-hdrext:sdes:mid"),
                ext_id("urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"),
            )
        };
        let mid = sender_mid(&mut c.pc, v.sender);
        let mut sender = c.pc.rtp_sender(v.sender).expect("the video sender");
        for (li, layer) in v.layers.iter_mut().enumerate() {
            if v.paused[li] {
                continue;
            }
            for k in 0..v.packets_per_frame {
                let payload = vp8_payload(keyframe, k == 0, layer.picture_id, li, v.frame, k);
                let mut header = rtp::header::Header {
                    version: 2,
                    marker: k + 1 == v.packets_per_frame,
                    payload_type: pt,
                    sequence_number: layer.next_seq,
                    timestamp: v.timestamp,
                    ssrc: layer.ssrc,
                    ..Default::default()
                };
                if let (Some(id), Some(mid)) = (mid_ext, mid.as_ref()) {
                    let _ = header.set_extension(id, Bytes::from(mid.clone().into_bytes()));
                }
                if let (Some(id), false) = (rid_ext, layer.rid.is_empty()) {
                    let _ = header.set_extension(id, Bytes::from(layer.rid.clone().into_bytes()));
                }
                v.sent.push(Sent {
                    layer: li,
                    ssrc: layer.ssrc,
                    seq: layer.next_seq,
                    timestamp: v.timestamp,
                    keyframe: keyframe && k == 0,
                    marker: header.marker,
                    payload: payload.clone(),
                });
                if let Err(e) = sender.write_rtp(now, rtp::Packet { header, payload }) {
                    c.errors.push(format!("write_rtp: {e}"));
                }
                layer.next_seq = layer.next_seq.wrapping_add(1);
            }
            layer.picture_id = (layer.picture_id + 1) & 0x7fff;
        }
        v.frame += 1;
        v.timestamp = v.timestamp.wrapping_add(VIDEO_CLOCK / FPS as u32);
    }
}

fn sender_mid(pc: &mut RTCPeerConnection, sender: RTCRtpSenderId) -> Option<String> {
    let tids: Vec<_> = pc.get_transceivers().collect();
    tids.into_iter().find_map(|t| {
        let t = pc.rtp_transceiver(t)?;
        if t.sender() == Some(sender) {
            t.mid().clone()
        } else {
            None
        }
    })
}

/// Length of the VP8 payload descriptor [`vp8_payload`] writes: X, I (15-bit picture id), L, T.
pub const VP8_DESCRIPTOR_LEN: usize = 6;

/// The frame size of layer `layer` in keyframes: 320x180 doubled per layer (q, h, f).
pub fn layer_size(layer: usize) -> (u32, u32) {
    (320 << layer, 180 << layer)
}

/// A VP8 payload: descriptor (S on a frame's first packet, 15-bit picture id), a keyframe header
/// of [`layer_size`] on a keyframe's first packet, then bytes naming the layer, frame and packet, so
/// every payload of a run is distinct.
pub fn vp8_payload(
    keyframe: bool,
    start: bool,
    picture_id: u16,
    layer: usize,
    frame: u64,
    k: usize,
) -> Bytes {
    let (width, height) = layer_size(layer);
    let mut p = vp8::payload_head(
        Descriptor::simulcast(start, picture_id, frame as u8),
        keyframe.then_some((width as u16, height as u16)),
    );
    p.extend_from_slice(format!("layer {layer} frame {frame} packet {k};").as_bytes());
    p.resize(p.len() + 120, 0xa5);
    Bytes::from(p)
}

/// The picture id in a payload written by [`vp8_payload`] (or rewritten by the driver).
pub fn picture_id(payload: &[u8]) -> u16 {
    vp8::picture_id(payload).expect("a VP8 payload with a picture id")
}

/// A client peer connection as a browser has it: full ICE agent (controlling against the lite
/// server), the server's codecs and extension ids, rtc's default interceptors (NACK generator
/// and responder, receiver and sender reports, TWCC feedback), fixed ICE credentials and a host
/// candidate at its own address.
pub(super) fn client_pc(now: Instant, addr: SocketAddr, i: usize) -> RTCPeerConnection {
    let mut me = sfu::peer::media_engine().expect("media engine");
    sfu::peer::register_header_extensions(&mut me).expect("header extensions");
    let registry = register_default_interceptors(Registry::new(), &mut me)
        .expect("interceptors")
        .with(Slot::from(14_000), KeyframeRequestTap::default());
    let se = SettingEngineBuilder::new()
        .with_ice_credentials(format!("client{i:04}"), format!("clientpassword{i:016}"))
        // As browsers advertise (`a=max-message-size:262144`): a stamped 64 KiB message fits.
        .with_sctp_max_message_size(SctpMaxMessageSize::Bounded(262_144))
        .build();
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(me)
        .with_setting_engine(se)
        .with_interceptor_registry(registry)
        .build(now)
        .expect("client peer connection");
    let candidate = sfu::peer::host_candidate_inits(&[addr], &[])
        .expect("host candidate")
        .remove(0);
    pc.add_local_candidate(candidate)
        .expect("add the host candidate");
    pc
}
