//! The thread that runs one room's [`Compositor`] on one media driver: its taps' packets in
//! through a bounded queue, control messages through another, one picture every 1/[`FPS`] s on
//! its own clock, encoded once, packetized (RFC 7741) and sent into the driver's media queue as
//! the packets of the room's composite track (which every viewer on that driver subscribes to,
//! see `driver/mixing.rs`). A viewer's keyframe request reaches it through a shared flag,
//! honoured at most once a second.
//!
//! It ends when the driver drops its control sender (the room's last viewer left).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::Sender;
use tracing::{debug, warn};

use super::composite::Compositor;
use super::layout::TileKind;
use super::packetize::{Vp8Packetizer, MAX_PAYLOAD};
use super::record::{TapPacket, TapState};
use crate::driver::mesh::MeshPacket;
use crate::driver::TrackKey;

/// The composite's size, frame rate and bitrate (its track's layer 1), and its small copy's
/// (layer 0), for viewers with less bandwidth or a small tile.
pub const WIDTH: u32 = 640;
pub const HEIGHT: u32 = 360;
pub const FPS: u32 = 15;
pub const BITRATE_KBPS: u32 = 600;
pub const SMALL: (u32, u32, u32) = (320, 180, 150);

/// Packets queued from the taps: ~1 s of 8 low layers.
pub const COMPOSE_QUEUE: usize = 1024;

/// Keyframes on request at most this often.
const KEYFRAME_EVERY: Duration = Duration::from_secs(1);

/// What the driver tells its room's compositor.
pub enum ComposerControl {
    /// Tap `tap` carries a video track of `publisher` (a participant key).
    AddInput {
        tap: u64,
        publisher: u64,
        kind: TileKind,
        state: Arc<TapState>,
    },
    RemoveInput {
        tap: u64,
    },
    /// The room's active speaker (a participant key), drawn larger.
    Speaker(Option<u64>),
}

/// The driver's handle on one room's compositor.
pub struct ComposerHandle {
    pub control: std::sync::mpsc::Sender<ComposerControl>,
    pub packets: SyncSender<TapPacket>,
    /// Set by a viewer's keyframe request (PLI, FIR).
    pub keyframe: Arc<AtomicBool>,
}

/// Starts a room's compositor, sending the composite track `track`'s packets to `out`.
pub fn spawn_composer(
    room: String,
    track: TrackKey,
    out: Sender<MeshPacket>,
) -> std::io::Result<ComposerHandle> {
    let (control, control_rx) = std::sync::mpsc::channel();
    let (packets, packets_rx) = std::sync::mpsc::sync_channel(COMPOSE_QUEUE);
    let keyframe = Arc::new(AtomicBool::new(false));
    let wanted = keyframe.clone();
    std::thread::Builder::new()
        .name("fanout-compose".into())
        .spawn(move || {
            let made = Compositor::new(WIDTH, HEIGHT, FPS, BITRATE_KBPS)
                .and_then(|mut c| c.add_small(SMALL.0, SMALL.1, SMALL.2).map(|()| c));
            let compositor = match made {
                Ok(c) => c,
                Err(err) => {
                    warn!(%room, %err, "no compositor: viewers get no picture");
                    return;
                }
            };
            run(
                &room,
                compositor,
                track,
                &control_rx,
                &packets_rx,
                &out,
                &wanted,
            );
        })?;
    Ok(ComposerHandle {
        control,
        packets,
        keyframe,
    })
}

fn run(
    room: &str,
    mut compositor: Compositor,
    track: TrackKey,
    control: &Receiver<ComposerControl>,
    packets: &Receiver<TapPacket>,
    out: &Sender<MeshPacket>,
    keyframe: &AtomicBool,
) {
    let frame_time = Duration::from_secs(1) / FPS;
    let mut next_tick = Instant::now();
    let mut last_keyframe: Option<Instant> = None;
    // Per layer (0 small, 1 large): its packetizer and sequence numbers.
    let mut packetizers = [
        Vp8Packetizer::new(MAX_PAYLOAD),
        Vp8Packetizer::new(MAX_PAYLOAD),
    ];
    let mut seqs: [u16; 2] = [rand::random(), rand::random()];
    let mut payloads = Vec::new();
    let ts_base: u32 = rand::random();
    let mut queue_full = 0u64;
    debug!(room, "compositor started");
    loop {
        loop {
            match control.try_recv() {
                Ok(ComposerControl::AddInput {
                    tap,
                    publisher,
                    kind,
                    state,
                }) => {
                    if let Err(err) = compositor.add_input(tap, publisher, kind, state) {
                        warn!(room, %err, "compositor input refused");
                    }
                }
                Ok(ComposerControl::RemoveInput { tap }) => compositor.remove_input(tap),
                Ok(ComposerControl::Speaker(s)) => compositor.set_speaker(s),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    debug!(room, stats = ?compositor.stats, queue_full, "compositor stopped");
                    return;
                }
            }
        }
        let now = Instant::now();
        if now >= next_tick {
            let asked = keyframe.swap(false, Ordering::Relaxed);
            let force =
                asked && last_keyframe.is_none_or(|at| now.duration_since(at) >= KEYFRAME_EVERY);
            if asked && !force {
                keyframe.store(true, Ordering::Relaxed); // later, once the throttle allows
            }
            let large = compositor.tick(force);
            let small = compositor.tick_small(force);
            let frames = small
                .into_iter()
                .map(|f| (0, f))
                .chain(large.into_iter().map(|f| (1, f)));
            for (layer, frame) in frames {
                if frame.keyframe {
                    last_keyframe = Some(now);
                }
                payloads.clear();
                packetizers[layer].packetize(&frame.data, &mut payloads);
                let timestamp = ts_base.wrapping_add(frame.pts as u32);
                let last = payloads.len().saturating_sub(1);
                for (i, payload) in payloads.drain(..).enumerate() {
                    let seq = &mut seqs[layer];
                    let packet = MeshPacket {
                        track,
                        layer: layer as u8,
                        seq: *seq,
                        timestamp,
                        marker: i == last,
                        padding: false,
                        payload,
                        audio_level: None,
                        at: now,
                    };
                    *seq = seq.wrapping_add(1);
                    if out.try_send(packet).is_err() {
                        queue_full += 1;
                    }
                }
            }
            next_tick += frame_time;
            if next_tick < now {
                next_tick = now + frame_time;
            }
            continue;
        }
        match packets.recv_timeout(next_tick - now) {
            Ok(p) => compositor.handle_packet(p.tap, &p),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}
