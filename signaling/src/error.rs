//! Every error code the server sends, in one enum ([`ErrorCode`]), and the JSON error of the
//! HTTP API ([`ApiError`]). The WebSocket protocol carries a code in its `error` message
//! (`protocol`), WHIP/WHEP in an RFC 9457 problem (`whip`), the admin API and forwarded requests
//! in `{"error": {"code", "message"}}`; the codes are stable snake_case strings, documented in
//! `docs/protocol.md` and `docs/openapi.yaml`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::auth::TokenError;

/// Every error the server sends, as a stable snake_case code: in a WebSocket `error` message,
/// a WHIP/WHEP problem and an admin API error alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadJson,
    UnknownType,
    InvalidMessage,
    UnsupportedVersion,
    NotJoined,
    AlreadyJoined,
    InvalidSdp,
    InvalidCandidate,
    UnknownTrack,
    /// WHIP/WHEP: no such session resource (ended, or never created).
    UnknownSession,
    /// WHEP: the participant (or track) to play is not in the room.
    UnknownParticipant,
    MessageTooLarge,
    /// More messages per second than the server allows: this one was dropped.
    RateLimited,
    TokenMissing,
    TokenMalformed,
    TokenExpired,
    TokenNotYetValid,
    TokenInvalidSignature,
    TokenWrongRoom,
    TokenMissingGrant,
    /// The room does not exist and joins may not create rooms.
    RoomNotFound,
    RoomFull,
    TooManyRooms,
    /// The join asked for a room mode (`sfu` or `p2p`) other than the existing room's.
    RoomModeMismatch,
    /// p2p room: an offer, answer or candidate arrived while nobody else is there to take it.
    NoPeer,
    /// A published track was refused: this participant may not publish it.
    PublishNotAllowed,
    /// A published track was refused: this participant publishes as many as it may.
    TooManyTracks,
    /// A data message was refused: too large for its channel, not a valid envelope, or the
    /// token lacks the `data` grant.
    DataRejected,
    /// Data messages beyond the sender's rate were dropped.
    DataRateLimited,
    /// A participant tried to unmute a track an administrator muted.
    MutedByAdmin,
    /// The socket did not send `join` in time (`join_timeout`).
    JoinTimeout,
    /// The server, or this client address, has as many signaling sockets open as it may.
    TooManyConnections,
    /// The server is draining: join another server (retry through the load balancer).
    ServerDraining,
    /// The server is shutting down; rejoin (another server will take the room).
    ServerShutdown,
    /// An administrator removed this participant.
    Removed,
    /// The room was deleted.
    RoomDeleted,
    /// The same identity joined the room again; this older session ends.
    DuplicateIdentity,
    /// Multi-node: the directory (Redis) is unreachable or the room's node does not answer;
    /// join again in a moment.
    ClusterUnavailable,
    /// Multi-node: the server holding the room stopped under a proxied session; join again
    /// (the room is placed on a live server).
    NodeLost,
    /// Admin API: no such endpoint.
    NotFound,
    /// Admin API: the request body is not the JSON described.
    InvalidRequest,
    /// Admin API: a room of that name exists already.
    RoomExists,
    /// Admin API: no such participant in the room.
    ParticipantNotFound,
    /// Admin API: no such track published in the room.
    TrackNotFound,
    /// Admin API: no such recording in the room.
    RecordingNotFound,
    /// Admin API: the recording could not start (the file, the track's codec).
    RecordingFailed,
    /// Admin API: the media engine does not answer.
    EngineUnavailable,
    /// Multi-node: the node holding the room does not answer a forwarded HTTP request.
    NodeUnreachable,
    InternalError,
}

