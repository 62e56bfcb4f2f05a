//! One signaling session: a WebSocket between one client and the engine.
//!
//! The session is a small state machine (waiting for `join`, then joined) that turns client
//! messages into calls on the participant's engine handle and engine [`Event`]s into server
//! messages. A join is checked in order: the server is not draining, the access token (unless
//! `--dev` and none is given), then the room registry's limits; only then does the engine see
//! it. It is generic over the socket's `Sink`/`Stream` halves, so tests can drive it without
//! HTTP. Who may join (and where a cluster routes a join) is in `admission`; p2p rooms, whose
//! signals are relayed between two browsers, in `p2p`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use sfu::{Event, JoinRequest, Participant, Sfu};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, Instrument};

use crate::auth::TokenAuthority;
use crate::drain::Drain;
use crate::metrics::Metrics;
use crate::outbox::{self, Outbox};
use crate::protocol::{
    parse_client_message_limited, ClientMessage, ErrorCode, IceCandidate, Mixed, QualityName,
    RoomMode, ServerMessage, SourceName, PROTOCOL_VERSION,
};
use crate::rooms::{Kick, PeerSignal, Rooms};

mod admission;
mod p2p;

use admission::route;
pub(crate) use admission::{admission, admit, Admitted};
use p2p::{forward_signal, handle_p2p, join_p2p};

/// How often the server pings, and how long a silent socket lives: a client that loses its
/// network is removed (and the room told) within about five seconds.
const PING_INTERVAL: Duration = Duration::from_secs(1);
const SILENCE_TIMEOUT: Duration = Duration::from_secs(4);

/// Per-socket limits on what a client sends.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    pub max_message_bytes: usize,
    pub max_messages_per_second: u32,
    /// A socket that has not joined by then is closed (`join_timeout`).
    pub join_timeout: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            max_message_bytes: crate::protocol::MAX_MESSAGE_BYTES,
            max_messages_per_second: 50,
            join_timeout: Duration::from_secs(10),
        }
    }
}

/// What a session needs from the server.
#[derive(Clone)]
pub struct SessionContext {
    pub sfu: Sfu,
    /// STUN/TURN servers for clients (TURN credentials made per participant).
    pub ice: crate::ice::IceServers,
    pub rooms: Rooms,
    /// Verifies access tokens. Always set: in `--dev` without configured keys it holds a random
    /// secret, so that the dev token endpoint works.
    pub auth: TokenAuthority,
    /// Joins without a token are let in (as full participants).
    pub dev: bool,
    pub limits: SessionLimits,
    pub drain: Drain,
    pub metrics: Arc<Metrics>,
    /// Multi-node mode: this node's place in the cluster (`None`: a single node).
    pub cluster: Option<crate::cluster::Cluster>,
}

/// Where a signaling socket comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A client.
    Client,
    /// Another node, relaying a join for a room this node holds: served here, never proxied on.
    Node,
}

struct Joined {
    id: String,
    room: String,
    link: Link,
    kicks: mpsc::UnboundedReceiver<Kick>,
}

/// Where a joined session's media goes.
enum Link {
    /// Through the engine: the participant's peer connection is with the server.
    Media {
        participant: Participant,
        events: mpsc::UnboundedReceiver<Event>,
    },
    /// A p2p room: the peer connection is with the other participant; the server relays.
    P2p {
        signals: mpsc::UnboundedReceiver<PeerSignal>,
    },
}

/// A token bucket over the messages a client sends: `rate` per second, bursts of `2 × rate`.
struct RateLimit {
    rate: f64,
    tokens: f64,
    at: Instant,
    /// Messages dropped in a row, and when the client was last told.
    dropped_in_a_row: u32,
    last_told: Option<Instant>,
}

impl RateLimit {
    fn new(rate: u32) -> Self {
        let rate = f64::from(rate.max(1));
        Self {
            rate,
            tokens: 2.0 * rate,
            at: Instant::now(),
            dropped_in_a_row: 0,
            last_told: None,
        }
    }

    fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(2.0 * self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.dropped_in_a_row = 0;
            true
        } else {
            self.dropped_in_a_row += 1;
            false
        }
    }
}

enum Flow {
    Continue,
    Close(u16, &'static str),
    /// Multi-node: the room is on another node; relay the socket there, starting with this
    /// join message.
    Proxy(Box<crate::proxy::Upstream>, Utf8Bytes),
}

/// Serves one client's socket (`sink`, `stream`) until it closes. What the session sends goes
/// through an [`Outbox`] to a writer of its own, so a client that stops reading cannot hold the
/// session up (see `outbox`).
pub async fn run<S, R, E>(ctx: SessionContext, origin: Origin, sink: S, stream: R)
where
    S: Sink<Message> + Unpin,
    R: Stream<Item = Result<Message, E>> + Unpin,
    E: std::fmt::Display,
{
    let (outbox, queue) = outbox::outbox(outbox::QUEUE);
    let writer = outbox::write_out(sink, queue, outbox::SEND_TIMEOUT);
    tokio::join!(serve(ctx, origin, outbox, stream), writer);
}

async fn serve<R, E>(ctx: SessionContext, origin: Origin, mut sink: Outbox, mut stream: R)
where
    R: Stream<Item = Result<Message, E>> + Unpin,
    E: std::fmt::Display,
{
    let gone = sink.gone();
    tokio::pin!(gone);
    let mut joined: Option<Joined> = None;
    let opened = Instant::now();
    let mut last_heard = opened;
    let mut ping = tokio::time::interval(PING_INTERVAL);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rate = RateLimit::new(ctx.limits.max_messages_per_second);
    let mut closing = ctx.drain.closing();
    let span = tracing::info_span!(
        "session",
        room = tracing::field::Empty,
        participant = tracing::field::Empty
    );
    async {
        loop {
            let flow = tokio::select! {
                msg = stream.next() => match msg {
                    Some(Ok(msg)) => {
                        let now = Instant::now();
                        last_heard = now;
                        if matches!(msg, Message::Text(_) | Message::Binary(_)) && !rate.allow(now) {
                            rate_limited(&ctx, &mut sink, &mut rate, now).await
                        } else {
                            handle_frame(&ctx, origin, &mut joined, &mut sink, msg).await
                        }
                    }
                    Some(Err(err)) => {
                        debug!(%err, "websocket error");
                        break;
                    }
                    None => break,
                },
                input = from_engine(&mut joined) => match input {
                    FromEngine::Event(event) => forward_event(&ctx, &mut sink, event).await,
                    FromEngine::Peer(signal) => forward_signal(&mut sink, signal).await,
                    FromEngine::Ended => Flow::Close(1011, "media session ended"),
                    FromEngine::Kick(kick) => {
                        let (code, message) = match kick {
                            Kick::Removed => (ErrorCode::Removed, "removed by an administrator"),
                            Kick::RoomDeleted => (ErrorCode::RoomDeleted, "the room was deleted"),
                            Kick::DuplicateIdentity => (
                                ErrorCode::DuplicateIdentity,
                                "the same identity joined this room again",
                            ),
                            Kick::ServerShutdown => {
                                (ErrorCode::ServerShutdown, "the server is shutting down")
                            }
                        };
                        info!(reason = message, "session ended by the server");
                        send_error(&ctx, &mut sink, code, message.into()).await
                    }
                },
                _ = &mut gone => {
                    info!("the client stopped reading; closing");
                    break;
                }
                _ = closed(&mut closing) => {
                    send_error(&ctx, &mut sink, ErrorCode::ServerShutdown, "the server is shutting down".into()).await
                }
                _ = ping.tick() => {
                    if joined.is_none() && opened.elapsed() > ctx.limits.join_timeout {
                        // Pongs keep a socket alive, not joined: without this, sockets that
                        // never join would stay open for ever.
                        let message = format!("no join within {:?}", ctx.limits.join_timeout);
                        send_error(&ctx, &mut sink, ErrorCode::JoinTimeout, message).await
                    } else if last_heard.elapsed() > SILENCE_TIMEOUT {
                        info!("no sign of life from the client; closing");
                        Flow::Close(1001, "timeout")
                    } else {
                        let _ = sink.send(Message::Ping(Default::default())).await;
                        Flow::Continue
                    }
                }
            };
            if let Flow::Proxy(upstream, first) = flow {
                ctx.metrics.proxied_sessions.inc();
                crate::proxy::relay(*upstream, first, sink, stream).await;
                ctx.metrics.proxied_sessions.dec();
                return;
            }
            if let Flow::Close(code, reason) = flow {
                let _ = sink
                    .send(Message::Close(Some(CloseFrame {
                        code,
                        reason: Utf8Bytes::from_static(reason),
                    })))
                    .await;
                break;
            }
        }
        if let Some(j) = joined.take() {
            ctx.rooms.leave(&j.room, &j.id);
            // Dropping the participant handle removes it from the engine's room.
        }
    }
    .instrument(span)
    .await;
}

/// A message over the rate limit: dropped, the client told (at most once a second), and a
/// client that keeps flooding is disconnected.
async fn rate_limited<S: Sink<Message> + Unpin>(
    ctx: &SessionContext,
    sink: &mut S,
    rate: &mut RateLimit,
    now: Instant,
) -> Flow {
    if f64::from(rate.dropped_in_a_row) > 4.0 * rate.rate {
        info!("client keeps sending over the rate limit; closing");
        return Flow::Close(1008, "rate limit");
    }
    if rate
        .last_told
        .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1))
    {
        return Flow::Continue;
    }
    rate.last_told = Some(now);
    send_error(
        ctx,
        sink,
        ErrorCode::RateLimited,
        format!(
            "more than {} messages per second: message dropped",
            ctx.limits.max_messages_per_second
        ),
    )
    .await
}

