//! The audio mixer: one tick (20 ms of 48 kHz mono) at a time, the full mix for listeners who
//! publish nothing and, for every input, the mix minus that input (nobody hears themselves).
//!
//! Owns the inputs' frames for the current tick and the output buffers; decoding before and
//! encoding after are the caller's. Pure: told when a tick ends (`mix`), never reads a clock.
//! After warm-up a tick allocates nothing: buffers belong to inputs and are reused, and a removed
//! input's buffers wait in a pool for the next one.
//!
//! Behaviour a listener can hear, pinned by the tests:
//! - Sums are exact in i32 and clipped (saturated) to i16 at the end, no limiter: a limiter would
//!   change every sample of every output and need state per output, and WebRTC's own
//!   microphone processing already keeps levels below clipping. Each mix-minus is computed
//!   from the exact sum, so the full mix clipping does not leak into anyone's mix-minus.
//! - An input that gave no frame in a tick is silent in it. A click is a step in the waveform:
//!   an input that stops mid-word would jump from its last sample to zero at the tick boundary.
//!   Instead its contribution to the next tick holds its last sample and ramps it linearly to
//!   zero over [`FADE`] samples (5 ms; at most 137 per sample even from full scale), then it is
//!   silent. The same happens when the caller [`Mixer::remove`]s an input mid-stream.
//! - Onsets are not ramped: a decoder's first output already starts from silence (Opus fades
//!   in itself), and a ramp would clip the start of speech.
//! - After `gone_after` ticks in a row without a frame an input is gone, as if removed; a
//!   listener with no input hears the full mix, which is what its mix-minus would be anyway.

/// Samples in one tick: 20 ms at 48 kHz, mono.
pub const FRAME: usize = 960;

/// Length of the fade-out of an input that stops: 5 ms.
pub const FADE: usize = 240;

/// Ticks without a frame after which an input is gone, by default: one second.
pub const DEFAULT_GONE_AFTER: u32 = 50;

/// The energy of `pcm` (48 kHz mono) at `hz` (one DFT bin), as a share of its total energy:
/// how much of one tone a listener hears. What the tests of a mix (here and end to end) measure.
pub fn share_at(pcm: &[i16], hz: f64) -> f64 {
    let (mut re, mut im) = (0.0, 0.0);
    for (i, &x) in pcm.iter().enumerate() {
        let w = 2.0 * std::f64::consts::PI * hz * i as f64 / 48_000.0;
        re += f64::from(x) * w.cos();
        im += f64::from(x) * w.sin();
    }
    let total: f64 = pcm.iter().map(|&x| f64::from(x).powi(2)).sum();
    if total == 0.0 {
        return 0.0;
    }
    2.0 * (re * re + im * im) / pcm.len() as f64 / total
}

/// Mixes inputs keyed by `Id` (a track or a participant), one tick at a time.
#[derive(Debug)]
pub struct Mixer<Id> {
    inputs: Vec<Input<Id>>,
    /// Buffers of removed inputs, reused by the next new one.
    spare: Vec<Input<Id>>,
    sum: Box<[i32; FRAME]>,
    full: Box<[i16; FRAME]>,
    gone_after: u32,
}

#[derive(Debug)]
struct Input<Id> {
    id: Id,
    /// This tick's contribution: the pushed frame, a fade-out, or (if `!audible`) nothing.
    frame: Box<[i16; FRAME]>,
    /// This tick's mix minus this input.
    minus: Box<[i16; FRAME]>,
    pushed: bool,
    audible: bool,
    /// The last sample this input contributed to the previous tick, where a fade-out starts.
    last_sample: i16,
    /// Ticks in a row without a frame.
    missed: u32,
    /// Removed by the caller: fades out in the next tick, then goes to the pool unlisted.
    removed: bool,
    /// `missed` reached `gone_after` in the last tick: goes to the pool at the next.
    gone: bool,
}

impl<Id: Copy + Eq> Mixer<Id> {
    /// A mixer whose inputs are gone after `gone_after_ticks` ticks in a row without a frame
    /// (at least 1).
    pub fn new(gone_after_ticks: u32) -> Self {
        Self {
            inputs: Vec::new(),
            spare: Vec::new(),
            sum: Box::new([0; FRAME]),
            full: Box::new([0; FRAME]),
            gone_after: gone_after_ticks.max(1),
        }
    }

