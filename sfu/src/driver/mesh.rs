//! How media drivers cooperate: one room can span every driver (every core).
//!
//! Each participant lives on one driver (the least loaded when it joined). Drivers tell each
//! other about room membership and published tracks over their command channels (control
//! messages, rare). A driver with local participants in a room holds a *proxy* of every track
//! published in that room on another driver: a `tracks::Track` whose packets come from the
//! track's origin driver instead of a peer connection. The origin sends each packet **once per
//! driver that holds a proxy**, however many subscribers that driver serves, over a bounded
//! queue (`MEDIA_QUEUE`); a full queue drops the packet and counts it (never blocks the
//! sender). The proxy runs the same ingest as a local track (layers, keyframes, sizes, bitrates,
//! audio level) and its own forwarders. Backwards, a proxy relays keyframe requests and the
//! layers its subscribers need (dynacast demand) to the origin.
//!
//! Keys of participants and tracks carry their driver's index in the top bits, so they are
//! unique across drivers and a key names its origin.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;
use tokio::sync::mpsc;

use super::select::layer_order;
use super::tracks::{Layer, Origin, Track};
use super::{Driver, TrackKey};
use crate::api::Event;
use crate::api::{Command, MutedBy, ParticipantInfo, ParticipantKey, TrackInfo, TrackSource};
use crate::engine::codec::Codec;
use crate::engine::speaker::LevelMeter;
use tracing::debug;

/// Packets queued from one driver to another at most; beyond this they are dropped (counted).
pub(crate) const MEDIA_QUEUE: usize = 8192;
/// Bits of a key that hold the per-driver counter; the driver's index sits above them.
const KEY_BITS: u32 = 48;

/// A key unique across drivers: the driver's index above its own counter.
pub(crate) fn global_key(driver: usize, counter: u64) -> u64 {
    ((driver as u64) << KEY_BITS) | (counter & ((1 << KEY_BITS) - 1))
}

/// The driver a key was made by.
pub(crate) fn driver_of(key: u64) -> usize {
    (key >> KEY_BITS) as usize
}

/// One packet of a published track on its way to another driver: what the forwarders need and
/// nothing else (no header extensions to copy; the audio level already parsed).
#[derive(Debug, Clone)]
pub struct MeshPacket {
    pub track: TrackKey,
    /// The layer's index in the origin's (and the proxy's) layer list.
    pub layer: u8,
    pub seq: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub padding: bool,
    pub payload: Bytes,
    pub audio_level: Option<u8>,
    pub at: Instant,
}

/// What a proxy needs to know about a remote track.
#[derive(Debug, Clone)]
pub struct RemoteTrack {
    pub room: String,
    pub publisher: ParticipantKey,
    pub publisher_id: String,
    pub info: TrackInfo,
    pub codec: Codec,
    pub rtc_codec: RTCRtpCodec,
    /// (rid, ssrc) of each layer, by index.
    pub layers: Vec<(String, u32)>,
    pub published_at: Instant,
}

/// Control messages between drivers.
#[derive(Debug)]
pub enum MeshMsg {
    Joined {
        room: String,
        key: ParticipantKey,
        info: ParticipantInfo,
    },
    Left {
        room: String,
        key: ParticipantKey,
        id: String,
    },
    TrackPublished {
        track: TrackKey,
        remote: RemoteTrack,
    },
    /// The layer list of a track grew (simulcast layers start one by one).
    Layers {
        track: TrackKey,
        layers: Vec<(String, u32)>,
    },
    TrackSource {
        track: TrackKey,
        source: TrackSource,
    },
    /// A publisher muted or unmuted its track (an administrator's mute reaches every driver
    /// from the engine handle).
    Mute {
        room: String,
        track_id: String,
        muted: bool,
        by: MutedBy,
    },
    TrackUnpublished {
        track: TrackKey,
    },
    /// A driver holds a proxy of the track: send it the packets.
    Subscribe {
        track: TrackKey,
        driver: usize,
    },
    Unsubscribe {
        track: TrackKey,
        driver: usize,
    },
    /// A proxy's subscriber needs a keyframe of a layer.
    Keyframe {
        track: TrackKey,
        layer: u8,
    },
    /// Shared port: driver `driver` pinned `flow` to one of its connections; a driver whose
    /// socket receives the flow sends its datagrams there (see `port`).
    FlowPinned {
        flow: super::Flow,
        driver: usize,
    },
    /// Shared port: driver `driver` no longer has `flow` pinned.
    FlowUnpinned {
        flow: super::Flow,
        driver: usize,
    },
    /// A data message for this driver's members of a room (stamped by the sender's driver):
    /// the identities it is for, or all.
    Data {
        room: String,
        reliable: bool,
        delivery: bytes::Bytes,
        to: Option<Vec<String>>,
    },
    /// The layers (bit per layer index) a proxy's subscribers need, for dynacast.
    Demand {
        track: TrackKey,
        driver: usize,
        need: u32,
    },
}