/// Resolves once the server closes every session.
pub(crate) async fn closed(closing: &mut watch::Receiver<bool>) {
    let closed = closing.wait_for(|c| *c).await.is_ok();
    if !closed {
        std::future::pending::<()>().await;
    }
}

/// What the engine or the room registry has for a joined session.
enum FromEngine {
    Event(Event),
    /// p2p: from the other participant.
    Peer(PeerSignal),
    /// The engine dropped the participant's event channel.
    Ended,
    Kick(Kick),
}

async fn from_engine(joined: &mut Option<Joined>) -> FromEngine {
    let Some(Joined { link, kicks, .. }) = joined else {
        return std::future::pending().await;
    };
    match link {
        Link::Media { events, .. } => tokio::select! {
            event = events.recv() => event.map_or(FromEngine::Ended, FromEngine::Event),
            Some(kick) = kicks.recv() => FromEngine::Kick(kick),
        },
        Link::P2p { signals } => tokio::select! {
            Some(signal) = signals.recv() => FromEngine::Peer(signal),
            Some(kick) = kicks.recv() => FromEngine::Kick(kick),
        },
    }
}

async fn send<S: Sink<Message> + Unpin>(sink: &mut S, msg: &ServerMessage) -> bool {
    match serde_json::to_string(msg) {
        Ok(text) => sink.send(Message::Text(text.into())).await.is_ok(),
        Err(_) => false,
    }
}

async fn send_error<S: Sink<Message> + Unpin>(
    ctx: &SessionContext,
    sink: &mut S,
    code: ErrorCode,
    message: String,
) -> Flow {
    debug!(?code, %message, "client error");
    ctx.metrics.signaling_error(code);
    send(sink, &ServerMessage::Error { code, message }).await;
    match code.close_code() {
        Some(close) => Flow::Close(close, close_reason(code)),
        None => Flow::Continue,
    }
}

fn close_reason(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::ServerDraining | ErrorCode::ClusterUnavailable => "try again later",
        ErrorCode::NodeLost => "node lost",
        ErrorCode::ServerShutdown => "server shutting down",
        ErrorCode::Removed => "removed",
        ErrorCode::RoomDeleted => "room deleted",
        ErrorCode::DuplicateIdentity => "duplicate identity",
        ErrorCode::InternalError => "internal error",
        _ => "protocol error",
    }
}

