//! The admin REST API under `/api` (documented in `docs/openapi.yaml`).
//!
//! Every request carries `Authorization: Bearer <token>` with the `admin` grant; a token that
//! names a room may act on that room only. Errors are JSON, `{"error": {"code", "message"}}`,
//! with the token codes of the signaling protocol and a few of their own.

use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::error::{ApiError, ErrorCode};
use crate::protocol::MAX_ROOM_CHARS;
use crate::rooms::{Refusal, RoomOptions};
use crate::state::AppState;

/// Every endpoint (method, path under `/api`), as `docs/openapi.yaml` must document it.
pub const ENDPOINTS: &[(&str, &str)] = &[
    ("get", "/rooms"),
    ("post", "/rooms"),
    ("get", "/rooms/{room}"),
    ("delete", "/rooms/{room}"),
    ("delete", "/rooms/{room}/participants/{identity}"),
    ("post", "/rooms/{room}/tracks/{track}/mute"),
    ("post", "/rooms/{room}/data"),
    ("get", "/rooms/{room}/recordings"),
    ("post", "/rooms/{room}/recordings"),
    ("delete", "/rooms/{room}/recordings/{recording}"),
];

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/rooms", get(list_rooms).post(create_room))
        .route("/rooms/{room}", get(get_room).delete(delete_room))
        .route(
            "/rooms/{room}/participants/{identity}",
            delete(remove_participant),
        )
        .route("/rooms/{room}/tracks/{track}/mute", post(mute_track))
        .route("/rooms/{room}/data", post(send_data))
        .route(
            "/rooms/{room}/recordings",
            get(list_recordings).post(start_recording),
        )
        .route(
            "/rooms/{room}/recordings/{recording}",
            delete(stop_recording),
        )
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such admin endpoint") })
}

/// The admin API's errors with their usual statuses.
impl ApiError {
    fn engine_unavailable(e: sfu::SfuError) -> ApiError {
        ApiError::new(ErrorCode::EngineUnavailable, e.to_string())
    }

    fn room_not_found(room: &str) -> ApiError {
        ApiError::new(ErrorCode::RoomNotFound, format!("no room {room:?}"))
    }
}

fn body<T>(parsed: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    parsed.map(|Json(v)| v).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("invalid request body: {}", e.body_text()),
        )
    })
}

/// Checks the bearer token for acting on `room` (`None`: the whole server) and counts the
/// request.
fn authorize(state: &AppState, headers: &HeaderMap, room: Option<&str>) -> Result<(), ApiError> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim());
    state.session.auth.verify_admin(token, room)?;
    Ok(())
}

/// Wraps a handler's outcome so that every response is counted by status.
fn counted(state: &AppState, result: Result<Response, ApiError>) -> Response {
    let response = match result {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    state
        .metrics()
        .admin_requests
        .with_label_values(&[response.status().as_str()])
        .inc();
    response
}

async fn list_rooms(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let result = async {
        authorize(&state, &headers, None)?;
        let rooms = state.rooms().list();
        let Some(cluster) = &state.session.cluster else {
            return Ok(Json(json!({ "rooms": rooms })).into_response());
        };
        // Several nodes: each room says where it is; a request from a client (not from another
        // node) lists every node's rooms.
        let mut rooms: Vec<serde_json::Value> = rooms
            .into_iter()
            .map(|r| {
                let mut v = json!(r);
                v["node"] = cluster.node_id().into();
                v
            })
            .collect();
        if headers.contains_key(crate::cluster::FORWARDED_HEADER) {
            return Ok(Json(json!({ "rooms": rooms })).into_response());
        }
        let (remote, unreachable) =
            crate::forward::remote_rooms(cluster, headers.get(axum::http::header::AUTHORIZATION))
                .await
                .map_err(|e| ApiError::new(ErrorCode::ClusterUnavailable, e.to_string()))?;
        rooms.extend(remote);
        rooms.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        Ok(Json(json!({ "rooms": rooms, "unreachable_nodes": unreachable })).into_response())
    }
    .await;
    counted(&state, result)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRoom {
    name: String,
    #[serde(default)]
    max_participants: Option<usize>,
    /// Seconds the room waits for its first participant.
    #[serde(default)]
    empty_timeout: Option<u64>,
    /// `sfu` (default) or `p2p` (a direct 1:1 call; at most two participants).
    #[serde(default)]
    mode: Option<crate::protocol::RoomMode>,
}

async fn create_room(
    State(state): State<AppState>,
    headers: HeaderMap,
    parsed: Result<Json<CreateRoom>, JsonRejection>,
) -> Response {
    let result = (|| {
        let req = body(parsed)?;
        authorize(&state, &headers, Some(&req.name))?;
        let len = req.name.chars().count();
        if len == 0 || len > MAX_ROOM_CHARS {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("name must be 1 to {MAX_ROOM_CHARS} characters"),
            ));
        }
        let options = RoomOptions {
            max_participants: req.max_participants,
            empty_timeout: req.empty_timeout.map(Duration::from_secs),
            mode: req.mode,
        };
        match state.rooms().create(&req.name, options) {
            Ok(true) => {}
            Ok(false) => {
                return Err(ApiError::new(
                    ErrorCode::RoomExists,
                    format!("room {:?} exists already", req.name),
                ))
            }
            Err(Refusal::TooManyRooms(max)) => {
                return Err(ApiError::with_status(
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorCode::TooManyRooms,
                    format!("the server holds as many rooms as it may ({max})"),
                ))
            }
            Err(other) => return Err(ApiError::new(ErrorCode::InternalError, other.to_string())),
        }
        let room = state.rooms().get(&req.name);
        Ok((StatusCode::CREATED, Json(json!({ "room": room }))).into_response())
    })();
    counted(&state, result)
}

