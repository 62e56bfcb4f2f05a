//! WHIP ingest (RFC 9725) and WHEP egress (the WHEP draft): publishers and viewers that speak
//! HTTP instead of the WebSocket protocol.
//!
//! `POST /whip/{room}` with an SDP offer (and a bearer token, unless `--dev`) joins the room as a
//! participant that publishes and subscribes to nothing, and answers `201 Created` with the SDP
//! answer (the server's candidates inside, as WHIP clients do not wait for trickle), the session
//! resource in `Location`, its ICE session in `ETag` and the ICE servers as `Link` headers.
//! `PATCH` on the resource trickles the client's candidates (`application/trickle-ice-sdpfrag`),
//! or, with `If-Match: *` and new ICE credentials, restarts ICE: the engine gets the session's
//! offer again with the new credentials, and the `200` answer is a fragment with the server's
//! credentials (unchanged: the shared port demultiplexes on its ufrag) and candidates, under a
//! new `ETag`. `DELETE` ends the session. The session lives in a task of its own until then, or
//! until the media connection ends (consent freshness) or an administrator removes it.
//!
//! WHEP is the mirror image: `POST /whep/{room}/{participant}` (a participant id or identity, or
//! the id of one of its tracks) with a receiving offer joins as a participant that publishes
//! nothing and subscribes to that participant's tracks only; the answer carries them. Its
//! session resource is `/whep/{room}/{participant}/{id}`, with the same PATCH and DELETE.
//! Neither kind of session renegotiates: a WHEP viewer plays the tracks published when it
//! joined.
//!
//! Every refusal is an RFC 9457 problem (`application/problem+json`) carrying the same error code
//! the WebSocket protocol uses.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde::Deserialize;
use sfu::{Event, JoinRequest, Participant};
use tokio::sync::mpsc;
use tracing::{debug, info, Instrument};

use crate::protocol::ErrorCode;
use crate::rooms::Kick;
use crate::session::{self, Admitted, SessionContext};
use crate::state::AppState;
use crate::whip_sessions::{Control, Refusal, SessionHandle, WhipSessions};
use http::{
    bearer, content_type_is, cors, encode_segment, ice_server_links, options, options_session,
    problem, Problem,
};
use sdp::{answer_fragment, ice_attribute, parse_sdpfrag, restarted_offer, with_candidates};

mod http;
mod sdp;

/// How long the engine may take to answer an offer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// The name a WHIP publisher or WHEP viewer gets when neither the URL nor its token gives one.
const WHIP_NAME: &str = "WHIP";
const WHEP_NAME: &str = "WHEP viewer";
const SDP: &str = "application/sdp";
const SDP_FRAG: &str = "application/trickle-ice-sdpfrag";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/whip/{room}", post(create_whip).options(options))
        .route(
            "/whip/{room}/{session}",
            axum::routing::patch(patch_whip)
                .delete(delete_whip)
                .options(options_session),
        )
        .route("/whep/{room}/{target}", post(create_whep).options(options))
        .route(
            "/whep/{room}/{target}/{session}",
            axum::routing::patch(patch_whep)
                .delete(delete_whep)
                .options(options_session),
        )
}

/// Which way a session's media goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// WHIP: the client publishes.
    Ingest,
    /// WHEP: the client plays.
    Egress,
}

#[derive(Deserialize)]
struct CreateQuery {
    name: Option<String>,
}

/// Checks that `body` looks like an SDP offer that sends (WHIP) or receives (WHEP) media; the
/// engine checks the rest.
fn check_offer(body: &[u8], direction: Direction) -> Result<&str, Problem> {
    let Ok(sdp) = std::str::from_utf8(body) else {
        return Err(Problem(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidSdp,
            "the offer is not UTF-8 text".into(),
        ));
    };
    if !sdp.trim_start().starts_with("v=0") || !sdp.lines().any(|l| l.starts_with("m=")) {
        return Err(Problem(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidSdp,
            "the body is not an SDP offer (it must start with v=0 and have m= sections)".into(),
        ));
    }
    let (wanted, what) = match direction {
        Direction::Ingest => (
            ["a=sendonly", "a=sendrecv"],
            "a WHIP offer must send media (no m= section is sendonly or sendrecv)",
        ),
        Direction::Egress => (
            ["a=recvonly", "a=sendrecv"],
            "a WHEP offer must receive media (no m= section is recvonly or sendrecv)",
        ),
    };
    if !sdp.lines().any(|l| wanted.contains(&l.trim_end())) {
        return Err(Problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidSdp,
            what.into(),
        ));
    }
    Ok(sdp)
}