/// A driver's links to every driver (itself included, unused). Command links are weak, so that
/// the drivers do not keep each other alive: a driver stops when the engine and its participants
/// let go of its command channel. Media queues are held strongly (a stopped driver's queue
/// just refuses packets).
pub struct Mesh {
    pub index: usize,
    pub commands: Vec<mpsc::WeakUnboundedSender<Command>>,
    pub media: Vec<mpsc::Sender<MeshPacket>>,
    /// Datagrams another driver's socket received for this driver's connections (shared port).
    pub crossing: Vec<mpsc::Sender<super::port::Crossing>>,
}

impl Mesh {
    /// How many drivers are linked (this one included).
    pub(crate) fn len(&self) -> usize {
        self.commands.len()
    }

    /// Sends a control message to one driver.
    pub(crate) fn send(&self, driver: usize, msg: MeshMsg) {
        if let Some(tx) = self.commands.get(driver).and_then(|w| w.upgrade()) {
            let _ = tx.send(Command::Mesh(msg));
        }
    }

    /// Sends a control message (made per driver) to every other driver.
    pub(crate) fn broadcast(&self, mut msg: impl FnMut() -> MeshMsg) {
        for d in (0..self.len()).filter(|&d| d != self.index) {
            self.send(d, msg());
        }
    }
}

/// Shared between the engine handle and a driver: how many participants it holds (placement).
pub(crate) type Load = Arc<std::sync::atomic::AtomicUsize>;

/// One driver's end of the links between `n` drivers: its [`Mesh`], its load, and the receiving
/// ends of its queues (what the runtime, or a test harness, feeds the driver from).
pub struct Link {
    pub(crate) mesh: Mesh,
    pub(crate) load: Load,
    /// The strong sender of this driver's command channel (the engine handle's).
    pub commands_tx: mpsc::UnboundedSender<Command>,
    pub commands: mpsc::UnboundedReceiver<Command>,
    pub media: mpsc::Receiver<MeshPacket>,
    pub crossing: mpsc::Receiver<super::port::Crossing>,
}

/// The receiving ends of one driver's queues, for whoever feeds the driver without the runtime
/// (a test harness): what arrives on them goes to [`Driver::handle_command`](super::Driver),
/// `handle_mesh_packet` and `handle_crossed`, followed by `settle`.
pub struct Inbox {
    /// The strong sender of the driver's command channel: the other drivers hold weak ones, so
    /// keep it for as long as the driver should hear from them.
    pub commands_tx: mpsc::UnboundedSender<Command>,
    pub commands: mpsc::UnboundedReceiver<Command>,
    pub media: mpsc::Receiver<MeshPacket>,
    pub crossing: mpsc::Receiver<super::port::Crossing>,
}

impl Link {
    /// Makes this link's driver (as the runtime does, without sockets or threads) and hands back
    /// the ends of its queues to feed it from.
    pub fn into_driver(
        self,
        config: &crate::api::SfuConfig,
        addrs: super::DriverAddrs,
        seed: u64,
        now: Instant,
    ) -> (super::Driver, Inbox) {
        let driver = super::Driver::new(config, addrs, self.mesh, self.load, seed, now);
        let inbox = Inbox {
            commands_tx: self.commands_tx,
            commands: self.commands,
            media: self.media,
            crossing: self.crossing,
        };
        (driver, inbox)
    }
}