impl ErrorCode {
    /// Every code, for tests and documentation checks.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::BadJson,
        ErrorCode::UnknownType,
        ErrorCode::InvalidMessage,
        ErrorCode::UnsupportedVersion,
        ErrorCode::NotJoined,
        ErrorCode::AlreadyJoined,
        ErrorCode::InvalidSdp,
        ErrorCode::InvalidCandidate,
        ErrorCode::UnknownTrack,
        ErrorCode::UnknownSession,
        ErrorCode::UnknownParticipant,
        ErrorCode::MessageTooLarge,
        ErrorCode::RateLimited,
        ErrorCode::TokenMissing,
        ErrorCode::TokenMalformed,
        ErrorCode::TokenExpired,
        ErrorCode::TokenNotYetValid,
        ErrorCode::TokenInvalidSignature,
        ErrorCode::TokenWrongRoom,
        ErrorCode::TokenMissingGrant,
        ErrorCode::RoomNotFound,
        ErrorCode::RoomFull,
        ErrorCode::TooManyRooms,
        ErrorCode::RoomModeMismatch,
        ErrorCode::NoPeer,
        ErrorCode::PublishNotAllowed,
        ErrorCode::TooManyTracks,
        ErrorCode::DataRejected,
        ErrorCode::DataRateLimited,
        ErrorCode::MutedByAdmin,
        ErrorCode::JoinTimeout,
        ErrorCode::TooManyConnections,
        ErrorCode::ServerDraining,
        ErrorCode::ServerShutdown,
        ErrorCode::Removed,
        ErrorCode::RoomDeleted,
        ErrorCode::DuplicateIdentity,
        ErrorCode::ClusterUnavailable,
        ErrorCode::NodeLost,
        ErrorCode::NotFound,
        ErrorCode::InvalidRequest,
        ErrorCode::RoomExists,
        ErrorCode::ParticipantNotFound,
        ErrorCode::TrackNotFound,
        ErrorCode::RecordingNotFound,
        ErrorCode::RecordingFailed,
        ErrorCode::EngineUnavailable,
        ErrorCode::NodeUnreachable,
        ErrorCode::InternalError,
    ];

    /// The code on the wire (what serde writes too).
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            BadJson => "bad_json",
            UnknownType => "unknown_type",
            InvalidMessage => "invalid_message",
            UnsupportedVersion => "unsupported_version",
            NotJoined => "not_joined",
            AlreadyJoined => "already_joined",
            InvalidSdp => "invalid_sdp",
            InvalidCandidate => "invalid_candidate",
            UnknownTrack => "unknown_track",
            UnknownSession => "unknown_session",
            UnknownParticipant => "unknown_participant",
            MessageTooLarge => "message_too_large",
            RateLimited => "rate_limited",
            TokenMissing => "token_missing",
            TokenMalformed => "token_malformed",
            TokenExpired => "token_expired",
            TokenNotYetValid => "token_not_yet_valid",
            TokenInvalidSignature => "token_invalid_signature",
            TokenWrongRoom => "token_wrong_room",
            TokenMissingGrant => "token_missing_grant",
            RoomNotFound => "room_not_found",
            RoomFull => "room_full",
            TooManyRooms => "too_many_rooms",
            RoomModeMismatch => "room_mode_mismatch",
            NoPeer => "no_peer",
            PublishNotAllowed => "publish_not_allowed",
            TooManyTracks => "too_many_tracks",
            DataRejected => "data_rejected",
            DataRateLimited => "data_rate_limited",
            MutedByAdmin => "muted_by_admin",
            JoinTimeout => "join_timeout",
            TooManyConnections => "too_many_connections",
            ServerDraining => "server_draining",
            ServerShutdown => "server_shutdown",
            Removed => "removed",
            RoomDeleted => "room_deleted",
            DuplicateIdentity => "duplicate_identity",
            ClusterUnavailable => "cluster_unavailable",
            NodeLost => "node_lost",
            NotFound => "not_found",
            InvalidRequest => "invalid_request",
            RoomExists => "room_exists",
            ParticipantNotFound => "participant_not_found",
            TrackNotFound => "track_not_found",
            RecordingNotFound => "recording_not_found",
            RecordingFailed => "recording_failed",
            EngineUnavailable => "engine_unavailable",
            NodeUnreachable => "node_unreachable",
            InternalError => "internal_error",
        }
    }

    /// The HTTP status an HTTP answer with this code has, where the code alone decides it. A
    /// call site that means another status passes its own (WHEP's `unknown_track` is 409, the
    /// admin API's `too_many_rooms` 429, a forwarding node's `internal_error` 503).
    pub fn status(self) -> StatusCode {
        use ErrorCode::*;
        match self {
            TokenMissing
            | TokenMalformed
            | TokenExpired
            | TokenNotYetValid
            | TokenInvalidSignature => StatusCode::UNAUTHORIZED,
            TokenWrongRoom | TokenMissingGrant | PublishNotAllowed | RoomFull => {
                StatusCode::FORBIDDEN
            }
            // A p2p room has no server-side media to publish into or play from.
            RoomModeMismatch | RoomExists => StatusCode::CONFLICT,
            RoomNotFound | UnknownSession | UnknownParticipant | NotFound | ParticipantNotFound
            | TrackNotFound | RecordingNotFound => StatusCode::NOT_FOUND,
            TooManyRooms | TooManyConnections | ServerDraining | ServerShutdown
            | ClusterUnavailable | EngineUnavailable | NodeUnreachable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            InvalidSdp | TooManyTracks => StatusCode::UNPROCESSABLE_ENTITY,
            InternalError | RecordingFailed => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// Whether the server closes the socket after sending this error.
    pub fn closes(self) -> bool {
        self.close_code().is_some()
    }

    /// The WebSocket close code that follows this error, for those that end the session.
    pub fn close_code(self) -> Option<u16> {
        use ErrorCode::*;
        match self {
            MessageTooLarge => Some(1009),
            UnsupportedVersion
            | TokenMissing
            | TokenMalformed
            | TokenExpired
            | TokenNotYetValid
            | TokenInvalidSignature
            | TokenWrongRoom
            | TokenMissingGrant
            | RoomNotFound
            | RoomFull
            | TooManyRooms
            | RoomModeMismatch
            | JoinTimeout => Some(1008),
            // "Try again later": another server, or this one after a moment.
            ServerDraining | ClusterUnavailable => Some(1013),
            ServerShutdown | NodeLost => Some(1012),
            Removed | RoomDeleted | DuplicateIdentity => Some(1000),
            InternalError => Some(1011),
            _ => None,
        }
    }
}

impl From<TokenError> for ErrorCode {
    fn from(e: TokenError) -> ErrorCode {
        match e {
            TokenError::Missing => ErrorCode::TokenMissing,
            TokenError::Malformed => ErrorCode::TokenMalformed,
            TokenError::Expired => ErrorCode::TokenExpired,
            TokenError::NotYetValid => ErrorCode::TokenNotYetValid,
            TokenError::BadSignature => ErrorCode::TokenInvalidSignature,
            TokenError::WrongRoom => ErrorCode::TokenWrongRoom,
            TokenError::MissingGrant => ErrorCode::TokenMissingGrant,
        }
    }
}

/// An HTTP API error (the admin API, a forwarded request): its status, code and message,
/// answered as `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
}