async fn create_whip(
    State(state): State<AppState>,
    Path(room): Path<String>,
    Query(query): Query<CreateQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    create(state, room, None, query, headers, body).await
}

async fn create_whep(
    State(state): State<AppState>,
    Path((room, target)): Path<(String, String)>,
    Query(query): Query<CreateQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    create(state, room, Some(target), query, headers, body).await
}

/// The participant id a WHEP URL names: a participant id or identity, or one of its tracks' ids.
/// It must publish something.
fn resolve_target(state: &AppState, room: &str, target: &str) -> Result<String, Problem> {
    let Some(summary) = state.session.rooms.get(room) else {
        return Err(Problem(
            StatusCode::NOT_FOUND,
            ErrorCode::RoomNotFound,
            format!("room {room} does not exist"),
        ));
    };
    let id = summary
        .participants
        .iter()
        .find(|p| p.id == target || p.identity == target)
        .map(|p| p.id.clone())
        .or_else(|| {
            summary
                .tracks
                .iter()
                .find(|t| t.id == target)
                .map(|t| t.participant_id.clone())
        });
    let Some(id) = id else {
        return Err(Problem(
            StatusCode::NOT_FOUND,
            ErrorCode::UnknownParticipant,
            format!("room {room} has no participant or track {target}"),
        ));
    };
    if !summary.tracks.iter().any(|t| t.participant_id == id) {
        return Err(Problem(
            StatusCode::CONFLICT,
            ErrorCode::UnknownTrack,
            format!("{target} publishes nothing yet"),
        ));
    }
    Ok(id)
}

/// Creates a WHIP session (`target` None) or a WHEP session playing `target`.
async fn create(
    state: AppState,
    room: String,
    target: Option<String>,
    query: CreateQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let direction = if target.is_some() {
        Direction::Egress
    } else {
        Direction::Ingest
    };
    let protocol = match direction {
        Direction::Ingest => "WHIP",
        Direction::Egress => "WHEP",
    };
    if !content_type_is(&headers, SDP) {
        return problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::InvalidMessage,
            format!("a {protocol} offer has Content-Type {SDP}"),
        );
    }
    if body.len() > state.session.limits.max_message_bytes {
        return problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::MessageTooLarge,
            format!(
                "the offer is {} bytes; the limit is {}",
                body.len(),
                state.session.limits.max_message_bytes
            ),
        );
    }
    let token = match bearer(&headers) {
        Ok(t) => t,
        Err(p) => return p.into_response(),
    };
    let offer = match check_offer(&body, direction) {
        Ok(o) => o.to_owned(),
        Err(p) => return p.into_response(),
    };
    // WHEP: the token first, so that who is in which room is told only to those allowed in.
    if target.is_some() {
        if let Err((code, message)) =
            session::admission(&state.session, &room, WHEP_NAME, token.as_deref())
        {
            return problem(code.status(), code, message);
        }
    }
    let subscribe_to = match &target {
        Some(t) => match resolve_target(&state, &room, t) {
            Ok(id) => Some(id),
            Err(p) => return p.into_response(),
        },
        None => None,
    };
    let ctx = &state.session;
    let name = query.name.unwrap_or_else(|| {
        match direction {
            Direction::Ingest => WHIP_NAME,
            Direction::Egress => WHEP_NAME,
        }
        .to_owned()
    });
    let Admitted {
        reservation,
        identity,
        name,
        mut permissions,
    } = match session::admit(
        ctx,
        &room,
        &name,
        token.as_deref(),
        Some(crate::protocol::RoomMode::Sfu),
    ) {
        Ok(a) => a,
        Err((code, message)) => return problem(code.status(), code, message),
    };
    match direction {
        Direction::Ingest if !permissions.publish => {
            return problem(
                StatusCode::FORBIDDEN,
                ErrorCode::PublishNotAllowed,
                "the token does not grant publish",
            )
        }
        Direction::Egress if !permissions.subscribe => {
            return problem(
                StatusCode::FORBIDDEN,
                ErrorCode::TokenMissingGrant,
                "the token does not grant subscribe",
            )
        }
        Direction::Ingest => permissions.subscribe = false,
        Direction::Egress => permissions.publish = false,
    }
    let (participant, _info, mut events) = match ctx
        .sfu
        .join(JoinRequest {
            room: room.clone(),
            identity: identity.clone(),
            name: name.clone(),
            permissions,
            subscribe_to,
            answer_only: true,
            mixed_audio: false,
            mixed_video: false,
        })
        .await
    {
        Ok(j) => j,
        Err(err) => {
            return problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::InternalError,
                format!("join failed: {err}"),
            )
        }
    };
    let (kick_tx, kicks) = mpsc::unbounded_channel();
    ctx.rooms
        .admit(reservation, participant.id(), &identity, &name, kick_tx);
    participant.offer(offer.clone());
    let answer = match wait_for_answer(&mut events).await {
        Ok(a) => a,
        Err((status, code, message)) => {
            ctx.rooms.leave(&room, participant.id());
            return problem(status, code, message);
        }
    };
    let id = participant.id().to_owned();
    let etag = ice_attribute(&answer, "ice-ufrag").unwrap_or_else(|| id.clone());
    let (control, control_rx) = mpsc::unbounded_channel();
    state.whip.0.insert(
        id.clone(),
        SessionHandle {
            room: room.clone(),
            target: target.clone(),
            token,
            client_ufrag: ice_attribute(&offer, "ice-ufrag"),
            etag: etag.clone(),
            control,
        },
    );
    info!(%room, participant = %id, %identity, protocol, "HTTP session joined");
    let span = tracing::info_span!("http_session", protocol, room = %room, participant = %id);
    tokio::spawn(
        run(
            ctx.clone(),
            state.whip.clone(),
            room.clone(),
            participant,
            offer,
            Inbox {
                events,
                kicks,
                control: control_rx,
            },
        )
        .instrument(span),
    );

    let location = match &target {
        None => format!("/whip/{}/{}", encode_segment(&room), id),
        Some(t) => format!(
            "/whep/{}/{}/{}",
            encode_segment(&room),
            encode_segment(t),
            id
        ),
    };
    let mut response = (StatusCode::CREATED, answer).into_response();
    let headers = response.headers_mut();
    cors(headers);
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP));
    if let Ok(v) = HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{etag}\"")) {
        headers.insert(header::ETAG, v);
    }
    headers.insert("accept-patch", HeaderValue::from_static(SDP_FRAG));
    for link in ice_server_links(&ctx.ice.for_identity(&identity, crate::auth::unix_now())) {
        if let Ok(v) = HeaderValue::from_str(&link) {
            headers.append(header::LINK, v);
        }
    }
    response
}

