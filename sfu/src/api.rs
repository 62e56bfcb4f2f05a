//! The engine's public face: what the signaling layer sends in and gets back.
//!
//! The signaling layer never touches a peer connection. It starts the [`Sfu`], calls
//! [`Sfu::join`] once per participant and then talks to that participant's connection through the
//! returned [`Participant`] handle; everything the engine has to say to the participant (SDP,
//! candidates, room events, errors) arrives on the participant's [`Event`] channel.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

pub use crate::engine::data::DataLimits;
pub use crate::engine::layers::{Quality, Reason};
pub use crate::stats::{DataDrops, DriverStats, DroppedBytes};

/// How the engine is set up.
#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// Where the media driver's UDP socket binds (one port for every connection).
    pub media_bind: SocketAddr,
    /// The addresses announced in host candidates, with the socket's port. Empty means the bound
    /// address (which must then not be a wildcard).
    pub announce_ips: Vec<IpAddr>,
    /// ICE over TCP: each driver also listens on this TCP port plus its index (0: any free
    /// port), announced as passive candidates; `None`: UDP only.
    pub ice_tcp_port: Option<u16>,
    /// Test-only fault injection: the fraction (0.0–1.0) of incoming RTP datagrams to drop.
    pub inject_loss: f64,
    /// Test-only fault injection: the fraction (0.0–1.0) of outgoing RTP datagrams (media to
    /// subscribers, retransmissions included) to drop.
    pub inject_loss_out: f64,
    /// Media drivers, each a thread with its own UDP socket. A participant is placed on the least
    /// loaded; one room can span them all.
    pub media_drivers: usize,
    /// Whether each driver has a port of its own (`media_bind`'s port plus the driver's index;
    /// each its own ephemeral port when that is 0) instead of all sharing `media_bind`'s port
    /// (`SO_REUSEPORT`; a datagram the kernel gives to a driver that does not own its connection
    /// crosses to the owner once). Sharing is the default: a firewall names one port.
    pub port_per_driver: bool,
    /// Tracks one participant may publish at most (simulcast layers of a track count once);
    /// 0 means no limit. A track beyond it is refused with [`ErrorKind::TrackLimit`].
    pub max_tracks_per_participant: usize,
    /// Consent freshness (RFC 7675): a connection whose client has had no connectivity check
    /// accepted for this long is dead and its participant is removed. Until then a client whose
    /// path broke (a network change) can come back on a new pair or with an ICE restart.
    pub consent_timeout: Duration,
    /// A connection that negotiated but had no connectivity check accepted this long after is
    /// given up and its participant removed (a WHIP client that posted an offer and vanished).
    pub connect_timeout: Duration,
    /// Where the engine reports what happens to published tracks (for webhooks, the room
    /// registry and metrics). `None`: nobody listens.
    pub observer: Option<mpsc::UnboundedSender<Observation>>,
    /// Data messages: sizes, rates and backlogs ([`DataLimits`]).
    pub data: DataLimits,
}

impl Default for SfuConfig {
    fn default() -> Self {
        Self {
            media_bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            announce_ips: Vec::new(),
            ice_tcp_port: None,
            inject_loss: 0.0,
            inject_loss_out: 0.0,
            media_drivers: 1,
            port_per_driver: false,
            max_tracks_per_participant: 0,
            consent_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(30),
            observer: None,
            data: DataLimits::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Audio,
    Video,
}

impl MediaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        }
    }
}

/// What a published track carries, as its publisher described it (`track_source`); screen
/// shares get bandwidth first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackSource {
    Camera,
    Microphone,
    Screen,
}

