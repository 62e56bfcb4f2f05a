//! The driver's side of layer selection: applying the pure decisions of
//! [`engine::layers`](crate::engine::layers) to its tracks and forwarders on every tick, telling
//! subscribers what they get (and why) and publishers which layers to send (dynacast).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tracing::debug;

use super::connections::Peer;
use super::forward::Forwarder;
use super::mesh::MeshMsg;
use super::tracks::{Layer, Origin};
use super::{Driver, Outbox, TrackKey, NO_ESTIMATE_BPS, REMB_MAX_AGE, TICK};
use crate::api::{
    ErrorKind, Event, LayerReport, MediaKind, ParticipantKey, TrackSettings, TrackSource,
};
use crate::debug::{
    LayerSnapshot, ParticipantSnapshot, RoomSnapshot, Snapshot, SubscriptionSnapshot, TrackSnapshot,
};
use crate::engine::layers::{self, Demand};
use crate::engine::layers::{LayerState, Quality, Reason};
use crate::engine::simulcast::{self, rid_rank};
use crate::engine::speaker;

/// Layer ids of `layers`, ordered low to high: by rid naming scheme, then by arrival.
pub(super) fn layer_order(layers: &[Layer]) -> Vec<u8> {
    let rids: Vec<&str> = layers.iter().map(|l| l.rid.as_str()).collect();
    simulcast::layer_order(&rids)
}

/// The quality name of layer id `id`: by its rid when the rids follow a known three-level
/// scheme (so `q` is low even while it is the only layer that has started), else by position.
fn quality(layers: &[Layer], order: &[u8], id: Option<u8>) -> Option<Quality> {
    let id = id?;
    let rids: Vec<&str> = layers.iter().map(|l| l.rid.as_str()).collect();
    let rank = rid_rank(layers.get(usize::from(id))?.rid.as_str(), &rids);
    if layers.len() > 1 || !layers[0].rid.is_empty() {
        if let Some(q) = [Quality::Low, Quality::Medium, Quality::High].get(rank) {
            return Some(*q);
        }
    }
    let pos = order.iter().position(|&o| o == id)?;
    Some(Quality::of(pos, order.len()))
}

/// Tells the subscriber which layer it gets for this track, if that or the reason changed.
pub(super) fn report_layer(
    peers: &HashMap<ParticipantKey, Peer>,
    events: &mut Outbox,
    track_id: &str,
    layers: &[Layer],
    order: &[u8],
    fwd: &mut Forwarder,
) {
    let (current_id, target_id) = (fwd.rewriter.current(), fwd.rewriter.target());
    let state = (
        quality(layers, order, current_id),
        quality(layers, order, target_id),
        fwd.reason,
    );
    if fwd.reported == Some(state) {
        return;
    }
    fwd.reported = Some(state);
    let current = current_id.and_then(|id| layers.get(usize::from(id)));
    let report = LayerReport {
        track_id: track_id.to_owned(),
        current: state.0,
        target: state.1,
        reason: state.2,
        width: current.map(|l| l.width).filter(|w| *w > 0),
        height: current.map(|l| l.height).filter(|h| *h > 0),
        bitrate: current.map(|l| l.bitrate as u64).filter(|b| *b > 0),
    };
    if peers.contains_key(&fwd.subscriber) {
        events.tell(fwd.subscriber, Event::TrackLayer(report));
    }
}

impl Driver {
    /// Periodic work: layer bitrates, every subscriber's allocation, dynacast.
    pub(super) fn tick(&mut self, now: Instant) {
        for track in self.tracks.all.values_mut() {
            for l in &mut track.layers {
                if l.active(now) {
                    l.bitrate = simulcast::smoothed_bitrate(l.bitrate, l.bytes, TICK);
                }
                l.bytes = 0;
            }
        }
        let subscribers: Vec<ParticipantKey> = self
            .conns
            .peers
            .iter()
            .filter(|(_, p)| p.connected && !p.subscribed.is_empty())
            .map(|(k, _)| *k)
            .collect();
        for key in subscribers {
            self.allocate_subscriber(key, now);
        }
        self.retarget_taps(now);
        self.dynacast(now);
        self.active_speakers(now);
        for (key, peer) in &self.conns.peers {
            let waited = peer
                .negotiated_at
                .map(|at| now.saturating_duration_since(at));
            if peer.consent.is_none() && waited.is_some_and(|w| w > self.conns.connect_timeout) {
                self.conns.removals.push((
                    *key,
                    "no connectivity check within the connect timeout".into(),
                ));
            }
        }
    }