/// The engine's answer with its candidates written in (a WHIP client may not trickle).
async fn wait_for_answer(events: &mut mpsc::UnboundedReceiver<Event>) -> Result<String, Refusal> {
    let wait = async {
        while let Some(event) = events.recv().await {
            match event {
                Event::Answer(sdp) => return Ok(sdp),
                Event::Error { kind, message } => {
                    let code = match kind {
                        sfu::ErrorKind::InvalidSdp => ErrorCode::InvalidSdp,
                        sfu::ErrorKind::PublishDenied => ErrorCode::PublishNotAllowed,
                        sfu::ErrorKind::TrackLimit => ErrorCode::TooManyTracks,
                        _ => ErrorCode::InternalError,
                    };
                    return Err((code.status(), code, message));
                }
                Event::Closed { reason } => {
                    return Err((
                        StatusCode::INTERNAL_SERVER_ERROR,
                        ErrorCode::InternalError,
                        format!("the media session ended: {reason}"),
                    ))
                }
                _ => {}
            }
        }
        Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::InternalError,
            "the media engine stopped".into(),
        ))
    };
    let answer = match tokio::time::timeout(ANSWER_TIMEOUT, wait).await {
        Ok(r) => r?,
        Err(_) => {
            return Err((
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::InternalError,
                "the media engine did not answer the offer in time".into(),
            ))
        }
    };
    // The engine sends its candidates right after the answer, in the same step.
    let mut candidates = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let Event::Candidate(c) = event {
            candidates.push(c.candidate);
        }
    }
    Ok(with_candidates(&answer, &candidates))
}

/// What a session task listens to.
struct Inbox {
    events: mpsc::UnboundedReceiver<Event>,
    kicks: mpsc::UnboundedReceiver<Kick>,
    control: mpsc::UnboundedReceiver<Control>,
}