impl TrackSource {
    pub fn as_str(self) -> &'static str {
        match self {
            TrackSource::Camera => "camera",
            TrackSource::Microphone => "microphone",
            TrackSource::Screen => "screen",
        }
    }

    /// Whether a track of `kind` can be this source: a microphone is audio, a camera or a
    /// screen is video. A label that does not fit is refused, so that a token limited to
    /// `microphone` cannot publish its camera by calling it one.
    pub fn fits(self, kind: MediaKind) -> bool {
        matches!(
            (self, kind),
            (TrackSource::Microphone, MediaKind::Audio)
                | (TrackSource::Camera | TrackSource::Screen, MediaKind::Video)
        )
    }

    pub fn parse(s: &str) -> Option<TrackSource> {
        match s {
            "camera" => Some(TrackSource::Camera),
            "microphone" => Some(TrackSource::Microphone),
            "screen" => Some(TrackSource::Screen),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackInfo {
    pub id: String,
    pub kind: MediaKind,
    pub source: TrackSource,
    /// Muted by an administrator: nothing of it is forwarded.
    pub muted: bool,
}

/// What a participant may do, from its access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    pub publish: bool,
    pub subscribe: bool,
    /// The sources it may publish; `None` allows every source.
    pub sources: Option<Vec<TrackSource>>,
    /// Whether it may send data messages (it always receives them).
    pub data: bool,
}

impl Default for Permissions {
    fn default() -> Self {
        Self {
            publish: true,
            subscribe: true,
            sources: None,
            data: true,
        }
    }
}

impl Permissions {
    /// Whether a track of this source may be published.
    pub fn may_publish(&self, source: TrackSource) -> bool {
        self.publish && self.sources.as_ref().is_none_or(|s| s.contains(&source))
    }
}

/// Who joins which room, and what it may do there.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub room: String,
    /// The participant's stable identity (from its token); unique in a room by convention of
    /// the caller, not checked here.
    pub identity: String,
    pub name: String,
    pub permissions: Permissions,
    /// Only the tracks of this participant (by participant id) are subscribed; `None`: all.
    pub subscribe_to: Option<String>,
    /// The server never offers to this participant: its subscriptions are negotiated by its own
    /// offer, answered with the tracks subscribed at that moment (WHIP and WHEP clients, which
    /// cannot take a server offer). Tracks published later are not added.
    pub answer_only: bool,
    /// The room's audio arrives mixed, as one track without this participant's own voice
    /// (stream id `mixed`), instead of one track per microphone.
    pub mixed_audio: bool,
    /// The room's cameras and screen shares arrive as one composite picture (stream id
    /// `mixed`) instead of one track each.
    pub mixed_video: bool,
}

/// What the engine reports to its observer (see [`SfuConfig::observer`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    TrackPublished {
        room: String,
        participant_id: String,
        track: TrackInfo,
    },
    TrackUnpublished {
        room: String,
        participant_id: String,
        track_id: String,
    },
    TrackMuted {
        room: String,
        participant_id: String,
        track_id: String,
        muted: bool,
    },
}

/// A subscriber's view settings for one remote video track. `None` fields keep their value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrackSettings {
    pub track_id: String,
    pub visible: Option<bool>,
    /// Displayed size in device pixels.
    pub size: Option<(u32, u32)>,
    pub max_quality: Option<Quality>,
}

/// Which layer a subscriber receives for one track, and why (sent whenever it changes).
#[derive(Debug, Clone, PartialEq)]
pub struct LayerReport {
    pub track_id: String,
    pub current: Option<Quality>,
    pub target: Option<Quality>,
    pub reason: Reason,
    /// Size and measured bitrate of the current layer, when known.
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub bitrate: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantInfo {
    pub id: String,
    pub identity: String,
    pub name: String,
    pub tracks: Vec<TrackInfo>,
}

/// What `join` returns besides the handle: who is already there.
#[derive(Debug, Clone)]
pub struct JoinInfo {
    pub participant_id: String,
    pub participants: Vec<ParticipantInfo>,
}

/// An ICE candidate in the browser's `RTCIceCandidateInit` shape.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Candidate {
    pub candidate: String,
    pub sdp_mid: Option<String>,
    pub sdp_mline_index: Option<u16>,
    pub username_fragment: Option<String>,
}

/// The kinds of error the engine reports to a participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidSdp,
    InvalidCandidate,
    /// A message named a track that does not exist (or is not subscribed).
    UnknownTrack,
    /// The participant may not publish this track (no publish grant, or not this source).
    PublishDenied,
    /// The participant publishes as many tracks as it may.
    TrackLimit,
    /// A data message was refused: too large, not a valid envelope, or no `data` grant.
    DataRejected,
    /// The participant sends data messages faster than it may; some were dropped.
    DataRateLimited,
    /// A participant tried to unmute its track that an administrator muted.
    MutedByAdmin,
    /// A `track_source` that does not fit the track's kind (a video labelled `microphone`).
    InvalidSource,
    Internal,
}

/// Who muted (or unmuted) a track: its publisher, or an administrator (the admin API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MutedBy {
    Publisher,
    Admin,
}

impl MutedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            MutedBy::Publisher => "publisher",
            MutedBy::Admin => "admin",
        }
    }
}