    /// Picks each room's active speaker from its audio levels (of publishers on this driver and
    /// on others, through their proxies) and tells the room's local members on a change.
    fn active_speakers(&mut self, now: Instant) {
        let mut levels: HashMap<&str, Vec<(ParticipantKey, f32, &str)>> = HashMap::new();
        for t in self.tracks.all.values() {
            if t.kind == MediaKind::Audio && self.rooms.members.contains_key(&t.room) {
                levels.entry(t.room.as_str()).or_default().push((
                    t.publisher,
                    t.level.loudness(now),
                    t.publisher_id.as_str(),
                ));
            }
        }
        let mut changes = Vec::new();
        for (room, candidates) in levels {
            let current = self.rooms.speakers.get(room).copied();
            let next = speaker::pick_speaker(current, candidates.iter().map(|c| (c.0, c.1)));
            if next != current {
                if let Some(next) = next {
                    let id = candidates
                        .iter()
                        .find(|c| c.0 == next)
                        .map(|c| c.2.to_owned())
                        .unwrap_or_default();
                    changes.push((room.to_owned(), next, id));
                }
            }
        }
        for (room, key, id) in changes {
            self.rooms.speakers.insert(room.clone(), key);
            self.composite_speaker(&room, key);
            debug!(%room, speaker = %id, "active speaker");
            for &m in self.rooms.members.get(&room).into_iter().flatten() {
                self.events.tell(
                    m,
                    Event::ActiveSpeaker {
                        participant_id: id.clone(),
                    },
                );
            }
        }
    }

