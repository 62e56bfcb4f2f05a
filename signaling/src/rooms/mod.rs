//! The room registry: which rooms exist, their limits, who is in them and what they publish.
//!
//! The media engine knows connections and tracks; this registry knows what an operator asks
//! about: rooms with their limits and timeouts, participants by identity, and the lifecycle
//! events that webhooks report (room started and finished, participant joined and left, track
//! published and unpublished). Signaling sessions reserve a place before joining the engine and
//! leave when they end; the engine's [`Observation`]s keep the track list. Touched on joins,
//! leaves and admin calls only, never per packet, so one mutex serves it.
//!
//! A room starts when it is created (by a join, or by the admin API with its own limits). It
//! finishes when it was empty for its timeout: `room_empty_timeout` if nobody ever joined,
//! `room_departure_timeout` after the last participant left, or at once when it is deleted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::distr::{Alphanumeric, SampleString};
use serde::Serialize;
use sfu::Observation;
use tokio::sync::mpsc;
use tracing::info;

use crate::auth::unix_now;
use crate::protocol::{IceCandidate, RoomMode};
use crate::webhooks::{
    Event as HookEvent, EventKind, HookParticipant, HookRecording, HookRoom, HookTrack,
};

/// Why the server ends a participant's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kick {
    /// An administrator removed it.
    Removed,
    /// Its room was deleted.
    RoomDeleted,
    /// The same identity joined the room again (a reconnect, or a second tab).
    DuplicateIdentity,
    /// The server is shutting down (a drain ended).
    ServerShutdown,
}

/// Why a join cannot have a place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("room {0:?} does not exist (rooms are created through the admin API)")]
    RoomNotFound(String),
    #[error("room {room:?} is full ({max} participants)")]
    RoomFull { room: String, max: usize },
    #[error("the server holds as many rooms as it may ({0})")]
    TooManyRooms(usize),
    #[error("room {room:?} is a {} room", .mode.as_str())]
    ModeMismatch { room: String, mode: RoomMode },
}

/// The participants of a p2p room can hold at most this many (a direct call is 1:1).
pub const P2P_MAX_PARTICIPANTS: usize = 2;

/// What a participant of a p2p room hears from the other one, relayed by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerSignal {
    Joined {
        id: String,
        identity: String,
        name: String,
    },
    Left {
        id: String,
    },
    Offer {
        from: String,
        sdp: String,
    },
    Answer {
        from: String,
        sdp: String,
    },
    Candidate {
        from: String,
        candidate: IceCandidate,
    },
}

/// How rooms behave unless created with their own settings.
#[derive(Debug, Clone)]
pub struct RoomPolicy {
    pub max_rooms: usize,
    pub max_participants: usize,
    pub auto_create: bool,
    pub empty_timeout: Duration,
    pub departure_timeout: Duration,
}

impl Default for RoomPolicy {
    fn default() -> Self {
        Self {
            max_rooms: 0,
            max_participants: 0,
            auto_create: true,
            empty_timeout: Duration::from_secs(300),
            departure_timeout: Duration::from_secs(20),
        }
    }
}

/// What the admin API may set when it creates a room.
#[derive(Debug, Clone, Default)]
pub struct RoomOptions {
    pub max_participants: Option<usize>,
    pub empty_timeout: Option<Duration>,
    pub mode: Option<RoomMode>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TrackEntry {
    pub id: String,
    pub participant_id: String,
    pub kind: &'static str,
    pub source: &'static str,
    pub muted: bool,
}

/// A track as webhooks describe it (here, not in `webhooks`, so that `webhooks` does not import
/// `rooms`: the dependency runs one way).
impl From<&TrackEntry> for HookTrack {
    fn from(t: &TrackEntry) -> Self {
        HookTrack {
            id: t.id.clone(),
            kind: t.kind.to_owned(),
            source: t.source.to_owned(),
            muted: t.muted,
        }
    }
}

struct Member {
    identity: String,
    name: String,
    joined_at: u64,
    kick: mpsc::UnboundedSender<Kick>,
    /// p2p rooms: where the other participant's relayed signals go.
    signals: Option<mpsc::UnboundedSender<PeerSignal>>,
}

struct Room {
    sid: String,
    created_at: u64,
    /// Created through the admin API (rather than by a join).
    explicit: bool,
    mode: RoomMode,
    max_participants: usize,
    empty_timeout: Duration,
    members: HashMap<String, Member>,
    /// Joins holding a place but not in the engine yet.
    pending: usize,
    tracks: HashMap<String, TrackEntry>,
    /// Whether anybody ever joined.
    joined_once: bool,
    /// Counts emptyings, so that a timer set when the room emptied knows whether it still holds.
    epoch: u64,
}

/// A room as the admin API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct RoomSummary {
    pub name: String,
    pub sid: String,
    pub created_at: u64,
    pub mode: RoomMode,
    pub max_participants: usize,
    pub empty_timeout_secs: u64,
    pub num_participants: usize,
    pub num_tracks: usize,
    pub participants: Vec<ParticipantSummary>,
    pub tracks: Vec<TrackEntry>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ParticipantSummary {
    pub id: String,
    pub identity: String,
    pub name: String,
    pub joined_at: u64,
}

/// A place in a room held by a join in progress; dropping it without [`Rooms::admit`] gives the
/// place back.
pub struct Reservation {
    rooms: Rooms,
    room: String,
    done: bool,
    /// The room's mode.
    pub mode: RoomMode,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.done {
            self.rooms.release(&self.room);
        }
    }
}