/// A data message the server sends (see [`Sfu::send_data`]).
#[derive(Debug, Clone)]
pub struct DataMessage {
    /// On the reliable channel (else the lossy one).
    pub reliable: bool,
    /// The payload is text (UTF-8).
    pub text: bool,
    pub topic: String,
    /// The identities it is for; empty: every participant of the room.
    pub to: Vec<String>,
    pub payload: bytes::Bytes,
}

/// Everything the engine tells one participant.
#[derive(Debug, Clone)]
pub enum Event {
    ParticipantJoined(ParticipantInfo),
    ParticipantLeft {
        participant_id: String,
    },
    TrackPublished {
        participant_id: String,
        track: TrackInfo,
    },
    TrackUnpublished {
        participant_id: String,
        track_id: String,
    },
    /// The server renegotiates: send this offer to the client.
    Offer(String),
    /// The answer to the client's offer.
    Answer(String),
    Candidate(Candidate),
    /// The room's active speaker changed.
    ActiveSpeaker {
        participant_id: String,
    },
    /// A track was muted or unmuted, by its publisher or an administrator (told to the whole
    /// room, publisher too).
    TrackMuted {
        participant_id: String,
        track_id: String,
        muted: bool,
        by: MutedBy,
    },
    /// To a subscriber: the layer it receives for a track changed (or why).
    TrackLayer(LayerReport),
    /// To a publisher: which simulcast encodings (by rid) of the track at `mid` anyone receives;
    /// the others should be paused.
    PublisherLayers {
        mid: String,
        track_id: String,
        active: Vec<String>,
        /// Seen and unneeded: to pause. Rids in neither list were not seen yet; leave them.
        paused: Vec<String>,
    },
    Error {
        kind: ErrorKind,
        message: String,
    },
    /// The engine removed the participant (media connection failed or closed).
    Closed {
        reason: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SfuError {
    #[error("the media engine has stopped")]
    Stopped,
    #[error("could not create the peer connection: {0}")]
    PeerConnection(String),
    #[error("no track {0:?} is published in that room")]
    TrackNotFound(String),
    #[error("{0}")]
    Recording(String),
    #[error("a data message of {len} bytes with its envelope exceeds the {channel} channel's limit of {max} bytes")]
    DataTooLarge {
        len: usize,
        max: usize,
        channel: &'static str,
    },
}

/// A participant's key inside the engine: unique across drivers, and names the driver it lives on
/// (see `driver::mesh`). Not the public participant id (`PA_…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantKey(pub(crate) u64);

impl std::fmt::Display for ParticipantKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "p{:x}", self.0)
    }
}

#[doc(hidden)]
pub enum Command {
    Join {
        request: JoinRequest,
        events: mpsc::UnboundedSender<Event>,
        reply: oneshot::Sender<Result<(ParticipantKey, JoinInfo), SfuError>>,
    },
    Offer {
        key: ParticipantKey,
        sdp: String,
    },
    Answer {
        key: ParticipantKey,
        sdp: String,
    },
    Candidate {
        key: ParticipantKey,
        candidate: Candidate,
    },
    Leave {
        key: ParticipantKey,
    },
    TrackSettings {
        key: ParticipantKey,
        settings: TrackSettings,
    },
    TrackSource {
        key: ParticipantKey,
        mid: String,
        source: TrackSource,
    },
    /// The participant mutes or unmutes what it publishes on transceiver `mid`.
    Mute {
        key: ParticipantKey,
        mid: String,
        muted: bool,
    },
    /// The client wants its data channels: the server opens them and offers them.
    EnableData {
        key: ParticipantKey,
    },
    Debug {
        reply: oneshot::Sender<crate::debug::Snapshot>,
    },
    /// Mutes or unmutes a track; the reply says whether this driver publishes it.
    MuteTrack {
        room: String,
        track_id: String,
        muted: bool,
        reply: oneshot::Sender<bool>,
    },
    Stats {
        reply: oneshot::Sender<DriverStats>,
    },
    /// A data message from the server (the admin API) to a room's participants on this
    /// driver; the reply counts the receivers it went to.
    SendData {
        room: String,
        message: DataMessage,
        reply: oneshot::Sender<usize>,
    },
    /// Copies a track's packets to a recording (see `driver/tap.rs`); the reply says the
    /// track's codec, or why this driver did not attach it.
    Tap {
        room: String,
        track_id: String,
        tap: crate::driver::tap::TapRequest,
        reply: oneshot::Sender<Result<crate::engine::codec::Codec, crate::driver::tap::TapRefusal>>,
    },
    /// Records a room (its mix and composite, see `driver/recording.rs`) if it has members on
    /// this driver; the reply says whether this driver took it.
    RecordRoom {
        room: String,
        tap: crate::driver::tap::TapRequest,
        reply: oneshot::Sender<Result<(), crate::driver::tap::TapRefusal>>,
    },
    /// Removes a tap; the reply says whether this driver had it.
    Untap {
        id: u64,
        reply: oneshot::Sender<bool>,
    },
    /// From another media driver.
    Mesh(crate::driver::mesh::MeshMsg),
}

