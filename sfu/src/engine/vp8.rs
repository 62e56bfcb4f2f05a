//! The VP8 payload descriptor (RFC 7741 §4.2): read it, and rewrite its picture id and TL0PICIDX.
//!
//! When a subscriber's stream switches from one simulcast layer to another, the picture ids it
//! sees must continue (a decoder reads a jump as lost pictures, and some wait for them), so the
//! forwarder shifts them by an offset fixed at the switch. The rewrite keeps the descriptor's
//! layout: a 7-bit picture id stays 7 bits and wraps at 128, a 15-bit one wraps at 32768.

/// Where the rewritable fields of one packet's descriptor are, and their values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vp8Descriptor {
    /// The picture id and its width in bits (7 or 15), if present.
    pub picture_id: Option<(u16, u8)>,
    /// Byte offset of the picture id's first byte.
    picture_id_at: usize,
    pub tl0_pic_idx: Option<u8>,
    tl0_at: usize,
    /// The VP8 payload starts here (after the descriptor).
    pub header_len: usize,
}

impl Vp8Descriptor {
    /// Parses the descriptor; `None` if the payload is too short for what its flags announce.
    pub fn parse(payload: &[u8]) -> Option<Vp8Descriptor> {
        let b0 = *payload.first()?;
        let mut d = Vp8Descriptor::default();
        let mut i = 1;
        if b0 & 0x80 != 0 {
            let x = *payload.get(i)?;
            i += 1;
            if x & 0x80 != 0 {
                let p = *payload.get(i)?;
                d.picture_id_at = i;
                if p & 0x80 != 0 {
                    let lo = *payload.get(i + 1)?;
                    d.picture_id = Some(((u16::from(p & 0x7f) << 8) | u16::from(lo), 15));
                    i += 2;
                } else {
                    d.picture_id = Some((u16::from(p), 7));
                    i += 1;
                }
            }
            if x & 0x40 != 0 {
                d.tl0_pic_idx = Some(*payload.get(i)?);
                d.tl0_at = i;
                i += 1;
            }
            if x & 0x30 != 0 {
                payload.get(i)?;
                i += 1;
            }
        }
        d.header_len = i;
        Some(d)
    }

    /// Writes `picture_id` (reduced to the field's width) and `tl0_pic_idx` into `payload`, which
    /// must be the payload this descriptor was parsed from.
    pub fn write(&self, payload: &mut [u8], picture_id: u16, tl0_pic_idx: u8) {
        if let Some((_, bits)) = self.picture_id {
            let i = self.picture_id_at;
            if bits == 15 {
                let v = picture_id & 0x7fff;
                payload[i] = 0x80 | (v >> 8) as u8;
                payload[i + 1] = v as u8;
            } else {
                payload[i] = (picture_id & 0x7f) as u8;
            }
        }
        if self.tl0_pic_idx.is_some() {
            payload[self.tl0_at] = tl0_pic_idx;
        }
    }
}

/// The frame size in a VP8 keyframe's header (RFC 6386 §9.1), if `payload` starts one.
pub fn keyframe_size(payload: &[u8]) -> Option<(u32, u32)> {
    let d = Vp8Descriptor::parse(payload)?;
    let b0 = payload[0];
    if b0 & 0x10 == 0 || b0 & 0x07 != 0 {
        return None; // not the start of partition 0
    }
    let h = payload.get(d.header_len..d.header_len + 10)?;
    if h[0] & 0x01 != 0 || h[3..6] != [0x9d, 0x01, 0x2a] {
        return None; // an interframe, or no keyframe start code
    }
    let width = u32::from(u16::from_le_bytes([h[6], h[7]]) & 0x3fff);
    let height = u32::from(u16::from_le_bytes([h[8], h[9]]) & 0x3fff);
    Some((width, height))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// X=1, S=1; I, L, T present; 15-bit picture id 0x1234; TL0PICIDX 7; then a keyframe header
    /// of 640x360.
    fn keyframe_15bit() -> Vec<u8> {
        let mut p = vec![0x90, 0xe0, 0x80 | 0x12, 0x34, 7, 0x20];
        p.extend_from_slice(&[0x50, 0x2a, 0x00, 0x9d, 0x01, 0x2a]);
        p.extend_from_slice(&640u16.to_le_bytes());
        p.extend_from_slice(&360u16.to_le_bytes());
        p.extend_from_slice(&[0xaa; 20]);
        p
    }

    #[test]
    fn parses_15_bit_picture_id_tl0_and_size() {
        let p = keyframe_15bit();
        let d = Vp8Descriptor::parse(&p).unwrap();
        assert_eq!(d.picture_id, Some((0x1234, 15)));
        assert_eq!(d.tl0_pic_idx, Some(7));
        assert_eq!(d.header_len, 6);
        assert_eq!(keyframe_size(&p), Some((640, 360)));
    }

    #[test]
    fn rewrites_in_place_and_wraps_to_field_width() {
        let mut p = keyframe_15bit();
        let d = Vp8Descriptor::parse(&p).unwrap();
        d.write(&mut p, 0x8001, 255); // 15 bits: 0x8001 wraps to 1
        let again = Vp8Descriptor::parse(&p).unwrap();
        assert_eq!(again.picture_id, Some((1, 15)));
        assert_eq!(again.tl0_pic_idx, Some(255));
        assert_eq!(keyframe_size(&p), Some((640, 360)), "payload untouched");

        let mut short = vec![0x90, 0x80, 0x05, 0x01]; // 7-bit picture id 5
        let d = Vp8Descriptor::parse(&short).unwrap();
        assert_eq!(d.picture_id, Some((5, 7)));
        d.write(&mut short, 130, 0); // wraps at 128
        assert_eq!(
            Vp8Descriptor::parse(&short).unwrap().picture_id,
            Some((2, 7))
        );
    }

    #[test]
    fn truncations_never_panic() {
        let p = keyframe_15bit();
        for n in 0..p.len() {
            let _ = Vp8Descriptor::parse(&p[..n]);
            let _ = keyframe_size(&p[..n]);
        }
        assert_eq!(Vp8Descriptor::parse(&p[..3]), None, "15-bit id cut short");
        assert_eq!(keyframe_size(&p[..15]), None);
    }

    #[test]
    fn interframes_and_later_partitions_have_no_size() {
        let mut p = keyframe_15bit();
        p[6] |= 0x01; // P bit: interframe
        assert_eq!(keyframe_size(&p), None);
        let mut q = keyframe_15bit();
        q[0] &= !0x10; // not a partition start
        assert_eq!(keyframe_size(&q), None);
    }
}