async fn join<S: Sink<Message> + Unpin>(
    ctx: &SessionContext,
    joined: &mut Option<Joined>,
    sink: &mut S,
    room: String,
    name: String,
    token: Option<String>,
    (mode, mixed): (Option<RoomMode>, Option<Mixed>),
) -> Flow {
    let started = Instant::now();
    let Admitted {
        reservation,
        identity,
        name,
        permissions,
    } = match admit(ctx, &room, &name, token.as_deref(), mode) {
        Ok(a) => a,
        Err((code, message)) => return send_error(ctx, sink, code, message).await,
    };
    if reservation.mode == RoomMode::P2p {
        return join_p2p(
            ctx,
            joined,
            sink,
            room,
            reservation,
            identity,
            name,
            started,
        )
        .await;
    }
    let request = JoinRequest {
        room: room.clone(),
        identity: identity.clone(),
        name: name.clone(),
        permissions,
        subscribe_to: None,
        answer_only: false,
        mixed_audio: mixed.is_some(),
        mixed_video: mixed == Some(Mixed::All),
    };
    let (participant, info, events) = match ctx.sfu.join(request).await {
        Ok(j) => j,
        Err(err) => {
            return send_error(
                ctx,
                sink,
                ErrorCode::InternalError,
                format!("join failed: {err}"),
            )
            .await
        }
    };
    let span = tracing::Span::current();
    span.record("room", room.as_str());
    span.record("participant", participant.id());
    let (kick_tx, kicks) = mpsc::unbounded_channel();
    ctx.rooms
        .admit(reservation, participant.id(), &identity, &name, kick_tx);
    let participants = info
        .participants
        .into_iter()
        .map(to_wire_participant)
        .collect();
    let entry = Joined {
        id: info.participant_id,
        room,
        link: Link::Media {
            participant,
            events,
        },
        kicks,
    };
    welcome(ctx, joined, sink, entry, participants, &identity, started).await
}

/// Sends `joined` for a session that took its place (`entry`), and keeps the session.
async fn welcome<S: Sink<Message> + Unpin>(
    ctx: &SessionContext,
    joined: &mut Option<Joined>,
    sink: &mut S,
    entry: Joined,
    participants: Vec<crate::protocol::Participant>,
    identity: &str,
    started: Instant,
) -> Flow {
    let mode = match entry.link {
        Link::Media { .. } => RoomMode::Sfu,
        Link::P2p { .. } => RoomMode::P2p,
    };
    let ok = send(
        sink,
        &ServerMessage::Joined {
            v: PROTOCOL_VERSION,
            room: entry.room.clone(),
            participant_id: entry.id.clone(),
            participants,
            ice_servers: ctx.ice.for_identity(identity, crate::auth::unix_now()),
            mode,
        },
    )
    .await;
    ctx.metrics
        .join_latency
        .observe(started.elapsed().as_secs_f64());
    info!(%identity, mode = mode.as_str(), "joined");
    *joined = Some(entry);
    if ok {
        Flow::Continue
    } else {
        Flow::Close(1011, "send failed")
    }
}