    /// Gives `id`'s frame for the current tick, adding the input if it is new (or was removed
    /// this tick). A second push in the same tick replaces the first.
    pub fn push(&mut self, id: Id, frame: &[i16; FRAME]) {
        let input = match self.inputs.iter().position(|i| i.id == id) {
            Some(index) => &mut self.inputs[index],
            None => {
                let mut input = self.spare.pop().unwrap_or_else(|| Input::new(id));
                input.id = id;
                input.last_sample = 0;
                self.inputs.push(input);
                self.inputs.last_mut().expect("just pushed")
            }
        };
        input.frame.copy_from_slice(frame);
        input.pushed = true;
        input.removed = false;
        input.gone = false;
        input.missed = 0;
    }

    /// Removes `id`: whatever it pushed this tick is dropped, and its sound fades out over the
    /// next tick (see the module doc). Unknown ids are ignored.
    pub fn remove(&mut self, id: Id) {
        if let Some(input) = self.inputs.iter_mut().find(|i| i.id == id) {
            input.pushed = false;
            input.removed = true;
        }
    }

    /// Whether `id` is an input (pushed recently, not removed, not gone).
    pub fn contains(&self, id: Id) -> bool {
        self.inputs.iter().any(|i| i.id == id && i.is_live())
    }

    /// How many inputs there are.
    pub fn len(&self) -> usize {
        self.inputs.iter().filter(|i| i.is_live()).count()
    }

    /// Whether there are no inputs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ends the tick: mixes what was pushed, and starts the next tick with no frames.
    pub fn mix(&mut self) -> Mix<'_, Id> {
        // Gone at the end of the last tick, and not pushed since: silent by now.
        self.retire(|input| input.gone);
        self.sum.fill(0);
        for input in &mut self.inputs {
            input.prepare();
            if input.audible {
                for (sum, &sample) in self.sum.iter_mut().zip(input.frame.iter()) {
                    *sum += i32::from(sample);
                }
            }
        }
        for (out, &sum) in self.full.iter_mut().zip(self.sum.iter()) {
            *out = saturate(sum);
        }
        for input in self.inputs.iter_mut().filter(|i| !i.removed) {
            if input.audible {
                let own = input.frame.iter().zip(self.sum.iter());
                for (out, (&sample, &sum)) in input.minus.iter_mut().zip(own) {
                    *out = saturate(sum - i32::from(sample));
                }
            } else {
                input.minus.copy_from_slice(&self.full[..]);
            }
            if !input.pushed {
                input.missed += 1;
            }
            input.pushed = false;
            // Still listed in this tick (its mix-minus is exact), retired at the next.
            input.gone = input.missed >= self.gone_after;
        }
        // Removed inputs have faded out in this tick's sums; nobody listens on them.
        self.retire(|input| input.removed);
        Mix {
            full: &self.full,
            inputs: &self.inputs,
        }
    }

    /// Moves the inputs `done` picks to the pool, keeping the others' order.
    fn retire(&mut self, done: impl Fn(&Input<Id>) -> bool) {
        self.spare
            .extend(self.inputs.extract_if(.., |input| done(input)));
    }
}

impl<Id: Copy + Eq> Default for Mixer<Id> {
    fn default() -> Self {
        Self::new(DEFAULT_GONE_AFTER)
    }
}

impl<Id> Input<Id> {
    fn new(id: Id) -> Self {
        Self {
            id,
            frame: Box::new([0; FRAME]),
            minus: Box::new([0; FRAME]),
            pushed: false,
            audible: false,
            last_sample: 0,
            missed: 0,
            removed: false,
            gone: false,
        }
    }

    fn is_live(&self) -> bool {
        !self.removed && !self.gone
    }

    /// Settles this tick's contribution: the pushed frame, or a fade-out from the last sample.
    fn prepare(&mut self) {
        if !self.pushed {
            self.audible = self.last_sample != 0;
            if self.audible {
                let start = i32::from(self.last_sample);
                let fade = FADE as i32;
                for (n, sample) in self.frame.iter_mut().enumerate() {
                    let left = (fade - n as i32).max(0);
                    *sample = (start * left / fade) as i16;
                }
            }
        } else {
            self.audible = true;
        }
        self.last_sample = if self.audible {
            self.frame[FRAME - 1]
        } else {
            0
        };
    }
}

