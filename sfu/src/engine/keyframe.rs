//! Throttling of keyframe requests (PLI) sent to a publisher.
//!
//! Every new subscriber, and every subscriber's own PLI or FIR, wants a keyframe from the publisher.
//! Asking for one per event would make a publisher in a big room encode keyframes back to back, so
//! requests for one published stream are merged: at most one per `min_interval`.

use std::time::{Duration, Instant};

/// The default spacing of keyframe requests to one publisher stream.
pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_millis(300);

#[derive(Debug, Clone)]
pub struct KeyframeThrottle {
    min_interval: Duration,
    last_sent: Option<Instant>,
}

impl KeyframeThrottle {
    pub fn new(min_interval: Duration) -> Self {
        Self {
            min_interval,
            last_sent: None,
        }
    }

    /// Whether a request made at `now` should go out; if so it is recorded as sent.
    pub fn request(&mut self, now: Instant) -> bool {
        match self.last_sent {
            Some(last) if now.saturating_duration_since(last) < self.min_interval => false,
            _ => {
                self.last_sent = Some(now);
                true
            }
        }
    }
}

impl Default for KeyframeThrottle {
    fn default() -> Self {
        Self::new(DEFAULT_MIN_INTERVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_request_goes_out_then_merges_until_interval() {
        let t0 = Instant::now();
        let mut t = KeyframeThrottle::new(Duration::from_millis(300));
        assert!(t.request(t0));
        assert!(!t.request(t0 + Duration::from_millis(100)));
        assert!(!t.request(t0 + Duration::from_millis(299)));
        assert!(t.request(t0 + Duration::from_millis(300)));
        assert!(!t.request(t0 + Duration::from_millis(301)));
    }
}
