//! Synthetic media: RTP payloads shaped like an encoder's output, without an encoder.
//!
//! Video is VP8 with a full payload descriptor (15-bit picture id, TL0PICIDX), so the server's
//! keyframe detection, layer switching and picture-id rewriting run on it exactly as on a
//! browser's stream; a keyframe's first packet carries the VP8 start code and the layer's size.
//! Audio is Opus-sized. Every payload ends with a [`Stamp`]: when it was sent and which packet it
//! is, so a receiver measures one-way latency on loopback (one process, one clock).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Marks the stamp at the end of every payload.
const MAGIC: [u8; 4] = *b"FOLT";
/// magic, send time (µs since [`epoch`]), packet counter, layer.
pub const STAMP_LEN: usize = 4 + 8 + 4 + 1;
/// Payload bytes per video packet at most (an MTU-sized datagram after headers and SRTP).
pub const MAX_VIDEO_PAYLOAD: usize = 1100;
/// Opus at about 32 kbit/s in 20 ms frames.
pub const AUDIO_PAYLOAD: usize = 80;
pub const AUDIO_INTERVAL: Duration = Duration::from_millis(20);
pub const VIDEO_FPS: u32 = 30;
/// A keyframe every this many frames (3 s), and whenever a PLI asks.
pub const KEYFRAME_EVERY: u32 = 90;
/// A keyframe is this many times the size of a delta frame.
const KEYFRAME_FACTOR: usize = 3;

/// One simulcast layer as a browser publishes it.
#[derive(Debug, Clone, Copy)]
pub struct LayerSpec {
    pub rid: &'static str,
    pub width: u16,
    pub height: u16,
    pub bitrate: u32,
}

/// The three layers of the issue: about 150 kbit/s, 500 kbit/s and 1.5 Mbit/s at 30 fps, with
/// the rids and sizes the demo client publishes (q, h, f of 1280x720).
pub const LAYERS: [LayerSpec; 3] = [
    LayerSpec {
        rid: "q",
        width: 320,
        height: 180,
        bitrate: 150_000,
    },
    LayerSpec {
        rid: "h",
        width: 640,
        height: 360,
        bitrate: 500_000,
    },
    LayerSpec {
        rid: "f",
        width: 1280,
        height: 720,
        bitrate: 1_500_000,
    },
];

/// The instant all send times count from.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Microseconds since [`epoch`].
pub fn micros_since_epoch(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch()).as_micros()).unwrap_or(u64::MAX)
}

/// What a payload says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub sent_us: u64,
    pub counter: u32,
    pub layer: u8,
}

fn put_stamp(buf: &mut Vec<u8>, stamp: Stamp) {
    buf.extend_from_slice(&MAGIC);
    buf.extend_from_slice(&stamp.sent_us.to_be_bytes());
    buf.extend_from_slice(&stamp.counter.to_be_bytes());
    buf.push(stamp.layer);
}

/// The stamp at the end of a payload, if it has one.
pub fn read_stamp(payload: &[u8]) -> Option<Stamp> {
    let tail = payload.get(payload.len().checked_sub(STAMP_LEN)?..)?;
    if tail[..4] != MAGIC {
        return None;
    }
    Some(Stamp {
        sent_us: u64::from_be_bytes(tail[4..12].try_into().ok()?),
        counter: u32::from_be_bytes(tail[12..16].try_into().ok()?),
        layer: tail[16],
    })
}

/// An Opus-sized audio payload.
pub fn audio_payload(stamp: Stamp) -> Vec<u8> {
    let mut p = Vec::with_capacity(AUDIO_PAYLOAD);
    p.resize(AUDIO_PAYLOAD - STAMP_LEN, 0xfc);
    put_stamp(&mut p, stamp);
    p
}

/// The state of one simulcast layer's VP8 stream.
#[derive(Debug, Clone)]
pub struct Vp8Layer {
    pub spec: LayerSpec,
    pub index: u8,
    pub ssrc: u32,
    pub seq: u16,
    pub timestamp: u32,
    picture_id: u16,
    tl0: u8,
    frames: u32,
    counter: u32,
    keyframe_wanted: bool,
}

impl Vp8Layer {
    pub fn new(index: u8, spec: LayerSpec, ssrc: u32) -> Self {
        Self {
            spec,
            index,
            ssrc,
            seq: rand::random(),
            timestamp: rand::random(),
            picture_id: rand::random::<u16>() & 0x7fff,
            tl0: rand::random(),
            frames: 0,
            counter: 0,
            keyframe_wanted: false,
        }
    }

    /// A PLI or FIR asked for a keyframe: the next frame is one.
    pub fn request_keyframe(&mut self) {
        self.keyframe_wanted = true;
    }

