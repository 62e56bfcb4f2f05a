//! Who is speaking: the audio level each publisher's client writes into its packets (RFC 6464,
//! `ssrc-audio-level`, -dBov: 0 is loudest, 127 silence), smoothed per track, and a room's
//! *active speaker* picked from those levels with hysteresis.
//!
//! The active speaker's video gets bandwidth before other cameras (after screen shares), and
//! clients are told who it is. The last speaker stays active through silence, as in most
//! conferencing products, until someone else speaks clearly louder.

use std::time::{Duration, Instant};

/// A smoothed level of at least this (127 − dBov) counts as speech: about −60 dBov.
pub const SPEAKING: f32 = 67.0;
/// A new speaker must be this much louder (dB) than an active speaker who is still speaking.
pub const MARGIN: f32 = 6.0;
/// A meter with no packet for this long reads silent (muted, left, or Opus DTX).
const STALE: Duration = Duration::from_millis(500);
/// Weight of each new packet (50 packets/s: a time constant of about 100 ms).
const ALPHA: f32 = 0.2;

#[derive(Debug, Clone, Default)]
pub struct LevelMeter {
    loudness: f32,
    last: Option<Instant>,
}

impl LevelMeter {
    /// Feeds one packet's level (-dBov, 0–127; larger values read as silence).
    pub fn observe(&mut self, now: Instant, dbov: u8) {
        let loud = 127.0 - f32::from(dbov.min(127));
        if self
            .last
            .is_none_or(|t| now.saturating_duration_since(t) >= STALE)
        {
            self.loudness = loud;
        } else {
            self.loudness += ALPHA * (loud - self.loudness);
        }
        self.last = Some(now);
    }

    /// The smoothed loudness (127 − dBov), 0 when stale.
    pub fn loudness(&self, now: Instant) -> f32 {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < STALE => self.loudness,
            _ => 0.0,
        }
    }
}

/// The level in an `ssrc-audio-level` extension element (the V bit masked off).
pub fn parse_audio_level(ext: &[u8]) -> Option<u8> {
    ext.first().map(|b| b & 0x7f)
}

/// The room's active speaker after this round: the loudest speaking candidate, unless the
/// current speaker is still speaking and the candidate is not `MARGIN` louder. Nobody speaking
/// keeps the current one.
pub fn pick_speaker<K: Copy + Eq>(
    current: Option<K>,
    candidates: impl IntoIterator<Item = (K, f32)>,
) -> Option<K> {
    let mut best: Option<(K, f32)> = None;
    let mut current_level: f32 = 0.0;
    for (k, level) in candidates {
        if Some(k) == current {
            current_level = current_level.max(level);
        }
        if level >= SPEAKING && best.is_none_or(|(_, b)| level > b) {
            best = Some((k, level));
        }
    }
    match best {
        None => current,
        Some((k, _)) if Some(k) == current => current,
        Some((_, level)) if current_level >= SPEAKING && level < current_level + MARGIN => current,
        Some((k, _)) => Some(k),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meter_smooths_and_goes_stale() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut m = LevelMeter::default();
        assert_eq!(m.loudness(t0), 0.0);
        m.observe(t0, 30); // speech, about -30 dBov
        assert_eq!(m.loudness(t0), 97.0);
        for i in 1..=10 {
            m.observe(t0 + ms(20 * i), 127); // silence
        }
        assert!(m.loudness(t0 + ms(200)) < SPEAKING);
        assert_eq!(m.loudness(t0 + ms(800)), 0.0, "stale");
        assert_eq!(parse_audio_level(&[0x80 | 42]), Some(42), "V bit ignored");
        assert_eq!(parse_audio_level(&[]), None);
    }

    #[test]
    fn speaker_changes_only_for_a_clearly_louder_voice() {
        assert_eq!(pick_speaker(None, [(1, 90.0), (2, 80.0)]), Some(1));
        assert_eq!(
            pick_speaker(Some(1), [(1, 90.0), (2, 94.0)]),
            Some(1),
            "within margin"
        );
        assert_eq!(pick_speaker(Some(1), [(1, 90.0), (2, 97.0)]), Some(2));
        assert_eq!(
            pick_speaker(Some(1), [(1, 20.0), (2, 70.0)]),
            Some(2),
            "1 went quiet"
        );
        assert_eq!(
            pick_speaker(Some(1), [(1, 0.0), (2, 10.0)]),
            Some(1),
            "silence keeps"
        );
        assert_eq!(pick_speaker::<u8>(None, []), None);
    }
}
