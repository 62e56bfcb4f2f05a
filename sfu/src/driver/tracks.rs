//! Published tracks: publishing (grants, the track limit, simulcast layers as they start),
//! unpublishing, muting, and keyframe requests to the publisher (throttled per layer).
//! A track's packets come from a local receiver or, for a proxy, from another driver (`mesh`).

use std::collections::HashMap;
use std::time::Instant;

use rtc::peer_connection::event::RTCTrackEventInit;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpTransceiverId};
use tracing::{info, warn};

use super::forward::Forwarder;
use super::mesh::{global_key, MeshMsg, RemoteTrack};
use super::select::layer_order;
use super::{guarded, random_id, Driver, TrackKey, LAYER_IDLE};
use crate::api::{
    ErrorKind, Event, MediaKind, MutedBy, Observation, ParticipantKey, SfuConfig, TrackInfo,
    TrackSource,
};
use crate::engine::codec::Codec;
use crate::engine::keyframe::KeyframeThrottle;
use crate::engine::seq::SeqUnwrapper;
use crate::engine::speaker::LevelMeter;

/// A driver's tracks: those published on it and the proxies of tracks published elsewhere.
pub(super) struct Tracks {
    pub(super) all: HashMap<TrackKey, Track>,
    /// Public track id → track.
    pub(super) by_id: HashMap<String, TrackKey>,
    /// Tracks a participant may publish (0: no limit).
    pub(super) max_per_participant: usize,
}

impl Tracks {
    pub(super) fn new(config: &SfuConfig) -> Self {
        Self {
            all: HashMap::new(),
            by_id: HashMap::new(),
            max_per_participant: config.max_tracks_per_participant,
        }
    }
}

/// A published track: its incoming streams (one per simulcast layer) and its subscribers'
/// forwarders.
pub(super) struct Track {
    pub(super) id: String,
    pub(super) kind: MediaKind,
    pub(super) source: TrackSource,
    pub(super) publisher: ParticipantKey,
    /// The publisher's participant id (the publisher may live on another driver).
    pub(super) publisher_id: String,
    pub(super) room: String,
    /// Where the packets come from.
    pub(super) origin: Origin,
    /// Local tracks: the drivers holding a proxy of this track, with the layers (bit per layer
    /// index) their subscribers need.
    pub(super) sinks: Vec<(usize, u32)>,
    /// Proxies: the demand last sent to the origin.
    pub(super) demand_sent: Option<u32>,
    /// The publisher's transceiver, for dynacast messages.
    pub(super) mid: Option<String>,
    pub(super) codec: Codec,
    pub(super) rtc_codec: RTCRtpCodec,
    /// In arrival order; a layer's index here is its id in every forwarder's rewriter.
    pub(super) layers: Vec<Layer>,
    /// Layer ids ordered low to high.
    pub(super) order: Vec<u8>,
    pub(super) published_at: Instant,
    /// The rids last asked of the publisher (dynacast); `None` before the first request.
    pub(super) requested: Option<Vec<String>>,
    /// Audio: the negotiated id of the audio-level header extension, and the smoothed level.
    pub(super) audio_level_ext: Option<u8>,
    pub(super) level: LevelMeter,
    /// Muted (by its publisher or an administrator): its packets are dropped, its forwarders
    /// paused.
    pub(super) muted: bool,
    /// Muted by an administrator: its publisher cannot unmute it.
    pub(super) admin_muted: bool,
    pub(super) forwarders: Vec<Forwarder>,
    /// Copies of its packets for threads off the driver (recordings, the mixer; see `tap`).
    pub(super) taps: Vec<super::tap::Tap>,
    /// A listener's mixed audio (see `mixing`): only that listener subscribes to it.
    pub(super) mix_for: Option<ParticipantKey>,
    /// The room's composite picture (see `mixing`): only its viewers subscribe to it.
    pub(super) composite: bool,
}

