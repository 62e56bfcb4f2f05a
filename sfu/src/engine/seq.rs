//! Extended (unwrapped) RTP sequence numbers.
//!
//! RTP carries 16-bit sequence numbers that wrap every 65536 packets. The engine counts in 64-bit
//! "extended" space, computed once at ingress, so comparisons and offsets never have to reason about
//! wrap-around; numbers are cut back to 16 bits only when a header is written.

/// Turns a stream of 16-bit sequence numbers, possibly reordered or duplicated, into 64-bit ones.
#[derive(Debug, Default, Clone)]
pub struct SeqUnwrapper {
    /// The highest extended sequence number seen so far.
    highest: Option<u64>,
}

/// Extended numbers start here so that packets slightly older than the first one (reordering at
/// the very start of a stream) still have a non-negative extended number.
const START: u64 = 1 << 32;

impl SeqUnwrapper {
    pub fn new() -> Self {
        Self::default()
    }

    /// The extended number of `seq`: the one closest to the highest seen so far.
    pub fn unwrap(&mut self, seq: u16) -> u64 {
        let Some(highest) = self.highest else {
            let ext = START + u64::from(seq);
            self.highest = Some(ext);
            return ext;
        };
        // Signed distance from the highest seen, in 16-bit space: within ±32768.
        let delta = seq.wrapping_sub(highest as u16) as i16;
        let ext = highest.wrapping_add_signed(i64::from(delta));
        if ext > highest {
            self.highest = Some(ext);
        }
        ext
    }

    pub fn highest(&self) -> Option<u64> {
        self.highest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_counts_up() {
        let mut u = SeqUnwrapper::new();
        let a = u.unwrap(10);
        assert_eq!(u.unwrap(11), a + 1);
        assert_eq!(u.unwrap(12), a + 2);
    }

    #[test]
    fn wraps_forward_past_65535() {
        let mut u = SeqUnwrapper::new();
        let a = u.unwrap(65534);
        assert_eq!(u.unwrap(65535), a + 1);
        assert_eq!(u.unwrap(0), a + 2);
        assert_eq!(u.unwrap(1), a + 3);
    }

    #[test]
    fn late_packet_across_wrap_maps_backwards() {
        let mut u = SeqUnwrapper::new();
        let a = u.unwrap(65535);
        let b = u.unwrap(2); // jumped forward over the wrap
        assert_eq!(b, a + 3);
        assert_eq!(u.unwrap(0), a + 1); // a late packet from before
        assert_eq!(u.highest(), Some(b));
    }

    #[test]
    fn duplicates_and_reordering_keep_highest() {
        let mut u = SeqUnwrapper::new();
        let a = u.unwrap(100);
        assert_eq!(u.unwrap(99), a - 1);
        assert_eq!(u.unwrap(100), a);
        assert_eq!(u.highest(), Some(a));
    }

    #[test]
    fn many_wraps_stay_monotonic() {
        let mut u = SeqUnwrapper::new();
        let first = u.unwrap(40000);
        let mut seq: u16 = 40000;
        for i in 1..300_000u64 {
            seq = seq.wrapping_add(1);
            assert_eq!(u.unwrap(seq), first + i);
        }
    }
}
