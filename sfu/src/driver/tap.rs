//! Taps: a published track's packets copied to a thread off the driver (a recording now, the
//! MCU's decoders later), each through a rewriter of its own as a subscriber's forwarder has,
//! so that what it gets is one continuous stream across the publisher's layer switches.
//!
//! The copy is a reference to the packet's payload and a bounded queue's slot: a tap that
//! falls behind loses packets (counted) and never slows the driver. A tap lives on the driver
//! that publishes its track and ends with the track.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::forward::Ingested;
use super::mesh::MeshPacket;
use super::tracks::{Origin, Track};
use super::{Driver, TrackKey};
use crate::engine::codec::Codec;
use crate::engine::rewriter::{RtpRewriter, Verdict};
use crate::mcu::record::{TapPacket, TapState};

/// How long a new tap waits for its preferred layer (which dynacast may have paused, with
/// nobody subscribed) before it takes another: a recording starts at the size it is meant to.
const TAP_GRACE: Duration = Duration::from_secs(3);

/// Which layer of a simulcast track a tap takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapLayer {
    /// The highest layer being sent (a recording).
    Highest,
    /// The lowest (the MCU's decoders: cheapest to decode).
    Lowest,
}

/// A tap as its owner hands it to the driver.
pub struct TapRequest {
    pub id: u64,
    pub layer: TapLayer,
    pub packets: SyncSender<TapPacket>,
    pub state: Arc<TapState>,
}

/// Why a driver did not attach a tap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TapRefusal {
    /// The track is not published on this driver.
    NotHere,
    Unsupported(Codec),
    Failed(String),
}

pub(crate) struct Tap {
    id: u64,
    layer: TapLayer,
    rewriter: RtpRewriter,
    packets: SyncSender<TapPacket>,
    state: Arc<TapState>,
    /// Packets dropped because the queue was full.
    dropped: u64,
    /// The owner went away: removed after this packet.
    closed: bool,
    attached_at: Instant,
}

/// What one packet did at one tap.
enum TapStep {
    Sent,
    /// Waiting for a keyframe of this layer.
    WantsKeyframe(u8),
    /// The tap's owner went away.
    Closed,
}

impl Tap {
    /// A tap with no layer chosen yet (see [`Tap::retarget`]).
    pub(super) fn new(
        id: u64,
        layer: TapLayer,
        clock_rate: u32,
        packets: SyncSender<TapPacket>,
        state: Arc<TapState>,
        now: Instant,
    ) -> Tap {
        Tap {
            id,
            layer,
            rewriter: RtpRewriter::new(0, clock_rate),
            packets,
            state,
            dropped: 0,
            closed: false,
            attached_at: now,
        }
    }

    pub(super) fn id(&self) -> u64 {
        self.id
    }

    /// Takes the layer [`Tap::choose`] says; returns it.
    pub(super) fn retarget(&mut self, track: &Track, now: Instant) -> Option<u8> {
        let layer = self.choose(track, now);
        if self.rewriter.target() != layer {
            self.rewriter.set_target(layer);
        }
        layer
    }

    fn step(&mut self, ingested: &Ingested, p: &MeshPacket) -> TapStep {
        let rw = match self.rewriter.process(&ingested.input) {
            Verdict::Forward(rw) => rw,
            Verdict::Drop(_) => {
                return match self.rewriter.target() {
                    Some(t) if self.rewriter.waiting_for_keyframe() => TapStep::WantsKeyframe(t),
                    _ => TapStep::Sent,
                };
            }
        };
        let packet = TapPacket {
            tap: self.id,
            at: p.at,
            seq: rw.seq,
            timestamp: rw.timestamp,
            marker: p.marker,
            payload: p.payload.clone(),
        };
        match self.packets.try_send(packet) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.dropped += 1,
            Err(TrySendError::Disconnected(_)) => return TapStep::Closed,
        }
        // The owner lost a packet and waits for a keyframe of what it gets.
        match self.rewriter.current() {
            Some(l) if self.state.wants_keyframe.load(Ordering::Relaxed) => {
                TapStep::WantsKeyframe(l)
            }
            _ => TapStep::Sent,
        }
    }

    /// The layer this tap should take now, of `order` (low to high): its preferred one while
    /// that is sent (or, for [`TAP_GRACE`] after the tap started, may soon be), else the best
    /// one sent.
    fn choose(&self, track: &Track, now: Instant) -> Option<u8> {
        let preferred = match self.layer {
            TapLayer::Highest => track.order.last(),
            TapLayer::Lowest => track.order.first(),
        };
        if now.saturating_duration_since(self.attached_at) < TAP_GRACE {
            return preferred.copied();
        }
        let active = |id: &&u8| track.layers[usize::from(**id)].active(now);
        match self.layer {
            TapLayer::Highest => track.order.iter().rev().find(active),
            TapLayer::Lowest => track.order.iter().find(active),
        }
        .or(preferred)
        .copied()
    }
}