/// One WHIP session: forwards trickled candidates, restarts ICE, and ends on DELETE, when the
/// media connection ends, when an administrator removes the participant, or when the server
/// shuts down. `offer` is the client's offer as last applied.
async fn run(
    ctx: SessionContext,
    sessions: WhipSessions,
    room: String,
    participant: Participant,
    mut offer: String,
    mut inbox: Inbox,
) {
    let mut closing = ctx.drain.closing();
    let mut restarts = 0u32;
    let reason = loop {
        tokio::select! {
            event = inbox.events.recv() => match event {
                None => break "media engine stopped".to_owned(),
                Some(Event::Closed { reason }) => break reason,
                Some(Event::Error { message, .. }) => debug!(%message, "engine error on a WHIP session"),
                Some(_) => {}
            },
            Some(kick) = inbox.kicks.recv() => break format!("{kick:?}"),
            c = inbox.control.recv() => match c {
                Some(Control::Candidates(list)) => {
                    for c in list {
                        participant.candidate(c);
                    }
                }
                Some(Control::Restart { ufrag, pwd, candidates, reply }) => {
                    let restarted = restarted_offer(&offer, &ufrag, &pwd);
                    participant.offer(restarted.clone());
                    let result = wait_for_answer(&mut inbox.events).await.map(|answer| {
                        for c in candidates {
                            participant.candidate(c);
                        }
                        offer = restarted;
                        restarts += 1;
                        let etag = format!(
                            "{}-{restarts}",
                            ice_attribute(&answer, "ice-ufrag").unwrap_or_default()
                        );
                        if let Some(mut s) = sessions.0.get_mut(participant.id()) {
                            s.etag = etag.clone();
                            s.client_ufrag = Some(ufrag);
                        }
                        info!(restarts, "ICE restarted by the client");
                        (answer_fragment(&answer), etag)
                    });
                    let _ = reply.send(result);
                }
                Some(Control::End) | None => break "ended by the client (DELETE)".to_owned(),
            },
            _ = session::closed(&mut closing) => break "server shutting down".to_owned(),
        }
    };
    info!(%reason, "HTTP session ended");
    sessions.0.remove(participant.id());
    ctx.rooms.leave(&room, participant.id());
    // Dropping the participant handle removes it from the engine.
}

/// Finds the session and checks the caller may act on it.
fn session_of<'a>(
    state: &'a AppState,
    room: &str,
    target: Option<&str>,
    id: &str,
    headers: &HeaderMap,
) -> Result<dashmap::mapref::one::Ref<'a, String, SessionHandle>, Problem> {
    let Some(s) = state
        .whip
        .0
        .get(id)
        .filter(|s| s.room == room && s.target.as_deref() == target)
    else {
        return Err(Problem(
            StatusCode::NOT_FOUND,
            ErrorCode::UnknownSession,
            format!("no such session {id} in room {room}"),
        ));
    };
    if let Some(expected) = &s.token {
        match bearer(headers)? {
            Some(t) if &t == expected => {}
            Some(_) => {
                return Err(Problem(
                    StatusCode::FORBIDDEN,
                    ErrorCode::TokenInvalidSignature,
                    "this is not the token the session was created with".into(),
                ))
            }
            None => {
                return Err(Problem(
                    StatusCode::UNAUTHORIZED,
                    ErrorCode::TokenMissing,
                    "the session was created with a token: send it as `Authorization: Bearer`"
                        .into(),
                ))
            }
        }
    }
    Ok(s)
}

async fn patch_whip(
    State(state): State<AppState>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    patch(state, room, None, id, headers, body).await
}

