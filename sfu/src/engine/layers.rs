//! Which simulcast layer each subscriber gets: the selector, the bandwidth allocator and the
//! congestion hold. Pure functions of their inputs; the driver calls them on a tick and applies
//! the result through each forwarder's [`RtpRewriter`](super::rewriter::RtpRewriter).
//!
//! The decision for one subscriber × track, in order:
//! 1. **Desired layer** ([`desired`]): hidden → nothing; otherwise the smallest layer that covers
//!    the size the subscriber displays the video at (the top layer while the size is unknown),
//!    capped by the subscriber's `max_quality` preference.
//! 2. **Budget** ([`allocate`]): the subscriber's estimated downlink, minus its audio, shared
//!    over its video tracks in priority order (screen shares first): every track first gets its
//!    lowest layer, then tracks are raised towards their desired layer while the budget lasts. The
//!    layer a track already receives costs only 3/4 of its rate to keep, so an estimate that
//!    wobbles around a layer's rate does not flap between layers.
//! 3. **Availability**: if the publisher is not sending the chosen layer now, the nearest lower
//!    layer it sends, else the nearest higher one.
//!
//! Every result carries the [`Reason`] that decided it, so "why am I seeing the low layer?" has an
//! answer. The allocation ignoring availability (the *ideal*) is what dynacast asks publishers to
//! send: using the available one would never resume a paused layer.

use std::time::{Duration, Instant};

/// A layer's quality as subscribers and the wire name it: three layers are low, medium and
/// high; two are low and high; a single layer is high.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Quality {
    Low,
    Medium,
    High,
}

impl Quality {
    pub fn as_str(self) -> &'static str {
        match self {
            Quality::Low => "low",
            Quality::Medium => "medium",
            Quality::High => "high",
        }
    }

    pub fn parse(s: &str) -> Option<Quality> {
        match s {
            "low" => Some(Quality::Low),
            "medium" => Some(Quality::Medium),
            "high" => Some(Quality::High),
            _ => None,
        }
    }

    /// The quality of layer `index` of `count` (ordered low to high).
    pub fn of(index: usize, count: usize) -> Quality {
        match (count, index) {
            (0 | 1, _) => Quality::High,
            (2, 0) => Quality::Low,
            (2, _) => Quality::High,
            (_, 0) => Quality::Low,
            (n, i) if i + 1 >= n => Quality::High,
            _ => Quality::Medium,
        }
    }

    /// Rate assumed for a layer not measured yet (just started, or paused).
    fn nominal_bitrate(self) -> f64 {
        match self {
            Quality::Low => 150_000.0,
            Quality::Medium => 500_000.0,
            Quality::High => 1_500_000.0,
        }
    }
}

/// Why a subscriber gets the layer it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The smallest layer covering the displayed size (or the top one, size unknown).
    DisplaySize,
    /// Lower than the displayed size asks for: the downlink budget does not allow more.
    Bandwidth,
    /// The publisher is not sending the chosen layer now.
    PublisherNotSending,
    /// The subscriber does not show the video (off-screen, hidden tab): paused.
    Hidden,
    /// Capped by the subscriber's max-quality preference.
    Preference,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::DisplaySize => "display_size",
            Reason::Bandwidth => "bandwidth",
            Reason::PublisherNotSending => "publisher_not_sending",
            Reason::Hidden => "hidden",
            Reason::Preference => "preference",
        }
    }
}

/// What the server knows about one layer of a published track.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerState {
    /// Its name for subscribers (from its rid when the rid follows a known scheme, else from its
    /// position: see [`Quality::of`]).
    pub quality: Quality,
    /// The publisher sent it recently.
    pub active: bool,
    /// From its last keyframe; 0 when unknown.
    pub width: u32,
    pub height: u32,
    /// Measured bits per second; 0 when unknown.
    pub bitrate: f64,
}

/// What one subscriber asked for one track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wants {
    pub visible: bool,
    /// Displayed size in device pixels, once the client reported it.
    pub size: Option<(u32, u32)>,
    pub max_quality: Quality,
}

