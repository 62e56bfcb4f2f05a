//! Mixed reception: a participant who joined asking for mixed audio receives one audio track,
//! the room's other voices mixed (its own left out), instead of each microphone; one who asked
//! for mixed video receives one composite picture of the room's cameras and screen shares
//! instead of each (`mcu::composer`: one per room and driver, shared by its viewers there,
//! fed the lowest layer of each camera).
//!
//! The first such listener in a room on this driver starts the room's mixer (`mcu::mixer`, a
//! thread of its own) and gives it a tap (`tap`) on every audio track of the room this driver
//! sees (published here, or a proxy of one published on another driver); later tracks get one
//! as they appear. Each listener's mix comes back into this driver's media queue as the packets
//! of a track of its own (`Origin::Mcu`), which only that listener subscribes to: from there on
//! it is forwarded as any track is (rewriter, SRTP, sender reports). The mixer stops with the
//! room's last listener here.

use std::sync::atomic::Ordering;
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
use crate::mcu::composer::{spawn_composer, ComposerControl, ComposerHandle};
use crate::mcu::layout::TileKind;
use crate::mcu::mixer::{spawn_mixer, MixerControl, MixerHandle};
use crate::mcu::record::TapState;

/// The stream id (msid) of a listener's mixed audio track.
pub const MIXED_STREAM: &str = "mixed";

/// A room's mixer on this driver and who listens to it.
pub(super) struct RoomMixer {
    handle: MixerHandle,
    listeners: Vec<ParticipantKey>,
}

/// A room's compositor on this driver, its composite track and who views it.
pub(super) struct RoomComposite {
    handle: ComposerHandle,
    track: TrackKey,
    viewers: Vec<ParticipantKey>,
}

