//! A room recorded: a participant without a connection that listens to the room's whole mix
//! (it publishes nothing, so it hears everyone) and views its composite (`mixing`), whose two
//! tracks are tapped (`tap`) into one recording thread (`mcu::record`).
//!
//! The recording lives on one driver holding members of the room (its composite sees every
//! camera of the room through that driver's proxies). It ends when stopped, or when the room
//! has no members left on that driver.

use std::time::Instant;

use super::tap::{Tap, TapLayer, TapRefusal, TapRequest};
use super::{Driver, TrackKey};
use crate::api::ParticipantKey;

/// The tap ids of room recording `id`: its composite video and its mixed audio.
pub fn room_tap_ids(id: u64) -> (u64, u64) {
    (id, id ^ (1 << 62))
}

/// A room recording on this driver.
pub(super) struct RoomRecording {
    room: String,
    /// The listener and viewer it records as.
    key: ParticipantKey,
    audio: TrackKey,
    video: TrackKey,
}

impl Driver {
    /// Starts recording `room` into `tap`'s queue, if the room has members here.
    pub(super) fn record_room(
        &mut self,
        room: &str,
        tap: TapRequest,
        now: Instant,
    ) -> Result<(), TapRefusal> {
        if self.rooms.members.get(room).is_none_or(|m| m.is_empty()) {
            return Err(TapRefusal::NotHere);
        }
        let key = self.new_key();
        let audio = self.start_mixed_listener(key, room, now);
        let video = self.start_viewer(key, room, now);
        let (Some(audio), Some(video)) = (audio, video) else {
            if let Some(audio) = audio {
                self.stop_mixed_listener(key, room, audio);
            }
            self.stop_viewer(key, room);
            return Err(TapRefusal::Failed("no mixer or compositor thread".into()));
        };
        let (video_tap, audio_tap) = room_tap_ids(tap.id);
        // The composite's large layer (the file is of its size), and the mix.
        for (tkey, id, layer) in [
            (video, video_tap, TapLayer::Highest),
            (audio, audio_tap, TapLayer::Lowest),
        ] {
            if let Some(track) = self.tracks.all.get_mut(&tkey) {
                let mut t = Tap::new(
                    id,
                    layer,
                    track.rtc_codec.clock_rate,
                    tap.packets.clone(),
                    tap.state.clone(),
                    now,
                );
                t.retarget(track, now);
                track.taps.push(t);
            }
        }
        self.rooms.recordings.insert(
            tap.id,
            RoomRecording {
                room: room.to_owned(),
                key,
                audio,
                video,
            },
        );
        self.composite_keyframe(video);
        Ok(())
    }

    /// Stops room recording `id` (its recorder sees its queue end); whether it was here.
    pub(super) fn stop_room_recording(&mut self, id: u64) -> bool {
        let Some(r) = self.rooms.recordings.remove(&id) else {
            return false;
        };
        let (video_tap, _) = room_tap_ids(id);
        if let Some(t) = self.tracks.all.get_mut(&r.video) {
            t.taps.retain(|t| t.id() != video_tap);
        }
        self.stop_mixed_listener(r.key, &r.room, r.audio);
        self.stop_viewer(r.key, &r.room);
        true
    }

    /// The room has no members left here: its recordings end.
    pub(super) fn stop_room_recordings(&mut self, room: &str) {
        let ids: Vec<u64> = self
            .rooms
            .recordings
            .iter()
            .filter(|(_, r)| r.room == room)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.stop_room_recording(id);
        }
    }
}
