//! The forward step, the hot path: a publisher's packet is ingested once on its track (sequence
//! unwrapping, keyframe, size, audio level) and each subscriber's forwarder decides (start at a
//! keyframe, rewrite sequence number, timestamp and picture id) and writes it to that
//! subscriber's connection. RTCP from a subscriber (PLI, FIR, REMB, NACK counts) comes back here.

use std::time::Instant;

use bytes::BytesMut;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp;
use rtc::rtp_transceiver::RTCRtpSenderId;

use super::mesh::MeshPacket;
use super::select::report_layer;
use super::tracks::Origin;
use super::{guarded, Driver};
use crate::api::{MediaKind, ParticipantKey};
use crate::engine::codec::Codec;
use crate::engine::layers::{Quality, Reason, Wants};
use crate::engine::rewriter::{DropReason, PacketIn, RtpRewriter, Verdict};
use crate::engine::seq::SeqUnwrapper;
use crate::engine::speaker;
use crate::engine::vp8::{self, Vp8Descriptor};

pub(super) struct Forwarder {
    pub(super) subscriber: ParticipantKey,
    pub(super) sender_id: RTCRtpSenderId,
    pub(super) ssrc: u32,
    /// The subscriber leg's payload type, once negotiated.
    pub(super) payload_type: u8,
    pub(super) active: bool,
    /// When it was made, in milliseconds after its track's `published_at` (4 bytes, which
    /// keep the struct at two cache lines): a subscriber still connecting keeps the top layer
    /// on for [`DYNACAST_CONNECTING`](crate::engine::simulcast::DYNACAST_CONNECTING) from then.
    pub(super) created_ms: u32,
    pub(super) rewriter: RtpRewriter,
    pub(super) wants: Wants,
    /// The layer the allocator would forward if the publisher sent everything (dynacast).
    pub(super) ideal: Option<u8>,
    pub(super) reason: Reason,
    /// The last (current, target, reason) reported to the subscriber, as quality names: a
    /// layer's name can change as more layers start (with only `q` seen, it is the top one).
    pub(super) reported: Option<(Option<Quality>, Option<Quality>, Reason)>,
}

