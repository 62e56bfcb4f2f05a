//! Mixed reception: a participant who joined asking for mixed audio receives one audio track,
//! the room's other voices mixed (its own left out), instead of each microphone.
//!
//! The first such listener in a room on this driver starts the room's mixer (`mcu::mixer`, a
//! thread of its own) and gives it a tap (`tap`) on every audio track of the room this driver
//! sees (published here, or a proxy of one published on another driver); later tracks get one
//! as they appear. Each listener's mix comes back into this driver's media queue as the packets
//! of a track of its own (`Origin::Mcu`), which only that listener subscribes to: from there on
//! it is forwarded as any track is (rewriter, SRTP, sender reports). The mixer stops with the
//! room's last listener here.

use std::sync::Arc;
use std::time::Instant;

use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;
use tracing::warn;

use super::select::layer_order;
use super::tap::{Tap, TapLayer};
use super::tracks::{Layer, Origin, Track};
use super::{random_id, Driver, TrackKey};
use crate::api::{MediaKind, ParticipantKey, TrackSource};
use crate::engine::codec::Codec;
use crate::engine::speaker::LevelMeter;
use crate::mcu::mixer::{spawn_mixer, MixerControl, MixerHandle};
use crate::mcu::record::TapState;

/// The stream id (msid) of a listener's mixed audio track.
pub const MIXED_STREAM: &str = "mixed";

/// A room's mixer on this driver and who listens to it.
pub(super) struct RoomMixer {
    handle: MixerHandle,
    listeners: Vec<ParticipantKey>,
}

impl Driver {
    /// `key` joined asking for mixed audio: its mix track, subscribed, and the room's mixer.
    pub(super) fn start_mixed_listener(&mut self, key: ParticipantKey, room: &str, now: Instant) {
        if !self.rooms.mixers.contains_key(room) {
            let out = self.mesh.media[self.mesh.index].clone();
            match spawn_mixer(room.to_owned(), out) {
                Ok(handle) => {
                    self.rooms.mixers.insert(
                        room.to_owned(),
                        RoomMixer {
                            handle,
                            listeners: Vec::new(),
                        },
                    );
                }
                Err(err) => {
                    warn!(%err, "no mixer thread; the participant gets no audio");
                    return;
                }
            }
            let audio: Vec<TrackKey> = self
                .tracks
                .all
                .iter()
                .filter(|(_, t)| t.room == room && t.kind == MediaKind::Audio)
                .map(|(k, _)| *k)
                .collect();
            for tkey in audio {
                self.mix_track(tkey, now);
            }
        }
        let tkey = TrackKey(self.new_key().0);
        let layer = Layer::new(String::new(), rand::random());
        let layers = vec![layer];
        let track = Track {
            id: random_id(&mut self.rng, "TR_"),
            kind: MediaKind::Audio,
            source: TrackSource::Microphone,
            publisher: key,
            publisher_id: MIXED_STREAM.into(),
            room: room.to_owned(),
            origin: Origin::Mcu,
            sinks: Vec::new(),
            demand_sent: None,
            mid: None,
            codec: Codec::Opus,
            rtc_codec: RTCRtpCodec {
                mime_type: "audio/opus".into(),
                clock_rate: 48_000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
                rtcp_feedback: vec![],
            },
            order: layer_order(&layers),
            layers,
            published_at: now,
            requested: None,
            audio_level_ext: None,
            level: LevelMeter::default(),
            muted: false,
            admin_muted: false,
            forwarders: Vec::new(),
            taps: Vec::new(),
            mix_for: Some(key),
        };
        self.tracks.by_id.insert(track.id.clone(), tkey);
        self.tracks.all.insert(tkey, track);
        if let Some(peer) = self.conns.peers.get_mut(&key) {
            peer.mix_track = Some(tkey);
        }
        if let Some(m) = self.rooms.mixers.get_mut(room) {
            m.listeners.push(key);
            let _ = m.handle.control.send(MixerControl::AddListener {
                listener: key.0,
                track: tkey,
            });
        }
        self.subscribe(key, tkey, now);
    }

    /// `key` (a mixed listener) left: its mix track goes, and the mixer with the last listener.
    pub(super) fn stop_mixed_listener(&mut self, key: ParticipantKey, room: &str, mix: TrackKey) {
        if let Some(track) = self.tracks.all.remove(&mix) {
            self.tracks.by_id.remove(&track.id);
        }
        let Some(m) = self.rooms.mixers.get_mut(room) else {
            return;
        };
        m.listeners.retain(|l| *l != key);
        let _ = m
            .handle
            .control
            .send(MixerControl::RemoveListener { listener: key.0 });
        if m.listeners.is_empty() {
            // The mixer thread ends with its control channel; its taps see their queue close.
            self.rooms.mixers.remove(room);
        }
    }

    /// Gives the room's mixer (if the room has one here) a tap on audio track `tkey`.
    pub(super) fn mix_track(&mut self, tkey: TrackKey, now: Instant) {
        let Some(track) = self.tracks.all.get_mut(&tkey) else {
            return;
        };
        if track.kind != MediaKind::Audio
            || track.origin == Origin::Mcu
            || track.taps.iter().any(|t| t.id() == tkey.0)
        {
            return;
        }
        let Some(m) = self.rooms.mixers.get(&track.room) else {
            return;
        };
        let _ = m.handle.control.send(MixerControl::AddInput {
            tap: tkey.0,
            publisher: track.publisher.0,
        });
        let mut tap = Tap::new(
            tkey.0,
            TapLayer::Lowest,
            track.rtc_codec.clock_rate,
            m.handle.packets.clone(),
            Arc::new(TapState::default()),
            now,
        );
        tap.retarget(track, now);
        track.taps.push(tap);
    }

    /// Audio track `tkey` of `room` ends: out of the room's mix.
    pub(super) fn unmix_track(&mut self, tkey: TrackKey, room: &str) {
        if let Some(m) = self.rooms.mixers.get(room) {
            let _ = m
                .handle
                .control
                .send(MixerControl::RemoveInput { tap: tkey.0 });
        }
    }
}
