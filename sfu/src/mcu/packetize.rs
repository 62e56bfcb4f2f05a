//! Whole VP8 frames into RTP payloads (RFC 7741 §4): the payload descriptor, then the frame cut
//! into slices no payload larger than a limit.
//!
//! Owns the descriptor this server writes for the video it encodes itself (the composite): X=1
//! and I=1 with a 15-bit picture id, one per frame, starting at random and wrapping at 32768;
//! N=0; S=1 with partition index 0 on a frame's first packet only. No TL0PICIDX, no temporal
//! layers. Pure: no IO, no clock; the caller writes the RTP headers and sets the marker on a
//! frame's last payload.

use bytes::{BufMut, Bytes, BytesMut};

/// The default largest payload: room for the RTP header, its extensions and SRTP's tag within a
/// 1200-byte packet, what browsers assume fits any path.
pub const MAX_PAYLOAD: usize = 1100;

/// The descriptor written before every slice: the mandatory byte, the extension byte, and a
/// 15-bit picture id.
pub const DESCRIPTOR_LEN: usize = 4;

/// Picture ids are 15 bits.
const PICTURE_ID_MASK: u16 = 0x7fff;

/// One VP8 stream's packetizer: frames in, payloads out (see the module doc).
#[derive(Debug, Clone)]
pub struct Vp8Packetizer {
    /// The picture id of the next frame, 15 bits.
    picture_id: u16,
    max_payload: usize,
}

impl Default for Vp8Packetizer {
    fn default() -> Self {
        Self::new(MAX_PAYLOAD)
    }
}

impl Vp8Packetizer {
    /// A packetizer whose payloads are at most `max_payload` bytes (raised to
    /// `DESCRIPTOR_LEN + 1` if smaller, so every payload carries part of the frame).
    pub fn new(max_payload: usize) -> Self {
        Self {
            picture_id: rand::random::<u16>() & PICTURE_ID_MASK,
            max_payload: max_payload.max(DESCRIPTOR_LEN + 1),
        }
    }

    /// The picture id the next frame gets.
    pub fn next_picture_id(&self) -> u16 {
        self.picture_id
    }

    /// Appends `frame`'s payloads to `out`, in order; the last one is the frame's end (the RTP
    /// marker goes on it). The slices are balanced (their sizes differ by at most one byte), so
    /// a frame just over one payload does not leave a tiny last packet. An empty frame makes no
    /// payload and uses no picture id. One allocation per frame, shared by its payloads.
    pub fn packetize(&mut self, frame: &[u8], out: &mut Vec<Bytes>) {
        if frame.is_empty() {
            return;
        }
        let max_body = self.max_payload - DESCRIPTOR_LEN;
        let count = frame.len().div_ceil(max_body);
        let (base, extra) = (frame.len() / count, frame.len() % count);
        let id = self.picture_id;
        self.picture_id = id.wrapping_add(1) & PICTURE_ID_MASK;
        let mut buf = BytesMut::with_capacity(frame.len() + count * DESCRIPTOR_LEN);
        let mut rest = frame;
        for i in 0..count {
            let (body, tail) = rest.split_at(base + usize::from(i < extra));
            rest = tail;
            // X, then S on the first packet; N=0, PID=0.
            buf.put_u8(if i == 0 { 0x90 } else { 0x80 });
            buf.put_u8(0x80); // I: a picture id follows
            buf.put_u16(0x8000 | id); // M=1: 15 bits
            buf.put_slice(body);
            out.push(buf.split().freeze());
        }
    }
}

#[cfg(test)]
mod tests {
    use codecs::{Vp8Encoder, I420};

    use super::*;
    use crate::engine::codec::Codec;
    use crate::engine::vp8::Vp8Descriptor;
    use crate::mcu::depacketize::Depacketizer;

    fn packets(packetizer: &mut Vp8Packetizer, frame: &[u8]) -> Vec<Bytes> {
        let mut out = Vec::new();
        packetizer.packetize(frame, &mut out);
        out
    }

    fn start_bit(payload: &[u8]) -> bool {
        payload[0] & 0x10 != 0
    }

    fn bodies(payloads: &[Bytes]) -> Vec<u8> {
        payloads
            .iter()
            .flat_map(|p| p[DESCRIPTOR_LEN..].iter().copied())
            .collect()
    }

    /// A picture of noise (a fixed LCG), which VP8 cannot squeeze into one packet.
    fn noise(width: u32, height: u32) -> I420 {
        let mut picture = I420::new(width, height);
        let mut state = 0x2545_f491_u32;
        for sample in picture
            .y
            .iter_mut()
            .chain(&mut picture.u)
            .chain(&mut picture.v)
        {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            *sample = (state >> 24) as u8;
        }
        picture
    }