/// One tick's output, borrowed from the mixer until the next call.
#[derive(Debug, Clone, Copy)]
pub struct Mix<'a, Id> {
    full: &'a [i16; FRAME],
    inputs: &'a [Input<Id>],
}

impl<'a, Id: Copy + Eq> Mix<'a, Id> {
    /// Everyone: for a listener who publishes no audio.
    pub fn full(&self) -> &'a [i16; FRAME] {
        self.full
    }

    /// Everyone but `id`, if `id` is an input.
    pub fn minus(&self, id: Id) -> Option<&'a [i16; FRAME]> {
        self.inputs.iter().find(|i| i.id == id).map(|i| &*i.minus)
    }

    /// What the listener `id` hears: its mix-minus if it is an input, else the full mix.
    pub fn for_listener(&self, id: Id) -> &'a [i16; FRAME] {
        self.minus(id).unwrap_or(self.full)
    }

    /// Every input's id with its mix-minus.
    pub fn iter(&self) -> impl Iterator<Item = (Id, &'a [i16; FRAME])> + 'a {
        self.inputs.iter().map(|i| (i.id, &*i.minus))
    }
}

fn saturate(sum: i32) -> i16 {
    sum.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: u32 = 1;
    const B: u32 = 2;
    const C: u32 = 3;

    fn constant(value: i16) -> [i16; FRAME] {
        [value; FRAME]
    }

    /// Pushes a constant frame for each `(id, value)`.
    fn push(mixer: &mut Mixer<u32>, frames: &[(u32, i16)]) {
        for &(id, value) in frames {
            mixer.push(id, &constant(value));
        }
    }

    fn assert_constant(frame: &[i16; FRAME], value: i16, what: &str) {
        let head = &frame[..4];
        assert!(frame.iter().all(|&s| s == value), "{what}: {head:?}");
    }

    /// Checks `frame` is the fade-out of `from`: starts there, moves towards zero by at most
    /// one step per sample, reaches zero within `FADE` and stays there.
    fn assert_fades_out(frame: &[i16; FRAME], from: i16) {
        assert_eq!(frame[0], from);
        let step = i32::from(from).abs() / FADE as i32 + 1;
        for pair in frame.windows(2) {
            let (a, b) = (i32::from(pair[0]), i32::from(pair[1]));
            assert!(b.abs() <= a.abs() && (a - b).abs() <= step, "{a} -> {b}");
        }
        assert!(frame[FADE..].iter().all(|&s| s == 0));
    }

    #[test]
    fn two_inputs_sum() {
        let mut mixer = Mixer::default();
        let ramp: [i16; FRAME] = std::array::from_fn(|n| n as i16 - 480);
        push(&mut mixer, &[(A, 1000)]);
        mixer.push(B, &ramp);
        for (n, &s) in mixer.mix().full().iter().enumerate() {
            assert_eq!(i32::from(s), 1000 + n as i32 - 480);
        }
    }

    #[test]
    fn sums_clip_at_i16_limits_and_mix_minus_uses_the_exact_sum() {
        let mut mixer = Mixer::default();
        push(&mut mixer, &[(A, 30_000), (B, 30_000)]);
        assert_constant(mixer.mix().full(), i16::MAX, "positive");
        push(&mut mixer, &[(A, -30_000), (B, -30_000)]);
        assert_constant(mixer.mix().full(), i16::MIN, "negative");
        push(&mut mixer, &[(A, 30_000), (B, 30_000), (C, -30_000)]);
        let mix = mixer.mix();
        assert_constant(mix.full(), 30_000, "full");
        assert_constant(mix.minus(C).unwrap(), i16::MAX, "minus C clips");
        assert_constant(mix.minus(A).unwrap(), 0, "minus A");
    }

    #[test]
    fn mix_minus_leaves_out_exactly_the_listener() {
        let mut mixer = Mixer::default();
        push(&mut mixer, &[(A, 100), (B, 20), (C, 3)]);
        let mix = mixer.mix();
        assert_constant(mix.minus(A).unwrap(), 23, "A hears B + C");
        assert_constant(mix.minus(B).unwrap(), 103, "B hears A + C");
        assert_constant(mix.minus(C).unwrap(), 120, "C hears A + B");
        assert_constant(mix.full(), 123, "full");
        let ids: Vec<u32> = mix.iter().map(|(id, _)| id).collect();
        assert_eq!(ids, [A, B, C]);
    }

    #[test]
    fn receive_only_listener_hears_everyone() {
        let mut mixer = Mixer::default();
        push(&mut mixer, &[(A, 100), (B, 20)]);
        let mix = mixer.mix();
        assert!(mix.minus(99).is_none());
        assert_constant(mix.for_listener(99), 120, "listener 99");
        assert_constant(mix.for_listener(A), 20, "listener A");
    }

    #[test]
    fn an_input_without_a_frame_is_silent_for_the_tick() {
        let mut mixer = Mixer::default();
        // B's frame ends at zero, so there is nothing to fade.
        let mut ends_silent = constant(500);
        ends_silent[FRAME - 1] = 0;
        push(&mut mixer, &[(A, 7)]);
        mixer.push(B, &ends_silent);
        mixer.mix();
        push(&mut mixer, &[(A, 7)]);
        let mix = mixer.mix();
        assert_constant(mix.full(), 7, "full");
        assert_constant(mix.minus(B).unwrap(), 7, "B still listens");
        assert_constant(mix.minus(A).unwrap(), 0, "A hears silence");
        // A second push in a tick replaces the first.
        push(&mut mixer, &[(A, 7), (A, 9)]);
        assert_constant(mixer.mix().full(), 9, "replaced");
    }

    #[test]
    fn an_input_that_stops_fades_out_instead_of_clicking() {
        let mut mixer = Mixer::default();
        for _ in 0..2 {
            push(&mut mixer, &[(A, 10_000), (B, 0)]);
            mixer.mix();
        }
        push(&mut mixer, &[(B, 0)]);
        let mix = mixer.mix();
        assert_fades_out(mix.full(), 10_000);
        assert_fades_out(mix.minus(B).unwrap(), 10_000);
        assert_constant(mix.minus(A).unwrap(), 0, "A never hears itself");
        assert!(mixer.contains(A), "a missed tick is not gone");
        push(&mut mixer, &[(B, 0)]);
        assert_constant(mixer.mix().full(), 0, "after the fade");
        // Negative samples fade towards zero too.
        push(&mut mixer, &[(A, i16::MIN)]);
        mixer.mix();
        assert_fades_out(mixer.mix().full(), i16::MIN);
    }

    #[test]
    fn a_removed_input_fades_out_and_is_no_longer_listed() {
        let mut mixer = Mixer::default();
        push(&mut mixer, &[(A, -8_000), (B, 0)]);
        mixer.mix();
        push(&mut mixer, &[(A, 5), (B, 0)]);
        mixer.remove(A);
        mixer.remove(99);
        assert!(!mixer.contains(A));
        let mix = mixer.mix();
        // From A's last mixed sample: the frame it pushed before `remove` is dropped.
        assert_fades_out(mix.full(), -8_000);
        assert_fades_out(mix.minus(B).unwrap(), -8_000);
        assert!(mix.minus(A).is_none());
        assert_eq!(mixer.len(), 1);
        // Coming back is a new input, from its new frame on.
        push(&mut mixer, &[(A, 42), (B, 0)]);
        let mix = mixer.mix();
        assert_constant(mix.full(), 42, "rejoined");
        assert_constant(mix.minus(A).unwrap(), 0, "rejoined A");
    }

    #[test]
    fn an_input_silent_for_gone_after_ticks_is_gone() {
        let mut mixer = Mixer::new(3);
        push(&mut mixer, &[(A, 0), (B, 1)]);
        mixer.mix();
        for tick in 1..=3 {
            push(&mut mixer, &[(B, 1)]);
            assert!(mixer.mix().minus(A).is_some(), "tick {tick}: still listed");
            assert_eq!(mixer.contains(A), tick < 3, "tick {tick}");
        }
        push(&mut mixer, &[(B, 1)]);
        let mix = mixer.mix();
        assert!(mix.minus(A).is_none());
        assert_constant(mix.for_listener(A), 1, "a gone input hears the full mix");
        assert_eq!((mixer.len(), mixer.is_empty()), (1, false));
        // Its buffers are reused by the next input, which starts from its own frame.
        assert_eq!(mixer.spare.len(), 1);
        push(&mut mixer, &[(C, 2), (B, 1)]);
        assert_eq!(mixer.spare.len(), 0);
        let mix = mixer.mix();
        assert_constant(mix.full(), 3, "B and C");
        assert_constant(mix.minus(C).unwrap(), 1, "C hears B");
    }
}