impl Default for Wants {
    fn default() -> Self {
        Self {
            visible: true,
            size: None,
            max_quality: Quality::High,
        }
    }
}

/// A layer's size: measured, else derived from a measured neighbour (each layer doubles the one
/// below), else assumed from a 1280x720 top layer.
pub fn layer_size(layers: &[LayerState], i: usize) -> (u32, u32) {
    if layers[i].width > 0 {
        return (layers[i].width, layers[i].height);
    }
    let scale = |w: u32, from: usize| -> u32 {
        if from >= i {
            w >> (from - i)
        } else {
            w << (i - from)
        }
    };
    match layers.iter().position(|l| l.width > 0) {
        Some(j) => (scale(layers[j].width, j), scale(layers[j].height, j)),
        None => {
            let top = layers.len().saturating_sub(1);
            (1280 >> (top - i), 720 >> (top - i))
        }
    }
}

/// The layer to use when budget and availability allow, and why.
pub fn desired(layers: &[LayerState], wants: &Wants) -> (Option<usize>, Reason) {
    if layers.is_empty() {
        return (None, Reason::PublisherNotSending);
    }
    if !wants.visible {
        return (None, Reason::Hidden);
    }
    let n = layers.len();
    let by_size = match wants.size {
        None => n - 1,
        Some((w, h)) => (0..n)
            .find(|&i| {
                let (lw, lh) = layer_size(layers, i);
                // Covers the displayed size in either dimension (the video is fitted inside its
                // element), with 10 % slack so a 320x180 layer serves a 330x190 tile.
                f64::from(lw) * 1.1 >= f64::from(w) || f64::from(lh) * 1.1 >= f64::from(h)
            })
            .unwrap_or(n - 1),
    };
    let cap = (0..n)
        .rev()
        .find(|&i| layers[i].quality <= wants.max_quality)
        .unwrap_or(0);
    if by_size > cap {
        (Some(cap), Reason::Preference)
    } else {
        (Some(by_size), Reason::DisplaySize)
    }
}

/// One video track of one subscriber, for the allocator.
#[derive(Debug, Clone)]
pub struct Demand<'a> {
    pub layers: &'a [LayerState],
    pub desired: Option<usize>,
    pub reason: Reason,
    /// Higher goes first (screen share 2, active speaker 1, others 0).
    pub priority: u8,
    /// The layer forwarded now.
    pub current: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    /// The layer the budget grants, as if the publisher sent every layer (what dynacast wants).
    pub ideal: Option<usize>,
    /// The layer to forward now.
    pub layer: Option<usize>,
    pub reason: Reason,
}

fn cost(layers: &[LayerState], i: usize) -> f64 {
    if layers[i].bitrate > 0.0 {
        layers[i].bitrate
    } else {
        layers[i].quality.nominal_bitrate()
    }
}

