//! Simulcast bookkeeping decisions: how a track's layers rank, how fast each is sent, and when a
//! layer nobody needs is paused at its publisher (dynacast). Pure: told the time.

use std::time::{Duration, Instant};

/// A layer nobody needs is paused at the publisher after this long (so brief dips do not flap).
pub const DYNACAST_PAUSE_AFTER: Duration = Duration::from_secs(2);
/// How long a subscriber that is still connecting keeps a track's top layer on (dynacast): long
/// enough for a negotiation and ICE, bounded for a client that never answers.
pub const DYNACAST_CONNECTING: Duration = Duration::from_secs(10);

/// Where a rid sits in the usual simulcast naming schemes (q/h/f, l/m/h, 0/1/2), low first.
/// The scheme is told by a rid only it uses (`q` or `f`; `l` or `m`), so `q` ranks low even while
/// it is the only layer that has started.
pub fn rid_rank(rid: &str, all: &[&str]) -> usize {
    let scheme: &[&str] = if all.contains(&"f") || all.contains(&"q") {
        &["q", "h", "f"]
    } else if all.contains(&"l") || all.contains(&"m") {
        &["l", "m", "h"]
    } else {
        &["0", "1", "2"]
    };
    scheme
        .iter()
        .position(|r| *r == rid)
        .unwrap_or(scheme.len())
}

/// Layer ids (indexes into `rids`, in arrival order) ordered low to high: by rid naming scheme,
/// then by arrival.
pub fn layer_order(rids: &[&str]) -> Vec<u8> {
    let mut order: Vec<u8> = (0..rids.len() as u8).collect();
    order.sort_by_key(|&i| rid_rank(rids[usize::from(i)], rids));
    order
}

/// The smoothed bitrate of a layer after `bytes` arrived in `interval`: the first measure as
/// is, then an exponential average (weight 0.2 for the new measure).
pub fn smoothed_bitrate(previous: f64, bytes: u64, interval: Duration) -> f64 {
    let rate = bytes as f64 * 8.0 / interval.as_secs_f64();
    if previous == 0.0 {
        rate
    } else {
        0.8 * previous + 0.2 * rate
    }
}

/// Dynacast's hysteresis for one layer of a track published `since_publish` ago: whether it
/// stays on, given whether anyone `needed` it now; `unneeded_since` is the layer's memory.
/// Nothing is paused in a track's first [`DYNACAST_PAUSE_AFTER`], and a layer is paused only
/// after nobody needed it for that long.
pub fn keep_layer(
    now: Instant,
    since_publish: Duration,
    needed: bool,
    unneeded_since: &mut Option<Instant>,
) -> bool {
    if needed {
        *unneeded_since = None;
    } else if unneeded_since.is_none() {
        *unneeded_since = Some(now);
    }
    since_publish < DYNACAST_PAUSE_AFTER
        || unneeded_since.is_none_or(|t| now.saturating_duration_since(t) < DYNACAST_PAUSE_AFTER)
}

/// Whether a subscriber made `created_after_publish` after its track was published, and not
/// connected yet, still holds the top layer on (it has chosen nothing yet: it would get the top
/// layer, so that layer is not paused under it to be resumed a moment later).
pub fn connecting_keeps_top(since_publish: Duration, created_after_publish: Duration) -> bool {
    since_publish.saturating_sub(created_after_publish) < DYNACAST_CONNECTING
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rids_rank_by_their_scheme_even_alone() {
        assert_eq!(
            rid_rank("q", &["q"]),
            0,
            "q is low while it is the only layer seen"
        );
        assert_eq!(rid_rank("f", &["f"]), 2);
        assert_eq!(rid_rank("h", &["q", "h"]), 1);
        assert_eq!(rid_rank("h", &["l", "h"]), 2, "h of l/m/h is high");
        assert_eq!(rid_rank("m", &["m"]), 1);
        assert_eq!(rid_rank("1", &["0", "1", "2"]), 1);
    }

    #[test]
    fn layers_order_low_to_high_whatever_their_arrival() {
        assert_eq!(layer_order(&["f", "q", "h"]), vec![1, 2, 0]);
        assert_eq!(layer_order(&["h", "l"]), vec![1, 0]);
        assert_eq!(layer_order(&[""]), vec![0]);
    }

    #[test]
    fn bitrate_starts_at_the_first_measure_then_averages() {
        let tick = Duration::from_millis(250);
        let first = smoothed_bitrate(0.0, 31_250, tick);
        assert_eq!(first, 1_000_000.0);
        let next = smoothed_bitrate(first, 0, tick);
        assert_eq!(next, 800_000.0, "a silent tick pulls it down by a fifth");
    }

    #[test]
    fn an_unneeded_layer_is_paused_only_after_the_hold_and_never_early() {
        let t0 = Instant::now();
        let mut since = None;
        let old = Duration::from_secs(60);
        assert!(
            keep_layer(t0, old, false, &mut since),
            "just became unneeded"
        );
        let later = t0 + DYNACAST_PAUSE_AFTER;
        assert!(
            !keep_layer(later, old, false, &mut since),
            "unneeded for the hold"
        );
        assert!(
            keep_layer(later, old, true, &mut since),
            "needed again: back at once"
        );
        assert_eq!(since, None);
        let mut fresh = None;
        let young = Duration::from_millis(500);
        assert!(keep_layer(t0, young, false, &mut fresh));
        assert!(
            keep_layer(t0 + Duration::from_secs(5), young, false, &mut fresh),
            "a track in its first seconds pauses nothing (told by since_publish)"
        );
    }

    #[test]
    fn a_connecting_subscriber_holds_the_top_layer_for_a_bounded_time() {
        let made = Duration::from_secs(30);
        assert!(connecting_keeps_top(made + Duration::from_secs(1), made));
        assert!(!connecting_keeps_top(made + DYNACAST_CONNECTING, made));
    }
}
