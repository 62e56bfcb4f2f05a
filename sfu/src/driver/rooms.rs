//! Rooms: joining (a connection, the room's state for the newcomer, auto-subscription), leaving
//! (its tracks unpublished, the room told), and telling participants and the observer.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use rand::distr::{Alphanumeric, SampleString};
use rtc::sansio::Protocol;
use rtc::shared::TransportProtocol;
use tracing::info;

use super::connections::Peer;
use super::mesh::{MeshMsg, RemoteTrack};
use super::port::{self};
use super::{guarded, random_id, Driver, Flow, TrackKey, Transmit};
use crate::api::{
    ErrorKind, Event, JoinInfo, JoinRequest, Observation, ParticipantInfo, ParticipantKey,
    SfuError, TrackInfo,
};
use crate::engine::layers::CongestionHold;
use crate::peer::{self, Bandwidth, SimulcastSsrcs};

/// The rooms a driver takes part in.
#[derive(Default)]
pub(super) struct Rooms {
    /// Each room's participants on this driver.
    pub(super) members: HashMap<String, Vec<ParticipantKey>>,
    /// Each room's active speaker.
    pub(super) speakers: HashMap<String, ParticipantKey>,
    /// Rooms' participants and tracks on other drivers.
    pub(super) remote: HashMap<String, RemoteRoom>,
    /// Rooms with mixed listeners here: their mixer (see `mixing`).
    pub(super) mixers: HashMap<String, super::mixing::RoomMixer>,
    /// Rooms with composite viewers here: their compositor (see `mixing`).
    pub(super) composites: HashMap<String, super::mixing::RoomComposite>,
    /// Rooms being recorded here, by recording id (see `recording`).
    pub(super) recordings: HashMap<u64, super::recording::RoomRecording>,
}

/// What a driver knows of a room's participants and tracks on other drivers.
#[derive(Default)]
pub(super) struct RemoteRoom {
    /// Key → the participant (without tracks).
    pub(super) members: HashMap<ParticipantKey, ParticipantInfo>,
    pub(super) tracks: HashMap<TrackKey, RemoteTrack>,
}

impl Driver {
    pub(super) fn join_room(
        &mut self,
        request: JoinRequest,
        now: Instant,
    ) -> Result<(ParticipantKey, JoinInfo), SfuError> {
        let JoinRequest {
            room,
            identity,
            name,
            permissions,
            subscribe_to,
            answer_only,
            mixed_audio,
            mixed_video,
        } = request;
        let key = self.new_key();
        let id = random_id(&mut self.rng, "PA_");
        // The ufrag names this driver: a check that reaches another driver's socket (shared
        // port) is sent on here.
        let ufrag = port::ufrag_for(
            self.mesh.index,
            &Alphanumeric.sample_string(&mut self.rng, 14),
        );
        let pwd = Alphanumeric.sample_string(&mut self.rng, 32);
        let bandwidth = Arc::new(Bandwidth::default());
        let simulcast_ssrcs = SimulcastSsrcs::default();
        let pc = guarded(|| {
            peer::new_peer_connection(
                now,
                (&ufrag, &pwd),
                &self.conns.host_candidates,
                &self.conns.tcp_candidates,
                bandwidth.clone(),
                simulcast_ssrcs.clone(),
                self.data_limits.sctp_max_message(),
            )
        })
        .ok_or_else(|| SfuError::PeerConnection("panic".into()))?
        .map_err(|e| SfuError::PeerConnection(e.to_string()))?;

        let existing_members = self.rooms.members.get(&room).cloned().unwrap_or_default();
        let mut participants: Vec<ParticipantInfo> = existing_members
            .iter()
            .filter_map(|k| self.conns.peers.get(k))
            .map(|p| self.info_of(p))
            .collect();
        if let Some(remote) = self.rooms.remote.get(&room) {
            for (&member, info) in &remote.members {
                participants.push(ParticipantInfo {
                    tracks: remote
                        .tracks
                        .values()
                        .filter(|t| t.publisher == member)
                        .map(|t| t.info.clone())
                        .collect(),
                    ..info.clone()
                });
            }
        }
        self.rooms
            .members
            .entry(room.clone())
            .or_default()
            .push(key);

        let peer = Peer {
            id: id.clone(),
            identity: identity.clone(),
            name: name.clone(),
            room: room.clone(),
            permissions,
            refused: HashSet::new(),
            pc,
            ufrag: ufrag.clone(),
            addrs: Vec::new(),
            timer: None,
            consent: None,
            queued: false,
            negotiated_at: None,
            subscribe_to,
            answer_only,
            connected: false,
            offer_outstanding: false,
            negotiation_needed: false,
            candidates_sent: false,
            early_candidates: Vec::new(),
            remote_set: false,
            early_checks: Vec::new(),
            nominations: Vec::new(),
            stand_in_answers: Vec::new(),
            published: HashMap::new(),
            subscribed: HashMap::new(),
            track_by_ssrc: HashMap::new(),
            sources: HashMap::new(),
            bandwidth,
            simulcast_ssrcs,
            remb: None,
            hold: CongestionHold::default(),
            budget: None,
            data: None,
            mixed_audio,
            mix_track: None,
            mixed_video,
            remote_candidates: (String::new(), 0),
        };
        let joined = ParticipantInfo {
            id: id.clone(),
            identity,
            name,
            tracks: Vec::new(),
        };
        self.conns.by_ufrag.insert(ufrag, key);
        self.conns.peers.insert(key, peer);
        self.load.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for other in &existing_members {
            self.send_event(*other, Event::ParticipantJoined(joined.clone()));
        }
        self.mesh.broadcast(|| MeshMsg::Joined {
            room: room.clone(),
            key,
            info: joined.clone(),
        });
        // Auto-subscribe to everything already published in the room, here or on other drivers.
        let remote_tracks: Vec<TrackKey> = self
            .rooms
            .remote
            .get(&room)
            .map(|r| r.tracks.keys().copied().collect())
            .unwrap_or_default();
        for tkey in remote_tracks {
            self.ensure_proxy(tkey, &room);
        }
        let existing_tracks: Vec<TrackKey> = self
            .tracks
            .all
            .iter()
            .filter(|(_, t)| t.room == room && t.publisher != key)
            .map(|(k, _)| *k)
            .collect();
        for tkey in existing_tracks {
            self.subscribe(key, tkey, now);
        }
        if mixed_audio {
            self.start_mixed_listener(key, &room, now);
        }
        if mixed_video {
            self.start_viewer(key, &room, now);
        }
        info!(participant = %id, %room, "joined");
        self.enqueue(key);
        Ok((
            key,
            JoinInfo {
                participant_id: id,
                participants,
            },
        ))
    }