/// Shares `budget` (bits per second for video) across one subscriber's tracks.
pub fn allocate(budget: f64, demands: &[Demand<'_>]) -> Vec<Allocation> {
    let mut order: Vec<usize> = (0..demands.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(demands[i].priority));
    let mut granted: Vec<Option<usize>> = vec![None; demands.len()];
    let mut remaining = budget;
    // What it costs to hold layer `to` (from `from`): a layer already being forwarded is kept
    // while 3/4 of its rate fits.
    let step_cost = |d: &Demand<'_>, from: Option<usize>, to: usize| -> f64 {
        let full = cost(d.layers, to) - from.map_or(0.0, |f| cost(d.layers, f));
        if d.current.is_some_and(|c| to <= c) {
            full * 0.75
        } else {
            full
        }
    };
    // Everyone's lowest layer first; the highest-priority track gets it even over budget, so a
    // subscriber on a poor link still sees something.
    for (rank, &i) in order.iter().enumerate() {
        let d = &demands[i];
        if d.desired.is_none() {
            continue;
        }
        let c = step_cost(d, None, 0);
        if c <= remaining || rank == 0 {
            granted[i] = Some(0);
            remaining -= c;
        }
    }
    // Then raise each, in priority order, towards what it wants.
    for &i in &order {
        let d = &demands[i];
        let (Some(want), Some(mut at)) = (d.desired, granted[i]) else {
            continue;
        };
        while at < want {
            let c = step_cost(d, Some(at), at + 1);
            if c > remaining {
                break;
            }
            remaining -= c;
            at += 1;
        }
        granted[i] = Some(at);
    }
    demands
        .iter()
        .zip(granted)
        .map(|(d, ideal)| {
            let reason = match (d.desired, ideal) {
                (Some(w), Some(g)) if g < w => Reason::Bandwidth,
                (Some(_), None) => Reason::Bandwidth,
                _ => d.reason,
            };
            let Some(ideal_layer) = ideal else {
                return Allocation {
                    ideal,
                    layer: None,
                    reason,
                };
            };
            if d.layers[ideal_layer].active {
                return Allocation {
                    ideal,
                    layer: ideal,
                    reason,
                };
            }
            let below = (0..ideal_layer).rev().find(|&j| d.layers[j].active);
            let above = (ideal_layer + 1..d.layers.len()).find(|&j| d.layers[j].active);
            // Nothing is being sent at all (a static screen share between frames, a publisher
            // whose encodings are all paused): keep the ideal layer targeted rather than pausing,
            // so its next frame flows without waiting for another keyframe.
            Allocation {
                ideal,
                layer: below.or(above).or(ideal),
                reason: Reason::PublisherNotSending,
            }
        })
        .collect()
}

/// Holds a subscriber's budget down after congestion, so that an estimate which climbs again
/// without evidence (nothing more is being sent to test it) does not move the subscriber back up
/// into the congestion every few seconds. Each new congestion soon after a hold doubles the next
/// hold, up to [`MAX_HOLD`].
#[derive(Debug, Clone)]
pub struct CongestionHold {
    last_estimate: Option<f64>,
    ceiling: f64,
    until: Option<Instant>,
    hold: Duration,
}

pub const FIRST_HOLD: Duration = Duration::from_secs(30);
pub const MAX_HOLD: Duration = Duration::from_secs(240);

impl Default for CongestionHold {
    fn default() -> Self {
        Self {
            last_estimate: None,
            ceiling: f64::INFINITY,
            until: None,
            hold: FIRST_HOLD,
        }
    }
}

impl CongestionHold {
    /// Feeds the current estimate; returns the budget to allocate.
    pub fn budget(&mut self, now: Instant, estimate: f64) -> f64 {
        let dropped = self.last_estimate.is_some_and(|last| estimate < last * 0.9);
        self.last_estimate = Some(estimate);
        if dropped {
            let recent = self
                .until
                .is_some_and(|until| now < until + self.hold.max(FIRST_HOLD));
            self.hold = match (self.until, recent) {
                (Some(until), _) if now < until => self.hold, // still inside the same hold
                (Some(_), true) => (self.hold * 2).min(MAX_HOLD),
                _ => FIRST_HOLD,
            };
            self.ceiling = if self.until.is_some_and(|u| now < u) {
                self.ceiling.min(estimate)
            } else {
                estimate
            };
            self.until = Some(now + self.hold);
        }
        match self.until {
            Some(until) if now < until => estimate.min(self.ceiling),
            _ => estimate,
        }
    }