    /// Chooses the layer of each of one subscriber's video tracks and applies it.
    pub(super) fn allocate_subscriber(&mut self, key: ParticipantKey, now: Instant) {
        let Some(peer) = self.conns.peers.get_mut(&key) else {
            return;
        };
        if !peer.connected {
            return;
        }
        let estimate = peer.bandwidth.estimate().or_else(|| {
            peer.remb
                .filter(|(at, _)| now.saturating_duration_since(*at) < REMB_MAX_AGE)
                .map(|(_, bps)| bps)
        });
        let budget = match estimate {
            Some(e) => peer.hold.budget(now, e),
            None => NO_ESTIMATE_BPS,
        };
        peer.budget = Some(budget);
        let tkeys: Vec<TrackKey> = peer.subscribed.keys().copied().collect();
        let speaker = self.rooms.speakers.get(&peer.room).copied();

        struct Video {
            tkey: TrackKey,
            states: Vec<LayerState>,
            desired: Option<usize>,
            reason: Reason,
            priority: u8,
            current: Option<usize>,
        }
        let mut audio = 0.0;
        let mut video = Vec::new();
        for tkey in tkeys {
            let Some(track) = self.tracks.all.get(&tkey) else {
                continue;
            };
            if track.muted {
                continue; // paused when muted, resumed by the unmute
            }
            let Some(fwd) = track
                .forwarders
                .iter()
                .find(|f| f.subscriber == key && f.active)
            else {
                continue;
            };
            if track.kind == MediaKind::Audio {
                audio += track.layers.first().map_or(0.0, |l| l.bitrate);
                continue;
            }
            let states: Vec<LayerState> = track
                .order
                .iter()
                .map(|&id| {
                    let l = &track.layers[usize::from(id)];
                    LayerState {
                        quality: quality(&track.layers, &track.order, Some(id))
                            .unwrap_or(Quality::High),
                        active: l.active(now),
                        width: l.width,
                        height: l.height,
                        bitrate: l.bitrate,
                    }
                })
                .collect();
            let (desired, reason) = layers::desired(&states, &fwd.wants);
            let current = fwd
                .rewriter
                .current()
                .and_then(|c| track.order.iter().position(|&o| o == c));
            video.push(Video {
                tkey,
                states,
                desired,
                reason,
                priority: if track.source == TrackSource::Screen {
                    2
                } else if Some(track.publisher) == speaker {
                    1
                } else {
                    0
                },
                current,
            });
        }
        let demands: Vec<Demand<'_>> = video
            .iter()
            .map(|v| Demand {
                layers: &v.states,
                desired: v.desired,
                reason: v.reason,
                priority: v.priority,
                current: v.current,
            })
            .collect();
        let allocations = layers::allocate((budget - audio).max(0.0), &demands);
        let mut keyframes = Vec::new();
        for (v, alloc) in video.iter().zip(allocations) {
            let Some(track) = self.tracks.all.get_mut(&v.tkey) else {
                continue;
            };
            let to_id = |i: Option<usize>| i.map(|i| track.order[i]);
            let target = to_id(alloc.layer);
            let ideal = to_id(alloc.ideal);
            let Some(fwd) = track
                .forwarders
                .iter_mut()
                .find(|f| f.subscriber == key && f.active)
            else {
                continue;
            };
            if fwd.rewriter.target() != target {
                debug!(subscriber = %key, track = %track.id, ?target, reason = alloc.reason.as_str(), "layer target");
                fwd.rewriter.set_target(target);
            }
            fwd.ideal = ideal;
            fwd.reason = alloc.reason;
            if fwd.rewriter.waiting_for_keyframe() {
                if let Some(t) = target {
                    keyframes.push((v.tkey, t));
                }
            }
            report_layer(
                &self.conns.peers,
                &mut self.events,
                &track.id,
                &track.layers,
                &track.order,
                fwd,
            );
        }
        for (tkey, layer) in keyframes {
            self.request_keyframe(tkey, layer, now);
        }
    }

    /// Asks each simulcast publisher to send only the layers someone needs: the layers
    /// subscribers would get if everything were sent, those still being forwarded or switched
    /// to, and the top layer while a subscriber is still connecting (for at most
    /// [`DYNACAST_CONNECTING`](simulcast::DYNACAST_CONNECTING)). A layer is paused after nobody needed it for
    /// [`DYNACAST_PAUSE_AFTER`](simulcast::DYNACAST_PAUSE_AFTER) and resumed at the next tick once someone does.
    /// Proxies of remote tracks report what their subscribers need to the origin driver, which
    /// adds it to its own subscribers' needs.
    fn dynacast(&mut self, now: Instant) {
        let mut updates = Vec::new();
        let mut demands = Vec::new();
        for (&tkey, track) in self.tracks.all.iter_mut() {
            let since_publish = now.saturating_duration_since(track.published_at);
            let mut need = 0u32;
            for f in &track.forwarders {
                if f.active {
                    for l in [f.ideal, f.rewriter.current(), f.rewriter.target()]
                        .into_iter()
                        .flatten()
                    {
                        need |= 1 << l;
                    }
                } else if simulcast::connecting_keeps_top(
                    since_publish,
                    Duration::from_millis(u64::from(f.created_ms)),
                ) {
                    // A subscriber still connecting has chosen nothing yet: it keeps the top
                    // layer (what a tile of unknown size gets), so that layer is not paused
                    // under a subscriber about to want it, to be resumed a moment later.
                    if let Some(&top) = track.order.last() {
                        need |= 1 << top;
                    }
                }
            }
            if let Origin::Remote(origin) = track.origin {
                if track.kind == MediaKind::Video && track.demand_sent != Some(need) {
                    track.demand_sent = Some(need);
                    demands.push((origin, tkey, need));
                }
                continue;
            }
            for &(_, sink_need) in &track.sinks {
                need |= sink_need;
            }
            need |= track.tap_need();
            let Some(mid) = track.mid.clone() else {
                continue;
            };
            if track.layers.len() < 2 {
                continue;
            }
            let mut active = Vec::new();
            let mut paused = Vec::new();
            for &id in &track.order {
                let l = &mut track.layers[usize::from(id)];
                let needed = need & (1 << id) != 0;
                if simulcast::keep_layer(now, since_publish, needed, &mut l.unneeded_since) {
                    active.push(l.rid.clone());
                } else {
                    paused.push(l.rid.clone());
                }
            }
            if track.requested.as_ref() == Some(&active) {
                continue;
            }
            if track.requested.is_none() && active.len() == track.layers.len() {
                continue; // the client starts with every encoding on
            }
            debug!(track = %track.id, ?active, "dynacast");
            track.requested = Some(active.clone());
            updates.push((track.publisher, mid, track.id.clone(), active, paused));
        }
        for (origin, track, need) in demands {
            self.mesh.send(
                origin,
                MeshMsg::Demand {
                    track,
                    driver: self.mesh.index,
                    need,
                },
            );
        }
        for (publisher, mid, track_id, active, paused) in updates {
            self.stats.dynacast_updates += 1;
            self.send_event(
                publisher,
                Event::PublisherLayers {
                    mid,
                    track_id,
                    active,
                    paused,
                },
            );
        }
    }

