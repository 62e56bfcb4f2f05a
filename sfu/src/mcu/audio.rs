//! A room's mixed audio: every microphone decoded (libopus), mixed every 20 ms on the mixer's
//! own clock, and for each listener its mix-minus (its own voice left out) encoded into one
//! Opus stream.
//!
//! Sans-IO: fed packets (`handle_packet`) and ticks (`tick`, every [`TICK`], by its thread),
//! it returns the packets to send to each listener. Each input has a small jitter buffer of
//! decoded frames: it starts playing at [`START_DEPTH`] frames, a frame missing at a tick is
//! concealed by the decoder (packet loss concealment) for up to [`CONCEAL_TICKS`] ticks, then
//! the input rebuffers; a buffer grown past [`MAX_DEPTH`] (a sender's clock running fast, or a
//! burst after a stall) drops its oldest frames. A lost packet is concealed in its place; a
//! packet that arrives after its turn is dropped. Inputs are mixed by publisher, so that a
//! listener who publishes two audio tracks hears neither.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use codecs::{Application, Channels, OpusDecoder, OpusEncoder};

use super::mix::{Mixer, FRAME};
use super::record::TapPacket;
use crate::engine::seq::SeqUnwrapper;

/// The mixer's clock: one 20 ms frame per tick.
pub const TICK: Duration = Duration::from_millis(20);

/// Frames an input buffers before it plays (40 ms of jitter absorbed).
pub const START_DEPTH: usize = 2;

/// Frames past which an input's oldest are dropped (its delay kept under 120 ms).
pub const MAX_DEPTH: usize = 6;

/// Ticks concealed in a row before an input counts as stalled and rebuffers.
pub const CONCEAL_TICKS: u32 = 5;

/// Lost packets concealed at most in one gap (a longer gap is not filled).
const MAX_GAP_FILL: u64 = 3;

/// Each listener's mixed stream, in bits per second.
pub const MIX_BITRATE: u32 = 32_000;

/// One mixed packet for one listener.
#[derive(Debug, Clone)]
pub struct MixedPacket {
    pub listener: u64,
    pub seq: u16,
    pub timestamp: u32,
    pub payload: Bytes,
}

struct Input {
    publisher: u64,
    seq: SeqUnwrapper,
    next: Option<u64>,
    decoder: OpusDecoder,
    frames: VecDeque<[i16; FRAME]>,
    playing: bool,
    concealed: u32,
}

struct Listener {
    encoder: OpusEncoder,
    seq: u16,
    timestamp: u32,
}

/// What the mixer counts (see the module doc).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MixStats {
    pub decoded: u64,
    pub concealed: u64,
    pub late: u64,
    pub dropped_overflow: u64,
    pub undecodable: u64,
    pub encoded: u64,
}

/// A room's audio mix (see the module doc).
pub struct AudioMix {
    inputs: HashMap<u64, Input>,
    listeners: HashMap<u64, Listener>,
    mixer: Mixer<u64>,
    /// Per publisher, this tick's sum of its inputs.
    sums: HashMap<u64, [i32; FRAME]>,
    pcm: [i16; FRAME],
    pub stats: MixStats,
}

impl Default for AudioMix {
    fn default() -> Self {
        Self::new()
    }
}

impl AudioMix {
    pub fn new() -> Self {
        Self {
            inputs: HashMap::new(),
            listeners: HashMap::new(),
            mixer: Mixer::default(),
            sums: HashMap::new(),
            pcm: [0; FRAME],
            stats: MixStats::default(),
        }
    }

    /// A microphone to mix: `tap` names its packets, `publisher` whose voice it is.
    pub fn add_input(&mut self, tap: u64, publisher: u64) -> Result<(), codecs::Error> {
        let decoder = OpusDecoder::new(Channels::Mono)?;
        self.inputs.insert(
            tap,
            Input {
                publisher,
                seq: SeqUnwrapper::new(),
                next: None,
                decoder,
                frames: VecDeque::with_capacity(MAX_DEPTH + 1),
                playing: false,
                concealed: 0,
            },
        );
        Ok(())
    }

    /// An input that ended (it fades out of the mix, see `mix`).
    pub fn remove_input(&mut self, tap: u64) {
        self.inputs.remove(&tap);
    }

    /// Someone to send the mix to (without its own voice: `key` is its publisher key).
    pub fn add_listener(&mut self, key: u64) -> Result<(), codecs::Error> {
        let mut encoder = OpusEncoder::new(Channels::Mono, Application::Voip)?;
        encoder.set_bitrate(MIX_BITRATE)?;
        self.listeners.insert(
            key,
            Listener {
                encoder,
                seq: rand::random(),
                timestamp: rand::random(),
            },
        );
        Ok(())
    }

