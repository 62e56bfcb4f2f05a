//! Which retransmissions to a subscriber go out: the guard against retransmission storms.
//!
//! rtc's NACK responder resends every packet a NACK names, every time it is named. On a congested
//! downlink that is congestion collapse: the subscriber's losses grow, its NACKs name hundreds of
//! packets several times a round trip, and the retransmissions (themselves dropped) crowd out the
//! media. Measured behind a 400 kbit/s bottleneck: ~1,200 packets/s offered for a 150 kbit/s
//! layer, the shaper dropping 90 % for 20 s after the layer switch. libwebrtc's sender bounds the
//! same thing (at most one resend of a packet per round trip, a retransmission rate limit, a
//! bounded history); so does this guard, which sees every RTP packet on its way to the wire:
//!
//! - a packet seen again (same SSRC and sequence number) is a retransmission;
//! - it goes out only if it was first sent at most [`MAX_AGE`] ago (older ones cannot arrive in
//!   time to be played), not resent within the last round trip, and the retransmission budget (a
//!   share of the downlink estimate, as a token bucket) has room for it.

use std::time::{Duration, Instant};

/// Sequence numbers remembered per stream (a power of two): 6 KB per stream, and at the top
/// layer's ~200 packets/s still 2.5 s of packets, more than [`MAX_AGE`].
const HISTORY: usize = 512;
/// A packet first sent longer ago than this is not resent.
pub const MAX_AGE: Duration = Duration::from_millis(1000);
/// Bounds on the wait between two resends of one packet (the round trip, when known).
const MIN_RESEND_INTERVAL: Duration = Duration::from_millis(20);
const MAX_RESEND_INTERVAL: Duration = Duration::from_millis(500);
/// Before any round-trip estimate.
const DEFAULT_RESEND_INTERVAL: Duration = Duration::from_millis(100);
/// Share of the downlink estimate retransmissions may use, with a floor.
const BUDGET_SHARE: f64 = 0.25;
const MIN_BUDGET_BPS: f64 = 64_000.0;
/// The bucket holds this much of the budget (bursts of a frame's worth of losses).
const BUCKET_SECONDS: f64 = 0.25;
/// The bucket never holds less than this many bytes (a few full packets).
const MIN_BUCKET_BYTES: f64 = 6_000.0;

/// What the guard decided for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtxDecision {
    /// First transmission.
    Original,
    /// A retransmission that fits.
    Resend,
    /// A retransmission held back: first sent too long ago.
    TooOld,
    /// A retransmission held back: already resent within the last round trip.
    TooSoon,
    /// A retransmission held back: over the retransmission budget.
    OverBudget,
}

impl RtxDecision {
    pub fn goes_out(self) -> bool {
        matches!(self, RtxDecision::Original | RtxDecision::Resend)
    }
}

#[derive(Clone, Copy)]
struct Entry {
    seq: u16,
    valid: bool,
    /// Milliseconds since the stream's base instant.
    first_ms: u32,
    last_ms: u32,
}

struct Stream {
    ssrc: u32,
    base: Instant,
    history: Box<[Entry; HISTORY]>,
}

impl Stream {
    fn new(ssrc: u32, now: Instant) -> Self {
        Stream {
            ssrc,
            base: now,
            history: Box::new(
                [Entry {
                    seq: 0,
                    valid: false,
                    first_ms: 0,
                    last_ms: 0,
                }; HISTORY],
            ),
        }
    }
}

/// The retransmission guard of one connection (all its outgoing streams).
pub struct RetransmitGuard {
    /// A connection sends a handful of streams: a vector beats a map.
    streams: Vec<Stream>,
    tokens: f64,
    refilled: Option<Instant>,
}

impl Default for RetransmitGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl RetransmitGuard {
    pub fn new() -> Self {
        RetransmitGuard {
            streams: Vec::new(),
            tokens: MIN_BUCKET_BYTES,
            refilled: None,
        }
    }

    /// Forgets a stream (its sender is gone).
    pub fn forget(&mut self, ssrc: u32) {
        self.streams.retain(|s| s.ssrc != ssrc);
    }