async fn get_room(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(room): Path<String>,
) -> Response {
    let result = async {
        authorize(&state, &headers, Some(&room))?;
        let summary = state
            .rooms()
            .get(&room)
            .ok_or_else(|| ApiError::room_not_found(&room))?;
        // The engine's view: each participant's tracks and layers, and what each subscriber
        // receives (layer, target, reason).
        let media = state
            .sfu()
            .debug()
            .await
            .map_err(ApiError::engine_unavailable)?
            .rooms
            .into_iter()
            .find(|r| r.name == room);
        Ok(Json(json!({
            "room": summary,
            "participants": media.map(|m| m.participants).unwrap_or_default(),
        }))
        .into_response())
    }
    .await;
    counted(&state, result)
}

async fn delete_room(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(room): Path<String>,
) -> Response {
    let result = (|| {
        authorize(&state, &headers, Some(&room))?;
        if !state.rooms().delete(&room) {
            return Err(ApiError::room_not_found(&room));
        }
        Ok(StatusCode::NO_CONTENT.into_response())
    })();
    counted(&state, result)
}

async fn remove_participant(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((room, identity)): Path<(String, String)>,
) -> Response {
    let result = (|| {
        authorize(&state, &headers, Some(&room))?;
        if !state.rooms().exists(&room) {
            return Err(ApiError::room_not_found(&room));
        }
        if !state.rooms().remove_participant(&room, &identity) {
            return Err(ApiError::new(
                ErrorCode::ParticipantNotFound,
                format!("no participant {identity:?} in room {room:?}"),
            ));
        }
        Ok(StatusCode::NO_CONTENT.into_response())
    })();
    counted(&state, result)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Mute {
    muted: bool,
}

async fn mute_track(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((room, track)): Path<(String, String)>,
    parsed: Result<Json<Mute>, JsonRejection>,
) -> Response {
    let result = async {
        authorize(&state, &headers, Some(&room))?;
        let req = body(parsed)?;
        if !state.rooms().exists(&room) {
            return Err(ApiError::room_not_found(&room));
        }
        let found = state
            .sfu()
            .mute_track(&room, &track, req.muted)
            .await
            .map_err(ApiError::engine_unavailable)?;
        if !found {
            return Err(ApiError::new(
                ErrorCode::TrackNotFound,
                format!("no track {track:?} published in room {room:?}"),
            ));
        }
        Ok(Json(json!({ "track_id": track, "muted": req.muted })).into_response())
    }
    .await;
    counted(&state, result)
}

/// A data message from the server: `text` or `base64` (binary), optional `topic`, `to`
/// (identities; absent: everyone) and `reliable` (default true).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendData {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    base64: Option<String>,
    #[serde(default)]
    topic: String,
    #[serde(default)]
    to: Vec<String>,
    #[serde(default = "reliable_by_default")]
    reliable: bool,
}

