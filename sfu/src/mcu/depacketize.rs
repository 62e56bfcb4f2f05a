//! RTP packets of one stream back into whole frames: a small reorder buffer, then VP8 frame
//! assembly (RFC 7741) or one Opus frame per packet (RFC 7587).
//!
//! Pure: fed packets in arrival order, it returns the frames they complete, in order. A lost
//! packet (one still missing after [`REORDER_WINDOW`] later packets) breaks the frame it belongs
//! to; VP8 then waits for the next keyframe ([`Depacketizer::wants_keyframe`] says so, and the
//! owner asks the publisher for one), since a decoder or a player cannot use what follows a hole.

use std::collections::BTreeMap;

use crate::engine::codec::Codec;
use crate::engine::seq::SeqUnwrapper;
use crate::engine::vp8::{self, Vp8Descriptor};

/// How many later packets may arrive before a missing one counts as lost.
pub const REORDER_WINDOW: usize = 32;

/// The largest frame assembled; a longer run of packets without a marker is dropped.
const MAX_FRAME: usize = 4 << 20;

/// One whole frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub data: Vec<u8>,
    /// The RTP timestamp, unwrapped (see [`TsUnwrapper`]).
    pub timestamp: u64,
    pub keyframe: bool,
    /// A VP8 keyframe's picture size.
    pub size: Option<(u32, u32)>,
}

/// 32-bit RTP timestamps into 64-bit ones (nearest to the highest seen), as
/// [`SeqUnwrapper`] does for sequence numbers.
#[derive(Debug, Default, Clone)]
pub struct TsUnwrapper {
    highest: Option<u64>,
}

impl TsUnwrapper {
    pub fn unwrap(&mut self, ts: u32) -> u64 {
        let Some(highest) = self.highest else {
            let ext = (1u64 << 32) + u64::from(ts);
            self.highest = Some(ext);
            return ext;
        };
        let delta = ts.wrapping_sub(highest as u32) as i32;
        let ext = highest.wrapping_add_signed(i64::from(delta));
        self.highest = Some(highest.max(ext));
        ext
    }
}

struct Pending {
    timestamp: u32,
    marker: bool,
    payload: bytes::Bytes,
}

/// A stream's packets into frames (see the module doc).
pub struct Depacketizer {
    codec: Codec,
    seq: SeqUnwrapper,
    ts: TsUnwrapper,
    /// Packets not yet handed on, by extended sequence number.
    pending: BTreeMap<u64, Pending>,
    /// The next sequence number to hand on; `None` before the first packet.
    next: Option<u64>,
    /// The VP8 frame being put together: its timestamp, and whether it is still whole.
    frame: Vec<u8>,
    frame_ts: Option<u32>,
    frame_whole: bool,
    need_keyframe: bool,
    /// Packets counted lost, for the recording's summary.
    pub lost: u64,
}

impl Depacketizer {
    pub fn new(codec: Codec) -> Self {
        Self {
            codec,
            seq: SeqUnwrapper::new(),
            ts: TsUnwrapper::default(),
            pending: BTreeMap::new(),
            next: None,
            frame: Vec::new(),
            frame_ts: None,
            frame_whole: false,
            need_keyframe: codec.is_video(),
            lost: 0,
        }
    }

    /// Whether a video stream waits for a keyframe (at the start, or after a loss).
    pub fn wants_keyframe(&self) -> bool {
        self.need_keyframe
    }

    /// One packet in; the frames it completes are appended to `out`.
    pub fn push(
        &mut self,
        seq: u16,
        timestamp: u32,
        marker: bool,
        payload: bytes::Bytes,
        out: &mut Vec<Frame>,
    ) {
        let ext = self.seq.unwrap(seq);
        let next = *self.next.get_or_insert(ext);
        if ext < next {
            return; // late (already given up on) or a duplicate
        }
        self.pending.insert(
            ext,
            Pending {
                timestamp,
                marker,
                payload,
            },
        );
        self.drain(out);
        if self.pending.len() > REORDER_WINDOW {
            // The packet at `next` is lost: skip to the oldest one present.
            if let Some((&first, _)) = self.pending.first_key_value() {
                self.lost += first - self.next.unwrap_or(first);
                self.next = Some(first);
                self.on_loss();
                self.drain(out);
            }
        }
    }

