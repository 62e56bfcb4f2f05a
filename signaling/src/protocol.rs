//! The signaling wire protocol, version 1: every message a JSON object tagged by `type`.
//! Documented, with an example exchange, in `docs/protocol.md`; keep the two in step.

use serde::{Deserialize, Serialize};

pub use crate::error::ErrorCode;

pub const PROTOCOL_VERSION: u32 = 1;
/// The largest text frame accepted by default (`max_message_bytes`); larger ones get
/// `message_too_large` and the socket closes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
pub const MAX_ROOM_CHARS: usize = 128;
pub const MAX_NAME_CHARS: usize = 128;

/// A candidate in the browser's `RTCIceCandidateInit` shape (camelCase on the wire).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceCandidate {
    pub candidate: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    #[serde(
        default,
        rename = "sdpMLineIndex",
        skip_serializing_if = "Option::is_none"
    )]
    pub sdp_mline_index: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_fragment: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    Join {
        v: u32,
        room: String,
        name: String,
        #[serde(default)]
        token: Option<String>,
        /// `p2p` creates (or expects) a direct 1:1 room; absent: whatever the room is.
        #[serde(default)]
        mode: Option<RoomMode>,
        /// `audio`: the room's voices arrive mixed into one track (the MCU); `all`: and one
        /// composite picture; absent: forwarded.
        #[serde(default)]
        mixed: Option<Mixed>,
    },
    Offer {
        sdp: String,
    },
    Answer {
        sdp: String,
    },
    Candidate {
        candidate: Option<IceCandidate>,
    },
    Leave {},
    /// How the client shows one remote video track: displayed size in device pixels,
    /// visibility, and an optional quality cap. Absent fields keep their earlier value.
    TrackSettings {
        track_id: String,
        #[serde(default)]
        visible: Option<bool>,
        #[serde(default)]
        width: Option<u32>,
        #[serde(default)]
        height: Option<u32>,
        #[serde(default)]
        max_quality: Option<QualityName>,
    },
    /// What the client publishes on the transceiver `mid`.
    TrackSource {
        mid: String,
        source: SourceName,
    },
    /// The client wants its data channels; the server's next offer carries them.
    EnableData {},
    /// The client mutes or unmutes what it publishes on the transceiver `mid`.
    Mute {
        mid: String,
        muted: bool,
    },
}

/// The `type` values a client may send, to tell an unknown type from a malformed message.
pub const CLIENT_TYPES: &[&str] = &[
    "join",
    "offer",
    "answer",
    "candidate",
    "leave",
    "track_settings",
    "track_source",
    "enable_data",
    "mute",
];

/// How a room carries media: through the server (`sfu`, the default) or directly between its
/// two participants (`p2p`: the server only relays their offers, answers and candidates).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomMode {
    #[default]
    Sfu,
    P2p,
}

impl RoomMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RoomMode::Sfu => "sfu",
            RoomMode::P2p => "p2p",
        }
    }
}

/// What a participant receives mixed by the server instead of forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mixed {
    /// One audio track: every other voice of the room; video forwarded as usual.
    Audio,
    /// Mixed audio and one composite picture of the room's cameras and screen shares.
    All,
}