async fn handle_frame<S: Sink<Message> + Unpin>(
    ctx: &SessionContext,
    origin: Origin,
    joined: &mut Option<Joined>,
    sink: &mut S,
    frame: Message,
) -> Flow {
    let text = match frame {
        Message::Text(text) => text,
        Message::Binary(_) => {
            return send_error(
                ctx,
                sink,
                ErrorCode::InvalidMessage,
                "binary frames are not accepted".into(),
            )
            .await
        }
        Message::Close(_) => return Flow::Close(1000, "bye"),
        Message::Ping(_) | Message::Pong(_) => return Flow::Continue,
    };
    let msg = match parse_client_message_limited(&text, ctx.limits.max_message_bytes) {
        Ok(msg) => msg,
        Err(e) => return send_error(ctx, sink, e.code, e.message).await,
    };
    match (msg, joined.as_ref()) {
        (
            ClientMessage::Join {
                v,
                room,
                name,
                token,
                mode,
                mixed,
            },
            None,
        ) => {
            if v != PROTOCOL_VERSION {
                return send_error(
                    ctx,
                    sink,
                    ErrorCode::UnsupportedVersion,
                    format!("protocol version {v} is not supported; this server speaks {PROTOCOL_VERSION}"),
                )
                .await;
            }
            if let Some(cluster) = &ctx.cluster {
                match route(ctx, cluster, origin, &room, &name, token.as_deref()).await {
                    Ok(None) => {}
                    Ok(Some(upstream)) => return Flow::Proxy(Box::new(upstream), text),
                    Err((code, message)) => return send_error(ctx, sink, code, message).await,
                }
            }
            join(ctx, joined, sink, room, name, token, (mode, mixed)).await
        }
        (ClientMessage::Join { .. }, Some(_)) => {
            send_error(
                ctx,
                sink,
                ErrorCode::AlreadyJoined,
                "this socket has already joined a room".into(),
            )
            .await
        }
        (_, None) => send_error(ctx, sink, ErrorCode::NotJoined, "send join first".into()).await,
        (msg, Some(j)) => match &j.link {
            Link::Media { participant, .. } => handle_media(ctx, sink, participant, msg).await,
            Link::P2p { .. } => handle_p2p(ctx, sink, j, msg).await,
        },
    }
}

/// A joined client's message in an SFU room, for its engine participant.
async fn handle_media<S: Sink<Message> + Unpin>(
    ctx: &SessionContext,
    sink: &mut S,
    participant: &Participant,
    msg: ClientMessage,
) -> Flow {
    let j = participant;
    match msg {
        ClientMessage::Offer { sdp } => {
            j.offer(sdp);
            Flow::Continue
        }
        ClientMessage::Answer { sdp } => {
            j.answer(sdp);
            Flow::Continue
        }
        ClientMessage::Candidate { candidate } => {
            if let Some(c) = candidate {
                j.candidate(sfu::Candidate {
                    candidate: c.candidate,
                    sdp_mid: c.sdp_mid,
                    sdp_mline_index: c.sdp_mline_index,
                    username_fragment: c.username_fragment,
                });
            }
            Flow::Continue
        }
        ClientMessage::Leave {} => Flow::Close(1000, "left"),
        ClientMessage::TrackSettings {
            track_id,
            visible,
            width,
            height,
            max_quality,
        } => {
            let size = match (width, height) {
                (Some(w), Some(h)) => Some((w, h)),
                (None, None) => None,
                _ => {
                    return send_error(
                        ctx,
                        sink,
                        ErrorCode::InvalidMessage,
                        "width and height go together".into(),
                    )
                    .await
                }
            };
            j.track_settings(sfu::TrackSettings {
                track_id,
                visible,
                size,
                max_quality: max_quality.map(from_wire_quality),
            });
            Flow::Continue
        }
        ClientMessage::TrackSource { mid, source } => {
            let source = match source {
                SourceName::Camera => sfu::TrackSource::Camera,
                SourceName::Microphone => sfu::TrackSource::Microphone,
                SourceName::Screen => sfu::TrackSource::Screen,
            };
            j.track_source(mid, source);
            Flow::Continue
        }
        ClientMessage::EnableData {} => {
            j.enable_data();
            Flow::Continue
        }
        ClientMessage::Mute { mid, muted } => {
            j.mute(mid, muted);
            Flow::Continue
        }
        // Handled before (a second join is refused).
        ClientMessage::Join { .. } => Flow::Continue,
    }
}

fn to_wire_participant(p: sfu::ParticipantInfo) -> crate::protocol::Participant {
    crate::protocol::Participant {
        id: p.id,
        identity: p.identity,
        name: p.name,
        tracks: p.tracks.into_iter().map(to_wire_track).collect(),
    }
}