impl ApiError {
    /// An error with its code's status ([`ErrorCode::status`]).
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError::with_status(code.status(), code, message)
    }

    /// An error with a status other than its code's.
    pub fn with_status(
        status: StatusCode,
        code: ErrorCode,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": { "code": self.code, "message": self.message } })),
        )
            .into_response()
    }
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> ApiError {
        ApiError::new(ErrorCode::from(e), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `as_str` is what serde writes, both ways, and no two codes share a string.
    #[test]
    fn as_str_is_the_wire_string() {
        let mut seen = std::collections::HashSet::new();
        for &code in ErrorCode::ALL {
            let wire = serde_json::to_string(&code).unwrap();
            assert_eq!(wire, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&wire).unwrap(), code);
            assert!(seen.insert(code.as_str()), "{code:?}");
        }
    }

    /// The admin API's and WHIP's statuses, as they were before the codes were one enum.
    #[test]
    fn statuses() {
        assert_eq!(ErrorCode::TokenExpired.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(ErrorCode::TokenWrongRoom.status(), StatusCode::FORBIDDEN);
        assert_eq!(ErrorCode::RoomExists.status(), StatusCode::CONFLICT);
        assert_eq!(ErrorCode::TrackNotFound.status(), StatusCode::NOT_FOUND);
        assert_eq!(ErrorCode::InvalidRequest.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            ErrorCode::EngineUnavailable.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(ErrorCode::UnknownTrack.status(), StatusCode::BAD_REQUEST);
    }
}