    pub fn remove_listener(&mut self, key: u64) {
        self.listeners.remove(&key);
    }

    pub fn listeners(&self) -> usize {
        self.listeners.len()
    }

    pub fn inputs(&self) -> usize {
        self.inputs.len()
    }

    /// One packet of input `tap`: decoded into its jitter buffer (a gap before it concealed).
    pub fn handle_packet(&mut self, tap: u64, p: &TapPacket) {
        let Some(input) = self.inputs.get_mut(&tap) else {
            return;
        };
        let ext = input.seq.unwrap(p.seq);
        let next = *input.next.get_or_insert(ext);
        if ext < next {
            self.stats.late += 1;
            return;
        }
        let mut frame = [0i16; FRAME];
        for _ in 0..(ext - next).min(MAX_GAP_FILL) {
            if input.decoder.conceal(&mut frame).is_ok() {
                self.stats.concealed += 1;
                push_frame(input, frame, &mut self.stats);
            }
        }
        input.next = Some(ext + 1);
        match input.decoder.decode(&p.payload, &mut frame) {
            Ok(n) if n == FRAME => {
                self.stats.decoded += 1;
                push_frame(input, frame, &mut self.stats);
            }
            // Not a 20 ms frame (or not Opus): this mixer runs on 20 ms frames only.
            _ => self.stats.undecodable += 1,
        }
    }

    /// One tick: a frame of every input (or its concealment), mixed, and one packet per
    /// listener appended to `out`.
    pub fn tick(&mut self, out: &mut Vec<MixedPacket>) {
        for sum in self.sums.values_mut() {
            sum.fill(0);
        }
        let mut heard = Vec::new();
        for input in self.inputs.values_mut() {
            let frame = if !input.playing {
                if input.frames.len() >= START_DEPTH {
                    input.playing = true;
                    input.concealed = 0;
                    input.frames.pop_front()
                } else {
                    None
                }
            } else if let Some(f) = input.frames.pop_front() {
                input.concealed = 0;
                Some(f)
            } else if input.concealed < CONCEAL_TICKS {
                input.concealed += 1;
                let mut f = [0i16; FRAME];
                input.decoder.conceal(&mut f).ok().map(|_| {
                    self.stats.concealed += 1;
                    f
                })
            } else {
                input.playing = false; // stalled: rebuffer
                None
            };
            let Some(frame) = frame else {
                continue;
            };
            let sum = self
                .sums
                .entry(input.publisher)
                .or_insert_with(|| [0; FRAME]);
            for (s, &x) in sum.iter_mut().zip(frame.iter()) {
                *s += i32::from(x);
            }
            heard.push(input.publisher);
        }
        heard.sort_unstable();
        heard.dedup();
        for publisher in &heard {
            if let Some(sum) = self.sums.get(publisher) {
                for (o, &s) in self.pcm.iter_mut().zip(sum.iter()) {
                    *o = s.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16;
                }
                self.mixer.push(*publisher, &self.pcm);
            }
        }
        let mix = self.mixer.mix();
        for (&key, listener) in self.listeners.iter_mut() {
            let pcm = mix.for_listener(key);
            let (seq, timestamp) = (listener.seq, listener.timestamp);
            listener.seq = seq.wrapping_add(1);
            listener.timestamp = timestamp.wrapping_add(FRAME as u32);
            if let Ok(payload) = listener.encoder.encode(pcm) {
                self.stats.encoded += 1;
                out.push(MixedPacket {
                    listener: key,
                    seq,
                    timestamp,
                    payload: Bytes::from(payload),
                });
            }
        }
    }
}