/// The codec a mix or composite track is sent with.
fn mcu_codec(codec: Codec) -> RTCRtpCodec {
    match codec {
        Codec::Opus => RTCRtpCodec {
            mime_type: "audio/opus".into(),
            clock_rate: 48_000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
            rtcp_feedback: vec![],
        },
        _ => RTCRtpCodec {
            mime_type: "video/VP8".into(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: vec![],
        },
    }
}

impl Driver {
    /// `key` joined asking for mixed audio: its mix track (returned), subscribed, and the
    /// room's mixer.
    pub(super) fn start_mixed_listener(
        &mut self,
        key: ParticipantKey,
        room: &str,
        now: Instant,
    ) -> Option<TrackKey> {
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
                    return None;
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
        let tkey = self.mcu_track(Codec::Opus, key, room, now);
        if let Some(t) = self.tracks.all.get_mut(&tkey) {
            t.mix_for = Some(key);
        }
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
        Some(tkey)
    }

    /// A track whose packets come from the room's mixer or compositor here (`Origin::Mcu`),
    /// stream id [`MIXED_STREAM`]; in no participant's list and announced to nobody.
    fn mcu_track(
        &mut self,
        codec: Codec,
        owner: ParticipantKey,
        room: &str,
        now: Instant,
    ) -> TrackKey {
        let tkey = TrackKey(self.new_key().0);
        // The composite comes in two sizes (layer 0 small, 1 large): the viewers' layer choice
        // is the SFU's, by tile size and bandwidth, as for a camera's simulcast.
        let layers = if codec.is_video() {
            vec![
                Layer::new("q".into(), rand::random()),
                Layer::new("f".into(), rand::random()),
            ]
        } else {
            vec![Layer::new(String::new(), rand::random())]
        };
        let (kind, source) = if codec.is_video() {
            (MediaKind::Video, TrackSource::Camera)
        } else {
            (MediaKind::Audio, TrackSource::Microphone)
        };
        let track = Track {
            id: random_id(&mut self.rng, "TR_"),
            kind,
            source,
            publisher: owner,
            publisher_id: MIXED_STREAM.into(),
            room: room.to_owned(),
            origin: Origin::Mcu,
            sinks: Vec::new(),
            demand_sent: None,
            mid: None,
            codec,
            rtc_codec: mcu_codec(codec),
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
            mix_for: None,
            composite: false,
        };
        self.tracks.by_id.insert(track.id.clone(), tkey);
        self.tracks.all.insert(tkey, track);
        tkey
    }

    /// `key` joined asking for the composite: the room's compositor here (started for the
    /// first viewer, with a tap on every video track of the room) and its track (returned),
    /// subscribed.
    pub(super) fn start_viewer(
        &mut self,
        key: ParticipantKey,
        room: &str,
        now: Instant,
    ) -> Option<TrackKey> {
        if !self.rooms.composites.contains_key(room) {
            let track = self.mcu_track(Codec::Vp8, key, room, now);
            if let Some(t) = self.tracks.all.get_mut(&track) {
                t.composite = true;
            }
            let out = self.mesh.media[self.mesh.index].clone();
            match spawn_composer(room.to_owned(), track, out) {
                Ok(handle) => {
                    self.rooms.composites.insert(
                        room.to_owned(),
                        RoomComposite {
                            handle,
                            track,
                            viewers: Vec::new(),
                        },
                    );
                }
                Err(err) => {
                    warn!(%err, "no compositor thread; the participant gets no video");
                    self.tracks.all.remove(&track);
                    return None;
                }
            }
            let video: Vec<TrackKey> = self
                .tracks
                .all
                .iter()
                .filter(|(_, t)| t.room == room && t.kind == MediaKind::Video)
                .map(|(k, _)| *k)
                .collect();
            for tkey in video {
                self.mix_track(tkey, now);
            }
            if let Some(&speaker) = self.rooms.speakers.get(room) {
                self.composite_speaker(room, speaker);
            }
        }
        let c = self.rooms.composites.get_mut(room)?;
        c.viewers.push(key);
        let track = c.track;
        self.subscribe(key, track, now);
        self.composite_keyframe(track);
        Some(track)
    }

    /// `key` (a composite viewer) left; the compositor and its track go with the last one.
    pub(super) fn stop_viewer(&mut self, key: ParticipantKey, room: &str) {
        let Some(c) = self.rooms.composites.get_mut(room) else {
            return;
        };
        c.viewers.retain(|v| *v != key);
        if c.viewers.is_empty() {
            let track = c.track;
            self.rooms.composites.remove(room);
            if let Some(t) = self.tracks.all.remove(&track) {
                self.tracks.by_id.remove(&t.id);
            }
        }
    }

    /// A viewer lost the composite's picture (PLI, FIR on track `tkey`): a keyframe soon.
    pub(super) fn composite_keyframe(&mut self, tkey: TrackKey) {
        if let Some(c) = self.rooms.composites.values().find(|c| c.track == tkey) {
            c.handle.keyframe.store(true, Ordering::Relaxed);
        }
    }

    /// The room's active speaker changed: drawn larger in its composite.
    pub(super) fn composite_speaker(&mut self, room: &str, speaker: ParticipantKey) {
        if let Some(c) = self.rooms.composites.get(room) {
            let _ = c
                .handle
                .control
                .send(ComposerControl::Speaker(Some(speaker.0)));
        }
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
        if track.origin == Origin::Mcu || track.taps.iter().any(|t| t.id() == tkey.0) {
            return;
        }
        if track.kind == MediaKind::Video {
            let Some(c) = self.rooms.composites.get(&track.room) else {
                return;
            };
            let state = Arc::new(TapState::default());
            let kind = match track.source {
                TrackSource::Screen => TileKind::Screen,
                _ => TileKind::Camera,
            };
            let _ = c.handle.control.send(ComposerControl::AddInput {
                tap: tkey.0,
                publisher: track.publisher.0,
                kind,
                state: state.clone(),
            });
            let mut tap = Tap::new(
                tkey.0,
                TapLayer::Lowest,
                track.rtc_codec.clock_rate,
                c.handle.packets.clone(),
                state,
                now,
            );
            tap.retarget(track, now);
            track.taps.push(tap);
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

    /// Track `tkey` of `room` ends: out of the room's mix and composite.
    pub(super) fn unmix_track(&mut self, tkey: TrackKey, room: &str) {
        if let Some(m) = self.rooms.mixers.get(room) {
            let _ = m
                .handle
                .control
                .send(MixerControl::RemoveInput { tap: tkey.0 });
        }
        if let Some(c) = self.rooms.composites.get(room) {
            let _ = c
                .handle
                .control
                .send(ComposerControl::RemoveInput { tap: tkey.0 });
        }
    }
}
