//! The per-subscriber RTP rewriter: which packets of a published track a subscriber gets, and
//! with which sequence number, timestamp and VP8 picture id.
//!
//! A subscriber's leg is one RTP stream (its own SSRC, chosen by the server) however many
//! simulcast layers the publisher sends. The rewriter forwards one layer at a time and switches
//! only at a keyframe of the target layer, so the subscriber sees one continuous stream:
//!
//! - **Epochs.** Forwarding from one layer, from one keyframe on, is an *epoch*. Within an epoch
//!   every output value is the input plus a constant offset, so upstream loss stays a gap the
//!   subscriber can NACK, and late packets (retransmissions, reordering) land on the number they
//!   would have had. Packets from before the epoch's start, or from another layer, are dropped.
//! - **At a switch** (or when a paused stream resumes) the new epoch's offsets are chosen so the
//!   output continues: the next sequence number after the highest sent, a timestamp advanced by
//!   the wall-clock time since the last forwarded packet (layers need not share a timestamp base),
//!   and the next picture id and TL0PICIDX.
//! - **Pausing** (target `None`) stops forwarding at once; resuming waits for a keyframe.
//!
//! Time is passed in; nothing here reads a clock.

use std::time::Instant;

/// One incoming packet as the rewriter needs to see it.
#[derive(Debug, Clone, Copy)]
pub struct PacketIn {
    /// The simulcast layer index (0 for a single-layer track).
    pub layer: u8,
    /// The publisher's extended (unwrapped) sequence number on that layer.
    pub ext_seq: u64,
    pub timestamp: u32,
    /// Whether the packet begins a keyframe (always true for audio).
    pub keyframe: bool,
    /// Arrival time.
    pub at: Instant,
    /// VP8 picture id and its width in bits, if the packet carries one.
    pub picture_id: Option<(u16, u8)>,
    pub tl0_pic_idx: Option<u8>,
}

/// What to do with one packet, for one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Forward(Rewrite),
    Drop(DropReason),
}

/// The header values a forwarded packet gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewrite {
    pub seq: u16,
    pub timestamp: u32,
    /// New VP8 picture id and TL0PICIDX, when they differ from the input (the payload must then
    /// be copied and rewritten; otherwise it can be shared as is).
    pub vp8: Option<(u16, u8)>,
    /// This packet starts a new epoch (first packet, a layer switch or a resume).
    pub switched: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The target layer has not sent a keyframe yet (the caller should ask for one).
    WaitingForKeyframe,
    /// A packet of a layer this subscriber is not receiving.
    OtherLayer,
    /// A late packet from before the current epoch started.
    BeforeStart,
    /// Forwarding is paused for this subscriber.
    Paused,
}

#[derive(Debug, Clone, Copy)]
struct Epoch {
    layer: u8,
    start_in: u64,
    out_start: u64,
    ts_offset: u32,
    picture_id_offset: u16,
    tl0_offset: u8,
}

/// The newest packet forwarded (highest output sequence number).
#[derive(Debug, Clone, Copy)]
struct LastOut {
    seq: u64,
    timestamp: u32,
    at: Instant,
    picture_id: Option<u16>,
    tl0_pic_idx: Option<u8>,
}

#[derive(Debug, Clone)]
pub struct RtpRewriter {
    clock_rate: u32,
    /// The first outgoing sequence number (random per leg, chosen by the caller).
    initial_out_seq: u16,
    target: Option<u8>,
    epoch: Option<Epoch>,
    last: Option<LastOut>,
}

impl RtpRewriter {
    /// A rewriter that forwards nothing until given a target.
    pub fn new(initial_out_seq: u16, clock_rate: u32) -> Self {
        Self {
            clock_rate: clock_rate.max(1),
            initial_out_seq,
            target: None,
            epoch: None,
            last: None,
        }
    }

    /// The layer being forwarded now, if any.
    pub fn current(&self) -> Option<u8> {
        self.epoch.map(|e| e.layer)
    }

    /// The layer the rewriter forwards or switches to; `None` is paused.
    pub fn target(&self) -> Option<u8> {
        self.target
    }

    /// Whether a keyframe of the target layer is needed to get there.
    pub fn waiting_for_keyframe(&self) -> bool {
        self.target.is_some() && self.target != self.current()
    }

    /// Chooses the layer to forward. A different layer is switched to at its next keyframe (the
    /// current one keeps flowing until then); `None` pauses at once.
    pub fn set_target(&mut self, target: Option<u8>) {
        self.target = target;
        if target.is_none() {
            self.epoch = None;
        }
    }