    /// Whether the budget is being held down now.
    pub fn holding(&self, now: Instant) -> bool {
        self.until.is_some_and(|u| now < u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim(bitrates: [f64; 3]) -> Vec<LayerState> {
        [(320, 180), (640, 360), (1280, 720)]
            .iter()
            .zip(bitrates)
            .zip([Quality::Low, Quality::Medium, Quality::High])
            .map(|((&(w, h), b), quality)| LayerState {
                quality,
                active: true,
                width: w,
                height: h,
                bitrate: b,
            })
            .collect()
    }

    fn wants(w: u32, h: u32) -> Wants {
        Wants {
            size: Some((w, h)),
            ..Wants::default()
        }
    }

    #[test]
    fn smallest_layer_covering_the_displayed_size() {
        let l = sim([150e3, 500e3, 1.5e6]);
        assert_eq!(
            desired(&l, &wants(320, 180)),
            (Some(0), Reason::DisplaySize)
        );
        assert_eq!(
            desired(&l, &wants(330, 190)),
            (Some(0), Reason::DisplaySize)
        );
        assert_eq!(
            desired(&l, &wants(400, 225)),
            (Some(1), Reason::DisplaySize)
        );
        assert_eq!(
            desired(&l, &wants(1280, 720)),
            (Some(2), Reason::DisplaySize)
        );
        assert_eq!(
            desired(&l, &wants(3840, 2160)),
            (Some(2), Reason::DisplaySize)
        );
        // A tall narrow tile: the 320-wide layer already fills its width.
        assert_eq!(
            desired(&l, &wants(300, 900)),
            (Some(0), Reason::DisplaySize)
        );
        assert_eq!(
            desired(&l, &Wants::default()),
            (Some(2), Reason::DisplaySize),
            "unknown size: top layer"
        );
    }

    #[test]
    fn hidden_pauses_and_preference_caps() {
        let l = sim([150e3, 500e3, 1.5e6]);
        let hidden = Wants {
            visible: false,
            ..wants(1280, 720)
        };
        assert_eq!(desired(&l, &hidden), (None, Reason::Hidden));
        let capped = Wants {
            max_quality: Quality::Medium,
            ..wants(1280, 720)
        };
        assert_eq!(desired(&l, &capped), (Some(1), Reason::Preference));
        let low = Wants {
            max_quality: Quality::Low,
            ..wants(320, 180)
        };
        assert_eq!(desired(&l, &low), (Some(0), Reason::DisplaySize));
    }

    #[test]
    fn unknown_sizes_are_derived_from_a_known_layer() {
        let mut l = sim([0.0; 3]);
        for x in &mut l {
            x.width = 0;
            x.height = 0;
        }
        assert_eq!(layer_size(&l, 0), (320, 180));
        l[1].width = 960;
        l[1].height = 540;
        assert_eq!(layer_size(&l, 0), (480, 270));
        assert_eq!(layer_size(&l, 2), (1920, 1080));
    }

    #[test]
    fn quality_names() {
        assert_eq!(Quality::of(0, 1), Quality::High);
        assert_eq!(Quality::of(0, 2), Quality::Low);
        assert_eq!(Quality::of(1, 2), Quality::High);
        assert_eq!(
            (0..3).map(|i| Quality::of(i, 3)).collect::<Vec<_>>(),
            vec![Quality::Low, Quality::Medium, Quality::High]
        );
    }

    fn demand(layers: &[LayerState], desired: Option<usize>, priority: u8) -> Demand<'_> {
        Demand {
            layers,
            desired,
            reason: Reason::DisplaySize,
            priority,
            current: None,
        }
    }

    #[test]
    fn budget_limits_and_priority_goes_first() {
        let l = sim([150e3, 500e3, 1.5e6]);
        let one = allocate(10e6, &[demand(&l, Some(2), 0)]);
        assert_eq!(one[0].layer, Some(2));
        assert_eq!(one[0].reason, Reason::DisplaySize);
        let tight = allocate(600e3, &[demand(&l, Some(2), 0)]);
        assert_eq!(
            (tight[0].layer, tight[0].reason),
            (Some(1), Reason::Bandwidth)
        );
        // 1.7 Mb/s for a camera and a screen share that both want high: the screen gets it.
        let two = allocate(1.7e6, &[demand(&l, Some(2), 0), demand(&l, Some(2), 2)]);
        assert_eq!(two[1].layer, Some(2), "screen share");
        assert_eq!(two[0].layer, Some(0), "camera keeps its lowest layer");
        // Below everyone's lowest layer: only the first in priority keeps video.
        let starved = allocate(100e3, &[demand(&l, Some(2), 0), demand(&l, Some(2), 2)]);
        assert_eq!(starved[1].layer, Some(0));
        assert_eq!(
            (starved[0].layer, starved[0].reason),
            (None, Reason::Bandwidth)
        );
    }

    #[test]
    fn keeping_the_current_layer_has_hysteresis() {
        let l = sim([150e3, 500e3, 1.5e6]);
        let mut d = demand(&l, Some(2), 0);
        assert_eq!(allocate(1.3e6, std::slice::from_ref(&d))[0].layer, Some(1));
        d.current = Some(2);
        assert_eq!(allocate(1.3e6, std::slice::from_ref(&d))[0].layer, Some(2));
        assert_eq!(allocate(1.0e6, std::slice::from_ref(&d))[0].layer, Some(1));
    }

    #[test]
    fn layer_not_sent_falls_back_down_then_up_and_dynacast_sees_the_ideal() {
        let mut l = sim([150e3, 500e3, 1.5e6]);
        l[2].active = false;
        let a = allocate(10e6, &[demand(&l, Some(2), 0)]);
        assert_eq!(a[0].ideal, Some(2));
        assert_eq!(
            (a[0].layer, a[0].reason),
            (Some(1), Reason::PublisherNotSending)
        );
        l[0].active = false;
        l[1].active = false;
        l[2].active = true;
        let b = allocate(10e6, &[demand(&l, Some(0), 0)]);
        assert_eq!(
            (b[0].ideal, b[0].layer),
            (Some(0), Some(2)),
            "up when nothing below"
        );
        l[2].active = false;
        let c = allocate(10e6, &[demand(&l, Some(0), 0)]);
        assert_eq!(
            (c[0].layer, c[0].reason),
            (Some(0), Reason::PublisherNotSending),
            "nothing sent at all: stay on the ideal layer"
        );
        // Layer recovers: back to the ideal.
        l[0].active = true;
        assert_eq!(allocate(10e6, &[demand(&l, Some(0), 0)])[0].layer, Some(0));
    }

    #[test]
    fn unmeasured_layers_cost_their_nominal_rate() {
        let l = sim([0.0; 3]);
        assert_eq!(allocate(700e3, &[demand(&l, Some(2), 0)])[0].layer, Some(1));
    }

    #[test]
    fn congestion_holds_the_budget_and_backs_off() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let hold = FIRST_HOLD;
        let mut h = CongestionHold::default();
        assert_eq!(h.budget(t0, 2e6), 2e6);
        assert_eq!(h.budget(t0 + s, 2.1e6), 2.1e6);
        // Congestion: estimate falls to 400k and then creeps up without evidence.
        let c1 = t0 + 2 * s;
        assert_eq!(h.budget(c1, 400e3), 400e3);
        assert!(h.holding(c1 + s));
        assert_eq!(h.budget(c1 + 3 * s, 700e3), 400e3, "held at the ceiling");
        assert_eq!(h.budget(c1 + hold - s, 900e3), 400e3);
        assert_eq!(h.budget(c1 + hold, 900e3), 900e3, "released after the hold");
        // Congested again soon after: the next hold is twice as long.
        let c2 = c1 + hold + 2 * s;
        assert_eq!(h.budget(c2, 420e3), 420e3);
        assert_eq!(h.budget(c2 + 2 * hold - s, 800e3), 420e3);
        assert_eq!(h.budget(c2 + 2 * hold, 800e3), 800e3);
        // Long after, a new congestion starts again from the first hold.
        let c3 = c2 + 20 * hold;
        assert_eq!(h.budget(c3 - s, 2e6), 2e6);
        assert_eq!(h.budget(c3, 500e3), 500e3);
        assert_eq!(h.budget(c3 + hold, 900e3), 900e3);
    }
}