    fn drain(&mut self, out: &mut Vec<Frame>) {
        while let Some(next) = self.next {
            let Some(p) = self.pending.remove(&next) else {
                break;
            };
            self.next = Some(next + 1);
            self.in_order(p, out);
        }
    }

    fn on_loss(&mut self) {
        self.frame_whole = false;
        if self.codec.is_video() {
            self.need_keyframe = true;
        }
    }

    fn in_order(&mut self, p: Pending, out: &mut Vec<Frame>) {
        match self.codec {
            Codec::Opus => {
                if !p.payload.is_empty() {
                    out.push(Frame {
                        data: p.payload.to_vec(),
                        timestamp: self.ts.unwrap(p.timestamp),
                        keyframe: true,
                        size: None,
                    });
                }
            }
            Codec::Vp8 => self.vp8(p, out),
            Codec::H264 => {} // not assembled here (see the module doc)
        }
    }

    fn vp8(&mut self, p: Pending, out: &mut Vec<Frame>) {
        let Some(d) = Vp8Descriptor::parse(&p.payload) else {
            self.on_loss();
            return;
        };
        let Some(body) = p.payload.get(d.header_len..) else {
            return;
        };
        let b0 = p.payload[0];
        let starts = b0 & 0x10 != 0 && b0 & 0x07 == 0;
        if starts {
            // A new frame; one still open (no marker seen) was cut short.
            self.frame.clear();
            self.frame_ts = Some(p.timestamp);
            self.frame_whole = true;
        } else if self.frame_ts != Some(p.timestamp) {
            self.frame_whole = false;
        }
        if self.frame_whole {
            if self.frame.len() + body.len() > MAX_FRAME {
                self.frame_whole = false;
            } else {
                self.frame.extend_from_slice(body);
            }
        }
        if !p.marker {
            return;
        }
        if self.frame_whole {
            let keyframe = self.frame.first().is_some_and(|b| b & 0x01 == 0);
            if keyframe || !self.need_keyframe {
                self.need_keyframe = false;
                let size = if keyframe {
                    vp8::keyframe_size(&p.payload).or_else(|| frame_size(&self.frame))
                } else {
                    None
                };
                out.push(Frame {
                    data: std::mem::take(&mut self.frame),
                    timestamp: self.ts.unwrap(p.timestamp),
                    keyframe,
                    size,
                });
            }
        } else if self.codec.is_video() {
            self.need_keyframe = true;
        }
        self.frame.clear();
        self.frame_ts = None;
        self.frame_whole = false;
    }
}