    #[test]
    fn a_small_frame_is_one_packet_with_the_start_bit() {
        let mut p = Vp8Packetizer::new(MAX_PAYLOAD);
        let id = p.next_picture_id();
        let frame: Vec<u8> = (0..100).collect();
        let out = packets(&mut p, &frame);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].len(), DESCRIPTOR_LEN + 100);
        assert_eq!(out[0][0], 0x90, "X and S, N=0, PID=0");
        assert_eq!(out[0][1], 0x80, "I");
        assert_eq!(&out[0][DESCRIPTOR_LEN..], &frame[..]);
        assert_eq!(
            Vp8Descriptor::parse(&out[0]).unwrap().picture_id,
            Some((id, 15))
        );
    }

    #[test]
    fn a_large_frame_is_split_into_balanced_packets_with_s_only_on_the_first() {
        let mut p = Vp8Packetizer::new(MAX_PAYLOAD);
        let frame: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let out = packets(&mut p, &frame);
        assert_eq!(out.len(), 5, "5000 bytes in payloads of at most 1096");
        assert!(out.iter().all(|x| x.len() <= MAX_PAYLOAD));
        assert!(start_bit(&out[0]));
        assert!(out[1..].iter().all(|x| !start_bit(x)));
        assert!(
            out.iter().all(|x| x[0] & 0x6f == 0 && x[0] & 0x80 != 0),
            "X; R, N, PID 0"
        );
        let sizes: Vec<usize> = out.iter().map(|x| x.len()).collect();
        assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
        assert_eq!(bodies(&out), frame);
        // At the limit exactly: one packet; one byte more: two.
        let body = MAX_PAYLOAD - DESCRIPTOR_LEN;
        assert_eq!(packets(&mut p, &frame[..body]).len(), 1);
        assert_eq!(packets(&mut p, &frame[..body + 1]).len(), 2);
        // An absurdly small limit still carries the frame, one byte a packet.
        let mut tiny = Vp8Packetizer::new(0);
        let out = packets(&mut tiny, &frame[..10]);
        assert_eq!(out.len(), 10);
        assert_eq!(bodies(&out), &frame[..10]);
    }

    #[test]
    fn an_empty_frame_makes_nothing_and_keeps_its_picture_id() {
        let mut p = Vp8Packetizer::new(MAX_PAYLOAD);
        let id = p.next_picture_id();
        assert!(packets(&mut p, &[]).is_empty());
        assert_eq!(p.next_picture_id(), id);
    }

    #[test]
    fn picture_ids_parse_back_increment_per_frame_and_wrap() {
        let mut p = Vp8Packetizer::new(200);
        p.picture_id = PICTURE_ID_MASK - 1;
        let frame = vec![0x51u8; 500];
        let ids: Vec<Vec<u16>> = (0..3)
            .map(|_| {
                packets(&mut p, &frame)
                    .iter()
                    .map(|x| {
                        let d = Vp8Descriptor::parse(x).unwrap();
                        assert_eq!(d.header_len, DESCRIPTOR_LEN);
                        let (id, bits) = d.picture_id.unwrap();
                        assert_eq!(bits, 15);
                        id
                    })
                    .collect()
            })
            .collect();
        assert_eq!(ids, [vec![32766; 3], vec![32767; 3], vec![0; 3]]);
        assert!(Vp8Packetizer::new(MAX_PAYLOAD).next_picture_id() <= PICTURE_ID_MASK);
    }

    #[test]
    fn real_frames_round_trip_through_the_depacketizer() {
        let (width, height) = (320, 240);
        let mut encoder = Vp8Encoder::new(width, height, 2000, 30).unwrap();
        let mut p = Vp8Packetizer::new(MAX_PAYLOAD);
        let mut d = Depacketizer::new(Codec::Vp8);
        let (mut seq, mut out) = (65_530u16, Vec::new());
        let picture = noise(width, height);
        let mut sent = Vec::new();
        for n in 0..3u32 {
            let frames = encoder
                .encode(&picture, i64::from(n) * 3000, false)
                .unwrap();
            for frame in frames {
                let payloads = packets(&mut p, &frame.data);
                if n == 0 {
                    assert!(frame.keyframe);
                    assert!(payloads.len() > 1, "a noise keyframe spans packets");
                }
                let last = payloads.len() - 1;
                for (i, payload) in payloads.into_iter().enumerate() {
                    d.push(seq, n * 3000, i == last, payload, &mut out);
                    seq = seq.wrapping_add(1);
                }
                sent.push(frame);
            }
        }
        assert_eq!(out.len(), sent.len());
        for (got, want) in out.iter().zip(&sent) {
            assert_eq!(got.data, want.data);
            assert_eq!(got.keyframe, want.keyframe);
        }
        assert!(out[0].keyframe && !out[1].keyframe);
        assert_eq!(out[0].size, Some((width, height)));
        assert_eq!(out[1].size, None);
        assert_eq!(d.lost, 0);
        assert!(!d.wants_keyframe());
    }
}
