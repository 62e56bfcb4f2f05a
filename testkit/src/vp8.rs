//! VP8 RTP payloads (RFC 7741) as publishers in tests send them.
//!
//! A payload is a [`Descriptor`] (what an SFU reads, and rewrites when it switches layers),
//! then, on a frame's first packet, the frame tag ([`frame_tag`]: a keyframe's carries the
//! start code and the picture's size, which the SFU reads to learn a layer's resolution), then
//! the body, which tests fill with markers of their own.

/// The payload descriptor's fields (RFC 7741 §4.2). With none of the optional fields it is one
/// byte; with any of them, the X byte follows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Descriptor {
    /// S: the packet starts a frame (partition 0).
    pub start: bool,
    /// I: a 15-bit picture id (M = 1), as Chromium sends it.
    pub picture_id: Option<u16>,
    /// L: TL0PICIDX, the running index of base temporal layer frames.
    pub tl0_pic_idx: Option<u8>,
    /// T: the temporal layer id and Y (a layer sync point). Written as TID 0, Y = 0 when
    /// `tl0_pic_idx` is set and this is not (L requires T).
    pub temporal: Option<(u8, bool)>,
}

impl Descriptor {
    /// A descriptor as simulcast publishers send it: picture id, TL0PICIDX and T (TID 0,
    /// Y = 1).
    pub fn simulcast(start: bool, picture_id: u16, tl0_pic_idx: u8) -> Self {
        Self {
            start,
            picture_id: Some(picture_id),
            tl0_pic_idx: Some(tl0_pic_idx),
            temporal: Some((0, true)),
        }
    }

    /// Appends the descriptor to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        let temporal = match (self.temporal, self.tl0_pic_idx) {
            (Some(t), _) => Some(t),
            (None, Some(_)) => Some((0, false)),
            (None, None) => None,
        };
        let extended = self.picture_id.is_some() || temporal.is_some();
        out.push(
            if extended { 0x80 } else { 0 } | if self.start { 0x10 } else { 0 }, // X, S; PID 0
        );
        if !extended {
            return;
        }
        let x = if self.picture_id.is_some() { 0x80 } else { 0 }
            | if self.tl0_pic_idx.is_some() { 0x40 } else { 0 }
            | if temporal.is_some() { 0x20 } else { 0 };
        out.push(x);
        if let Some(id) = self.picture_id {
            out.push(0x80 | (id >> 8) as u8 & 0x7f);
            out.push(id as u8);
        }
        if let Some(tl0) = self.tl0_pic_idx {
            out.push(tl0);
        }
        if let Some((tid, sync)) = temporal {
            out.push((tid & 0x03) << 6 | if sync { 0x20 } else { 0 });
        }
    }

    /// Reads a descriptor and its length, independently of the SFU's own parser (the tests'
    /// oracle). `None` if the payload is shorter than its descriptor.
    pub fn parse(payload: &[u8]) -> Option<(Descriptor, usize)> {
        let b0 = *payload.first()?;
        let mut d = Descriptor {
            start: b0 & 0x10 != 0,
            ..Descriptor::default()
        };
        let mut i = 1;
        if b0 & 0x80 == 0 {
            return Some((d, i));
        }
        let x = *payload.get(i)?;
        i += 1;
        if x & 0x80 != 0 {
            let hi = *payload.get(i)?;
            if hi & 0x80 != 0 {
                d.picture_id = Some(u16::from(hi & 0x7f) << 8 | u16::from(*payload.get(i + 1)?));
                i += 2;
            } else {
                d.picture_id = Some(u16::from(hi));
                i += 1;
            }
        }
        if x & 0x40 != 0 {
            d.tl0_pic_idx = Some(*payload.get(i)?);
            i += 1;
        }
        if x & 0x30 != 0 {
            let t = *payload.get(i)?;
            if x & 0x20 != 0 {
                d.temporal = Some((t >> 6, t & 0x20 != 0));
            }
            i += 1;
        }
        Some((d, i))
    }
}

/// Appends a frame's tag: a keyframe of `width` x `height` (P = 0, the start code, the size) or,
/// with `None`, an interframe (P = 1). Only a frame's first packet carries one.
pub fn frame_tag(out: &mut Vec<u8>, keyframe: Option<(u16, u16)>) {
    match keyframe {
        Some((width, height)) => {
            out.extend_from_slice(&[0x30, 0x02, 0x00, 0x9d, 0x01, 0x2a]);
            out.extend_from_slice(&width.to_le_bytes());
            out.extend_from_slice(&height.to_le_bytes());
        }
        None => out.extend_from_slice(&[0x31, 0x00, 0x00]),
    }
}

/// A payload's descriptor and, on a frame's first packet, its tag: the part of a payload an SFU
/// looks at. The caller appends the body.
pub fn payload_head(d: Descriptor, keyframe: Option<(u16, u16)>) -> Vec<u8> {
    let mut p = Vec::with_capacity(160);
    d.write(&mut p);
    if d.start {
        frame_tag(&mut p, keyframe);
    }
    p
}

/// The picture id of a payload (as sent, or as rewritten by the SFU).
pub fn picture_id(payload: &[u8]) -> Option<u16> {
    Descriptor::parse(payload)?.0.picture_id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_what_it_reads() {
        for d in [
            Descriptor::default(),
            Descriptor {
                start: true,
                ..Descriptor::default()
            },
            Descriptor::simulcast(true, 0x1234, 7),
            Descriptor::simulcast(false, 0x7fff, 255),
            Descriptor {
                start: true,
                picture_id: Some(300),
                tl0_pic_idx: None,
                temporal: Some((2, false)),
            },
        ] {
            let mut p = Vec::new();
            d.write(&mut p);
            assert_eq!(Descriptor::parse(&p), Some((d, p.len())), "{d:?}");
        }
    }

    #[test]
    fn simulcast_descriptor_is_the_six_bytes_chromium_sends() {
        let mut p = Vec::new();
        Descriptor::simulcast(true, 0x1234, 7).write(&mut p);
        assert_eq!(p, [0x90, 0xe0, 0x92, 0x34, 7, 0x20]);
        let key = payload_head(Descriptor::simulcast(true, 1, 0), Some((640, 360)));
        assert_eq!(&key[6..12], [0x30, 0x02, 0x00, 0x9d, 0x01, 0x2a]);
        assert_eq!(u16::from_le_bytes([key[12], key[13]]), 640);
        assert_eq!(picture_id(&key), Some(1));
        let middle = payload_head(Descriptor::simulcast(false, 1, 0), Some((640, 360)));
        assert_eq!(middle.len(), 6, "only a frame's first packet has a tag");
    }

    #[test]
    fn short_payloads_have_no_descriptor() {
        assert_eq!(Descriptor::parse(&[]), None);
        assert_eq!(Descriptor::parse(&[0x90, 0xe0, 0x92]), None);
        assert_eq!(picture_id(&[0x10]), None);
    }
}