/// Links `n` drivers to each other.
pub fn link(n: usize) -> Vec<Link> {
    let commands: Vec<_> = (0..n).map(|_| mpsc::unbounded_channel()).collect();
    let media: Vec<_> = (0..n).map(|_| mpsc::channel(MEDIA_QUEUE)).collect();
    let crossing: Vec<_> = (0..n)
        .map(|_| mpsc::channel(super::port::CROSSING_QUEUE))
        .collect();
    let weak: Vec<_> = commands.iter().map(|(tx, _)| tx.downgrade()).collect();
    let media_tx: Vec<_> = media.iter().map(|(tx, _)| tx.clone()).collect();
    let crossing_tx: Vec<_> = crossing.iter().map(|(tx, _)| tx.clone()).collect();
    commands
        .into_iter()
        .zip(media)
        .zip(crossing)
        .enumerate()
        .map(
            |(index, (((commands_tx, commands), (_, media)), (_, crossing)))| Link {
                mesh: Mesh {
                    index,
                    commands: weak.clone(),
                    media: media_tx.clone(),
                    crossing: crossing_tx.clone(),
                },
                load: Load::default(),
                commands_tx,
                commands,
                media,
                crossing,
            },
        )
        .collect()
}

impl Driver {
    /// Makes sure this driver holds a proxy of the remote track (a local member of its room
    /// subscribes to it) and that the origin sends it the packets.
    pub(super) fn ensure_proxy(&mut self, tkey: TrackKey, room: &str) {
        if self.tracks.all.contains_key(&tkey) {
            return;
        }
        let Some(remote) = self
            .rooms
            .remote
            .get(room)
            .and_then(|r| r.tracks.get(&tkey))
            .cloned()
        else {
            return;
        };
        let origin = driver_of(tkey.0);
        let layers: Vec<Layer> = remote
            .layers
            .iter()
            .map(|(rid, ssrc)| Layer::new(rid.clone(), *ssrc))
            .collect();
        self.tracks.by_id.insert(remote.info.id.clone(), tkey);
        self.tracks.all.insert(
            tkey,
            Track {
                id: remote.info.id,
                kind: remote.info.kind,
                source: remote.info.source,
                publisher: remote.publisher,
                publisher_id: remote.publisher_id,
                room: remote.room,
                origin: Origin::Remote(origin),
                sinks: Vec::new(),
                demand_sent: None,
                mid: None,
                codec: remote.codec,
                rtc_codec: remote.rtc_codec,
                order: layer_order(&layers),
                layers,
                published_at: remote.published_at,
                requested: None,
                audio_level_ext: None,
                level: LevelMeter::default(),
                muted: remote.info.muted,
                admin_muted: false,
                forwarders: Vec::new(),
                taps: Vec::new(),
                mix_for: None,
                composite: false,
            },
        );
        debug!(track = %tkey, origin, "proxy of a remote track");
        self.mix_track(tkey, Instant::now());
        self.mesh.send(
            origin,
            MeshMsg::Subscribe {
                track: tkey,
                driver: self.mesh.index,
            },
        );
    }

    /// The room has no participant on this driver any more: stop receiving its remote tracks.
    pub(super) fn drop_proxies(&mut self, room: &str, now: Instant) {
        let proxies: Vec<(TrackKey, usize)> = self
            .tracks
            .all
            .iter()
            .filter(|(_, t)| t.room == room)
            .filter_map(|(k, t)| match t.origin {
                Origin::Remote(d) => Some((*k, d)),
                Origin::Local(_) | Origin::Mcu => None,
            })
            .collect();
        for (tkey, origin) in proxies {
            self.unpublish_track(tkey, now);
            self.mesh.send(
                origin,
                MeshMsg::Unsubscribe {
                    track: tkey,
                    driver: self.mesh.index,
                },
            );
        }
    }