/// Where a track's packets come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// A publisher on this driver, through this receiver of its connection.
    Local(RTCRtpReceiverId),
    /// Another driver (the index): this track is a proxy.
    Remote(usize),
    /// The room's mixer on this driver (a listener's mixed audio, see `mixing`).
    Mcu,
}

/// One simulcast layer (or the only stream) of a published track.
pub(super) struct Layer {
    /// Empty for a track without simulcast.
    pub(super) rid: String,
    pub(super) ssrc: u32,
    pub(super) unwrapper: SeqUnwrapper,
    pub(super) keyframes: KeyframeThrottle,
    pub(super) last_packet: Option<Instant>,
    /// Bytes received since the last tick, and the smoothed rate.
    pub(super) bytes: u64,
    pub(super) bitrate: f64,
    pub(super) width: u32,
    pub(super) height: u32,
    /// Since when no subscriber needs it (dynacast).
    pub(super) unneeded_since: Option<Instant>,
}

impl Layer {
    pub(super) fn new(rid: String, ssrc: u32) -> Self {
        Self {
            rid,
            ssrc,
            unwrapper: SeqUnwrapper::new(),
            keyframes: KeyframeThrottle::default(),
            last_packet: None,
            bytes: 0,
            bitrate: 0.0,
            width: 0,
            height: 0,
            unneeded_since: None,
        }
    }

    pub(super) fn active(&self, now: Instant) -> bool {
        self.last_packet
            .is_some_and(|t| now.saturating_duration_since(t) < LAYER_IDLE)
    }
}