impl Driver {
    pub(super) fn on_peer_message(&mut self, key: ParticipantKey, msg: TaggedRTCMessage) {
        match msg.message {
            RTCMessage::RtpPacket(track_id, packet) => self.on_rtp(key, &track_id, packet, msg.now),
            RTCMessage::DataChannelMessage(channel, m) => {
                self.on_data_message(key, channel, m, msg.now)
            }
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
                        if let Some(peer) = self.conns.peers.get_mut(&key) {
                            peer.remb = Some((msg.now, f64::from(remb.bitrate)));
                        }
                        continue;
                    } else {
                        continue;
                    };
                    let tkey = self
                        .conns
                        .peers
                        .get(&key)
                        .and_then(|p| p.track_by_ssrc.get(&media_ssrc));
                    let Some(&tkey) = tkey else {
                        continue;
                    };
                    // The subscriber lost its picture: a keyframe of the layer it receives (or
                    // is about to).
                    let layer = self.tracks.all.get(&tkey).and_then(|t| {
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
    pub(super) fn on_rtp(
        &mut self,
        key: ParticipantKey,
        track_id: &str,
        packet: rtp::Packet,
        now: Instant,
    ) {
        let Some(&tkey) = self
            .conns
            .peers
            .get(&key)
            .and_then(|p| p.published.get(track_id))
        else {
            return;
        };
        let Some(track) = self.tracks.all.get(&tkey) else {
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
    pub(super) fn on_mesh_packet(&mut self, p: MeshPacket) {
        self.stats.mesh_packets_in += 1;
        let known = self.tracks.all.get(&p.track).is_some_and(|t| {
            matches!(t.origin, Origin::Remote(_) | Origin::Mcu)
                && usize::from(p.layer) < t.layers.len()
        });
        if known {
            self.route(p);
        }
    }

    /// Ingests one packet on its track (layer state, keyframes, size, audio level) and hands it
    /// to every forwarder of the track on this driver.
    pub(super) fn route(&mut self, p: MeshPacket) {
        let (tkey, now) = (p.track, p.at);
        let Some(track) = self.tracks.all.get_mut(&tkey) else {
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
        let ingested = ingest(track.codec, &mut layer.unwrapper, &p);
        layer.last_packet = Some(now);
        layer.bytes += p.payload.len() as u64 + 12;
        if let Some((w, h)) = ingested.keyframe_size {
            (layer.width, layer.height) = (w, h);
        }
        // Layers whose keyframe some forwarder waits for (bit per layer id).
        let mut wanted_keyframes = 0u32;
        for fwd in track.forwarders.iter_mut().filter(|f| f.active) {
            let (out, switched) =
                match forward_step(&mut fwd.rewriter, &ingested, &p, fwd.ssrc, fwd.payload_type) {
                    Step::Forward { packet, switched } => (packet, switched),
                    Step::Drop { wants_keyframe } => {
                        if let Some(t) = wants_keyframe {
                            wanted_keyframes |= 1 << t;
                        }
                        continue;
                    }
                };
            if switched && track.kind == MediaKind::Video {
                if fwd.reported.is_some_and(|(cur, _, _)| cur.is_some()) {
                    self.stats.layer_switches += 1;
                }
                report_layer(
                    &self.conns.peers,
                    &mut self.events,
                    &track.id,
                    &track.layers,
                    &track.order,
                    fwd,
                );
            }
            let Some(sub) = self.conns.peers.get_mut(&fwd.subscriber) else {
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
                    self.conns
                        .removals
                        .push((fwd.subscriber, "panic in write_rtp".into()));
                }
            }
            if !sub.queued {
                sub.queued = true;
                self.conns.queue.push(fwd.subscriber);
            }
        }
        if !track.taps.is_empty() {
            wanted_keyframes |= self.tap_packet(tkey, &ingested, &p);
        }
        for l in 0..32u8 {
            if wanted_keyframes & (1 << l) != 0 {
                self.request_keyframe(tkey, l, now);
            }
        }
    }
}

/// What every forwarder of a track sees of one packet: parsed once, shared by all of them.
#[derive(Debug, Clone, Copy)]
pub struct Ingested {
    pub input: PacketIn,
    pub descriptor: Option<Vp8Descriptor>,
    /// A VP8 keyframe's picture size.
    pub keyframe_size: Option<(u32, u32)>,
}

/// The once-per-packet step before the forwarders: the sequence number unwrapped on its layer,
/// whether a keyframe starts here (and its size), the VP8 descriptor.
pub fn ingest(codec: Codec, unwrapper: &mut SeqUnwrapper, p: &MeshPacket) -> Ingested {
    let ext_seq = unwrapper.unwrap(p.seq);
    let keyframe = codec.is_keyframe_start(&p.payload);
    let (descriptor, keyframe_size) = if codec == Codec::Vp8 {
        let size = if keyframe {
            vp8::keyframe_size(&p.payload)
        } else {
            None
        };
        (Vp8Descriptor::parse(&p.payload), size)
    } else {
        (None, None)
    };
    Ingested {
        input: PacketIn {
            layer: p.layer,
            ext_seq,
            timestamp: p.timestamp,
            keyframe,
            at: p.at,
            picture_id: descriptor.and_then(|d| d.picture_id),
            tl0_pic_idx: descriptor.and_then(|d| d.tl0_pic_idx),
        },
        descriptor,
        keyframe_size,
    }
}

/// What one forwarder does with one packet.
#[derive(Debug)]
pub enum Step {
    /// Write this packet to the subscriber; `switched`: the first of a new layer.
    Forward { packet: rtp::Packet, switched: bool },
    /// Not for this subscriber; `wants_keyframe`: the layer whose keyframe it waits for.
    Drop { wants_keyframe: Option<u8> },
}

/// The forward step, per packet per subscriber: the rewriter decides, and the packet is made
/// with the subscriber's SSRC, payload type, sequence number and timestamp and no header
/// extensions. The payload is shared unless this subscriber's VP8 picture ids need rewriting.
/// The driver and the micro-benchmark (`sfu/benches/hotpath/`) both call this.
pub fn forward_step(
    rewriter: &mut RtpRewriter,
    ingested: &Ingested,
    p: &MeshPacket,
    ssrc: u32,
    payload_type: u8,
) -> Step {
    let rw = match rewriter.process(&ingested.input) {
        Verdict::Forward(rw) => rw,
        Verdict::Drop(reason) => {
            let waiting =
                reason == DropReason::WaitingForKeyframe || rewriter.waiting_for_keyframe();
            return Step::Drop {
                wants_keyframe: rewriter.target().filter(|_| waiting),
            };
        }
    };
    let payload = match (rw.vp8, ingested.descriptor) {
        (Some((pid, tl0)), Some(d)) => {
            let mut copy = BytesMut::from(&p.payload[..]);
            d.write(&mut copy, pid, tl0);
            copy.freeze()
        }
        _ => p.payload.clone(),
    };
    Step::Forward {
        packet: rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                padding: p.padding,
                marker: p.marker,
                payload_type,
                sequence_number: rw.seq,
                timestamp: rw.timestamp,
                ssrc,
                ..Default::default()
            },
            payload,
        },
        switched: rw.switched,
    }
}