    /// Decides one outgoing packet of `bytes` bytes. `estimate_bps` is the downlink estimate
    /// (None before there is one) and `rtt` the round trip, if known.
    pub fn on_send(
        &mut self,
        ssrc: u32,
        seq: u16,
        bytes: usize,
        now: Instant,
        estimate_bps: Option<f64>,
        rtt: Option<Duration>,
    ) -> RtxDecision {
        let budget_bps = estimate_bps.map_or(4.0 * MIN_BUDGET_BPS, |e| {
            (e * BUDGET_SHARE).max(MIN_BUDGET_BPS)
        });
        let capacity = (budget_bps / 8.0 * BUCKET_SECONDS).max(MIN_BUCKET_BYTES);
        if let Some(at) = self.refilled {
            let elapsed = now.saturating_duration_since(at).as_secs_f64();
            self.tokens = (self.tokens + elapsed * budget_bps / 8.0).min(capacity);
        }
        self.refilled = Some(now);

        let i = match self.streams.iter().position(|s| s.ssrc == ssrc) {
            Some(i) => i,
            None => {
                self.streams.push(Stream::new(ssrc, now));
                self.streams.len() - 1
            }
        };
        let stream = &mut self.streams[i];
        let now_ms = u32::try_from(now.saturating_duration_since(stream.base).as_millis())
            .unwrap_or(u32::MAX);
        let entry = &mut stream.history[usize::from(seq) % HISTORY];
        if !entry.valid || entry.seq != seq {
            *entry = Entry {
                seq,
                valid: true,
                first_ms: now_ms,
                last_ms: now_ms,
            };
            return RtxDecision::Original;
        }
        if now_ms.saturating_sub(entry.first_ms) > MAX_AGE.as_millis() as u32 {
            return RtxDecision::TooOld;
        }
        let interval = rtt
            .unwrap_or(DEFAULT_RESEND_INTERVAL)
            .clamp(MIN_RESEND_INTERVAL, MAX_RESEND_INTERVAL);
        if entry.last_ms != entry.first_ms
            && now_ms.saturating_sub(entry.last_ms) < interval.as_millis() as u32
        {
            return RtxDecision::TooSoon;
        }
        let cost = bytes as f64;
        if self.tokens < cost {
            return RtxDecision::OverBudget;
        }
        self.tokens -= cost;
        // A resend at the same millisecond as the original still counts as resent.
        entry.last_ms = now_ms.max(entry.first_ms + 1);
        RtxDecision::Resend
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn first_sends_always_go_out_and_a_repeat_is_a_resend() {
        let mut g = RetransmitGuard::new();
        let t0 = Instant::now();
        for seq in 0..3000u16 {
            assert_eq!(
                g.on_send(1, seq, 1200, t0 + MS * u32::from(seq), None, None),
                RtxDecision::Original
            );
        }
        let t = t0 + MS * 3000;
        assert_eq!(
            g.on_send(1, 2990, 1200, t, Some(2e6), None),
            RtxDecision::Resend
        );
        // Another stream's same number is an original.
        assert_eq!(
            g.on_send(2, 2990, 1200, t, Some(2e6), None),
            RtxDecision::Original
        );
    }

    #[test]
    fn a_packet_is_resent_at_most_once_per_round_trip() {
        let mut g = RetransmitGuard::new();
        let t0 = Instant::now();
        let rtt = Some(80 * MS);
        g.on_send(1, 7, 1000, t0, Some(5e6), rtt);
        assert_eq!(
            g.on_send(1, 7, 1000, t0 + 30 * MS, Some(5e6), rtt),
            RtxDecision::Resend
        );
        assert_eq!(
            g.on_send(1, 7, 1000, t0 + 60 * MS, Some(5e6), rtt),
            RtxDecision::TooSoon
        );
        assert_eq!(
            g.on_send(1, 7, 1000, t0 + 100 * MS, Some(5e6), rtt),
            RtxDecision::TooSoon
        );
        assert_eq!(
            g.on_send(1, 7, 1000, t0 + 115 * MS, Some(5e6), rtt),
            RtxDecision::Resend
        );
    }

    #[test]
    fn old_packets_are_not_resent() {
        let mut g = RetransmitGuard::new();
        let t0 = Instant::now();
        g.on_send(1, 7, 1000, t0, Some(5e6), None);
        assert_eq!(
            g.on_send(1, 7, 1000, t0 + MAX_AGE + MS * 2, Some(5e6), None),
            RtxDecision::TooOld
        );
    }

    #[test]
    fn a_nack_storm_is_held_to_the_budget() {
        // 400 kbit/s estimate: budget 100 kbit/s = 12.5 kB/s. The subscriber asks for 500
        // packets of 1,100 bytes again every 200 ms for 2 s (what a congested Chromium did).
        let mut g = RetransmitGuard::new();
        let t0 = Instant::now();
        for seq in 0..500u16 {
            g.on_send(1, seq, 1100, t0, Some(4e5), Some(200 * MS));
        }
        let mut resent = 0usize;
        for round in 1..=10u32 {
            let t = t0 + 200 * MS * round - 190 * MS;
            for seq in 0..500u16 {
                if g.on_send(
                    1,
                    seq,
                    1100,
                    t + MS * u32::from(seq / 100),
                    Some(4e5),
                    Some(200 * MS),
                ) == RtxDecision::Resend
                {
                    resent += 1;
                }
            }
        }
        // ~12.5 kB/s for ~1 s of packets young enough, plus the initial bucket.
        let bytes = resent * 1100;
        assert!(bytes <= 12_500 + 6_000 + 1100, "{resent} packets resent");
        assert!(resent >= 5, "{resent} packets resent");
    }

    #[test]
    fn forgetting_a_stream_resets_it() {
        let mut g = RetransmitGuard::new();
        let t0 = Instant::now();
        g.on_send(1, 7, 1000, t0, None, None);
        g.forget(1);
        assert_eq!(
            g.on_send(1, 7, 1000, t0 + MS, None, None),
            RtxDecision::Original
        );
    }
}
