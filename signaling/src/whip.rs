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

use crate::protocol::{ErrorCode, IceServer};
use crate::rooms::Kick;
use crate::session::{self, Admitted, SessionContext};
use crate::state::AppState;
use crate::whip_sessions::{Control, Refusal, SessionHandle, WhipSessions};

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

/// An RFC 9457 problem with the protocol's error code.
fn problem(status: StatusCode, code: ErrorCode, detail: impl Into<String>) -> Response {
    let detail = detail.into();
    debug!(%status, ?code, %detail, "WHIP request refused");
    let body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("error"),
        "status": status.as_u16(),
        "code": code,
        "detail": detail,
    });
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response();
    let headers = response.headers_mut();
    cors(headers);
    match status {
        StatusCode::UNAUTHORIZED => {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        _ => {}
    }
    response
}

/// A refusal not yet rendered (small, for `Result`s); renders as [`problem`].
struct Problem(StatusCode, ErrorCode, String);

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        problem(self.0, self.1, self.2)
    }
}

fn cors(headers: &mut HeaderMap) {
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location, Link, ETag, Accept-Patch, Accept-Post"),
    );
}

fn preflight(methods: &'static str) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    cors(headers);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(methods),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type, If-Match"),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    response
}

async fn options() -> Response {
    let mut response = preflight("POST, OPTIONS");
    response
        .headers_mut()
        .insert("accept-post", HeaderValue::from_static(SDP));
    response
}

async fn options_session() -> Response {
    let mut response = preflight("PATCH, DELETE, OPTIONS");
    response
        .headers_mut()
        .insert("accept-patch", HeaderValue::from_static(SDP_FRAG));
    response
}

/// `Authorization: Bearer <token>`, if present.
fn bearer(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().unwrap_or_default();
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(Some(token.trim().to_owned()))
        }
        _ => Err(Problem(
            StatusCode::UNAUTHORIZED,
            ErrorCode::TokenMalformed,
            "the Authorization header must be `Bearer <access token>`".into(),
        )),
    }
}

fn content_type_is(headers: &HeaderMap, wanted: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(wanted))
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

/// `offer` with new ICE credentials, without its old candidates (the restart's fragment brings
/// the new ones) and with the next session version.
fn restarted_offer(offer: &str, ufrag: &str, pwd: &str) -> String {
    let mut out = String::with_capacity(offer.len());
    for line in offer.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with("a=candidate:") || line == "a=end-of-candidates" {
            continue;
        }
        if line.starts_with("a=ice-ufrag:") {
            out.push_str("a=ice-ufrag:");
            out.push_str(ufrag);
        } else if line.starts_with("a=ice-pwd:") {
            out.push_str("a=ice-pwd:");
            out.push_str(pwd);
        } else if let Some(origin) = line.strip_prefix("o=") {
            let mut fields: Vec<&str> = origin.split(' ').collect();
            let next = fields
                .get(2)
                .and_then(|v| v.parse::<u64>().ok()?.checked_add(1))
                .map(|v| v.to_string());
            if let Some(next) = &next {
                fields[2] = next;
            }
            out.push_str("o=");
            out.push_str(&fields.join(" "));
        } else {
            out.push_str(line);
        }
        out.push_str("\r\n");
    }
    out
}

