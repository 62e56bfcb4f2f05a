//! Opus at 48 kHz in 20 ms frames: thin wrappers over the `opus` crate.
//!
//! The `opus` crate already wraps libopus safely (and its states are `Send`), so this file holds
//! no `unsafe`; what it adds is the MCU's framing (one 20 ms frame per call, checked lengths) and
//! packet loss concealment as its own call.

use crate::{Error, Result};

/// The only sample rate the MCU uses (Opus' native rate; WebRTC's Opus is always 48 kHz).
pub const SAMPLE_RATE: u32 = 48_000;

/// Samples per channel in one 20 ms frame at 48 kHz.
pub const FRAME_SAMPLES: usize = 960;

/// A buffer this large holds any encoded frame (libopus' own recommendation for
/// `opus_encode`'s output).
pub const MAX_PACKET: usize = 4000;

/// Samples per channel in the longest Opus packet (120 ms): a decode buffer of
/// `MAX_DECODED * channels` holds whatever a peer sends.
const MAX_DECODED: usize = 5760;

/// Mono or stereo; samples are interleaved (L R L R ...) in stereo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channels {
    /// One channel.
    Mono,
    /// Two channels, interleaved.
    Stereo,
}

impl Channels {
    /// 1 or 2.
    pub fn count(self) -> usize {
        match self {
            Channels::Mono => 1,
            Channels::Stereo => 2,
        }
    }

    fn to_opus(self) -> ::opus::Channels {
        match self {
            Channels::Mono => ::opus::Channels::Mono,
            Channels::Stereo => ::opus::Channels::Stereo,
        }
    }
}

/// What the encoder tunes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Application {
    /// Speech: intelligibility first (what a call's mixed audio wants).
    Voip,
    /// Music and general audio: fidelity first.
    Audio,
}

/// An Opus encoder at 48 kHz taking one 20 ms frame per call.
#[derive(Debug)]
pub struct OpusEncoder {
    inner: ::opus::Encoder,
    channels: Channels,
}

impl OpusEncoder {
    /// A 48 kHz encoder; libopus picks the bitrate until [`OpusEncoder::set_bitrate`] is called.
    pub fn new(channels: Channels, application: Application) -> Result<Self> {
        let application = match application {
            Application::Voip => ::opus::Application::Voip,
            Application::Audio => ::opus::Application::Audio,
        };
        let inner = ::opus::Encoder::new(SAMPLE_RATE, channels.to_opus(), application)?;
        Ok(Self { inner, channels })
    }

    /// Sets the target bitrate in bits per second (libopus accepts 500 to 512,000).
    pub fn set_bitrate(&mut self, bits_per_second: u32) -> Result<()> {
        let bits = i32::try_from(bits_per_second)
            .map_err(|_| Error::InvalidArgument(format!("bitrate {bits_per_second} too large")))?;
        self.inner.set_bitrate(::opus::Bitrate::Bits(bits))?;
        Ok(())
    }

    /// Encodes one 20 ms frame (`FRAME_SAMPLES * channels` interleaved samples) into a new packet.
    pub fn encode(&mut self, pcm: &[i16]) -> Result<Vec<u8>> {
        let mut packet = [0u8; MAX_PACKET];
        let len = self.encode_into(pcm, &mut packet)?;
        Ok(packet[..len].to_vec())
    }

    /// Encodes one 20 ms frame into `out` and returns the packet's length; `out` of
    /// [`MAX_PACKET`] bytes is always large enough. No allocation.
    pub fn encode_into(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize> {
        let expected = FRAME_SAMPLES * self.channels.count();
        if pcm.len() != expected {
            return Err(Error::InvalidArgument(format!(
                "an Opus frame is {expected} samples here, got {}",
                pcm.len()
            )));
        }
        Ok(self.inner.encode(pcm, out)?)
    }

    /// The channel layout this encoder was made for.
    pub fn channels(&self) -> Channels {
        self.channels
    }
}

/// An Opus decoder at 48 kHz.
#[derive(Debug)]
pub struct OpusDecoder {
    inner: ::opus::Decoder,
    channels: Channels,
}

impl OpusDecoder {
    /// A 48 kHz decoder producing `channels` (libopus mixes or splits whatever the packets carry).
    pub fn new(channels: Channels) -> Result<Self> {
        let inner = ::opus::Decoder::new(SAMPLE_RATE, channels.to_opus())?;
        Ok(Self { inner, channels })
    }

    /// Decodes one packet into `out` (interleaved) and returns the samples per channel written.
    ///
    /// `out` must hold the packet's duration: `FRAME_SAMPLES * channels` for the 20 ms packets
    /// browsers send, `5760 * channels` for any packet. An empty packet is a lost one: it is
    /// concealed like [`OpusDecoder::conceal`] (one 20 ms frame), not passed to libopus with the
    /// whole buffer as its length.
    pub fn decode(&mut self, packet: &[u8], out: &mut [i16]) -> Result<usize> {
        if packet.is_empty() {
            return self.conceal(out);
        }
        let max = MAX_DECODED * self.channels.count();
        let out = if out.len() > max {
            &mut out[..max]
        } else {
            out
        };
        Ok(self.inner.decode(packet, out, false)?)
    }

    /// Packet loss concealment: writes one 20 ms frame (`FRAME_SAMPLES * channels` samples at the
    /// start of `out`) that continues the signal from the decoder's state, and returns
    /// `FRAME_SAMPLES`.
    pub fn conceal(&mut self, out: &mut [i16]) -> Result<usize> {
        let frame = FRAME_SAMPLES * self.channels.count();
        let len = out.len();
        let Some(out) = out.get_mut(..frame) else {
            return Err(Error::InvalidArgument(format!(
                "concealment needs {frame} samples of room, got {len}"
            )));
        };
        // An empty packet is libopus' "this one was lost"; the frame size is `out`'s length.
        Ok(self.inner.decode(&[], out, false)?)
    }