impl Driver {
    /// Attaches a tap to the track `track_id` of `room` if this driver publishes it.
    pub(super) fn attach_tap(
        &mut self,
        room: &str,
        track_id: &str,
        tap: TapRequest,
        now: Instant,
    ) -> Result<Codec, TapRefusal> {
        let tkey = *self.tracks.by_id.get(track_id).ok_or(TapRefusal::NotHere)?;
        let track = self
            .tracks
            .all
            .get_mut(&tkey)
            .filter(|t| t.room == room && matches!(t.origin, Origin::Local(_)))
            .ok_or(TapRefusal::NotHere)?;
        if track.codec == Codec::H264 {
            return Err(TapRefusal::Unsupported(track.codec));
        }
        let mut attached = Tap::new(
            tap.id,
            tap.layer,
            track.rtc_codec.clock_rate,
            tap.packets,
            tap.state,
            now,
        );
        let layer = attached.retarget(track, now);
        track.taps.push(attached);
        let codec = track.codec;
        if let Some(l) = layer {
            self.request_keyframe(tkey, l, now);
        }
        Ok(codec)
    }

    /// Removes tap `id` (its owner sees the end of its queue); whether this driver had it.
    pub(super) fn detach_tap(&mut self, id: u64) -> bool {
        for track in self.tracks.all.values_mut() {
            if let Some(i) = track.taps.iter().position(|t| t.id == id) {
                let tap = track.taps.remove(i);
                if tap.dropped > 0 {
                    tracing::info!(track = %track.id, dropped = tap.dropped, "tap fell behind");
                }
                return true;
            }
        }
        false
    }

    /// One packet to every tap of its track: the layers whose keyframe a tap waits for (bit per
    /// layer id).
    pub(super) fn tap_packet(
        &mut self,
        tkey: TrackKey,
        ingested: &Ingested,
        p: &MeshPacket,
    ) -> u32 {
        let Some(track) = self.tracks.all.get_mut(&tkey) else {
            return 0;
        };
        let mut wanted = 0u32;
        let mut closed = false;
        for tap in &mut track.taps {
            match tap.step(ingested, p) {
                TapStep::Sent => {}
                TapStep::WantsKeyframe(l) => wanted |= 1 << l,
                TapStep::Closed => {
                    tap.closed = true;
                    closed = true;
                }
            }
        }
        if closed {
            track.taps.retain(|t| !t.closed);
        }
        wanted
    }

    /// Every tick: each tap's layer (a layer that stopped is left for the best one still
    /// sent); what the taps need, for dynacast, is [`Track::tap_need`].
    pub(super) fn retarget_taps(&mut self, now: Instant) {
        for track in self.tracks.all.values_mut() {
            let choices: Vec<Option<u8>> =
                track.taps.iter().map(|t| t.choose(track, now)).collect();
            for (tap, layer) in track.taps.iter_mut().zip(choices) {
                if tap.rewriter.target() != layer {
                    tap.rewriter.set_target(layer);
                }
            }
        }
    }
}

impl Track {
    /// The layers this track's taps take or switch to, and the one each would take if every
    /// layer were sent (bit per layer id): dynacast keeps them on.
    pub(super) fn tap_need(&self) -> u32 {
        let mut need = 0;
        for tap in &self.taps {
            let ideal = match tap.layer {
                TapLayer::Highest => self.order.last(),
                TapLayer::Lowest => self.order.first(),
            };
            for l in [
                tap.rewriter.current(),
                tap.rewriter.target(),
                ideal.copied(),
            ]
            .into_iter()
            .flatten()
            {
                need |= 1 << l;
            }
        }
        need
    }
}