/// The picture size of a whole VP8 keyframe (RFC 6386 §9.1).
fn frame_size(frame: &[u8]) -> Option<(u32, u32)> {
    let h = frame.get(..10)?;
    if h[0] & 0x01 != 0 || h[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u32::from(u16::from_le_bytes([h[6], h[7]]) & 0x3fff);
    let height = u32::from(u16::from_le_bytes([h[8], h[9]]) & 0x3fff);
    Some((width, height))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    /// A VP8 packet: descriptor (S bit on the first), then `body`.
    fn vp8(start: bool, body: &[u8]) -> Bytes {
        let mut p = vec![if start { 0x10 } else { 0x00 }];
        p.extend_from_slice(body);
        Bytes::from(p)
    }

    /// A keyframe's first bytes (640x360), then `n` bytes of `fill`.
    fn key_body(fill: u8, n: usize) -> Vec<u8> {
        let mut b = vec![0x50, 0x2a, 0x00, 0x9d, 0x01, 0x2a];
        b.extend_from_slice(&640u16.to_le_bytes());
        b.extend_from_slice(&360u16.to_le_bytes());
        b.extend(std::iter::repeat_n(fill, n));
        b
    }

    fn inter_body(fill: u8) -> Vec<u8> {
        vec![0x51, fill, fill]
    }

    #[test]
    fn assembles_a_keyframe_from_three_packets_and_reports_its_size() {
        let mut d = Depacketizer::new(Codec::Vp8);
        let mut out = Vec::new();
        let body = key_body(7, 30);
        d.push(10, 900, false, vp8(true, &body[..12]), &mut out);
        d.push(11, 900, false, vp8(false, &body[12..20]), &mut out);
        assert!(out.is_empty());
        d.push(12, 900, true, vp8(false, &body[20..]), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data, body);
        assert!(out[0].keyframe);
        assert_eq!(out[0].size, Some((640, 360)));
        assert!(!d.wants_keyframe());
    }

    #[test]
    fn reordered_packets_are_put_back_in_order() {
        let mut d = Depacketizer::new(Codec::Vp8);
        let mut out = Vec::new();
        let body = key_body(1, 20);
        d.push(100, 0, false, vp8(true, &body[..15]), &mut out);
        d.push(102, 0, true, vp8(false, &body[25..]), &mut out);
        d.push(101, 0, false, vp8(false, &body[15..25]), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data, body);
    }

    #[test]
    fn interframes_before_the_first_keyframe_are_dropped() {
        let mut d = Depacketizer::new(Codec::Vp8);
        let mut out = Vec::new();
        d.push(1, 0, true, vp8(true, &inter_body(1)), &mut out);
        assert!(out.is_empty());
        assert!(d.wants_keyframe());
        d.push(2, 3000, true, vp8(true, &key_body(2, 4)), &mut out);
        d.push(3, 6000, true, vp8(true, &inter_body(3)), &mut out);
        assert_eq!(out.len(), 2);
        assert!(out[0].keyframe && !out[1].keyframe);
        assert_eq!(out[1].timestamp - out[0].timestamp, 3000);
    }

    #[test]
    fn a_lost_packet_drops_its_frame_and_waits_for_a_keyframe() {
        let mut d = Depacketizer::new(Codec::Vp8);
        let mut out = Vec::new();
        d.push(1, 0, true, vp8(true, &key_body(0, 4)), &mut out);
        // Frame at 3000 loses its second packet (seq 3).
        d.push(2, 3000, false, vp8(true, &inter_body(1)), &mut out);
        let mut seq = 4u16;
        let mut ts = 3000u32;
        d.push(seq, ts, true, vp8(false, &[9, 9]), &mut out);
        // Interframes keep coming: after the reorder window they are not usable.
        for _ in 0..REORDER_WINDOW + 2 {
            seq += 1;
            ts += 3000;
            d.push(seq, ts, true, vp8(true, &inter_body(2)), &mut out);
        }
        assert_eq!(out.len(), 1, "only the first keyframe");
        assert!(d.wants_keyframe());
        assert_eq!(d.lost, 1);
        seq += 1;
        ts += 3000;
        d.push(seq, ts, true, vp8(true, &key_body(5, 4)), &mut out);
        assert_eq!(out.len(), 2);
        assert!(out[1].keyframe);
        assert!(!d.wants_keyframe());
    }

    #[test]
    fn a_frame_without_its_marker_is_dropped_when_the_next_starts() {
        let mut d = Depacketizer::new(Codec::Vp8);
        let mut out = Vec::new();
        d.push(1, 0, true, vp8(true, &key_body(0, 4)), &mut out);
        d.push(2, 3000, false, vp8(true, &inter_body(1)), &mut out);
        // Marker lost in the sender (not a sequence gap): the next frame starts.
        d.push(3, 6000, true, vp8(true, &inter_body(2)), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].timestamp - out[0].timestamp, 6000);
    }

    #[test]
    fn opus_packets_are_frames_and_duplicates_are_dropped() {
        let mut d = Depacketizer::new(Codec::Opus);
        let mut out = Vec::new();
        d.push(
            65535,
            u32::MAX - 959,
            false,
            Bytes::from_static(&[1]),
            &mut out,
        );
        d.push(0, 0, false, Bytes::from_static(&[2]), &mut out);
        d.push(0, 0, false, Bytes::from_static(&[2]), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].timestamp - out[0].timestamp, 960, "across the wrap");
        assert!(!d.wants_keyframe());
    }

    #[test]
    fn timestamps_unwrap_backwards_and_forwards() {
        let mut u = TsUnwrapper::default();
        let a = u.unwrap(10);
        assert_eq!(u.unwrap(5), a - 5);
        assert_eq!(u.unwrap(20), a + 10);
    }
}