#[derive(Clone)]
pub struct Rooms {
    inner: Arc<Inner>,
}

struct Inner {
    policy: RoomPolicy,
    rooms: Mutex<HashMap<String, Room>>,
    hooks: Option<mpsc::UnboundedSender<HookEvent>>,
}

fn hook_room(name: &str, room: &Room) -> HookRoom {
    HookRoom {
        name: name.to_owned(),
        sid: room.sid.clone(),
        created_at: room.created_at,
        num_participants: room.members.len(),
    }
}

impl Rooms {
    pub fn new(policy: RoomPolicy, hooks: Option<mpsc::UnboundedSender<HookEvent>>) -> Rooms {
        Rooms {
            inner: Arc::new(Inner {
                policy,
                rooms: Mutex::new(HashMap::new()),
                hooks,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Room>> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.inner.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn emit(
        &self,
        kind: EventKind,
        room: HookRoom,
        participant: Option<HookParticipant>,
        track: Option<HookTrack>,
    ) {
        if let Some(hooks) = &self.inner.hooks {
            let _ = hooks.send(HookEvent::new(kind, room, participant, track));
        }
    }

    /// A recording's webhook (`recordings` owns recordings; the room, if still there, is
    /// described as it is now).
    pub fn emit_recording(&self, kind: EventKind, room: &str, recording: HookRecording) {
        let Some(hooks) = &self.inner.hooks else {
            return;
        };
        let hook = match self.lock().get(room) {
            Some(r) => hook_room(room, r),
            None => HookRoom {
                name: room.to_owned(),
                sid: String::new(),
                created_at: 0,
                num_participants: 0,
            },
        };
        let mut event = HookEvent::new(kind, hook, None, None);
        event.recording = Some(recording);
        let _ = hooks.send(event);
    }

    fn new_room(&self, explicit: bool, options: &RoomOptions) -> Room {
        let mode = options.mode.unwrap_or_default();
        let mut max_participants = options
            .max_participants
            .unwrap_or(self.inner.policy.max_participants);
        if mode == RoomMode::P2p
            && (max_participants == 0 || max_participants > P2P_MAX_PARTICIPANTS)
        {
            max_participants = P2P_MAX_PARTICIPANTS;
        }
        Room {
            sid: format!("RM_{}", Alphanumeric.sample_string(&mut rand::rng(), 12)),
            created_at: unix_now(),
            explicit,
            mode,
            max_participants,
            empty_timeout: options
                .empty_timeout
                .unwrap_or(self.inner.policy.empty_timeout),
            members: HashMap::new(),
            pending: 0,
            tracks: HashMap::new(),
            joined_once: false,
            epoch: 0,
        }
    }

    fn check_room_count(&self, rooms: &HashMap<String, Room>) -> Result<(), Refusal> {
        let max = self.inner.policy.max_rooms;
        if max > 0 && rooms.len() >= max {
            return Err(Refusal::TooManyRooms(max));
        }
        Ok(())
    }

    /// Holds a place in `room` for a join (creating the room if the policy allows), checking the
    /// server's and the room's limits.
    pub fn reserve(&self, room: &str) -> Result<Reservation, Refusal> {
        self.reserve_mode(room, None)
    }

    /// [`Rooms::reserve`], asking for a room `mode`: a room it creates has that mode, and an
    /// existing room of the other mode refuses the join. `None` takes the room as it is.
    pub fn reserve_mode(&self, room: &str, mode: Option<RoomMode>) -> Result<Reservation, Refusal> {
        let mut rooms = self.lock();
        if !rooms.contains_key(room) {
            if !self.inner.policy.auto_create {
                return Err(Refusal::RoomNotFound(room.to_owned()));
            }
            self.check_room_count(&rooms)?;
            let options = RoomOptions {
                mode,
                ..RoomOptions::default()
            };
            let r = self.new_room(false, &options);
            info!(room, sid = %r.sid, mode = r.mode.as_str(), "room started");
            self.emit(EventKind::RoomStarted, hook_room(room, &r), None, None);
            rooms.insert(room.to_owned(), r);
        }
        let Some(r) = rooms.get_mut(room) else {
            return Err(Refusal::RoomNotFound(room.to_owned()));
        };
        if mode.is_some_and(|m| m != r.mode) {
            return Err(Refusal::ModeMismatch {
                room: room.to_owned(),
                mode: r.mode,
            });
        }
        if r.max_participants > 0 && r.members.len() + r.pending >= r.max_participants {
            return Err(Refusal::RoomFull {
                room: room.to_owned(),
                max: r.max_participants,
            });
        }
        r.pending += 1;
        Ok(Reservation {
            rooms: self.clone(),
            room: room.to_owned(),
            done: false,
            mode: r.mode,
        })
    }

    fn release(&self, room: &str) {
        let mut rooms = self.lock();
        if let Some(r) = rooms.get_mut(room) {
            r.pending = r.pending.saturating_sub(1);
            if r.members.is_empty() && r.pending == 0 {
                drop(rooms);
                self.schedule_finish(room);
            }
        }
    }

    /// The join made it into the engine: the participant takes its place. Another participant
    /// with the same identity is asked to leave.
    pub fn admit(
        &self,
        reservation: Reservation,
        participant_id: &str,
        identity: &str,
        name: &str,
        kick: mpsc::UnboundedSender<Kick>,
    ) {
        self.admit_member(reservation, participant_id, identity, name, kick, None);
    }

    /// A participant of a p2p room takes its place: the others are told (through their
    /// `signals`), and the participants already there are returned, for its `joined`.
    pub fn admit_peer(
        &self,
        reservation: Reservation,
        participant_id: &str,
        identity: &str,
        name: &str,
        kick: mpsc::UnboundedSender<Kick>,
        signals: mpsc::UnboundedSender<PeerSignal>,
    ) -> Vec<ParticipantSummary> {
        self.admit_member(
            reservation,
            participant_id,
            identity,
            name,
            kick,
            Some(signals),
        )
    }

    /// Relays a p2p signal from `from` to the other participants of its room; returns how
    /// many received it.
    pub fn relay(&self, room: &str, from: &str, signal: PeerSignal) -> usize {
        let rooms = self.lock();
        let Some(r) = rooms.get(room) else {
            return 0;
        };
        r.members
            .iter()
            .filter(|(id, _)| id.as_str() != from)
            .filter_map(|(_, m)| m.signals.as_ref())
            .filter(|s| s.send(signal.clone()).is_ok())
            .count()
    }

    fn admit_member(
        &self,
        mut reservation: Reservation,
        participant_id: &str,
        identity: &str,
        name: &str,
        kick: mpsc::UnboundedSender<Kick>,
        signals: Option<mpsc::UnboundedSender<PeerSignal>>,
    ) -> Vec<ParticipantSummary> {
        reservation.done = true;
        let mut rooms = self.lock();
        let Some(r) = rooms.get_mut(&reservation.room) else {
            // Deleted meanwhile: the session is told so right away.
            let _ = kick.send(Kick::RoomDeleted);
            return Vec::new();
        };
        r.pending = r.pending.saturating_sub(1);
        let mut others = Vec::new();
        for (id, m) in &r.members {
            if m.identity == identity {
                info!(room = %reservation.room, participant = %id, identity, "same identity joined again; the older session goes");
                let _ = m.kick.send(Kick::DuplicateIdentity);
            }
            if let Some(s) = &m.signals {
                let _ = s.send(PeerSignal::Joined {
                    id: participant_id.to_owned(),
                    identity: identity.to_owned(),
                    name: name.to_owned(),
                });
                others.push(ParticipantSummary {
                    id: id.clone(),
                    identity: m.identity.clone(),
                    name: m.name.clone(),
                    joined_at: m.joined_at,
                });
            }
        }
        r.members.insert(
            participant_id.to_owned(),
            Member {
                identity: identity.to_owned(),
                name: name.to_owned(),
                joined_at: unix_now(),
                kick,
                signals,
            },
        );
        r.joined_once = true;
        let room = hook_room(&reservation.room, r);
        let participant = HookParticipant {
            id: participant_id.to_owned(),
            identity: identity.to_owned(),
            name: name.to_owned(),
        };
        drop(rooms);
        self.emit(EventKind::ParticipantJoined, room, Some(participant), None);
        others
    }

    /// The participant's session ended.
    pub fn leave(&self, room: &str, participant_id: &str) {
        let mut rooms = self.lock();
        let Some(r) = rooms.get_mut(room) else {
            return;
        };
        let Some(m) = r.members.remove(participant_id) else {
            return;
        };
        for other in r.members.values() {
            if let Some(s) = &other.signals {
                let _ = s.send(PeerSignal::Left {
                    id: participant_id.to_owned(),
                });
            }
        }
        let gone: Vec<TrackEntry> = r
            .tracks
            .values()
            .filter(|t| t.participant_id == participant_id)
            .cloned()
            .collect();
        r.tracks.retain(|_, t| t.participant_id != participant_id);
        let hook = hook_room(room, r);
        let empty = r.members.is_empty() && r.pending == 0;
        drop(rooms);
        let participant = HookParticipant {
            id: participant_id.to_owned(),
            identity: m.identity,
            name: m.name,
        };
        // The engine reports the unpublications too, but only after the participant is gone
        // from here: report them now, in order, and ignore the engine's.
        for t in gone {
            self.emit(
                EventKind::TrackUnpublished,
                hook.clone(),
                Some(participant.clone()),
                Some(HookTrack::from(&t)),
            );
        }
        self.emit(EventKind::ParticipantLeft, hook, Some(participant), None);
        if empty {
            self.schedule_finish(room);
        }
    }

    /// What the engine says about tracks.
    pub fn observe(&self, obs: Observation) {
        let mut rooms = self.lock();
        let (room_name, participant_id) = match &obs {
            Observation::TrackPublished {
                room,
                participant_id,
                ..
            }
            | Observation::TrackUnpublished {
                room,
                participant_id,
                ..
            }
            | Observation::TrackMuted {
                room,
                participant_id,
                ..
            } => (room.clone(), participant_id.clone()),
        };
        let Some(r) = rooms.get_mut(&room_name) else {
            return;
        };
        let Some(m) = r.members.get(&participant_id) else {
            return;
        };
        let participant = HookParticipant {
            id: participant_id.clone(),
            identity: m.identity.clone(),
            name: m.name.clone(),
        };
        let (kind, entry) = match obs {
            Observation::TrackPublished { track, .. } => {
                let entry = TrackEntry {
                    id: track.id.clone(),
                    participant_id,
                    kind: track.kind.as_str(),
                    source: track.source.as_str(),
                    muted: track.muted,
                };
                r.tracks.insert(track.id, entry.clone());
                (EventKind::TrackPublished, entry)
            }
            Observation::TrackUnpublished { track_id, .. } => match r.tracks.remove(&track_id) {
                Some(entry) => (EventKind::TrackUnpublished, entry),
                None => return,
            },
            Observation::TrackMuted {
                track_id, muted, ..
            } => match r.tracks.get_mut(&track_id) {
                Some(entry) => {
                    entry.muted = muted;
                    let kind = if muted {
                        EventKind::TrackMuted
                    } else {
                        EventKind::TrackUnmuted
                    };
                    (kind, entry.clone())
                }
                None => return,
            },
        };
        let hook = hook_room(&room_name, r);
        drop(rooms);
        self.emit(kind, hook, Some(participant), Some(HookTrack::from(&entry)));
    }

    /// Creates a room with its own limits (the admin API). `Ok(false)` if it exists already.
    pub fn create(&self, name: &str, options: RoomOptions) -> Result<bool, Refusal> {
        let mut rooms = self.lock();
        if rooms.contains_key(name) {
            return Ok(false);
        }
        self.check_room_count(&rooms)?;
        let r = self.new_room(true, &options);
        info!(room = name, sid = %r.sid, "room created");
        self.emit(EventKind::RoomStarted, hook_room(name, &r), None, None);
        rooms.insert(name.to_owned(), r);
        drop(rooms);
        self.schedule_finish(name);
        Ok(true)
    }

    /// Deletes a room: its participants are disconnected (and reported as having left, their
    /// tracks as unpublished, before the room finishes). Returns whether it existed.
    pub fn delete(&self, name: &str) -> bool {
        let Some(mut r) = self.lock().remove(name) else {
            return false;
        };
        info!(room = name, "room deleted");
        let members: Vec<(String, Member)> = r.members.drain().collect();
        for (id, m) in members {
            let _ = m.kick.send(Kick::RoomDeleted);
            let participant = HookParticipant {
                id: id.clone(),
                identity: m.identity,
                name: m.name,
            };
            for t in r.tracks.values().filter(|t| t.participant_id == id) {
                self.emit(
                    EventKind::TrackUnpublished,
                    hook_room(name, &r),
                    Some(participant.clone()),
                    Some(HookTrack::from(t)),
                );
            }
            self.emit(
                EventKind::ParticipantLeft,
                hook_room(name, &r),
                Some(participant),
                None,
            );
        }
        r.tracks.clear();
        self.emit(EventKind::RoomFinished, hook_room(name, &r), None, None);
        true
    }

    /// Disconnects the participant with this identity (or participant id). Returns whether
    /// one was found.
    pub fn remove_participant(&self, room: &str, who: &str) -> bool {
        let rooms = self.lock();
        let Some(r) = rooms.get(room) else {
            return false;
        };
        let mut found = false;
        for (id, m) in &r.members {
            if m.identity == who || id == who {
                let _ = m.kick.send(Kick::Removed);
                found = true;
            }
        }
        found
    }

    /// Tells every session the server is going away.
    pub fn kick_everyone(&self) {
        for r in self.lock().values() {
            for m in r.members.values() {
                let _ = m.kick.send(Kick::ServerShutdown);
            }
        }
    }

    /// Whether the room exists.
    pub fn exists(&self, name: &str) -> bool {
        self.lock().contains_key(name)
    }

    pub fn list(&self) -> Vec<RoomSummary> {
        let rooms = self.lock();
        let mut list: Vec<RoomSummary> = rooms.iter().map(|(n, r)| summary(n, r)).collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    pub fn get(&self, name: &str) -> Option<RoomSummary> {
        self.lock().get(name).map(|r| summary(name, r))
    }

    /// The rooms' names, and the participants and tracks they hold: what a node reports to the
    /// cluster's directory.
    pub fn load(&self) -> (Vec<String>, usize, usize) {
        let rooms = self.lock();
        let names = rooms.keys().cloned().collect();
        let participants = rooms.values().map(|r| r.members.len()).sum();
        let tracks = rooms.values().map(|r| r.tracks.len()).sum();
        (names, participants, tracks)
    }

    /// (rooms, participants) now.
    pub fn counts(&self) -> (usize, usize) {
        let rooms = self.lock();
        (rooms.len(), rooms.values().map(|r| r.members.len()).sum())
    }

    /// Finishes the room once it stayed empty for its timeout.
    fn schedule_finish(&self, name: &str) {
        let (epoch, timeout) = {
            let mut rooms = self.lock();
            let Some(r) = rooms.get_mut(name) else {
                return;
            };
            r.epoch += 1;
            let timeout = if r.joined_once || !r.explicit {
                self.inner.policy.departure_timeout
            } else {
                r.empty_timeout
            };
            (r.epoch, timeout)
        };
        let rooms = self.clone();
        let name = name.to_owned();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            tokio::time::sleep(timeout).await;
            rooms.finish_if_still_empty(&name, epoch);
        });
    }

    fn finish_if_still_empty(&self, name: &str, epoch: u64) {
        let mut rooms = self.lock();
        let still = rooms
            .get(name)
            .is_some_and(|r| r.epoch == epoch && r.members.is_empty() && r.pending == 0);
        if !still {
            return;
        }
        if let Some(r) = rooms.remove(name) {
            drop(rooms);
            info!(room = name, "room finished");
            self.emit(EventKind::RoomFinished, hook_room(name, &r), None, None);
        }
    }
}

fn summary(name: &str, r: &Room) -> RoomSummary {
    let mut participants: Vec<ParticipantSummary> = r
        .members
        .iter()
        .map(|(id, m)| ParticipantSummary {
            id: id.clone(),
            identity: m.identity.clone(),
            name: m.name.clone(),
            joined_at: m.joined_at,
        })
        .collect();
    participants.sort_by(|a, b| a.joined_at.cmp(&b.joined_at).then(a.id.cmp(&b.id)));
    let mut tracks: Vec<TrackEntry> = r.tracks.values().cloned().collect();
    tracks.sort_by(|a, b| a.id.cmp(&b.id));
    RoomSummary {
        name: name.to_owned(),
        sid: r.sid.clone(),
        created_at: r.created_at,
        mode: r.mode,
        max_participants: r.max_participants,
        empty_timeout_secs: r.empty_timeout.as_secs(),
        num_participants: r.members.len(),
        num_tracks: r.tracks.len(),
        participants,
        tracks,
    }
}

#[cfg(test)]
mod tests;