    /// Decides for one packet.
    pub fn process(&mut self, p: &PacketIn) -> Verdict {
        let Some(target) = self.target else {
            return Verdict::Drop(DropReason::Paused);
        };
        let mut switched = false;
        if self.current() != Some(target) && p.layer == target {
            if !p.keyframe {
                return Verdict::Drop(DropReason::WaitingForKeyframe);
            }
            self.epoch = Some(self.new_epoch(p));
            switched = true;
        }
        let Some(e) = self.epoch else {
            return Verdict::Drop(DropReason::WaitingForKeyframe);
        };
        if p.layer != e.layer {
            return Verdict::Drop(DropReason::OtherLayer);
        }
        if p.ext_seq < e.start_in {
            return Verdict::Drop(DropReason::BeforeStart);
        }
        let out_seq = e.out_start + (p.ext_seq - e.start_in);
        let timestamp = p.timestamp.wrapping_add(e.ts_offset);
        let picture_id = p
            .picture_id
            .map(|(v, _)| v.wrapping_add(e.picture_id_offset));
        let tl0 = p.tl0_pic_idx.map(|v| v.wrapping_add(e.tl0_offset));
        if self.last.is_none_or(|l| out_seq > l.seq) {
            self.last = Some(LastOut {
                seq: out_seq,
                timestamp,
                at: p.at,
                picture_id: picture_id.or(self.last.and_then(|l| l.picture_id)),
                tl0_pic_idx: tl0.or(self.last.and_then(|l| l.tl0_pic_idx)),
            });
        }
        let vp8 = (e.picture_id_offset != 0 || e.tl0_offset != 0)
            .then(|| (picture_id.unwrap_or(0), tl0.unwrap_or(0)));
        Verdict::Forward(Rewrite {
            seq: out_seq as u16,
            timestamp,
            vp8,
            switched,
        })
    }