    pub(super) fn info_of(&self, peer: &Peer) -> ParticipantInfo {
        let tracks = peer
            .published
            .values()
            .filter_map(|k| self.tracks.all.get(k))
            .map(|t| TrackInfo {
                id: t.id.clone(),
                kind: t.kind,
                source: t.source,
                muted: t.muted,
            })
            .collect();
        ParticipantInfo {
            id: peer.id.clone(),
            identity: peer.identity.clone(),
            name: peer.name.clone(),
            tracks,
        }
    }

    /// Tells a participant of this driver (see [`Driver::poll_event`]).
    pub(super) fn send_event(&mut self, key: ParticipantKey, event: Event) {
        if self.conns.peers.contains_key(&key) {
            self.events.tell(key, event);
        }
    }

    pub(super) fn send_error(&mut self, key: ParticipantKey, kind: ErrorKind, message: String) {
        self.send_event(key, Event::Error { kind, message });
    }

    pub(super) fn remove_peer(&mut self, key: ParticipantKey, reason: &str, now: Instant) {
        let Some(peer) = self.conns.peers.get(&key) else {
            return;
        };
        let published: Vec<TrackKey> = peer.published.values().copied().collect();
        let subscribed: Vec<TrackKey> = peer.subscribed.keys().copied().collect();
        let mixed = peer.mix_track.map(|t| (t, peer.room.clone()));
        let viewer = peer.mixed_video.then(|| peer.room.clone());
        for tkey in published {
            self.unpublish_track(tkey, now);
        }
        if let Some((mix, room)) = mixed {
            self.stop_mixed_listener(key, &room, mix);
        }
        if let Some(room) = viewer {
            self.stop_viewer(key, &room);
        }
        for tkey in subscribed {
            if let Some(track) = self.tracks.all.get_mut(&tkey) {
                track.forwarders.retain(|f| f.subscriber != key);
            }
        }
        let Some(mut peer) = self.conns.peers.remove(&key) else {
            return;
        };
        // Its counters live on in the driver's (they only ever grow).
        let (sent, held) = peer.bandwidth.retransmissions();
        self.stats.retransmissions_sent += sent;
        self.stats.retransmissions_held_back += held;
        let _ = guarded(|| peer.pc.close());
        // Flush the close (DTLS close_notify) to the client.
        let transmits = &mut self.transmits;
        let _ = guarded(|| {
            while let Some(out) = peer.pc.poll_write() {
                let flow = Flow {
                    addr: out.transport.peer_addr,
                    tcp: out.transport.transport_protocol == TransportProtocol::TCP,
                };
                transmits.push_back(Transmit {
                    flow,
                    data: out.message,
                });
            }
        });
        self.conns.by_ufrag.remove(&peer.ufrag);
        for addr in &peer.addrs {
            if self.conns.by_addr.get(addr) == Some(&key) {
                self.conns.by_addr.remove(addr);
                if self.conns.shared_port && !addr.tcp {
                    let (flow, index) = (*addr, self.mesh.index);
                    self.mesh.broadcast(|| MeshMsg::FlowUnpinned {
                        flow,
                        driver: index,
                    });
                }
            }
        }
        let mut room_empty = false;
        if let Some(members) = self.rooms.members.get_mut(&peer.room) {
            members.retain(|k| *k != key);
            room_empty = members.is_empty();
        }
        self.load.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.mesh.broadcast(|| MeshMsg::Left {
            room: peer.room.clone(),
            key,
            id: peer.id.clone(),
        });
        if room_empty {
            self.stop_room_recordings(&peer.room);
            self.rooms.members.remove(&peer.room);
            self.rooms.speakers.remove(&peer.room);
            self.drop_proxies(&peer.room, now);
        }
        if self.rooms.speakers.get(&peer.room) == Some(&key) {
            self.rooms.speakers.remove(&peer.room);
        }
        let members = self
            .rooms
            .members
            .get(&peer.room)
            .cloned()
            .unwrap_or_default();
        for member in members {
            self.send_event(
                member,
                Event::ParticipantLeft {
                    participant_id: peer.id.clone(),
                },
            );
        }
        self.events.tell(
            key,
            Event::Closed {
                reason: reason.to_owned(),
            },
        );
        info!(participant = %peer.id, room = %peer.room, reason, "left");
    }

    /// Tells the engine's observer, if anyone listens.
    pub(super) fn observe(&self, make: impl FnOnce() -> Observation) {
        if let Some(observer) = &self.observer {
            let _ = observer.send(make());
        }
    }
}