/// The answer to an ICE restart as an SDP fragment (RFC 8840): the server's ICE credentials,
/// then the first (bundled) media section with its candidates.
fn answer_fragment(answer: &str) -> String {
    let mut out = String::new();
    for name in ["ice-ufrag", "ice-pwd"] {
        if let Some(v) = ice_attribute(answer, name) {
            out.push_str(&format!("a={name}:{v}\r\n"));
        }
    }
    let section = answer
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .skip_while(|l| !l.starts_with("m="))
        .enumerate()
        .take_while(|(i, l)| *i == 0 || !l.starts_with("m="))
        .map(|(_, l)| l);
    for line in section {
        if line.starts_with("m=")
            || line.starts_with("a=mid:")
            || line.starts_with("a=candidate:")
            || line == "a=end-of-candidates"
        {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out
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

/// The value of the first `a=<name>:` line.
fn ice_attribute(sdp: &str, name: &str) -> Option<String> {
    let prefix = format!("a={name}:");
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix(prefix.as_str()))
        .map(|v| v.trim().to_owned())
}

/// `sdp` with `a=candidate` lines in every media section that has none, and every media section
/// ending its candidates (`a=end-of-candidates`): the server gathers nothing later.
fn with_candidates(sdp: &str, candidates: &[String]) -> String {
    #[derive(Default)]
    struct Section {
        media: bool,
        candidates: bool,
        ended: bool,
    }
    let finish = |out: &mut String, section: &Section| {
        if !section.media {
            return;
        }
        if !section.candidates {
            for c in candidates {
                let c = c.strip_prefix("candidate:").unwrap_or(c);
                out.push_str("a=candidate:");
                out.push_str(c);
                out.push_str("\r\n");
            }
        }
        if !section.ended {
            out.push_str("a=end-of-candidates\r\n");
        }
    };
    let mut out = String::with_capacity(sdp.len() + candidates.len() * 80 * 4);
    let mut section = Section::default();
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        if line.starts_with("m=") {
            finish(&mut out, &section);
            section = Section {
                media: true,
                ..Section::default()
            };
        } else if line.starts_with("a=candidate:") {
            section.candidates = true;
        } else if line == "a=end-of-candidates" {
            section.ended = true;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    finish(&mut out, &section);
    out
}

/// The candidates of a trickle-ice-sdpfrag body (RFC 8840), each with the mid of its section.
fn parse_sdpfrag(frag: &str) -> Result<Vec<sfu::Candidate>, String> {
    let mut mid: Option<String> = None;
    let mut ufrag: Option<String> = None;
    let mut out = Vec::new();
    for line in frag.lines() {
        let line = line.trim_end();
        if let Some(v) = line.strip_prefix("a=ice-ufrag:") {
            ufrag = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("a=mid:") {
            mid = Some(v.trim().to_owned());
        } else if line.starts_with("m=") {
            mid = None;
        } else if let Some(v) = line.strip_prefix("a=candidate:") {
            if v.split_whitespace().count() < 8 {
                return Err(format!("malformed candidate line: {line}"));
            }
            out.push(sfu::Candidate {
                candidate: format!("candidate:{v}"),
                sdp_mid: mid.clone(),
                sdp_mline_index: if mid.is_none() { Some(0) } else { None },
                username_fragment: ufrag.clone(),
            });
        } else if line.is_empty()
            || line == "a=end-of-candidates"
            || line.starts_with("a=")
            || line.starts_with("m=")
        {
        } else {
            return Err(format!("not an SDP fragment line: {line}"));
        }
    }
    Ok(out)
}

/// `Link` header values for the ICE servers (RFC 9725 section 4.4).
fn ice_server_links(servers: &[IceServer]) -> Vec<String> {
    let quote = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut links = Vec::new();
    for s in servers {
        for url in &s.urls {
            let mut link = format!("<{url}>; rel=\"ice-server\"");
            if let (Some(u), Some(c)) = (&s.username, &s.credential) {
                link.push_str(&format!(
                    "; username=\"{}\"; credential=\"{}\"; credential-type=\"password\"",
                    quote(u),
                    quote(c)
                ));
            }
            links.push(link);
        }
    }
    links
}

/// A room name as one URL path segment.
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_go_into_every_media_section() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
                   m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n";
        let c = vec!["candidate:1 1 udp 2130706431 127.0.0.1 7882 typ host".to_owned()];
        let out = with_candidates(sdp, &c);
        assert_eq!(out.matches("a=candidate:1 1 udp").count(), 2, "{out}");
        assert_eq!(out.matches("a=end-of-candidates").count(), 2);
        let video = out.find("m=video").unwrap();
        assert!(out[..video].contains("a=candidate:"), "{out}");
        assert!(!out.contains("a=candidate:candidate:"));
        // A section that has candidates keeps its own and gets only the end marker.
        let again = with_candidates(&out, &c);
        assert_eq!(again.matches("a=candidate:1 1 udp").count(), 2, "{again}");
        assert_eq!(again.matches("a=end-of-candidates").count(), 2);
    }

    #[test]
    fn sdpfrag_candidates_carry_their_mid_and_ufrag() {
        let frag = "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n\
                    m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
                    a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0\r\n\
                    a=end-of-candidates\r\n";
        let c = parse_sdpfrag(frag).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].sdp_mid.as_deref(), Some("0"));
        assert_eq!(c[0].username_fragment.as_deref(), Some("EsAw"));
        assert!(c[0].candidate.starts_with("candidate:1387637174 1 udp"));
        assert!(parse_sdpfrag("a=candidate:1 1 udp\r\n").is_err());
        assert!(parse_sdpfrag("hello\r\n").is_err());
    }

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