    /// A control message from another driver.
    pub(super) fn on_mesh(&mut self, msg: MeshMsg, now: Instant) {
        match msg {
            MeshMsg::FlowPinned { flow, driver } => self.conns.remote_flows.pinned(flow, driver),
            MeshMsg::FlowUnpinned { flow, driver } => {
                self.conns.remote_flows.unpinned(flow, driver)
            }
            MeshMsg::Data {
                room,
                reliable,
                delivery,
                to,
            } => self.on_mesh_data(&room, reliable, &delivery, to.as_deref(), now),
            MeshMsg::Joined { room, key, info } => {
                let members = self.rooms.members.get(&room).cloned().unwrap_or_default();
                for m in members {
                    self.send_event(m, Event::ParticipantJoined(info.clone()));
                }
                self.rooms
                    .remote
                    .entry(room)
                    .or_default()
                    .members
                    .insert(key, info);
            }
            MeshMsg::Left { room, key, id } => {
                let mut empty = false;
                if let Some(r) = self.rooms.remote.get_mut(&room) {
                    r.members.remove(&key);
                    empty = r.members.is_empty() && r.tracks.is_empty();
                }
                if empty {
                    self.rooms.remote.remove(&room);
                }
                if self.rooms.speakers.get(&room) == Some(&key) {
                    self.rooms.speakers.remove(&room);
                }
                let members = self.rooms.members.get(&room).cloned().unwrap_or_default();
                for m in members {
                    self.send_event(
                        m,
                        Event::ParticipantLeft {
                            participant_id: id.clone(),
                        },
                    );
                }
            }
            MeshMsg::TrackPublished { track, remote } => {
                let room = remote.room.clone();
                let info = remote.info.clone();
                let publisher_id = remote.publisher_id.clone();
                self.rooms
                    .remote
                    .entry(room.clone())
                    .or_default()
                    .tracks
                    .insert(track, remote);
                let members = self.rooms.members.get(&room).cloned().unwrap_or_default();
                if members.is_empty() {
                    return;
                }
                self.ensure_proxy(track, &room);
                for m in members {
                    self.send_event(
                        m,
                        Event::TrackPublished {
                            participant_id: publisher_id.clone(),
                            track: info.clone(),
                        },
                    );
                    self.subscribe(m, track, now);
                }
            }
            MeshMsg::Layers { track, layers } => {
                for r in self.rooms.remote.values_mut() {
                    if let Some(t) = r.tracks.get_mut(&track) {
                        t.layers = layers.clone();
                    }
                }
                if let Some(t) = self.tracks.all.get_mut(&track) {
                    if matches!(t.origin, Origin::Remote(_)) {
                        for (rid, ssrc) in layers.into_iter().skip(t.layers.len()) {
                            t.layers.push(Layer::new(rid, ssrc));
                        }
                        t.order = layer_order(&t.layers);
                    }
                }
            }
            MeshMsg::Mute {
                room,
                track_id,
                muted,
                by,
            } => {
                self.mute_track(&room, &track_id, muted, by, now);
            }
            MeshMsg::TrackSource { track, source } => {
                for r in self.rooms.remote.values_mut() {
                    if let Some(t) = r.tracks.get_mut(&track) {
                        t.info.source = source;
                    }
                }
                if let Some(t) = self.tracks.all.get_mut(&track) {
                    t.source = source;
                }
            }
            MeshMsg::TrackUnpublished { track } => {
                for r in self.rooms.remote.values_mut() {
                    r.tracks.remove(&track);
                }
                self.rooms
                    .remote
                    .retain(|_, r| !(r.members.is_empty() && r.tracks.is_empty()));
                if self
                    .tracks
                    .all
                    .get(&track)
                    .is_some_and(|t| matches!(t.origin, Origin::Remote(_)))
                {
                    self.unpublish_track(track, now);
                }
            }
            MeshMsg::Subscribe { track, driver } => {
                if let Some(t) = self.tracks.all.get_mut(&track) {
                    if matches!(t.origin, Origin::Local(_)) && t.sinks.iter().all(|s| s.0 != driver)
                    {
                        // Until the proxy says otherwise, it needs whatever is sent now.
                        t.sinks.push((driver, u32::MAX));
                        debug!(track = %t.id, driver, "track sent to another driver");
                    }
                }
            }
            MeshMsg::Unsubscribe { track, driver } => {
                if let Some(t) = self.tracks.all.get_mut(&track) {
                    t.sinks.retain(|s| s.0 != driver);
                }
            }
            MeshMsg::Keyframe { track, layer } => {
                self.request_keyframe(track, layer, now);
            }
            MeshMsg::Demand {
                track,
                driver,
                need,
            } => {
                if let Some(t) = self.tracks.all.get_mut(&track) {
                    if let Some(s) = t.sinks.iter_mut().find(|s| s.0 == driver) {
                        s.1 = need;
                    }
                }
            }
        }
    }
}
