//! One signaling session: a WebSocket between one client and the engine.
//!
//! The session is a small state machine (waiting for `join`, then joined) that turns client
//! messages into calls on the participant's engine handle and engine [`Event`]s into server
//! messages. It is generic over the socket's `Sink`/`Stream` halves, so tests can drive it
//! without HTTP.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use sfu::{Event, Participant, Sfu};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, Instrument};

use crate::protocol::{
    parse_client_message, ClientMessage, ErrorCode, IceCandidate, IceServer, QualityName,
    ServerMessage, SourceName, MAX_NAME_CHARS, MAX_ROOM_CHARS, PROTOCOL_VERSION,
};

/// How often the server pings, and how long a silent socket lives: a client that loses its
/// network is removed (and the room told) within about five seconds.
const PING_INTERVAL: Duration = Duration::from_secs(1);
const SILENCE_TIMEOUT: Duration = Duration::from_secs(4);

/// What a session needs from the server.
#[derive(Clone)]
pub struct SessionContext {
    pub sfu: Sfu,
    pub ice_servers: Vec<IceServer>,
}

struct Joined {
    participant: Participant,
    events: mpsc::UnboundedReceiver<Event>,
}

enum Flow {
    Continue,
    Close(u16, &'static str),
}

pub async fn run<S, R, E>(ctx: SessionContext, mut sink: S, mut stream: R)
where
    S: Sink<Message> + Unpin,
    R: Stream<Item = Result<Message, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut joined: Option<Joined> = None;
    let mut last_heard = Instant::now();
    let mut ping = tokio::time::interval(PING_INTERVAL);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let span = tracing::info_span!("session", participant = tracing::field::Empty);
    async {
        loop {
            let flow = tokio::select! {
                msg = stream.next() => match msg {
                    Some(Ok(msg)) => {
                        last_heard = Instant::now();
                        handle_frame(&ctx, &mut joined, &mut sink, msg).await
                    }
                    Some(Err(err)) => {
                        debug!(%err, "websocket error");
                        break;
                    }
                    None => break,
                },
                event = next_event(&mut joined) => match event {
                    Some(event) => forward_event(&mut sink, event).await,
                    None => Flow::Close(1011, "media session ended"),
                },
                _ = ping.tick() => {
                    if last_heard.elapsed() > SILENCE_TIMEOUT {
                        info!("no sign of life from the client; closing");
                        Flow::Close(1001, "timeout")
                    } else {
                        let _ = sink.send(Message::Ping(Default::default())).await;
                        Flow::Continue
                    }
                }
            };
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
        // Dropping the participant handle removes it from its room.
        drop(joined);
    }
    .instrument(span)
    .await;
}

async fn next_event(joined: &mut Option<Joined>) -> Option<Event> {
    match joined {
        Some(j) => j.events.recv().await,
        None => std::future::pending().await,
    }
}

async fn send<S: Sink<Message> + Unpin>(sink: &mut S, msg: &ServerMessage) -> bool {
    match serde_json::to_string(msg) {
        Ok(text) => sink.send(Message::Text(text.into())).await.is_ok(),
        Err(_) => false,
    }
}

async fn send_error<S: Sink<Message> + Unpin>(
    sink: &mut S,
    code: ErrorCode,
    message: String,
) -> Flow {
    debug!(?code, %message, "client error");
    send(sink, &ServerMessage::Error { code, message }).await;
    if code.closes() {
        let close_code = if code == ErrorCode::MessageTooLarge {
            1009
        } else {
            1008
        };
        Flow::Close(close_code, "protocol error")
    } else {
        Flow::Continue
    }
}

async fn handle_frame<S: Sink<Message> + Unpin>(
    ctx: &SessionContext,
    joined: &mut Option<Joined>,
    sink: &mut S,
    frame: Message,
) -> Flow {
    let text = match frame {
        Message::Text(text) => text,
        Message::Binary(_) => {
            return send_error(
                sink,
                ErrorCode::InvalidMessage,
                "binary frames are not accepted".into(),
            )
            .await
        }
        Message::Close(_) => return Flow::Close(1000, "bye"),
        Message::Ping(_) | Message::Pong(_) => return Flow::Continue,
    };
    let msg = match parse_client_message(&text) {
        Ok(msg) => msg,
        Err(e) => return send_error(sink, e.code, e.message).await,
    };
    match (msg, joined.as_ref()) {
        (
            ClientMessage::Join {
                v,
                room,
                name,
                token: _,
            },
            None,
        ) => {
            if v != PROTOCOL_VERSION {
                return send_error(
                    sink,
                    ErrorCode::UnsupportedVersion,
                    format!("protocol version {v} is not supported; this server speaks {PROTOCOL_VERSION}"),
                )
                .await;
            }
            let room_len = room.chars().count();
            let name_len = name.chars().count();
            if room_len == 0 || room_len > MAX_ROOM_CHARS {
                return send_error(
                    sink,
                    ErrorCode::InvalidMessage,
                    format!("room must be 1 to {MAX_ROOM_CHARS} characters"),
                )
                .await;
            }
            if name_len == 0 || name_len > MAX_NAME_CHARS {
                return send_error(
                    sink,
                    ErrorCode::InvalidMessage,
                    format!("name must be 1 to {MAX_NAME_CHARS} characters"),
                )
                .await;
            }
            match ctx.sfu.join(&room, &name).await {
                Ok((participant, info, events)) => {
                    tracing::Span::current().record("participant", participant.id());
                    let participants = info
                        .participants
                        .into_iter()
                        .map(to_wire_participant)
                        .collect();
                    let ok = send(
                        sink,
                        &ServerMessage::Joined {
                            v: PROTOCOL_VERSION,
                            room,
                            participant_id: info.participant_id,
                            participants,
                            ice_servers: ctx.ice_servers.clone(),
                        },
                    )
                    .await;
                    *joined = Some(Joined {
                        participant,
                        events,
                    });
                    if ok {
                        Flow::Continue
                    } else {
                        Flow::Close(1011, "send failed")
                    }
                }
                Err(err) => {
                    send_error(
                        sink,
                        ErrorCode::InternalError,
                        format!("join failed: {err}"),
                    )
                    .await
                }
            }
        }
        (ClientMessage::Join { .. }, Some(_)) => {
            send_error(
                sink,
                ErrorCode::AlreadyJoined,
                "this socket has already joined a room".into(),
            )
            .await
        }
        (_, None) => send_error(sink, ErrorCode::NotJoined, "send join first".into()).await,
        (ClientMessage::Offer { sdp }, Some(j)) => {
            j.participant.offer(sdp);
            Flow::Continue
        }
        (ClientMessage::Answer { sdp }, Some(j)) => {
            j.participant.answer(sdp);
            Flow::Continue
        }
        (ClientMessage::Candidate { candidate }, Some(j)) => {
            if let Some(c) = candidate {
                j.participant.candidate(sfu::Candidate {
                    candidate: c.candidate,
                    sdp_mid: c.sdp_mid,
                    sdp_mline_index: c.sdp_mline_index,
                    username_fragment: c.username_fragment,
                });
            }
            Flow::Continue
        }
        (ClientMessage::Leave {}, Some(_)) => Flow::Close(1000, "left"),
        (
            ClientMessage::TrackSettings {
                track_id,
                visible,
                width,
                height,
                max_quality,
            },
            Some(j),
        ) => {
            let size = match (width, height) {
                (Some(w), Some(h)) => Some((w, h)),
                (None, None) => None,
                _ => {
                    return send_error(
                        sink,
                        ErrorCode::InvalidMessage,
                        "width and height go together".into(),
                    )
                    .await
                }
            };
            j.participant.track_settings(sfu::TrackSettings {
                track_id,
                visible,
                size,
                max_quality: max_quality.map(from_wire_quality),
            });
            Flow::Continue
        }
        (ClientMessage::TrackSource { mid, source }, Some(j)) => {
            let source = match source {
                SourceName::Camera => sfu::TrackSource::Camera,
                SourceName::Microphone => sfu::TrackSource::Microphone,
                SourceName::Screen => sfu::TrackSource::Screen,
            };
            j.participant.track_source(mid, source);
            Flow::Continue
        }
    }
}

fn to_wire_participant(p: sfu::ParticipantInfo) -> crate::protocol::Participant {
    crate::protocol::Participant {
        id: p.id,
        name: p.name,
        tracks: p.tracks.into_iter().map(to_wire_track).collect(),
    }
}

fn to_wire_track(t: sfu::TrackInfo) -> crate::protocol::Track {
    crate::protocol::Track {
        id: t.id,
        kind: t.kind.as_str().to_owned(),
        source: t.source.as_str().to_owned(),
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

async fn forward_event<S: Sink<Message> + Unpin>(sink: &mut S, event: Event) -> Flow {
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
        Event::Offer(sdp) => ServerMessage::Offer { sdp },
        Event::Answer(sdp) => ServerMessage::Answer { sdp },
        Event::Candidate(c) => ServerMessage::Candidate {
            candidate: IceCandidate {
                candidate: c.candidate,
                sdp_mid: c.sdp_mid,
                sdp_mline_index: c.sdp_mline_index,
                username_fragment: c.username_fragment,
            },
        },
        Event::ActiveSpeaker { participant_id } => ServerMessage::ActiveSpeaker { participant_id },
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
                sfu::ErrorKind::Internal => ErrorCode::InternalError,
            };
            return send_error(sink, code, message).await;
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