/// One media driver as the engine handle sees it.
pub(crate) struct DriverHandle {
    pub(crate) commands: mpsc::UnboundedSender<Command>,
    media_addr: SocketAddr,
    load: crate::driver::mesh::Load,
}

/// A running engine. Cloning it is cheap; the drivers stop when every clone and every
/// participant handle is dropped.
#[derive(Clone)]
pub struct Sfu {
    pub(crate) drivers: std::sync::Arc<Vec<DriverHandle>>,
    /// What a data message may be (the admin API's are checked here).
    data: std::sync::Arc<DataLimits>,
}

impl Sfu {
    /// Binds the media sockets and starts the media drivers, each on its own thread.
    pub fn start(config: SfuConfig) -> std::io::Result<Sfu> {
        let data = std::sync::Arc::new(config.data.clone());
        let drivers = crate::driver::spawn(config)?
            .into_iter()
            .map(|(commands, media_addr, load)| DriverHandle {
                commands,
                media_addr,
                load,
            })
            .collect();
        Ok(Sfu {
            drivers: std::sync::Arc::new(drivers),
            data,
        })
    }

    /// The address the first media socket is bound to.
    pub fn media_addr(&self) -> SocketAddr {
        self.drivers[0].media_addr
    }

    /// The addresses of every media driver's socket, by driver index.
    pub fn media_addrs(&self) -> Vec<SocketAddr> {
        self.drivers.iter().map(|d| d.media_addr).collect()
    }

    /// Participants on each media driver now, by driver index.
    pub fn driver_loads(&self) -> Vec<usize> {
        self.drivers
            .iter()
            .map(|d| d.load.load(std::sync::atomic::Ordering::Relaxed))
            .collect()
    }

    /// Adds a participant to its room (created on first join), on the least loaded media
    /// driver. Events for it arrive on the returned receiver, starting with nothing: the caller
    /// already has the [`JoinInfo`].
    pub async fn join(
        &self,
        request: JoinRequest,
    ) -> Result<(Participant, JoinInfo, mpsc::UnboundedReceiver<Event>), SfuError> {
        let driver = self
            .drivers
            .iter()
            .min_by_key(|d| d.load.load(std::sync::atomic::Ordering::Relaxed))
            .ok_or(SfuError::Stopped)?;
        let (events, events_rx) = mpsc::unbounded_channel();
        let (reply, reply_rx) = oneshot::channel();
        driver
            .commands
            .send(Command::Join {
                request,
                events,
                reply,
            })
            .map_err(|_| SfuError::Stopped)?;
        let (key, info) = reply_rx.await.map_err(|_| SfuError::Stopped)??;
        let participant = Participant {
            key,
            id: info.participant_id.clone(),
            commands: driver.commands.clone(),
        };
        Ok((participant, info, events_rx))
    }

    /// Every room, participant, track, layer and forwarding decision, for the debug endpoint
    /// (rooms that span drivers are merged).
    pub async fn debug(&self) -> Result<crate::debug::Snapshot, SfuError> {
        let mut merged = crate::debug::Snapshot::default();
        for snap in self.ask_all(|reply| Command::Debug { reply }).await? {
            for room in snap.rooms {
                match merged.rooms.iter_mut().find(|r| r.name == room.name) {
                    Some(r) => r.participants.extend(room.participants),
                    None => merged.rooms.push(room),
                }
            }
        }
        merged.rooms.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(merged)
    }