fn reliable_by_default() -> bool {
    true
}

impl SendData {
    fn into_message(self) -> Result<sfu::DataMessage, ApiError> {
        let invalid = |m: &str| ApiError::new(ErrorCode::InvalidRequest, m.to_owned());
        let (text, payload) = match (self.text, self.base64) {
            (Some(t), None) => (true, t.into_bytes()),
            (None, Some(b)) => {
                use base64::Engine as _;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b.as_bytes())
                    .map_err(|e| invalid(&format!("base64: {e}")))?;
                (false, bytes)
            }
            _ => return Err(invalid("give exactly one of `text` and `base64`")),
        };
        if self.topic.len() > 255 || self.to.iter().any(|i| i.is_empty() || i.len() > 255) {
            return Err(invalid(
                "`topic` and each identity in `to` are at most 255 bytes (identities non-empty)",
            ));
        }
        if self.to.len() > 64 {
            return Err(invalid("`to` names at most 64 identities"));
        }
        Ok(sfu::DataMessage {
            reliable: self.reliable,
            text,
            topic: self.topic,
            to: self.to,
            payload: payload.into(),
        })
    }
}

async fn send_data(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(room): Path<String>,
    parsed: Result<Json<SendData>, JsonRejection>,
) -> Response {
    let result = async {
        authorize(&state, &headers, Some(&room))?;
        let message = body(parsed)?.into_message()?;
        if !state.rooms().exists(&room) {
            return Err(ApiError::room_not_found(&room));
        }
        let delivered = match state.sfu().send_data(&room, message).await {
            Ok(n) => n,
            Err(e @ sfu::SfuError::DataTooLarge { .. }) => {
                return Err(ApiError::new(ErrorCode::InvalidRequest, e.to_string()))
            }
            Err(e) => return Err(ApiError::engine_unavailable(e)),
        };
        Ok(Json(json!({ "delivered": delivered })).into_response())
    }
    .await;
    counted(&state, result)
}

/// `{}` records the room; `{"track_id": "TR_…"}` one of its tracks.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartRecording {
    #[serde(default)]
    track_id: Option<String>,
}

async fn start_recording(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(room): Path<String>,
    parsed: Result<Json<StartRecording>, JsonRejection>,
) -> Response {
    let result = async {
        authorize(&state, &headers, Some(&room))?;
        let req = body(parsed)?;
        if !state.rooms().exists(&room) {
            return Err(ApiError::room_not_found(&room));
        }
        let recording = state.recordings.start(&room, req.track_id).await?;
        Ok((StatusCode::CREATED, Json(recording)).into_response())
    }
    .await;
    counted(&state, result)
}

async fn list_recordings(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(room): Path<String>,
) -> Response {
    let result = (|| {
        authorize(&state, &headers, Some(&room))?;
        let recordings = state.recordings.list(&room);
        if recordings.is_empty() && !state.rooms().exists(&room) {
            return Err(ApiError::room_not_found(&room));
        }
        Ok(Json(json!({ "recordings": recordings })).into_response())
    })();
    counted(&state, result)
}

async fn stop_recording(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((room, id)): Path<(String, String)>,
) -> Response {
    let result = async {
        authorize(&state, &headers, Some(&room))?;
        let recording = state.recordings.stop(&room, &id).await?;
        Ok(Json(recording).into_response())
    }
    .await;
    counted(&state, result)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::ENDPOINTS;

    /// The OpenAPI document lists exactly the endpoints the router serves.
    #[test]
    fn openapi_document_matches_the_router() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.yaml");
        let doc = config::Config::builder()
            .add_source(config::File::from(path))
            .build()
            .expect("docs/openapi.yaml parses");
        let paths: config::Map<String, config::Value> = doc.get("paths").expect("paths");
        let methods = ["get", "post", "put", "patch", "delete"];
        let mut documented = BTreeSet::new();
        for (path, item) in paths {
            let item: config::Map<String, config::Value> = item.into_table().expect("path item");
            for method in item.keys().filter(|k| methods.contains(&k.as_str())) {
                documented.insert((method.clone(), path.clone()));
            }
        }
        let served: BTreeSet<(String, String)> = ENDPOINTS
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        assert_eq!(documented, served);
    }
}
