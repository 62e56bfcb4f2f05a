//! p2p rooms: no engine participant, only a place in the room registry, which relays offers,
//! answers and candidates between the room's (at most two) participants.

use axum::extract::ws::Message;
use futures_util::Sink;
use rand::distr::{Alphanumeric, SampleString};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{send, send_error, welcome, Flow, Joined, Link, SessionContext};
use crate::protocol::{ClientMessage, ErrorCode, ServerMessage};
use crate::rooms::PeerSignal;

/// A join into a p2p room: no engine participant, only a place in the registry, which relays
/// signals between the room's (at most two) participants.
#[allow(clippy::too_many_arguments)]
pub(super) async fn join_p2p<S: Sink<Message> + Unpin>(
    ctx: &SessionContext,
    joined: &mut Option<Joined>,
    sink: &mut S,
    room: String,
    reservation: crate::rooms::Reservation,
    identity: String,
    name: String,
    started: Instant,
) -> Flow {
    let id = format!("PA_{}", Alphanumeric.sample_string(&mut rand::rng(), 12));
    let span = tracing::Span::current();
    span.record("room", room.as_str());
    span.record("participant", id.as_str());
    let (kick_tx, kicks) = mpsc::unbounded_channel();
    let (signal_tx, signals) = mpsc::unbounded_channel();
    let others = ctx
        .rooms
        .admit_peer(reservation, &id, &identity, &name, kick_tx, signal_tx);
    let participants = others
        .into_iter()
        .map(|p| crate::protocol::Participant {
            id: p.id,
            identity: p.identity,
            name: p.name,
            tracks: Vec::new(),
        })
        .collect();
    let entry = Joined {
        id,
        room,
        link: Link::P2p { signals },
        kicks,
    };
    welcome(ctx, joined, sink, entry, participants, &identity, started).await
}

/// p2p: relays an offer, answer or candidate to the room's other participant.
async fn relay<S: Sink<Message> + Unpin>(
    ctx: &SessionContext,
    sink: &mut S,
    j: &Joined,
    signal: PeerSignal,
) -> Flow {
    if ctx.rooms.relay(&j.room, &j.id, signal) == 0 {
        return send_error(
            ctx,
            sink,
            ErrorCode::NoPeer,
            "nobody else is in this p2p room: negotiate once participant_joined arrives".into(),
        )
        .await;
    }
    Flow::Continue
}

/// A relayed SDP must at least look like one; the other browser checks the rest.
fn looks_like_sdp(sdp: &str) -> bool {
    sdp.starts_with("v=0")
}

pub(super) async fn forward_signal<S: Sink<Message> + Unpin>(
    sink: &mut S,
    signal: PeerSignal,
) -> Flow {
    let msg = match signal {
        PeerSignal::Joined { id, identity, name } => ServerMessage::ParticipantJoined {
            participant: crate::protocol::Participant {
                id,
                identity,
                name,
                tracks: Vec::new(),
            },
        },
        PeerSignal::Left { id } => ServerMessage::ParticipantLeft { participant_id: id },
        PeerSignal::Offer { from, sdp } => ServerMessage::Offer {
            sdp,
            from: Some(from),
        },
        PeerSignal::Answer { from, sdp } => ServerMessage::Answer {
            sdp,
            from: Some(from),
        },
        PeerSignal::Candidate { from, candidate } => ServerMessage::Candidate {
            candidate,
            from: Some(from),
        },
    };
    if send(sink, &msg).await {
        Flow::Continue
    } else {
        Flow::Close(1011, "send failed")
    }
}

/// A joined client's message in a p2p room: offers, answers and candidates go to the other
/// participant; what concerns the server's forwarding (track settings and sources) is ignored.
pub(super) async fn handle_p2p<S: Sink<Message> + Unpin>(
    ctx: &SessionContext,
    sink: &mut S,
    j: &Joined,
    msg: ClientMessage,
) -> Flow {
    let from = j.id.clone();
    match msg {
        ClientMessage::Offer { sdp } | ClientMessage::Answer { sdp } if !looks_like_sdp(&sdp) => {
            send_error(
                ctx,
                sink,
                ErrorCode::InvalidSdp,
                "an SDP starts with \"v=0\"".into(),
            )
            .await
        }
        ClientMessage::Offer { sdp } => relay(ctx, sink, j, PeerSignal::Offer { from, sdp }).await,
        ClientMessage::Answer { sdp } => {
            relay(ctx, sink, j, PeerSignal::Answer { from, sdp }).await
        }
        // End of candidates needs no relaying: the other browser does fine without it.
        ClientMessage::Candidate { candidate: None } => Flow::Continue,
        ClientMessage::Candidate {
            candidate: Some(candidate),
        } => relay(ctx, sink, j, PeerSignal::Candidate { from, candidate }).await,
        ClientMessage::Leave {} => Flow::Close(1000, "left"),
        ClientMessage::TrackSettings { .. }
        | ClientMessage::TrackSource { .. }
        | ClientMessage::EnableData {}
        | ClientMessage::Mute { .. } => Flow::Continue,
        ClientMessage::Join { .. } => Flow::Continue,
    }
}