async fn patch_whep(
    State(state): State<AppState>,
    Path((room, target, id)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    patch(state, room, Some(target), id, headers, body).await
}

async fn delete_whip(
    State(state): State<AppState>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    delete(state, room, None, id, headers)
}

async fn delete_whep(
    State(state): State<AppState>,
    Path((room, target, id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    delete(state, room, Some(target), id, headers)
}

async fn patch(
    state: AppState,
    room: String,
    target: Option<String>,
    id: String,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (control, client_ufrag, etag) =
        match session_of(&state, &room, target.as_deref(), &id, &headers) {
            Ok(s) => (s.control.clone(), s.client_ufrag.clone(), s.etag.clone()),
            Err(p) => return p.into_response(),
        };
    if !content_type_is(&headers, SDP_FRAG) {
        return problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::InvalidMessage,
            format!("a PATCH of a session has Content-Type {SDP_FRAG}"),
        );
    }
    if body.len() > state.session.limits.max_message_bytes {
        return problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::MessageTooLarge,
            "the SDP fragment is too large",
        );
    }
    let Ok(frag) = std::str::from_utf8(&body) else {
        return problem(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidCandidate,
            "the SDP fragment is not UTF-8 text",
        );
    };
    let if_match = headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    if let Some(tag) = if_match.filter(|t| *t != "*") {
        if tag != format!("\"{etag}\"") {
            return problem(
                StatusCode::PRECONDITION_FAILED,
                ErrorCode::InvalidCandidate,
                "the If-Match entity tag does not name this session's ICE session",
            );
        }
    }
    let candidates = match parse_sdpfrag(frag) {
        Ok(c) => c,
        Err(message) => {
            return problem(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidCandidate,
                message,
            )
        }
    };
    let ufrag = ice_attribute(frag, "ice-ufrag");
    let restart = if_match == Some("*")
        || ufrag
            .as_deref()
            .is_some_and(|u| client_ufrag.as_deref() != Some(u));
    if !restart {
        let _ = control.send(Control::Candidates(candidates));
        let mut response = StatusCode::NO_CONTENT.into_response();
        cors(response.headers_mut());
        return response;
    }
    let (Some(ufrag), Some(pwd)) = (ufrag, ice_attribute(frag, "ice-pwd")) else {
        return problem(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidCandidate,
            "an ICE restart (If-Match: *) carries the new a=ice-ufrag and a=ice-pwd",
        );
    };
    if client_ufrag.as_deref() == Some(ufrag.as_str()) {
        return problem(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidCandidate,
            "an ICE restart needs new ICE credentials: this ice-ufrag is the current one",
        );
    }
    let (reply, answer) = tokio::sync::oneshot::channel();
    let _ = control.send(Control::Restart {
        ufrag,
        pwd,
        candidates,
        reply,
    });
    match answer.await {
        Ok(Ok((fragment, etag))) => {
            let mut response = (StatusCode::OK, fragment).into_response();
            let headers = response.headers_mut();
            cors(headers);
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP_FRAG));
            if let Ok(v) = HeaderValue::from_str(&format!("\"{etag}\"")) {
                headers.insert(header::ETAG, v);
            }
            response
        }
        Ok(Err((status, code, message))) => problem(status, code, message),
        Err(_) => problem(
            StatusCode::NOT_FOUND,
            ErrorCode::UnknownSession,
            format!("session {id} ended during the ICE restart"),
        ),
    }
}

fn delete(
    state: AppState,
    room: String,
    target: Option<String>,
    id: String,
    headers: HeaderMap,
) -> Response {
    let session = match session_of(&state, &room, target.as_deref(), &id, &headers) {
        Ok(s) => s,
        Err(p) => return p.into_response(),
    };
    let _ = session.control.send(Control::End);
    drop(session);
    let mut response = StatusCode::OK.into_response();
    cors(response.headers_mut());
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::IceServer;

    #[test]
    fn ice_servers_become_link_headers() {
        let links = ice_server_links(&[
            IceServer {
                urls: vec!["stun:stun.example.net:3478".into()],
                username: None,
                credential: None,
            },
            IceServer {
                urls: vec!["turn:turn.example.net?transport=tcp".into()],
                username: Some("1700000000:alice".into()),
                credential: Some("c2VjcmV0".into()),
            },
        ]);
        assert_eq!(links[0], "<stun:stun.example.net:3478>; rel=\"ice-server\"");
        assert_eq!(
            links[1],
            "<turn:turn.example.net?transport=tcp>; rel=\"ice-server\"; username=\"1700000000:alice\"; \
             credential=\"c2VjcmV0\"; credential-type=\"password\""
        );
    }

    #[test]
    fn offers_that_send_nothing_or_are_not_sdp_are_refused() {
        let (ingest, egress) = (Direction::Ingest, Direction::Egress);
        assert!(check_offer(b"hello", ingest).is_err());
        assert!(check_offer(b"v=0\r\ns=-\r\n", egress).is_err());
        let recvonly = b"v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\n";
        assert_eq!(
            check_offer(recvonly, ingest).unwrap_err().0,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert!(check_offer(recvonly, egress).is_ok());
        let sendonly = b"v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\n";
        assert!(check_offer(sendonly, ingest).is_ok());
        assert!(check_offer(sendonly, egress).is_err());
        assert_eq!(encode_segment("a b/ü"), "a%20b%2F%C3%BC");
    }
}