    /// The payloads of the next frame (the first one begins the frame) and whether it is a
    /// keyframe. The caller sends them with consecutive sequence numbers from `seq`, this
    /// frame's `timestamp`, and the marker bit on the last one, then calls [`Self::advance`].
    pub fn next_frame(&mut self, now: Instant) -> (Vec<Vec<u8>>, bool) {
        let keyframe = self.frames.is_multiple_of(KEYFRAME_EVERY) || self.keyframe_wanted;
        self.keyframe_wanted = false;
        let mut bytes = (self.spec.bitrate / 8 / VIDEO_FPS) as usize;
        if keyframe {
            bytes *= KEYFRAME_FACTOR;
        }
        let packets = bytes.div_ceil(MAX_VIDEO_PAYLOAD).max(1);
        let per_packet = (bytes / packets).clamp(STAMP_LEN + 16, MAX_VIDEO_PAYLOAD);
        let sent_us = micros_since_epoch(now);
        let mut out = Vec::with_capacity(packets);
        for part in 0..packets {
            let mut p = Vec::with_capacity(per_packet);
            // Payload descriptor: X, S on a frame's first packet, partition 0; I, L, T present;
            // M (15-bit picture id); TL0PICIDX; TID 0, Y 1.
            p.push(0x80 | if part == 0 { 0x10 } else { 0x00 });
            p.push(0xe0);
            p.push(0x80 | ((self.picture_id >> 8) as u8 & 0x7f));
            p.push(self.picture_id as u8);
            p.push(self.tl0);
            p.push(0x20);
            if part == 0 {
                if keyframe {
                    // Frame tag of a shown keyframe (P = 0), start code, width and height.
                    p.extend_from_slice(&[0x30, 0x02, 0x00, 0x9d, 0x01, 0x2a]);
                    p.extend_from_slice(&self.spec.width.to_le_bytes());
                    p.extend_from_slice(&self.spec.height.to_le_bytes());
                } else {
                    // Frame tag of a shown interframe (P = 1).
                    p.extend_from_slice(&[0x31, 0x00, 0x00]);
                }
            }
            p.resize(per_packet - STAMP_LEN, 0x5a);
            put_stamp(
                &mut p,
                Stamp {
                    sent_us,
                    counter: self.counter,
                    layer: self.index,
                },
            );
            self.counter = self.counter.wrapping_add(1);
            out.push(p);
        }
        (out, keyframe)
    }

    /// Moves to the next frame: 90 kHz clock at [`VIDEO_FPS`], next picture id and TL0PICIDX.
    pub fn advance(&mut self) {
        self.frames += 1;
        self.timestamp = self.timestamp.wrapping_add(90_000 / VIDEO_FPS);
        self.picture_id = (self.picture_id + 1) & 0x7fff;
        self.tl0 = self.tl0.wrapping_add(1);
    }
}

/// Loss on one received RTP stream, from its sequence numbers.
#[derive(Debug, Default, Clone, Copy)]
pub struct SeqTracker {
    highest: Option<u64>,
}

impl SeqTracker {
    /// How many packets the stream should have delivered up to this one that it had not yet
    /// counted (1 for the next in order, more after a gap, 0 for a late or repeated packet).
    pub fn expected_increment(&mut self, seq: u16) -> u64 {
        match self.highest {
            None => {
                self.highest = Some(u64::from(seq) + (1 << 16));
                1
            }
            Some(h) => {
                // Unwrap against the highest: the candidate within half the space of it.
                let base = h & !0xffff;
                let mut ext = base | u64::from(seq);
                if ext + 0x8000 < h {
                    ext += 1 << 16;
                } else if ext > h + 0x8000 {
                    ext -= 1 << 16;
                }
                if ext > h {
                    self.highest = Some(ext);
                    ext - h
                } else {
                    0
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_survive_the_round_trip_in_every_payload() {
        let now = Instant::now();
        let a = audio_payload(Stamp {
            sent_us: 7,
            counter: 9,
            layer: 0,
        });
        assert_eq!(a.len(), AUDIO_PAYLOAD);
        assert_eq!(
            read_stamp(&a),
            Some(Stamp {
                sent_us: 7,
                counter: 9,
                layer: 0
            })
        );
        let mut layer = Vp8Layer::new(2, LAYERS[2], 1234);
        let (frame, keyframe) = layer.next_frame(now);
        assert!(keyframe, "the first frame is a keyframe");
        let bytes: usize = frame.iter().map(Vec::len).sum();
        assert!(bytes >= 3 * 6250 - 100, "keyframe size {bytes}");
        for (i, p) in frame.iter().enumerate() {
            assert!(p.len() <= MAX_VIDEO_PAYLOAD);
            assert_eq!(p[0] & 0x10 != 0, i == 0, "S bit only on the first packet");
            let s = read_stamp(p).expect("stamp");
            assert_eq!((s.counter, s.layer), (i as u32, 2));
        }
        assert_eq!(&frame[0][6..12], &[0x30, 0x02, 0x00, 0x9d, 0x01, 0x2a]);
        layer.advance();
        let (frame, keyframe) = layer.next_frame(now);
        assert!(!keyframe);
        assert_eq!(frame[0][6] & 0x01, 1, "interframe tag");
        layer.request_keyframe();
        layer.advance();
        assert!(layer.next_frame(now).1, "a requested keyframe comes next");
    }

    #[test]
    fn loss_counts_gaps_across_the_wrap_and_ignores_late_packets() {
        let mut t = SeqTracker::default();
        assert_eq!(t.expected_increment(65534), 1);
        assert_eq!(t.expected_increment(65535), 1);
        assert_eq!(t.expected_increment(2), 3, "0 and 1 lost across the wrap");
        assert_eq!(t.expected_increment(1), 0, "late packet");
        assert_eq!(t.expected_increment(3), 1);
    }
}