    pub(super) fn on_track_settings(
        &mut self,
        key: ParticipantKey,
        settings: TrackSettings,
        now: Instant,
    ) {
        let Some(&tkey) = self.tracks.by_id.get(&settings.track_id) else {
            self.send_error(
                key,
                ErrorKind::UnknownTrack,
                format!("no track {:?} in this room", settings.track_id),
            );
            return;
        };
        let Some(fwd) = self
            .tracks
            .all
            .get_mut(&tkey)
            .and_then(|t| t.forwarders.iter_mut().find(|f| f.subscriber == key))
        else {
            self.send_error(
                key,
                ErrorKind::UnknownTrack,
                format!("not subscribed to {:?}", settings.track_id),
            );
            return;
        };
        if let Some(v) = settings.visible {
            fwd.wants.visible = v;
        }
        if let Some(size) = settings.size {
            fwd.wants.size = Some(size);
        }
        if let Some(q) = settings.max_quality {
            fwd.wants.max_quality = q;
        }
        self.allocate_subscriber(key, now);
    }

    pub(super) fn on_track_source(
        &mut self,
        key: ParticipantKey,
        mid: String,
        source: TrackSource,
        now: Instant,
    ) {
        let Some(peer) = self.conns.peers.get_mut(&key) else {
            return;
        };
        if peer.sources.len() >= 64 && !peer.sources.contains_key(&mid) {
            return;
        }
        let mut changed = Vec::new();
        let mut misfit = None;
        for &tkey in peer.published.values() {
            if let Some(track) = self.tracks.all.get_mut(&tkey) {
                if track.mid.as_deref() != Some(mid.as_str()) {
                    continue;
                }
                if !source.fits(track.kind) {
                    misfit = Some(track.kind);
                } else if track.source != source {
                    track.source = source;
                    changed.push(tkey);
                }
            }
        }
        // (A label given before its track arrives is checked when it arrives: `publish_track`.)
        if let Some(kind) = misfit {
            self.events.tell(
                key,
                Event::Error {
                    kind: ErrorKind::InvalidSource,
                    message: format!(
                        "mid {mid} carries {}: it cannot be labelled {}",
                        kind.as_str(),
                        source.as_str()
                    ),
                },
            );
            return;
        }
        peer.sources.insert(mid, source);
        if !changed.is_empty() && !peer.permissions.may_publish(source) {
            // Relabelled as a source this participant may not publish: the track goes.
            let refused: Vec<String> = peer
                .published
                .iter()
                .filter(|(_, t)| changed.contains(t))
                .map(|(rtc_id, _)| rtc_id.clone())
                .collect();
            for rtc_id in refused {
                peer.published.remove(&rtc_id);
                peer.refused.insert(rtc_id);
            }
            self.events.tell(
                key,
                Event::Error {
                    kind: ErrorKind::PublishDenied,
                    message: format!("this participant may not publish {}", source.as_str()),
                },
            );
            for tkey in changed {
                self.unpublish_track(tkey, now);
            }
            return;
        }
        for track in changed {
            self.mesh
                .broadcast(|| MeshMsg::TrackSource { track, source });
        }
    }