    /// The channel layout this decoder produces.
    pub fn channels(&self) -> Channels {
        self.channels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(frequency: f64, amplitude: f64, frames: usize) -> Vec<i16> {
        (0..frames * FRAME_SAMPLES)
            .map(|n| {
                let t = n as f64 / f64::from(SAMPLE_RATE);
                (amplitude * (2.0 * std::f64::consts::PI * frequency * t).sin()) as i16
            })
            .collect()
    }

    /// Share of `x`'s energy at `frequency` (one DFT bin; exact when `x` spans whole cycles).
    fn energy_share_at(x: &[i16], frequency: f64) -> f64 {
        let (mut re, mut im, mut total) = (0.0, 0.0, 0.0);
        for (n, &s) in x.iter().enumerate() {
            let s = f64::from(s);
            let phase = 2.0 * std::f64::consts::PI * frequency * n as f64 / f64::from(SAMPLE_RATE);
            re += s * phase.cos();
            im += s * phase.sin();
            total += s * s;
        }
        2.0 * (re * re + im * im) / (x.len() as f64 * total)
    }

    #[test]
    fn sine_440_survives_encode_and_decode() {
        let mut encoder = OpusEncoder::new(Channels::Mono, Application::Voip).unwrap();
        encoder.set_bitrate(32_000).unwrap();
        let mut decoder = OpusDecoder::new(Channels::Mono).unwrap();
        let input = sine(440.0, 10_000.0, 50);
        let mut decoded = Vec::new();
        for frame in input.chunks(FRAME_SAMPLES) {
            let packet = encoder.encode(frame).unwrap();
            assert!(!packet.is_empty() && packet.len() <= MAX_PACKET);
            let mut out = [0i16; FRAME_SAMPLES];
            assert_eq!(decoder.decode(&packet, &mut out).unwrap(), FRAME_SAMPLES);
            decoded.extend_from_slice(&out);
        }
        // Skip the codec's start-up; 40 frames = 0.8 s = exactly 352 cycles of 440 Hz.
        let steady = &decoded[5 * FRAME_SAMPLES..45 * FRAME_SAMPLES];
        let at_440 = energy_share_at(steady, 440.0);
        assert!(at_440 > 0.9, "share of energy at 440 Hz: {at_440}");
        for other in [220.0, 880.0, 1000.0, 2000.0, 5000.0] {
            let share = energy_share_at(steady, other);
            assert!(share < 0.01, "share at {other} Hz: {share}");
        }
    }

    #[test]
    fn conceal_yields_one_frame_that_continues_the_signal() {
        let mut encoder = OpusEncoder::new(Channels::Mono, Application::Voip).unwrap();
        let mut decoder = OpusDecoder::new(Channels::Mono).unwrap();
        let mut out = [0i16; FRAME_SAMPLES];
        for frame in sine(440.0, 10_000.0, 10).chunks(FRAME_SAMPLES) {
            let packet = encoder.encode(frame).unwrap();
            decoder.decode(&packet, &mut out).unwrap();
        }
        let mut concealed = [0i16; FRAME_SAMPLES + 7];
        assert_eq!(decoder.conceal(&mut concealed).unwrap(), FRAME_SAMPLES);
        // libopus extrapolates the sine rather than going silent.
        assert!(concealed[..FRAME_SAMPLES]
            .iter()
            .any(|&s| s.unsigned_abs() > 1000));
        assert!(
            concealed[FRAME_SAMPLES..].iter().all(|&s| s == 0),
            "wrote past the frame"
        );
        // An empty packet is the same call.
        assert_eq!(decoder.decode(&[], &mut out).unwrap(), FRAME_SAMPLES);
    }

    #[test]
    fn stereo_frames_are_interleaved_and_twice_as_long() {
        let mut encoder = OpusEncoder::new(Channels::Stereo, Application::Audio).unwrap();
        let mut decoder = OpusDecoder::new(Channels::Stereo).unwrap();
        let pcm = vec![0i16; 2 * FRAME_SAMPLES];
        let mut packet = [0u8; MAX_PACKET];
        let len = encoder.encode_into(&pcm, &mut packet).unwrap();
        let mut out = vec![0i16; 2 * FRAME_SAMPLES];
        assert_eq!(
            decoder.decode(&packet[..len], &mut out).unwrap(),
            FRAME_SAMPLES
        );
        let mut short = vec![0i16; 2 * FRAME_SAMPLES - 1];
        assert!(matches!(
            decoder.conceal(&mut short),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn wrong_frame_length_and_garbage_are_errors_not_panics() {
        let mut encoder = OpusEncoder::new(Channels::Mono, Application::Voip).unwrap();
        assert!(matches!(
            encoder.encode(&[0; 480]),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            encoder.set_bitrate(u32::MAX),
            Err(Error::InvalidArgument(_))
        ));
        let mut decoder = OpusDecoder::new(Channels::Mono).unwrap();
        let mut out = [0i16; FRAME_SAMPLES];
        // A code-3 packet header claiming more frames than it has bytes for.
        assert!(matches!(
            decoder.decode(&[0xff, 0xff], &mut out),
            Err(Error::Opus(_))
        ));
    }

    #[test]
    fn codecs_are_send() {
        fn is_send<T: Send>() {}
        is_send::<OpusEncoder>();
        is_send::<OpusDecoder>();
    }
}