fn push_frame(input: &mut Input, frame: [i16; FRAME], stats: &mut MixStats) {
    input.frames.push_back(frame);
    while input.frames.len() > MAX_DEPTH {
        input.frames.pop_front();
        stats.dropped_overflow += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcu::mix::share_at;

    /// A tone's 20 ms frames, Opus-encoded, as an input's packets.
    struct Tone {
        encoder: OpusEncoder,
        hz: f64,
        n: usize,
        seq: u16,
    }

    impl Tone {
        fn new(hz: f64) -> Tone {
            Tone {
                encoder: OpusEncoder::new(Channels::Mono, Application::Audio).unwrap(),
                hz,
                n: 0,
                seq: rand::random(),
            }
        }

        fn next(&mut self) -> TapPacket {
            let pcm: Vec<i16> = (0..FRAME)
                .map(|i| {
                    let t = (self.n + i) as f64 / 48_000.0;
                    (6000.0 * (2.0 * std::f64::consts::PI * self.hz * t).sin()) as i16
                })
                .collect();
            self.n += FRAME;
            let payload = Bytes::from(self.encoder.encode(&pcm).unwrap());
            let p = TapPacket {
                tap: 0,
                at: std::time::Instant::now(),
                seq: self.seq,
                timestamp: self.n as u32,
                marker: false,
                payload,
            };
            self.seq = self.seq.wrapping_add(1);
            p
        }
    }

    /// Runs `ticks` ticks with one packet of each tone per tick; the decoded mix of each
    /// listener, after the first 200 ms.
    fn run(mix: &mut AudioMix, tones: &mut [(u64, Tone)], ticks: usize) -> HashMap<u64, Vec<i16>> {
        let mut decoders: HashMap<u64, OpusDecoder> = HashMap::new();
        let mut heard: HashMap<u64, Vec<i16>> = HashMap::new();
        let mut out = Vec::new();
        for t in 0..ticks {
            for (tap, tone) in tones.iter_mut() {
                let p = tone.next();
                mix.handle_packet(*tap, &p);
            }
            out.clear();
            mix.tick(&mut out);
            for p in &out {
                let d = decoders
                    .entry(p.listener)
                    .or_insert_with(|| OpusDecoder::new(Channels::Mono).unwrap());
                let mut pcm = [0i16; FRAME];
                d.decode(&p.payload, &mut pcm).unwrap();
                if t >= 10 {
                    heard.entry(p.listener).or_default().extend_from_slice(&pcm);
                }
            }
        }
        heard
    }

    #[test]
    fn each_listener_hears_the_others_and_not_itself() {
        let mut mix = AudioMix::new();
        // Publishers 1, 2, 3 (taps 11, 12, 13) at 440, 660 and 1000 Hz; 1 and 2 listen, and 9,
        // who publishes nothing.
        let mut tones = vec![
            (11, Tone::new(440.0)),
            (12, Tone::new(660.0)),
            (13, Tone::new(1000.0)),
        ];
        for (tap, publisher) in [(11, 1), (12, 2), (13, 3)] {
            mix.add_input(tap, publisher).unwrap();
        }
        for key in [1, 2, 9] {
            mix.add_listener(key).unwrap();
        }
        let heard = run(&mut mix, &mut tones, 60);
        let at = |key: u64, hz: f64| share_at(&heard[&key], hz);
        // Listener 1: 660 and 1000 Hz, not its own 440.
        assert!(
            at(1, 660.0) > 0.2 && at(1, 1000.0) > 0.2,
            "{} {}",
            at(1, 660.0),
            at(1, 1000.0)
        );
        assert!(at(1, 440.0) < 0.01, "own voice: {}", at(1, 440.0));
        assert!(at(2, 440.0) > 0.2 && at(2, 1000.0) > 0.2);
        assert!(at(2, 660.0) < 0.01, "own voice: {}", at(2, 660.0));
        // The receive-only listener hears all three.
        for hz in [440.0, 660.0, 1000.0] {
            assert!(at(9, hz) > 0.15, "{hz} Hz: {}", at(9, hz));
        }
        assert_eq!(mix.stats.undecodable, 0);
    }

    #[test]
    fn a_stalled_input_is_concealed_then_drops_out_and_a_lost_packet_is_concealed() {
        let mut mix = AudioMix::new();
        mix.add_input(11, 1).unwrap();
        mix.add_listener(9).unwrap();
        let mut tone = Tone::new(440.0);
        let mut out = Vec::new();
        for _ in 0..10 {
            mix.handle_packet(11, &tone.next());
            mix.tick(&mut out);
        }
        // One packet lost: concealed in its place when the next arrives.
        let before = mix.stats.concealed;
        tone.next();
        mix.handle_packet(11, &tone.next());
        assert_eq!(mix.stats.concealed, before + 1);
        // The input stops: concealed for CONCEAL_TICKS ticks, then it stops playing.
        for _ in 0..20 {
            mix.tick(&mut out);
        }
        assert!(mix.stats.concealed <= before + 1 + u64::from(CONCEAL_TICKS) + 2);
        assert!(!mix.inputs[&11].playing);
        // Every tick still sent the listener a packet (silence is encoded too).
        assert_eq!(out.len(), 10 + 20);
        let seqs: Vec<u16> = out.iter().map(|p| p.seq).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)));
    }

    #[test]
    fn late_packets_are_dropped_and_a_burst_is_trimmed() {
        let mut mix = AudioMix::new();
        mix.add_input(11, 1).unwrap();
        let mut tone = Tone::new(440.0);
        let packets: Vec<TapPacket> = (0..12).map(|_| tone.next()).collect();
        for p in &packets[1..] {
            mix.handle_packet(11, p);
        }
        mix.handle_packet(11, &packets[0]);
        assert_eq!(mix.stats.late, 1);
        assert_eq!(mix.inputs[&11].frames.len(), MAX_DEPTH);
        assert_eq!(mix.stats.dropped_overflow, 11 - MAX_DEPTH as u64);
    }
}
