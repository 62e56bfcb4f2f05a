// The signaling wire protocol, version 1 (docs/protocol.md): every message is one JSON object in one
// WebSocket text frame, tagged by `type`. The server's counterpart is signaling/src/protocol.rs;
// keep the three in step.

export const PROTOCOL_VERSION = 1;

/** A published track: `{"id": "TR_…", "kind": "audio" | "video"}`. */
export interface Track {
  id: string;
  kind: 'audio' | 'video';
}

/** A participant of a room: `{"id": "PA_…", "name": "Alice", "tracks": [track]}`. */
export interface Participant {
  id: string;
  name: string;
  tracks: Track[];
}

// ---- client → server ----

export interface JoinMessage {
  type: 'join';
  v: typeof PROTOCOL_VERSION;
  /** 1–128 characters. */
  room: string;
  /** 1–128 characters. */
  name: string;
  /** Ignored by a server in `--dev` mode. */
  token?: string;
}

export interface ClientOfferMessage {
  type: 'offer';
  sdp: string;
}

export interface ClientAnswerMessage {
  type: 'answer';
  sdp: string;
}

export interface ClientCandidateMessage {
  type: 'candidate';
  /** The browser's own `RTCIceCandidateInit` (camelCase fields), or `null` for end of candidates. */
  candidate: RTCIceCandidateInit | null;
}

export interface LeaveMessage {
  type: 'leave';
}

export type ClientMessage =
  | JoinMessage
  | ClientOfferMessage
  | ClientAnswerMessage
  | ClientCandidateMessage
  | LeaveMessage;

// ---- server → client ----

export interface JoinedMessage {
  type: 'joined';
  v: number;
  room: string;
  participant_id: string;
  /** Everyone already in the room, with their published tracks. */
  participants: Participant[];
  ice_servers: RTCIceServer[];
}

export interface ParticipantJoinedMessage {
  type: 'participant_joined';
  participant: Participant;
}

export interface ParticipantLeftMessage {
  type: 'participant_left';
  participant_id: string;
}

export interface TrackPublishedMessage {
  type: 'track_published';
  participant_id: string;
  track: Track;
}

export interface TrackUnpublishedMessage {
  type: 'track_unpublished';
  participant_id: string;
  track_id: string;
}

export interface ServerOfferMessage {
  type: 'offer';
  sdp: string;
}

export interface ServerAnswerMessage {
  type: 'answer';
  sdp: string;
}

export interface ServerCandidateMessage {
  type: 'candidate';
  candidate: RTCIceCandidateInit;
}

/** Every error code the server sends; see "Error codes" in docs/protocol.md. */
export type ErrorCode =
  | 'bad_json'
  | 'unknown_type'
  | 'invalid_message'
  | 'unsupported_version'
  | 'not_joined'
  | 'already_joined'
  | 'invalid_sdp'
  | 'invalid_candidate'
  | 'message_too_large'
  | 'internal_error';

export interface ErrorMessage {
  type: 'error';
  code: ErrorCode;
  /** Human readable; not stable. */
  message: string;
}

export type ServerMessage =
  | JoinedMessage
  | ParticipantJoinedMessage
  | ParticipantLeftMessage
  | TrackPublishedMessage
  | TrackUnpublishedMessage
  | ServerOfferMessage
  | ServerAnswerMessage
  | ServerCandidateMessage
  | ErrorMessage;

/** Parses one text frame from the server; `null` for anything that is not a tagged JSON object. */
export function parseServerMessage(text: string): ServerMessage | null {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof value !== 'object' || value === null || typeof (value as { type?: unknown }).type !== 'string') {
    return null;
  }
  return value as ServerMessage;
}