/// A simulcast layer's quality on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QualityName {
    Low,
    Medium,
    High,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceName {
    Camera,
    Microphone,
    Screen,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Track {
    pub id: String,
    pub kind: String,
    /// camera, microphone or screen.
    pub source: String,
    /// Muted by an administrator: nothing of it is forwarded.
    #[serde(default)]
    pub muted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    pub id: String,
    /// The stable identity from the participant's access token.
    pub identity: String,
    pub name: String,
    pub tracks: Vec<Track>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Joined {
        v: u32,
        room: String,
        participant_id: String,
        participants: Vec<Participant>,
        ice_servers: Vec<IceServer>,
        /// The room's mode; in `p2p` the client connects to the other participant, not to us.
        #[serde(default)]
        mode: RoomMode,
    },
    ParticipantJoined {
        participant: Participant,
    },
    ParticipantLeft {
        participant_id: String,
    },
    TrackPublished {
        participant_id: String,
        track: Track,
    },
    TrackUnpublished {
        participant_id: String,
        track_id: String,
    },
    /// From the server, or (in a p2p room) relayed from participant `from`.
    Offer {
        sdp: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<String>,
    },
    Answer {
        sdp: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<String>,
    },
    Candidate {
        candidate: IceCandidate,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<String>,
    },
    /// A track was muted or unmuted, by its publisher or an administrator (sent to its
    /// publisher too).
    TrackMuted {
        participant_id: String,
        track_id: String,
        muted: bool,
        /// `publisher` or `admin`.
        by: &'static str,
    },
    /// The room's active speaker changed (the loudest voice, kept through silence).
    ActiveSpeaker {
        participant_id: String,
    },
    /// The layer this subscriber receives for a video track, the one it switches to, and why.
    TrackLayer {
        track_id: String,
        current: Option<QualityName>,
        target: Option<QualityName>,
        reason: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        width: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        height: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        bitrate: Option<u64>,
    },
    /// To a publisher: the simulcast encodings (rids) of transceiver `mid` anyone receives.
    PublisherLayers {
        mid: String,
        track_id: String,
        active: Vec<String>,
        /// Seen and nobody receives them: pause. Rids in neither list: leave as they are.
        paused: Vec<String>,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
}

/// Why a text frame could not become a [`ClientMessage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub code: ErrorCode,
    pub message: String,
}

/// Parses one text frame, telling malformed JSON, unknown types and malformed messages apart.
pub fn parse_client_message(text: &str) -> Result<ClientMessage, ParseError> {
    parse_client_message_limited(text, MAX_MESSAGE_BYTES)
}

/// [`parse_client_message`] with a size limit of `max_bytes`.
pub fn parse_client_message_limited(
    text: &str,
    max_bytes: usize,
) -> Result<ClientMessage, ParseError> {
    if text.len() > max_bytes {
        return Err(ParseError {
            code: ErrorCode::MessageTooLarge,
            message: format!(
                "message of {} bytes exceeds the limit of {max_bytes}",
                text.len()
            ),
        });
    }
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| ParseError {
        code: ErrorCode::BadJson,
        message: format!("not valid JSON: {e}"),
    })?;
    let Some(object) = value.as_object() else {
        return Err(ParseError {
            code: ErrorCode::BadJson,
            message: "expected a JSON object".into(),
        });
    };
    match object.get("type").and_then(|t| t.as_str()) {
        Some(t) if CLIENT_TYPES.contains(&t) => {}
        Some(t) => {
            return Err(ParseError {
                code: ErrorCode::UnknownType,
                message: format!("unknown message type {t:?}"),
            })
        }
        None => {
            return Err(ParseError {
                code: ErrorCode::UnknownType,
                message: "missing string field \"type\"".into(),
            })
        }
    }
    serde_json::from_value(value).map_err(|e| ParseError {
        code: ErrorCode::InvalidMessage,
        message: format!("malformed message: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> ErrorCode {
        parse_client_message(text).unwrap_err().code
    }

    #[test]
    fn parses_every_client_type() {
        assert!(matches!(
            parse_client_message(r#"{"type":"join","v":1,"room":"r","name":"n"}"#),
            Ok(ClientMessage::Join {
                v: 1,
                token: None,
                ..
            })
        ));
        assert!(matches!(
            parse_client_message(r#"{"type":"offer","sdp":"v=0"}"#),
            Ok(ClientMessage::Offer { .. })
        ));
        assert!(matches!(
            parse_client_message(r#"{"type":"candidate","candidate":null}"#),
            Ok(ClientMessage::Candidate { candidate: None })
        ));
        let c = parse_client_message(
            r#"{"type":"candidate","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"u"}}"#,
        )
        .unwrap();
        let ClientMessage::Candidate { candidate: Some(c) } = c else {
            panic!()
        };
        assert_eq!(c.sdp_mline_index, Some(0));
        assert_eq!(c.sdp_mid.as_deref(), Some("0"));
        assert!(matches!(
            parse_client_message(r#"{"type":"leave"}"#),
            Ok(ClientMessage::Leave {})
        ));
        assert!(matches!(
            parse_client_message(r#"{"type":"track_settings","track_id":"TR_a","visible":false}"#),
            Ok(ClientMessage::TrackSettings {
                visible: Some(false),
                width: None,
                max_quality: None,
                ..
            })
        ));
        assert!(matches!(
            parse_client_message(
                r#"{"type":"track_settings","track_id":"TR_a","width":640,"height":360,"max_quality":"medium"}"#
            ),
            Ok(ClientMessage::TrackSettings {
                width: Some(640),
                height: Some(360),
                max_quality: Some(QualityName::Medium),
                ..
            })
        ));
        assert!(matches!(
            parse_client_message(r#"{"type":"track_source","mid":"1","source":"screen"}"#),
            Ok(ClientMessage::TrackSource {
                source: SourceName::Screen,
                ..
            })
        ));
    }

    #[test]
    fn classifies_bad_input() {
        assert_eq!(code("{not json"), ErrorCode::BadJson);
        assert_eq!(code("[1,2]"), ErrorCode::BadJson);
        assert_eq!(code(r#"{"type":"dance"}"#), ErrorCode::UnknownType);
        assert_eq!(code(r#"{"no_type":1}"#), ErrorCode::UnknownType);
        assert_eq!(code(r#"{"type":7}"#), ErrorCode::UnknownType);
        assert_eq!(
            code(r#"{"type":"join","room":"r"}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code(r#"{"type":"offer","sdp":5}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code(r#"{"type":"track_settings","track_id":"TR_a","max_quality":"ultra"}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code(r#"{"type":"track_settings","track_id":"TR_a","width":-1}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code(r#"{"type":"track_source","mid":"1","source":"hologram"}"#),
            ErrorCode::InvalidMessage
        );
        let big = format!(
            r#"{{"type":"offer","sdp":"{}"}}"#,
            "a".repeat(MAX_MESSAGE_BYTES)
        );
        assert_eq!(code(&big), ErrorCode::MessageTooLarge);
    }

    #[test]
    fn server_messages_serialize_with_snake_case_tags() {
        let m = ServerMessage::Error {
            code: ErrorCode::NotJoined,
            message: "x".into(),
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"type":"error","code":"not_joined","message":"x"}"#
        );
        let m = ServerMessage::Candidate {
            candidate: IceCandidate {
                candidate: "candidate:1".into(),
                sdp_mid: Some("0".into()),
                sdp_mline_index: Some(0),
                username_fragment: None,
            },
            from: None,
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"type":"candidate","candidate":{"candidate":"candidate:1","sdpMid":"0","sdpMLineIndex":0}}"#
        );
    }
}
