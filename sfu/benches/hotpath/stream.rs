//! The synthetic publisher stream: VP8 simulcast packets as the forwarders get them, and the
//! rewriters and outgoing packets the benchmarks start from.

use super::*;

/// A VP8 payload as Chromium sends simulcast (descriptor with picture id, TL0PICIDX and T);
/// for a keyframe, a 1280x720 keyframe header.
pub(crate) fn vp8_payload(keyframe: bool, start: bool, picture_id: u16, tl0: u8) -> Bytes {
    let mut p = payload_head(
        Descriptor::simulcast(start, picture_id, tl0),
        keyframe.then_some((1280, 720)),
    );
    p.resize(PAYLOAD_LEN, 0xa5);
    Bytes::from(p)
}

/// One packet as the forwarders get it (what `Driver::on_rtp` makes of rtc's packet).
pub(crate) type InPacket = MeshPacket;

/// An endless VP8 stream of one layer: 5 packets per frame at 30 fps, a keyframe every 60
/// frames. Payloads are templates shared across packets (their content does not change the cost
/// of anything measured here).
pub(crate) struct Stream {
    pub(crate) layer: u8,
    pub(crate) n: u64,
    pub(crate) seq: u16,
    pub(crate) timestamp: u32,
    pub(crate) t0: Instant,
    pub(crate) key_start: Bytes,
    pub(crate) frame_start: Bytes,
    pub(crate) middle: Bytes,
}

impl Stream {
    pub(crate) fn new(layer: u8, seq: u16, timestamp: u32, picture_id: u16, t0: Instant) -> Self {
        Self {
            layer,
            n: 0,
            seq,
            timestamp,
            t0,
            key_start: vp8_payload(true, true, picture_id, 3),
            frame_start: vp8_payload(false, true, picture_id, 3),
            middle: vp8_payload(false, false, picture_id, 3),
        }
    }

    pub(crate) fn next_packet(&mut self) -> InPacket {
        let in_frame = self.n % PACKETS_PER_FRAME;
        let frame = self.n / PACKETS_PER_FRAME;
        let payload = match in_frame {
            0 if frame % FRAMES_PER_KEYFRAME == 0 => self.key_start.clone(),
            0 => self.frame_start.clone(),
            _ => self.middle.clone(),
        };
        if in_frame == 0 && self.n > 0 {
            self.timestamp = self.timestamp.wrapping_add(VIDEO_CLOCK / 30);
        }
        let p = InPacket {
            track: sfu::driver::TrackKey(1),
            layer: self.layer,
            seq: self.seq,
            timestamp: self.timestamp,
            marker: in_frame == PACKETS_PER_FRAME - 1,
            padding: false,
            payload,
            audio_level: None,
            at: self.t0 + Duration::from_micros(frame * 33_333 + in_frame * 100),
        };
        self.seq = self.seq.wrapping_add(1);
        self.n += 1;
        p
    }
}

/// The once-per-packet part of `Driver::route` (the driver's own `forward::ingest`).
pub(crate) struct Ingest {
    pub(crate) unwrapper: SeqUnwrapper,
}

impl Ingest {
    pub(crate) fn new() -> Self {
        Self {
            unwrapper: SeqUnwrapper::new(),
        }
    }

    pub(crate) fn run(&mut self, p: &InPacket) -> Ingested {
        ingest(Codec::Vp8, &mut self.unwrapper, p)
    }
}

/// The packet `Driver::route` builds for one subscriber (the driver's own
/// `forward::forward_step`), or `None` if it drops it there.
pub(crate) fn outgoing(
    rewriter: &mut RtpRewriter,
    ingested: &Ingested,
    p: &InPacket,
    ssrc: u32,
    payload_type: u8,
) -> Option<rtp::Packet> {
    match forward_step(rewriter, ingested, p, ssrc, payload_type) {
        Step::Forward { packet, .. } => Some(packet),
        Step::Drop { .. } => None,
    }
}

/// A rewriter forwarding layer 0 of `stream`'s kind, started at a keyframe. With `switched`, it
/// first forwarded layer 1 and switched to layer 0, so its picture ids are offset and every
/// forwarded payload is copied and rewritten (what a subscriber that ever changed layer costs).
pub(crate) fn started_rewriter(initial: u16, switched: bool, t0: Instant) -> RtpRewriter {
    let mut r = RtpRewriter::new(initial, VIDEO_CLOCK);
    let first = |layer| PacketIn {
        layer,
        ext_seq: 1 << 32,
        timestamp: 0,
        keyframe: true,
        at: t0,
        picture_id: Some((20_000, 15)),
        tl0_pic_idx: Some(9),
    };
    if switched {
        r.set_target(Some(1));
        assert!(matches!(r.process(&first(1)), Verdict::Forward(_)));
    }
    r.set_target(Some(0));
    r
}