impl Driver {
    /// Sends a PLI for one layer of the track to its publisher, at most once per throttle
    /// interval per layer.
    pub(super) fn request_keyframe(&mut self, tkey: TrackKey, layer: u8, now: Instant) {
        let Some(track) = self.tracks.all.get_mut(&tkey) else {
            return;
        };
        if !track.codec.is_video() {
            return;
        }
        let Some(l) = track.layers.get_mut(usize::from(layer)) else {
            return;
        };
        if !l.keyframes.request(now) {
            return;
        }
        let publisher = track.publisher;
        let media_ssrc = l.ssrc;
        let receiver_id = match track.origin {
            Origin::Local(receiver_id) => receiver_id,
            Origin::Remote(driver) => {
                // The origin throttles too; its publisher gets one PLI for all drivers.
                self.mesh
                    .send(driver, MeshMsg::Keyframe { track: tkey, layer });
                return;
            }
            Origin::Mcu => {
                self.composite_keyframe(tkey);
                return;
            }
        };
        let Some(peer) = self.conns.peers.get_mut(&publisher) else {
            return;
        };
        let pli = PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc,
        };
        let sent = guarded(|| {
            peer.pc
                .rtp_receiver(receiver_id)
                .map(|mut r| r.write_rtcp(now, vec![Box::new(pli)]))
        });
        if matches!(sent, Some(Some(Ok(())))) {
            self.stats.keyframe_requests += 1;
        }
        self.enqueue(publisher);
    }

    pub(super) fn publish_track(
        &mut self,
        key: ParticipantKey,
        init: RTCTrackEventInit,
        now: Instant,
    ) {
        let Some(peer) = self.conns.peers.get_mut(&key) else {
            return;
        };
        if peer.refused.contains(&init.track_id) {
            return;
        }
        let rid = init.rid.clone().unwrap_or_default();
        if !rid.is_empty() {
            if let Ok(mut ssrcs) = peer.simulcast_ssrcs.lock() {
                ssrcs.insert(init.ssrc);
            }
        }
        if let Some(&tkey) = peer.published.get(&init.track_id) {
            // Another simulcast layer of a known track.
            if let Some(track) = self.tracks.all.get_mut(&tkey) {
                if track.layers.iter().all(|l| l.ssrc != init.ssrc) && track.layers.len() < 8 {
                    info!(track = %track.id, %rid, ssrc = init.ssrc, "simulcast layer");
                    track.layers.push(Layer::new(rid, init.ssrc));
                    track.order = layer_order(&track.layers);
                    let layers: Vec<(String, u32)> = track
                        .layers
                        .iter()
                        .map(|l| (l.rid.clone(), l.ssrc))
                        .collect();
                    self.mesh.broadcast(|| MeshMsg::Layers {
                        track: tkey,
                        layers: layers.clone(),
                    });
                }
            }
            return;
        }
        let Some((kind, rtc_codec)) = peer.pc.rtp_receiver(init.receiver_id).and_then(|r| {
            let track = r.track();
            let kind = match track.kind() {
                RtpCodecKind::Audio => MediaKind::Audio,
                _ => MediaKind::Video,
            };
            track.codec(init.ssrc).cloned().map(|c| (kind, c))
        }) else {
            warn!(participant = %peer.id, ssrc = init.ssrc, "a track opened without a known codec; not published");
            return;
        };
        let Some(codec) = Codec::from_mime(&rtc_codec.mime_type) else {
            warn!(mime = %rtc_codec.mime_type, "published codec not forwarded");
            return;
        };
        let mid = peer
            .pc
            .rtp_transceiver(RTCRtpTransceiverId::from(init.receiver_id))
            .and_then(|t| t.mid().clone());
        let audio_level_ext = peer.pc.rtp_receiver(init.receiver_id).and_then(|mut r| {
            r.get_parameters()
                .rtp_parameters
                .header_extensions
                .iter()
                .find(|e| e.uri == "urn:ietf:params:rtp-hdrext:ssrc-audio-level")
                .map(|e| e.id as u8)
        });
        let default = match kind {
            MediaKind::Audio => TrackSource::Microphone,
            MediaKind::Video => TrackSource::Camera,
        };
        let labelled = mid.as_ref().and_then(|m| peer.sources.get(m).copied());
        // A label that does not fit the kind counts for nothing (and the client is told).
        if let Some(s) = labelled.filter(|s| !s.fits(kind)) {
            let message = format!(
                "a {} track cannot be labelled {}",
                kind.as_str(),
                s.as_str()
            );
            self.events.tell(
                key,
                Event::Error {
                    kind: ErrorKind::InvalidSource,
                    message,
                },
            );
        }
        let source = labelled.filter(|s| s.fits(kind)).unwrap_or(default);
        let refusal = if !peer.permissions.may_publish(source) {
            Some((
                ErrorKind::PublishDenied,
                if peer.permissions.publish {
                    format!("this participant may not publish {}", source.as_str())
                } else {
                    "this participant may not publish".to_owned()
                },
            ))
        } else if self.tracks.max_per_participant > 0
            && peer.published.len() >= self.tracks.max_per_participant
        {
            Some((
                ErrorKind::TrackLimit,
                format!(
                    "a participant may publish at most {} tracks",
                    self.tracks.max_per_participant
                ),
            ))
        } else {
            None
        };
        if let Some((kind, message)) = refusal {
            info!(participant = %peer.id, source = source.as_str(), %message, "track refused");
            peer.refused.insert(init.track_id);
            self.events.tell(key, Event::Error { kind, message });
            return;
        }
        let tkey = TrackKey(global_key(self.mesh.index, self.next_key));
        self.next_key += 1;
        let track_id = random_id(&mut self.rng, "TR_");
        peer.published.insert(init.track_id, tkey);
        let publisher_id = peer.id.clone();
        let room = peer.room.clone();
        info!(participant = %publisher_id, track = %track_id, codec = %rtc_codec.mime_type, ssrc = init.ssrc, %rid, "track published");
        let remote = RemoteTrack {
            room: room.clone(),
            publisher: key,
            publisher_id: publisher_id.clone(),
            info: TrackInfo {
                id: track_id.clone(),
                kind,
                source,
                muted: false,
            },
            codec,
            rtc_codec: rtc_codec.clone(),
            layers: vec![(rid.clone(), init.ssrc)],
            published_at: now,
        };
        self.mesh.broadcast(|| MeshMsg::TrackPublished {
            track: tkey,
            remote: remote.clone(),
        });
        let layers = vec![Layer::new(rid, init.ssrc)];
        self.tracks.by_id.insert(track_id.clone(), tkey);
        self.tracks.all.insert(
            tkey,
            Track {
                id: track_id.clone(),
                kind,
                source,
                publisher: key,
                publisher_id: publisher_id.clone(),
                room: room.clone(),
                origin: Origin::Local(init.receiver_id),
                sinks: Vec::new(),
                demand_sent: None,
                mid,
                codec,
                rtc_codec,
                order: layer_order(&layers),
                layers,
                published_at: now,
                requested: None,
                audio_level_ext: audio_level_ext.filter(|_| kind == MediaKind::Audio),
                level: LevelMeter::default(),
                muted: false,
                admin_muted: false,
                forwarders: Vec::new(),
                taps: Vec::new(),
                mix_for: None,
                composite: false,
            },
        );
        let others: Vec<ParticipantKey> = self
            .rooms
            .members
            .get(&room)
            .map(|m| m.iter().copied().filter(|k| *k != key).collect())
            .unwrap_or_default();
        let track = TrackInfo {
            id: track_id,
            kind,
            source,
            muted: false,
        };
        self.observe(|| Observation::TrackPublished {
            room: room.clone(),
            participant_id: publisher_id.clone(),
            track: track.clone(),
        });
        for other in others {
            self.send_event(
                other,
                Event::TrackPublished {
                    participant_id: publisher_id.clone(),
                    track: track.clone(),
                },
            );
            self.subscribe(other, tkey, now);
        }
        self.mix_track(tkey, now);
    }

    /// Removes a published track from every subscriber and tells the room.
    pub(super) fn unpublish_track(&mut self, tkey: TrackKey, now: Instant) {
        let Some(track) = self.tracks.all.remove(&tkey) else {
            return;
        };
        self.tracks.by_id.remove(&track.id);
        self.unmix_track(tkey, &track.room);
        if matches!(track.origin, Origin::Local(_)) {
            self.mesh
                .broadcast(|| MeshMsg::TrackUnpublished { track: tkey });
            self.observe(|| Observation::TrackUnpublished {
                room: track.room.clone(),
                participant_id: track.publisher_id.clone(),
                track_id: track.id.clone(),
            });
        }
        let room_members = self
            .rooms
            .members
            .get(&track.room)
            .cloned()
            .unwrap_or_default();
        for member in room_members.into_iter().filter(|k| *k != track.publisher) {
            self.send_event(
                member,
                Event::TrackUnpublished {
                    participant_id: track.publisher_id.clone(),
                    track_id: track.id.clone(),
                },
            );
        }
        for fwd in &track.forwarders {
            if let Some(sub) = self.conns.peers.get_mut(&fwd.subscriber) {
                sub.subscribed.remove(&tkey);
                sub.track_by_ssrc.remove(&fwd.ssrc);
                let _ = guarded(|| sub.pc.remove_track(fwd.sender_id));
                sub.negotiation_needed = true;
            }
            self.maybe_offer(fwd.subscriber, now);
        }
    }

    /// Mutes or unmutes a track of `room` on this driver, as its origin or a proxy, and tells
    /// the local members. Returns whether this driver is the track's origin.
    /// The client's offer stopped sending on `mids` (it removed those tracks: rtc reports no
    /// closed track for a transceiver turned inactive): what it published there is unpublished.
    pub(super) fn unpublish_silent(&mut self, key: ParticipantKey, mids: &[String], now: Instant) {
        if mids.is_empty() {
            return;
        }
        let Some(peer) = self.conns.peers.get_mut(&key) else {
            return;
        };
        let tracks = &self.tracks.all;
        let on_silent_mid = |tkey: &TrackKey| {
            tracks
                .get(tkey)
                .and_then(|t| t.mid.as_ref())
                .is_some_and(|m| mids.contains(m))
        };
        let gone: Vec<TrackKey> = peer
            .published
            .values()
            .copied()
            .filter(on_silent_mid)
            .collect();
        peer.published.retain(|_, tkey| !gone.contains(tkey));
        for tkey in gone {
            self.unpublish_track(tkey, now);
        }
    }

    /// A participant mutes or unmutes what it publishes on `mid` (every track on it: one).
    pub(super) fn self_mute(&mut self, key: ParticipantKey, mid: &str, muted: bool, now: Instant) {
        let Some(peer) = self.conns.peers.get(&key) else {
            return;
        };
        let room = peer.room.clone();
        let found: Vec<(String, bool)> = peer
            .published
            .values()
            .filter_map(|tkey| self.tracks.all.get(tkey))
            .filter(|t| t.mid.as_deref() == Some(mid))
            .map(|t| (t.id.clone(), t.admin_muted))
            .collect();
        if found.is_empty() {
            let message = format!("no published track on mid {mid:?}");
            self.events.tell(
                key,
                Event::Error {
                    kind: ErrorKind::UnknownTrack,
                    message,
                },
            );
            return;
        }
        for (track_id, admin_muted) in found {
            if admin_muted && !muted {
                let message = format!("track {track_id} was muted by an administrator");
                self.events.tell(
                    key,
                    Event::Error {
                        kind: ErrorKind::MutedByAdmin,
                        message,
                    },
                );
                continue;
            }
            let by = MutedBy::Publisher;
            self.mute_track(&room, &track_id, muted, by, now);
            self.mesh.broadcast(|| MeshMsg::Mute {
                room: room.clone(),
                track_id: track_id.clone(),
                muted,
                by,
            });
        }
    }

    /// Mutes or unmutes a track of `room` (its copy on this driver, if any), tells the room's
    /// members on this driver, and on unmute resumes its forwarders (video: with a keyframe
    /// request). Returns whether this driver publishes it.
    pub(super) fn mute_track(
        &mut self,
        room: &str,
        track_id: &str,
        muted: bool,
        by: MutedBy,
        now: Instant,
    ) -> bool {
        for r in self.rooms.remote.values_mut() {
            for t in r.tracks.values_mut() {
                if t.info.id == track_id {
                    t.info.muted = muted;
                }
            }
        }
        let Some(&tkey) = self.tracks.by_id.get(track_id) else {
            return false;
        };
        let Some(track) = self.tracks.all.get_mut(&tkey) else {
            return false;
        };
        if track.room != room {
            return false;
        }
        let local = matches!(track.origin, Origin::Local(_));
        if by == MutedBy::Admin {
            track.admin_muted = muted;
        }
        if track.muted == muted {
            return local;
        }
        track.muted = muted;
        info!(track = %track.id, muted, "track mute changed");
        let subscribers: Vec<ParticipantKey> = track
            .forwarders
            .iter()
            .filter(|f| f.active)
            .map(|f| f.subscriber)
            .collect();
        for fwd in track.forwarders.iter_mut().filter(|f| f.active) {
            if muted {
                // Paused at once; resumed through a new epoch (a keyframe for video), so the
                // subscriber sees contiguous sequence numbers across the silence.
                fwd.rewriter.set_target(None);
            } else if track.kind == MediaKind::Audio {
                fwd.rewriter.set_target(Some(0));
            }
        }
        let (publisher_id, kind, room) =
            (track.publisher_id.clone(), track.kind, track.room.clone());
        let track_id = track.id.clone();
        if local {
            self.observe(|| Observation::TrackMuted {
                room: room.clone(),
                participant_id: publisher_id.clone(),
                track_id: track_id.clone(),
                muted,
            });
        }
        let members = self.rooms.members.get(&room).cloned().unwrap_or_default();
        for m in members {
            self.send_event(
                m,
                Event::TrackMuted {
                    participant_id: publisher_id.clone(),
                    track_id: track_id.clone(),
                    muted,
                    by,
                },
            );
        }
        if !muted && kind == MediaKind::Video {
            for sub in subscribers {
                self.allocate_subscriber(sub, now);
            }
        }
        local
    }
}
