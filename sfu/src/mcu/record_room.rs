//! Recording a room: its composite picture and its whole mix (as a participant that publishes
//! nothing hears it) into one WebM file (VP8 + Opus), on a thread of its own.
//!
//! The two streams come through one queue (two taps, `driver/recording.rs`) and have clocks of
//! their own, so each frame is placed on the recording's timeline by its stream's first frame's
//! arrival (`TapPacket::at`) plus its RTP timestamp since: the two stay in step as they did
//! when they reached the server. The muxer wants timestamps that never go back across tracks,
//! so frames wait [`INTERLEAVE`] in a buffer sorted by time before they are written.

use std::collections::BTreeMap;
use std::io::{Seek, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use super::depacketize::{Depacketizer, Frame};
use super::record::{Mux, RecordingSummary, TapPacket, TapState};
use crate::engine::codec::Codec;

/// How long a frame waits for the other stream's earlier frames before it is written.
pub const INTERLEAVE: Duration = Duration::from_millis(300);

/// One stream of the room: its frames and where its clock sits on the recording's timeline.
struct Stream {
    depacketizer: Depacketizer,
    clock: u64,
    /// The first frame's RTP timestamp and its place on the timeline (ns).
    origin: Option<(u64, u64)>,
}

impl Stream {
    fn new(codec: Codec, clock: u64) -> Stream {
        Stream {
            depacketizer: Depacketizer::new(codec),
            clock,
            origin: None,
        }
    }

    /// `frame`'s place on the timeline; `arrived`: when its last packet arrived, in ns since
    /// the recording's first packet.
    fn place(&mut self, frame: &Frame, arrived: u64) -> Option<u64> {
        let (ts0, ns0) = *self.origin.get_or_insert((frame.timestamp, arrived));
        let ticks = frame.timestamp.checked_sub(ts0)?;
        Some(ns0 + ticks * 1_000_000_000 / self.clock)
    }
}

/// Records a room into `out` (the file at `path`): `video_tap`'s packets are the composite
/// (VP8 of `size`), the others the mix (Opus).
pub(super) fn record_room<W: Write + Seek>(
    path: PathBuf,
    out: W,
    packets: &Receiver<TapPacket>,
    video_tap: u64,
    (width, height): (u32, u32),
    state: &TapState,
) -> RecordingSummary {
    let mut error = None;
    let mut mux = match Mux::room(out, width, height) {
        Ok(m) => Some(m),
        Err(e) => {
            error = Some(e);
            None
        }
    };
    let mut video = Stream::new(Codec::Vp8, 90_000);
    let mut audio = Stream::new(Codec::Opus, 48_000);
    state.wants_keyframe.store(true, Ordering::Relaxed);
    let mut start: Option<Instant> = None;
    // Frames waiting to be written, by (timeline ns, arrival order): (video?, frame).
    let mut waiting: BTreeMap<(u64, u64), (bool, Frame)> = BTreeMap::new();
    let (mut n, mut newest, mut last_ns, mut written, mut lost) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut frames = Vec::new();
    let mut write = |waiting: &mut BTreeMap<(u64, u64), (bool, Frame)>,
                     until: u64,
                     mux: &mut Option<Mux<W>>|
     -> Result<(), String> {
        while let Some(entry) = waiting.first_entry() {
            let (ns, _) = *entry.key();
            if ns > until {
                break;
            }
            let (is_video, frame) = entry.remove();
            if ns < last_ns {
                continue; // older than what is written: players want time to go forward
            }
            if let Some(m) = mux.as_mut() {
                m.write_room(is_video, &frame, ns)?;
            }
            (last_ns, written) = (ns, written + 1);
        }
        Ok(())
    };
    while let Ok(p) = packets.recv() {
        if error.is_some() {
            break;
        }
        let arrived =
            p.at.saturating_duration_since(*start.get_or_insert(p.at))
                .as_nanos() as u64;
        let is_video = p.tap == video_tap;
        let stream = if is_video { &mut video } else { &mut audio };
        stream
            .depacketizer
            .push(p.seq, p.timestamp, p.marker, p.payload, &mut frames);
        if is_video {
            state
                .wants_keyframe
                .store(stream.depacketizer.wants_keyframe(), Ordering::Relaxed);
        }
        for frame in frames.drain(..) {
            if let Some(ns) = stream.place(&frame, arrived) {
                newest = newest.max(ns);
                waiting.insert((ns, n), (is_video, frame));
                n += 1;
            }
        }
        let until = newest.saturating_sub(INTERLEAVE.as_nanos() as u64);
        if let Err(e) = write(&mut waiting, until, &mut mux) {
            error = Some(e);
        }
    }
    if error.is_none() {
        if let Err(e) = write(&mut waiting, u64::MAX, &mut mux) {
            error = Some(e);
        }
    }
    lost += video.depacketizer.lost + audio.depacketizer.lost;
    if let Some(m) = mux.as_mut() {
        if let Err(e) = m.finish() {
            error.get_or_insert(e);
        }
    }
    let duration = if written > 0 {
        Duration::from_nanos(last_ns + 20_000_000)
    } else {
        Duration::ZERO
    };
    RecordingSummary {
        bytes: std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0),
        file: path,
        duration,
        frames: written,
        lost,
        error,
    }
}
