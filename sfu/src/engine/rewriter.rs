//! The per-subscriber RTP rewriter: which packets of a published stream a subscriber gets, and with
//! which sequence number.
//!
//! A subscriber's leg is its own RTP stream (its own SSRC, chosen by the server). It must start at
//! a keyframe (video) and its sequence numbers must stay contiguous except where the publisher
//! itself lost packets, so the subscriber's loss statistics and NACKs stay truthful. The rewriter
//! maps each incoming extended sequence number to an outgoing one through an offset fixed when
//! forwarding starts; late packets (retransmissions, reordering) map to the number they would have
//! had, and packets from before the start are dropped.
//!
//! Timestamps pass through unchanged in this version (one layer per track). The decision is still
//! returned as a value so layer switches (simulcast) can add a timestamp offset here later.

/// What to do with one packet, for one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Forward { seq: u16, timestamp: u32 },
    Drop(DropReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Video forwarding starts at a keyframe; this packet came before one.
    WaitingForKeyframe,
    /// A late packet from before the point where forwarding started.
    BeforeStart,
}

#[derive(Debug, Clone)]
pub struct RtpRewriter {
    /// The first outgoing sequence number (random per leg, chosen by the caller).
    initial_out_seq: u16,
    /// The extended input sequence number forwarding started at, once started.
    start_in: Option<u64>,
}

impl RtpRewriter {
    pub fn new(initial_out_seq: u16) -> Self {
        Self {
            initial_out_seq,
            start_in: None,
        }
    }

    pub fn started(&self) -> bool {
        self.start_in.is_some()
    }

    /// Forget the starting point: the next forwarded packet must again be a keyframe start.
    pub fn restart(&mut self) {
        // Continue numbering after what was already sent would need the last output; a restart
        // only happens before anything reached the subscriber, so starting over is fine.
        self.start_in = None;
    }

    /// Decide for one packet. `ext_seq` is the publisher's extended sequence number,
    /// `keyframe_start` whether it begins a keyframe (always true for audio).
    pub fn process(&mut self, ext_seq: u64, timestamp: u32, keyframe_start: bool) -> Verdict {
        let start = match self.start_in {
            Some(start) => start,
            None if keyframe_start => {
                self.start_in = Some(ext_seq);
                ext_seq
            }
            None => return Verdict::Drop(DropReason::WaitingForKeyframe),
        };
        if ext_seq < start {
            return Verdict::Drop(DropReason::BeforeStart);
        }
        let seq = self.initial_out_seq.wrapping_add((ext_seq - start) as u16);
        Verdict::Forward { seq, timestamp }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::seq::SeqUnwrapper;

    fn fwd_seq(v: Verdict) -> u16 {
        match v {
            Verdict::Forward { seq, .. } => seq,
            other => panic!("expected forward, got {other:?}"),
        }
    }

    #[test]
    fn waits_for_keyframe_then_counts_from_initial() {
        let mut r = RtpRewriter::new(1000);
        assert_eq!(
            r.process(50, 0, false),
            Verdict::Drop(DropReason::WaitingForKeyframe)
        );
        assert_eq!(fwd_seq(r.process(51, 0, true)), 1000);
        assert_eq!(fwd_seq(r.process(52, 0, false)), 1001);
        assert_eq!(
            r.process(49, 0, false),
            Verdict::Drop(DropReason::BeforeStart)
        );
    }

    #[test]
    fn publisher_loss_stays_a_gap_and_retransmission_fills_it() {
        let mut r = RtpRewriter::new(7);
        assert_eq!(fwd_seq(r.process(100, 0, true)), 7);
        assert_eq!(fwd_seq(r.process(102, 0, false)), 9); // 101 lost upstream
        assert_eq!(fwd_seq(r.process(101, 0, false)), 8); // resent later: fills the gap
    }

    #[test]
    fn output_wraps_and_timestamps_pass_through() {
        let mut r = RtpRewriter::new(65534);
        assert_eq!(
            r.process(10, 90_000, true),
            Verdict::Forward {
                seq: 65534,
                timestamp: 90_000
            }
        );
        assert_eq!(fwd_seq(r.process(11, 0, false)), 65535);
        assert_eq!(fwd_seq(r.process(12, 0, false)), 0);
        assert_eq!(
            r.process(13, u32::MAX, false),
            Verdict::Forward {
                seq: 1,
                timestamp: u32::MAX
            }
        );
    }

    #[test]
    fn input_wrap_through_unwrapper_is_contiguous_with_reordering() {
        // Property: for any permutation-by-small-swaps of a contiguous input that crosses the
        // 16-bit wrap, every forwarded output is initial + (input - start), i.e. contiguous.
        let mut unwrap = SeqUnwrapper::new();
        let mut r = RtpRewriter::new(42);
        let mut input: Vec<u16> = (0..2000u32).map(|i| (65000 + i) as u16).collect();
        for i in (0..input.len() - 1).step_by(7) {
            input.swap(i, i + 1); // local reordering
        }
        let start = unwrap.unwrap(input[0]);
        assert_eq!(fwd_seq(r.process(start, 0, true)), 42);
        for &s in &input[1..] {
            let ext = unwrap.unwrap(s);
            match r.process(ext, 0, false) {
                Verdict::Forward { seq, .. } => {
                    assert_eq!(seq, 42u16.wrapping_add((ext - start) as u16))
                }
                Verdict::Drop(DropReason::BeforeStart) => assert!(ext < start),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn restart_waits_for_a_new_keyframe() {
        let mut r = RtpRewriter::new(0);
        assert!(matches!(r.process(1, 0, true), Verdict::Forward { .. }));
        r.restart();
        assert!(!r.started());
        assert_eq!(
            r.process(2, 0, false),
            Verdict::Drop(DropReason::WaitingForKeyframe)
        );
    }
}