    pub(super) fn snapshot(&self, now: Instant) -> Snapshot {
        let mut rooms: Vec<RoomSnapshot> = self
            .rooms
            .members
            .iter()
            .map(|(name, members)| RoomSnapshot {
                name: name.clone(),
                participants: members
                    .iter()
                    .filter_map(|k| self.conns.peers.get(k))
                    .map(|p| self.participant_snapshot(p, now))
                    .collect(),
            })
            .collect();
        rooms.sort_by(|a, b| a.name.cmp(&b.name));
        Snapshot { rooms }
    }

    fn participant_snapshot(&self, p: &Peer, now: Instant) -> ParticipantSnapshot {
        let key = self
            .conns
            .peers
            .iter()
            .find(|(_, q)| q.id == p.id)
            .map(|(k, _)| *k);
        let published = p
            .published
            .values()
            .filter_map(|k| self.tracks.all.get(k))
            .map(|t| TrackSnapshot {
                id: t.id.clone(),
                kind: t.kind.as_str(),
                source: t.source.as_str(),
                codec: t.rtc_codec.mime_type.clone(),
                mid: t.mid.clone(),
                muted: t.muted,
                layers: t
                    .order
                    .iter()
                    .map(|&id| {
                        let l = &t.layers[usize::from(id)];
                        LayerSnapshot {
                            rid: l.rid.clone(),
                            quality: quality(&t.layers, &t.order, Some(id))
                                .map_or("high", Quality::as_str),
                            ssrc: l.ssrc,
                            active: l.active(now),
                            requested: t.requested.as_ref().is_none_or(|r| r.contains(&l.rid)),
                            width: l.width,
                            height: l.height,
                            bitrate_bps: l.bitrate as u64,
                        }
                    })
                    .collect(),
            })
            .collect();
        let subscriptions = p
            .subscribed
            .keys()
            .filter_map(|k| self.tracks.all.get(k))
            .filter_map(|t| {
                let f = t.forwarders.iter().find(|f| Some(f.subscriber) == key)?;
                Some(SubscriptionSnapshot {
                    track_id: t.id.clone(),
                    publisher_id: t.publisher_id.clone(),
                    current: quality(&t.layers, &t.order, f.rewriter.current())
                        .map(Quality::as_str),
                    target: quality(&t.layers, &t.order, f.rewriter.target()).map(Quality::as_str),
                    reason: f.reason.as_str(),
                    visible: f.wants.visible,
                    display_width: f.wants.size.map(|s| s.0),
                    display_height: f.wants.size.map(|s| s.1),
                    max_quality: f.wants.max_quality.as_str(),
                })
            })
            .collect();
        ParticipantSnapshot {
            id: p.id.clone(),
            identity: p.identity.clone(),
            name: p.name.clone(),
            can_publish: p.permissions.publish,
            can_subscribe: p.permissions.subscribe,
            connected: p.connected,
            remote_addr: p.consent.map(|(_, flow)| flow.to_string()),
            estimate_bps: p
                .bandwidth
                .estimate()
                .or(p.remb.map(|(_, b)| b))
                .map(|b| b as u64),
            budget_bps: p.budget.map(|b| b.min(1e12) as u64),
            congestion_hold: p.hold.holding(now),
            published,
            subscriptions,
        }
    }
}