    /// Mutes (or unmutes) a published track of `room`: nothing of it is forwarded while muted,
    /// and every member of the room is told. Returns whether the track exists.
    pub async fn mute_track(
        &self,
        room: &str,
        track_id: &str,
        muted: bool,
    ) -> Result<bool, SfuError> {
        let found = self
            .ask_all(|reply| Command::MuteTrack {
                room: room.to_owned(),
                track_id: track_id.to_owned(),
                muted,
                reply,
            })
            .await?;
        Ok(found.into_iter().any(|f| f))
    }

    /// Sends a data message from the server to a room's participants (all, or those whose
    /// identity `message.to` names); how many it reached.
    pub async fn send_data(&self, room: &str, message: DataMessage) -> Result<usize, SfuError> {
        // As a client's message is checked: the envelope it would have sent.
        let to: Vec<&str> = message.to.iter().map(String::as_str).collect();
        let len = crate::engine::data::write_outgoing(message.text, &message.topic, &to, &[]).len()
            + message.payload.len();
        let (max, channel) = if message.reliable {
            (self.data.max_reliable, "reliable")
        } else {
            (self.data.max_lossy, "lossy")
        };
        if len > max {
            return Err(SfuError::DataTooLarge { len, max, channel });
        }
        let reached = self
            .ask_all(|reply| Command::SendData {
                room: room.to_owned(),
                message: message.clone(),
                reply,
            })
            .await?;
        Ok(reached.into_iter().sum())
    }

    /// The counters of every driver added up (a room spanning two drivers counts twice in
    /// `rooms`).
    pub async fn stats(&self) -> Result<DriverStats, SfuError> {
        let mut total = DriverStats::default();
        for s in self.driver_stats().await? {
            total.add(&s);
        }
        Ok(total)
    }

    /// Each driver's counters, by driver index.
    pub async fn driver_stats(&self) -> Result<Vec<DriverStats>, SfuError> {
        self.ask_all(|reply| Command::Stats { reply }).await
    }

    /// Sends the command `ask` makes to every driver, then waits for every reply (by driver
    /// index): the drivers work on it at the same time.
    pub(crate) async fn ask_all<T>(
        &self,
        mut ask: impl FnMut(oneshot::Sender<T>) -> Command,
    ) -> Result<Vec<T>, SfuError> {
        let mut replies = Vec::with_capacity(self.drivers.len());
        for d in self.drivers.iter() {
            let (reply, rx) = oneshot::channel();
            d.commands.send(ask(reply)).map_err(|_| SfuError::Stopped)?;
            replies.push(rx);
        }
        let mut all = Vec::with_capacity(replies.len());
        for rx in replies {
            all.push(rx.await.map_err(|_| SfuError::Stopped)?);
        }
        Ok(all)
    }
}

/// One participant's handle. Dropping it removes the participant from its room.
pub struct Participant {
    key: ParticipantKey,
    id: String,
    commands: mpsc::UnboundedSender<Command>,
}

impl Participant {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn offer(&self, sdp: String) {
        let _ = self.commands.send(Command::Offer { key: self.key, sdp });
    }

    pub fn answer(&self, sdp: String) {
        let _ = self.commands.send(Command::Answer { key: self.key, sdp });
    }

    /// How this participant shows one of its remote video tracks.
    pub fn track_settings(&self, settings: TrackSettings) {
        let _ = self.commands.send(Command::TrackSettings {
            key: self.key,
            settings,
        });
    }

    /// What this participant publishes on the transceiver `mid`.
    pub fn track_source(&self, mid: String, source: TrackSource) {
        let _ = self.commands.send(Command::TrackSource {
            key: self.key,
            mid,
            source,
        });
    }

    /// Mutes (or unmutes) what this participant publishes on transceiver `mid`: nothing of it
    /// is forwarded while muted, the room is told (`TrackMuted`, by the publisher), and an
    /// unmuted video track gets a keyframe request at once. A track an administrator muted
    /// stays muted ([`ErrorKind::MutedByAdmin`]).
    pub fn mute(&self, mid: String, muted: bool) {
        let _ = self.commands.send(Command::Mute {
            key: self.key,
            mid,
            muted,
        });
    }

    /// Opens this participant's data channels: the server's next offer carries them (see
    /// `docs/protocol.md`, "Data messages"). Nothing if they are open already.
    pub fn enable_data(&self) {
        let _ = self.commands.send(Command::EnableData { key: self.key });
    }

    pub fn candidate(&self, candidate: Candidate) {
        let _ = self.commands.send(Command::Candidate {
            key: self.key,
            candidate,
        });
    }
}

impl Drop for Participant {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Leave { key: self.key });
    }
}