fn to_wire_track(t: sfu::TrackInfo) -> crate::protocol::Track {
    crate::protocol::Track {
        id: t.id,
        kind: t.kind.as_str().to_owned(),
        source: t.source.as_str().to_owned(),
        muted: t.muted,
    }
}

fn from_wire_quality(q: QualityName) -> sfu::Quality {
    match q {
        QualityName::Low => sfu::Quality::Low,
        QualityName::Medium => sfu::Quality::Medium,
        QualityName::High => sfu::Quality::High,
    }
}

fn to_wire_quality(q: sfu::Quality) -> QualityName {
    match q {
        sfu::Quality::Low => QualityName::Low,
        sfu::Quality::Medium => QualityName::Medium,
        sfu::Quality::High => QualityName::High,
    }
}

async fn forward_event<S: Sink<Message> + Unpin>(
    ctx: &SessionContext,
    sink: &mut S,
    event: Event,
) -> Flow {
    let msg = match event {
        Event::ParticipantJoined(p) => ServerMessage::ParticipantJoined {
            participant: to_wire_participant(p),
        },
        Event::ParticipantLeft { participant_id } => {
            ServerMessage::ParticipantLeft { participant_id }
        }
        Event::TrackPublished {
            participant_id,
            track,
        } => ServerMessage::TrackPublished {
            participant_id,
            track: to_wire_track(track),
        },
        Event::TrackUnpublished {
            participant_id,
            track_id,
        } => ServerMessage::TrackUnpublished {
            participant_id,
            track_id,
        },
        Event::Offer(sdp) => ServerMessage::Offer { sdp, from: None },
        Event::Answer(sdp) => ServerMessage::Answer { sdp, from: None },
        Event::Candidate(c) => ServerMessage::Candidate {
            from: None,
            candidate: IceCandidate {
                candidate: c.candidate,
                sdp_mid: c.sdp_mid,
                sdp_mline_index: c.sdp_mline_index,
                username_fragment: c.username_fragment,
            },
        },
        Event::ActiveSpeaker { participant_id } => ServerMessage::ActiveSpeaker { participant_id },
        Event::TrackMuted {
            participant_id,
            track_id,
            muted,
            by,
        } => ServerMessage::TrackMuted {
            participant_id,
            track_id,
            muted,
            by: by.as_str(),
        },
        Event::TrackLayer(r) => ServerMessage::TrackLayer {
            track_id: r.track_id,
            current: r.current.map(to_wire_quality),
            target: r.target.map(to_wire_quality),
            reason: r.reason.as_str().to_owned(),
            width: r.width,
            height: r.height,
            bitrate: r.bitrate,
        },
        Event::PublisherLayers {
            mid,
            track_id,
            active,
            paused,
        } => ServerMessage::PublisherLayers {
            mid,
            track_id,
            active,
            paused,
        },
        Event::Error { kind, message } => {
            let code = match kind {
                sfu::ErrorKind::InvalidSdp => ErrorCode::InvalidSdp,
                sfu::ErrorKind::InvalidCandidate => ErrorCode::InvalidCandidate,
                sfu::ErrorKind::UnknownTrack => ErrorCode::UnknownTrack,
                sfu::ErrorKind::PublishDenied => ErrorCode::PublishNotAllowed,
                sfu::ErrorKind::TrackLimit => ErrorCode::TooManyTracks,
                sfu::ErrorKind::DataRejected => ErrorCode::DataRejected,
                sfu::ErrorKind::DataRateLimited => ErrorCode::DataRateLimited,
                sfu::ErrorKind::MutedByAdmin => ErrorCode::MutedByAdmin,
                sfu::ErrorKind::InvalidSource => ErrorCode::InvalidMessage,
                sfu::ErrorKind::Internal => ErrorCode::InternalError,
            };
            return send_error(ctx, sink, code, message).await;
        }
        Event::Closed { reason } => {
            info!(%reason, "media session closed by the server");
            return Flow::Close(1011, "media session ended");
        }
    };
    if send(sink, &msg).await {
        Flow::Continue
    } else {
        Flow::Close(1011, "send failed")
    }
}