    /// Offsets that make `p` (a keyframe start) follow the last packet sent.
    fn new_epoch(&self, p: &PacketIn) -> Epoch {
        let Some(last) = self.last else {
            return Epoch {
                layer: p.layer,
                start_in: p.ext_seq,
                out_start: u64::from(self.initial_out_seq),
                ts_offset: 0,
                picture_id_offset: 0,
                tl0_offset: 0,
            };
        };
        let elapsed = p.at.saturating_duration_since(last.at).as_secs_f64();
        let ticks = ((elapsed * f64::from(self.clock_rate)) as u32).max(1);
        let ts_offset = last.timestamp.wrapping_add(ticks).wrapping_sub(p.timestamp);
        let picture_id_offset = match (last.picture_id, p.picture_id) {
            (Some(out), Some((v, _))) => out.wrapping_add(1).wrapping_sub(v),
            _ => 0,
        };
        let tl0_offset = match (last.tl0_pic_idx, p.tl0_pic_idx) {
            (Some(out), Some(v)) => out.wrapping_add(1).wrapping_sub(v),
            _ => 0,
        };
        Epoch {
            layer: p.layer,
            start_in: p.ext_seq,
            out_start: last.seq + 1,
            ts_offset,
            picture_id_offset,
            tl0_offset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::seq::SeqUnwrapper;
    use std::time::Duration;

    const CLOCK: u32 = 90_000;

    fn pkt(layer: u8, ext_seq: u64, timestamp: u32, keyframe: bool, at: Instant) -> PacketIn {
        PacketIn {
            layer,
            ext_seq,
            timestamp,
            keyframe,
            at,
            picture_id: None,
            tl0_pic_idx: None,
        }
    }

    fn fwd(v: Verdict) -> Rewrite {
        match v {
            Verdict::Forward(r) => r,
            other => panic!("expected forward, got {other:?}"),
        }
    }

    #[test]
    fn nothing_without_a_target_then_starts_at_a_keyframe() {
        let t0 = Instant::now();
        let mut r = RtpRewriter::new(1000, CLOCK);
        assert_eq!(
            r.process(&pkt(0, 50, 0, true, t0)),
            Verdict::Drop(DropReason::Paused)
        );
        r.set_target(Some(0));
        assert!(r.waiting_for_keyframe());
        assert_eq!(
            r.process(&pkt(0, 50, 0, false, t0)),
            Verdict::Drop(DropReason::WaitingForKeyframe)
        );
        let first = fwd(r.process(&pkt(0, 51, 9000, true, t0)));
        assert_eq!(
            (first.seq, first.timestamp, first.switched),
            (1000, 9000, true)
        );
        assert_eq!(fwd(r.process(&pkt(0, 52, 9000, false, t0))).seq, 1001);
        assert_eq!(
            r.process(&pkt(0, 49, 0, false, t0)),
            Verdict::Drop(DropReason::BeforeStart)
        );
        assert!(!r.waiting_for_keyframe());
    }

    #[test]
    fn publisher_loss_stays_a_gap_and_retransmission_fills_it() {
        let t0 = Instant::now();
        let mut r = RtpRewriter::new(7, CLOCK);
        r.set_target(Some(0));
        assert_eq!(fwd(r.process(&pkt(0, 100, 0, true, t0))).seq, 7);
        assert_eq!(fwd(r.process(&pkt(0, 102, 0, false, t0))).seq, 9); // 101 lost upstream
        assert_eq!(fwd(r.process(&pkt(0, 101, 0, false, t0))).seq, 8); // resent later
    }

    #[test]
    fn switch_waits_for_target_keyframe_and_continues_every_field() {
        let t0 = Instant::now();
        let mut r = RtpRewriter::new(65534, CLOCK);
        r.set_target(Some(0));
        let low = |seq, ts, key, at, pid: u16, tl0: u8| PacketIn {
            picture_id: Some((pid, 15)),
            tl0_pic_idx: Some(tl0),
            ..pkt(0, seq, ts, key, at)
        };
        let a = fwd(r.process(&low(10, 1000, true, t0, 500, 20)));
        assert_eq!((a.seq, a.vp8), (65534, None), "first epoch passes through");
        let ms40 = Duration::from_millis(40);
        fwd(r.process(&low(11, 4600, false, t0 + ms40, 501, 21)));

        r.set_target(Some(2));
        let high = |seq, ts, key, at, pid: u16, tl0: u8| PacketIn {
            picture_id: Some((pid, 15)),
            tl0_pic_idx: Some(tl0),
            ..pkt(2, seq, ts, key, at)
        };
        // The high layer's interframe is not a start; the low layer keeps flowing.
        assert_eq!(
            r.process(&high(7000, 777_000, false, t0 + ms40, 9000, 3)),
            Verdict::Drop(DropReason::WaitingForKeyframe)
        );
        assert!(r.waiting_for_keyframe());
        let b = fwd(r.process(&low(12, 8200, false, t0 + 2 * ms40, 502, 22)));
        assert_eq!(b.seq, 0, "output wraps");
        // Keyframe on the high layer, 40 ms later: the switch.
        let c = fwd(r.process(&high(7001, 777_000, true, t0 + 3 * ms40, 9001, 4)));
        assert!(c.switched);
        assert_eq!(c.seq, 1, "sequence continues");
        assert_eq!(c.timestamp, 8200 + 3600, "timestamp advanced by 40 ms");
        assert_eq!(c.vp8, Some((503, 23)), "picture id and TL0PICIDX continue");
        assert_eq!(r.current(), Some(2));
        // Old-layer packets are now dropped, even late ones.
        assert_eq!(
            r.process(&low(13, 11800, false, t0 + 3 * ms40, 503, 23)),
            Verdict::Drop(DropReason::OtherLayer)
        );
        let d = fwd(r.process(&high(7002, 780_000, false, t0 + 4 * ms40, 9002, 4)));
        assert_eq!(
            (d.seq, d.timestamp, d.vp8),
            (2, 11800 + 3000, Some((504, 23)))
        );
        // A retransmission from before the switch point on the new layer is not forwarded.
        assert_eq!(
            r.process(&high(7000, 777_000, false, t0 + 4 * ms40, 9000, 3)),
            Verdict::Drop(DropReason::BeforeStart)
        );
    }

    #[test]
    fn loss_across_a_switch_leaves_no_gap_in_output() {
        // The old layer's packets just before the switch were lost; the new epoch continues from
        // the highest number actually sent, so the subscriber never waits for the lost ones.
        let t0 = Instant::now();
        let mut r = RtpRewriter::new(0, CLOCK);
        r.set_target(Some(1));
        fwd(r.process(&pkt(1, 100, 0, true, t0)));
        fwd(r.process(&pkt(1, 101, 0, false, t0)));
        // 102..=105 lost upstream on layer 1; the switch to layer 0 happens meanwhile.
        r.set_target(Some(0));
        let s = fwd(r.process(&pkt(0, 40, 0, true, t0 + Duration::from_millis(100))));
        assert_eq!(s.seq, 2);
        // Layer 1's late retransmission of 102 is dropped, not numbered into the new epoch.
        assert_eq!(
            r.process(&pkt(1, 102, 0, false, t0)),
            Verdict::Drop(DropReason::OtherLayer)
        );
    }

    #[test]
    fn pause_is_immediate_and_resume_continues_after_a_keyframe() {
        let t0 = Instant::now();
        let mut r = RtpRewriter::new(10, CLOCK);
        r.set_target(Some(0));
        fwd(r.process(&pkt(0, 1, u32::MAX - 100, true, t0)));
        r.set_target(None);
        assert_eq!(r.current(), None);
        assert_eq!(
            r.process(&pkt(0, 2, u32::MAX - 10, false, t0)),
            Verdict::Drop(DropReason::Paused)
        );
        r.set_target(Some(0));
        assert_eq!(
            r.process(&pkt(0, 3, 5, false, t0)),
            Verdict::Drop(DropReason::WaitingForKeyframe)
        );
        let resumed = fwd(r.process(&pkt(0, 60, 4000, true, t0 + Duration::from_secs(2))));
        assert_eq!(resumed.seq, 11, "no gap for what was never sent");
        assert_eq!(
            resumed.timestamp,
            (u32::MAX - 100).wrapping_add(180_000),
            "timestamp advanced by the pause, across the 32-bit wrap"
        );
    }

    #[test]
    fn seven_bit_picture_ids_wrap_at_128() {
        let t0 = Instant::now();
        let mut r = RtpRewriter::new(0, CLOCK);
        r.set_target(Some(0));
        let p = |layer, seq, pid, key| PacketIn {
            picture_id: Some((pid, 7)),
            ..pkt(layer, seq, 0, key, t0)
        };
        fwd(r.process(&p(0, 1, 127, true)));
        r.set_target(Some(1));
        let s = fwd(r.process(&p(1, 1, 40, true)));
        let (pid, _) = s.vp8.unwrap();
        assert_eq!(pid & 0x7f, 0, "127 + 1 wraps to 0 in a 7-bit field");
    }

    /// Property: over a long run with layer switches every few hundred packets, local reordering,
    /// random loss and the 16-bit input wrap, every forwarded packet of the current epoch gets a
    /// distinct output number, in-order packets get strictly increasing output numbers with no gap
    /// other than upstream loss inside an epoch, and timestamps of in-order packets never go back.
    #[test]
    fn long_run_with_switches_reordering_and_loss() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let t0 = Instant::now();
        let mut r = RtpRewriter::new(65000, CLOCK);
        let layers = 3u8;
        let mut unwrap: Vec<SeqUnwrapper> = (0..layers).map(|_| SeqUnwrapper::new()).collect();
        let mut next_seq: Vec<u16> = vec![65500, 100, 30000];
        let ts_base: Vec<u32> = vec![u32::MAX - 50_000, 7, 2_000_000_000];
        r.set_target(Some(0));
        let mut seen = std::collections::HashSet::new();
        let mut last_in_order: Option<(u64, u32)> = None;
        let mut out_ext = SeqUnwrapper::new();
        for frame in 0..3000u32 {
            if frame % 200 == 199 {
                r.set_target(Some(rng.random_range(0..layers)));
            }
            let at = t0 + Duration::from_millis(u64::from(frame) * 33);
            let keyframe_frame = frame % 30 == 0;
            for layer in 0..layers {
                let ts = ts_base[layer as usize].wrapping_add(frame * 3000);
                let mut batch = Vec::new();
                for i in 0..3 {
                    let seq = next_seq[layer as usize];
                    next_seq[layer as usize] = seq.wrapping_add(1);
                    if rng.random_bool(0.02) {
                        continue; // lost upstream
                    }
                    batch.push((seq, i == 0 && keyframe_frame));
                }
                if batch.len() > 1 && rng.random_bool(0.2) {
                    batch.swap(0, 1);
                }
                for (seq, key) in batch {
                    let ext = unwrap[layer as usize].unwrap(seq);
                    let v = r.process(&pkt(layer, ext, ts, key, at));
                    if let Verdict::Forward(w) = v {
                        let o = out_ext.unwrap(w.seq);
                        assert!(seen.insert(o), "output {o} used twice");
                        if let Some((prev, prev_ts)) = last_in_order {
                            if o > prev {
                                assert!(
                                    w.timestamp.wrapping_sub(prev_ts) < u32::MAX / 2,
                                    "timestamp went back at frame {frame}"
                                );
                                last_in_order = Some((o, w.timestamp));
                            }
                        } else {
                            last_in_order = Some((o, w.timestamp));
                        }
                    }
                }
            }
        }
        // Output numbers form a nearly contiguous run: only upstream loss leaves holes.
        let min = *seen.iter().min().unwrap();
        let max = *seen.iter().max().unwrap();
        let holes = (max - min + 1) as usize - seen.len();
        assert!(
            holes * 20 < seen.len(),
            "{holes} holes in {} packets",
            seen.len()
        );
    }
}
