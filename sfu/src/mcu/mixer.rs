//! The thread that runs one room's [`AudioMix`] on one media driver: its taps' packets in
//! through a bounded queue, its control messages through another, one tick every 20 ms on its
//! own clock, and each listener's mixed packets out to the driver's media queue as a track of
//! its own (which the driver forwards like any other, see `driver/mixing.rs`).
//!
//! It ends when the driver drops its control sender (the room's last mixed listener left).

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::time::Instant;

use tokio::sync::mpsc::Sender;
use tracing::{debug, warn};

use super::audio::{AudioMix, MixedPacket, TICK};
use super::record::TapPacket;
use crate::driver::mesh::MeshPacket;
use crate::driver::TrackKey;

/// Packets queued from the taps to a mixer: ~0.5 s of 16 microphones.
pub const MIX_QUEUE: usize = 400;

/// What the driver tells its room's mixer.
#[derive(Debug)]
pub enum MixerControl {
    /// Tap `tap` carries an audio track of `publisher` (a participant key).
    AddInput {
        tap: u64,
        publisher: u64,
    },
    RemoveInput {
        tap: u64,
    },
    /// `listener` (a participant key) receives the mix without its own voice, as `track`.
    AddListener {
        listener: u64,
        track: TrackKey,
    },
    RemoveListener {
        listener: u64,
    },
}

/// The driver's handle on one room's mixer.
pub struct MixerHandle {
    pub control: std::sync::mpsc::Sender<MixerControl>,
    pub packets: SyncSender<TapPacket>,
}

/// Starts a room's mixer, sending its output to `out` (the driver's own media queue).
pub fn spawn_mixer(room: String, out: Sender<MeshPacket>) -> std::io::Result<MixerHandle> {
    let (control, control_rx) = std::sync::mpsc::channel();
    let (packets, packets_rx) = std::sync::mpsc::sync_channel(MIX_QUEUE);
    std::thread::Builder::new()
        .name("fanout-mix".into())
        .spawn(move || run(&room, &control_rx, &packets_rx, &out))?;
    Ok(MixerHandle { control, packets })
}

fn run(
    room: &str,
    control: &Receiver<MixerControl>,
    packets: &Receiver<TapPacket>,
    out: &Sender<MeshPacket>,
) {
    let mut mix = AudioMix::new();
    let mut tracks: HashMap<u64, TrackKey> = HashMap::new();
    let mut mixed: Vec<MixedPacket> = Vec::new();
    let mut next_tick = Instant::now() + TICK;
    let mut queue_full = 0u64;
    debug!(room, "mixer started");
    loop {
        loop {
            match control.try_recv() {
                Ok(MixerControl::AddInput { tap, publisher }) => {
                    if let Err(err) = mix.add_input(tap, publisher) {
                        warn!(room, %err, "mixer input refused");
                    }
                }
                Ok(MixerControl::RemoveInput { tap }) => mix.remove_input(tap),
                Ok(MixerControl::AddListener { listener, track }) => {
                    match mix.add_listener(listener) {
                        Ok(()) => {
                            tracks.insert(listener, track);
                        }
                        Err(err) => warn!(room, %err, "mixer listener refused"),
                    }
                }
                Ok(MixerControl::RemoveListener { listener }) => {
                    mix.remove_listener(listener);
                    tracks.remove(&listener);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    debug!(room, stats = ?mix.stats, queue_full, "mixer stopped");
                    return;
                }
            }
        }
        let now = Instant::now();
        if now >= next_tick {
            mixed.clear();
            mix.tick(&mut mixed);
            for p in mixed.drain(..) {
                let Some(&track) = tracks.get(&p.listener) else {
                    continue;
                };
                let packet = MeshPacket {
                    track,
                    layer: 0,
                    seq: p.seq,
                    timestamp: p.timestamp,
                    marker: false,
                    padding: false,
                    payload: p.payload,
                    audio_level: None,
                    at: now,
                };
                if out.try_send(packet).is_err() {
                    queue_full += 1;
                }
            }
            // A late tick is not caught up with a burst: the mix keeps its 20 ms pace.
            next_tick += TICK;
            if next_tick < now {
                next_tick = now + TICK;
            }
            continue;
        }
        match packets.recv_timeout(next_tick - now) {
            Ok(p) => mix.handle_packet(p.tap, &p),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}
