//! Just enough of the video payload formats to find where a decoder can start: keyframes.
//!
//! The SFU never decodes media. It looks at the first bytes of a payload to tell whether the packet
//! starts a keyframe, because a new subscriber must start at one (anything earlier is undecodable).

/// The codecs the server forwards. Anything else is refused at negotiation by the media engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Opus,
    Vp8,
    H264,
}

impl Codec {
    pub fn from_mime(mime: &str) -> Option<Codec> {
        if mime.eq_ignore_ascii_case("audio/opus") {
            Some(Codec::Opus)
        } else if mime.eq_ignore_ascii_case("video/vp8") {
            Some(Codec::Vp8)
        } else if mime.eq_ignore_ascii_case("video/h264") {
            Some(Codec::H264)
        } else {
            None
        }
    }

    /// The MIME type, as SDP and the protocol spell it.
    pub fn mime(self) -> &'static str {
        match self {
            Codec::Opus => "audio/opus",
            Codec::Vp8 => "video/VP8",
            Codec::H264 => "video/H264",
        }
    }

    pub fn is_video(self) -> bool {
        !matches!(self, Codec::Opus)
    }

    /// Whether `payload` is the first packet of a keyframe. Audio has no keyframes: every packet
    /// is a starting point.
    pub fn is_keyframe_start(self, payload: &[u8]) -> bool {
        match self {
            Codec::Opus => true,
            Codec::Vp8 => vp8_is_keyframe_start(payload),
            Codec::H264 => h264_is_keyframe_start(payload),
        }
    }
}

/// VP8 (RFC 7741): the payload descriptor has S=1 and partition id 0, and the VP8 frame header that
/// follows it has the inverse keyframe bit P = 0.
pub fn vp8_is_keyframe_start(payload: &[u8]) -> bool {
    let Some(&b0) = payload.first() else {
        return false;
    };
    let extended = b0 & 0x80 != 0;
    let start = b0 & 0x10 != 0;
    let partition = b0 & 0x07;
    if !start || partition != 0 {
        return false;
    }
    let mut i = 1;
    if extended {
        let Some(&x) = payload.get(i) else {
            return false;
        };
        i += 1;
        if x & 0x80 != 0 {
            // I: picture id, 7 or 15 bits (M flag).
            let Some(&p) = payload.get(i) else {
                return false;
            };
            i += if p & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1; // L: TL0PICIDX
        }
        if x & 0x30 != 0 {
            i += 1; // T or K: TID/Y/KEYIDX
        }
    }
    matches!(payload.get(i), Some(&h) if h & 0x01 == 0)
}

const H264_IDR: u8 = 5;
const H264_SPS: u8 = 7;
const H264_STAP_A: u8 = 24;
const H264_FU_A: u8 = 28;

/// H.264 (RFC 6184): an IDR slice or an SPS, alone, inside a STAP-A, or at the start of a FU-A.
pub fn h264_is_keyframe_start(payload: &[u8]) -> bool {
    let Some(&b0) = payload.first() else {
        return false;
    };
    let is_key = |nal_type: u8| nal_type == H264_IDR || nal_type == H264_SPS;
    match b0 & 0x1f {
        H264_STAP_A => {
            let mut i = 1;
            while i + 2 < payload.len() {
                let size = usize::from(u16::from_be_bytes([payload[i], payload[i + 1]]));
                let Some(&nal) = payload.get(i + 2) else {
                    return false;
                };
                if size == 0 {
                    return false;
                }
                if is_key(nal & 0x1f) {
                    return true;
                }
                i += 2 + size;
            }
            false
        }
        H264_FU_A => matches!(payload.get(1), Some(&fu) if fu & 0x80 != 0 && is_key(fu & 0x1f)),
        t => is_key(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_plain_keyframe_start() {
        // S=1, PID=0, no extension; frame header byte with P=0.
        assert!(vp8_is_keyframe_start(&[0x10, 0x00, 0x9d, 0x01, 0x2a]));
        // Interframe: P=1.
        assert!(!vp8_is_keyframe_start(&[0x10, 0x01]));
        // Not the start of a partition.
        assert!(!vp8_is_keyframe_start(&[0x00, 0x00]));
        // Start of partition 1, not 0.
        assert!(!vp8_is_keyframe_start(&[0x11, 0x00]));
    }

    #[test]
    fn vp8_with_extended_fields() {
        // X=1,S=1; I=1,L=1,T=1; 15-bit picture id (2 bytes); TL0PICIDX; TID byte; then P=0.
        assert!(vp8_is_keyframe_start(&[
            0x90, 0xe0, 0x81, 0x23, 0x05, 0x20, 0x10
        ]));
        assert!(!vp8_is_keyframe_start(&[
            0x90, 0xe0, 0x81, 0x23, 0x05, 0x20, 0x11
        ]));
        // 7-bit picture id only.
        assert!(vp8_is_keyframe_start(&[0x90, 0x80, 0x12, 0x00]));
    }

    #[test]
    fn vp8_truncated_is_not_a_keyframe_and_does_not_panic() {
        for len in 0..6 {
            let p = [0x90, 0xe0, 0x81, 0x23, 0x05, 0x20];
            assert!(!vp8_is_keyframe_start(&p[..len]));
        }
    }

    #[test]
    fn h264_forms() {
        assert!(h264_is_keyframe_start(&[0x65, 0x88])); // IDR
        assert!(h264_is_keyframe_start(&[0x67, 0x42])); // SPS
        assert!(!h264_is_keyframe_start(&[0x41, 0x9a])); // non-IDR slice
                                                         // STAP-A holding SPS (size 2) then PPS.
        assert!(h264_is_keyframe_start(&[
            0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x01, 0x68
        ]));
        // STAP-A with only a non-IDR slice.
        assert!(!h264_is_keyframe_start(&[0x78, 0x00, 0x02, 0x41, 0x9a]));
        // FU-A start of an IDR; FU-A continuation of an IDR.
        assert!(h264_is_keyframe_start(&[0x7c, 0x85, 0x00]));
        assert!(!h264_is_keyframe_start(&[0x7c, 0x05, 0x00]));
        assert!(!h264_is_keyframe_start(&[]));
        assert!(!h264_is_keyframe_start(&[0x78, 0x00, 0x00, 0x65]));
    }

    #[test]
    fn codec_from_mime_is_case_insensitive() {
        assert_eq!(Codec::from_mime("video/VP8"), Some(Codec::Vp8));
        assert_eq!(Codec::from_mime("audio/opus"), Some(Codec::Opus));
        assert_eq!(Codec::from_mime("video/H264"), Some(Codec::H264));
        assert_eq!(Codec::from_mime("video/AV1"), None);
    }
}
