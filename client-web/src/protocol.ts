// The signaling wire protocol, version 1 (docs/protocol.md): every message is one JSON object in one
// WebSocket text frame, tagged by `type`. The server's counterpart is signaling/src/protocol.rs;
// keep the three in step.

export const PROTOCOL_VERSION = 1;

/** What a published track carries. Screen shares get bandwidth first. */
export type TrackSource = 'camera' | 'microphone' | 'screen';

/** A published track: `{"id": "TR_…", "kind": "audio" | "video", "source": …}`. */
export interface Track {
  id: string;
  kind: 'audio' | 'video';
  source?: TrackSource;
  /** Muted by an administrator: nothing of it is forwarded. */
  muted?: boolean;
}

/** A simulcast layer's quality: with three layers low/medium/high, two low/high, one high. */
export type Quality = 'low' | 'medium' | 'high';

/** Why a subscriber receives the layer it receives (docs/protocol.md). */
export type LayerReason = 'display_size' | 'bandwidth' | 'publisher_not_sending' | 'hidden' | 'preference';

/** A participant of a room: `{"id": "PA_…", "name": "Alice", "tracks": [track]}`. */
export interface Participant {
  id: string;
  /** The stable identity from the participant's access token. */
  identity: string;
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
  /** `p2p` creates (or insists on) a direct 1:1 room; absent: the room as it is (new: `sfu`). */
  mode?: RoomMode;
  /**
   * `audio`: the room's other voices arrive mixed by the server into one track (stream id
   * `mixed`) instead of one per microphone; `all`: and one composite picture of the cameras and
   * screen shares (same stream) instead of one track each.
   */
  mixed?: 'audio' | 'all';
}

/** `sfu`: media goes through the server. `p2p`: straight between the room's two participants. */
export type RoomMode = 'sfu' | 'p2p';

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

/** How this client shows one remote video track; absent fields keep their value on the server. */
export interface TrackSettingsMessage {
  type: 'track_settings';
  track_id: string;
  visible?: boolean;
  /** Displayed size in device pixels (both or neither). */
  width?: number;
  height?: number;
  max_quality?: Quality;
}

/** What this client publishes on transceiver `mid`. */
export interface TrackSourceMessage {
  type: 'track_source';
  mid: string;
  source: TrackSource;
}

/** This client mutes or unmutes what it publishes on transceiver `mid`. */
export interface MuteMessage {
  type: 'mute';
  mid: string;
  muted: boolean;
}

/** This client wants its data channels: the server's next offer carries them. */
export interface EnableDataMessage {
  type: 'enable_data';
}

export type ClientMessage =
  | JoinMessage
  | ClientOfferMessage
  | ClientAnswerMessage
  | ClientCandidateMessage
  | LeaveMessage
  | TrackSettingsMessage
  | TrackSourceMessage
  | MuteMessage
  | EnableDataMessage;

// ---- server → client ----

export interface JoinedMessage {
  type: 'joined';
  v: number;
  room: string;
  participant_id: string;
  /** Everyone already in the room, with their published tracks. */
  participants: Participant[];
  ice_servers: RTCIceServer[];
  /** In `p2p` the peer connection is with the other participant (offers etc. are relayed). */
  mode: RoomMode;
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

/** `from`: in a p2p room, the participant whose offer (answer, candidate) the server relays. */
export interface ServerOfferMessage {
  type: 'offer';
  sdp: string;
  from?: string;
}

export interface ServerAnswerMessage {
  type: 'answer';
  sdp: string;
  from?: string;
}

export interface ServerCandidateMessage {
  type: 'candidate';
  candidate: RTCIceCandidateInit;
  from?: string;
}

/** The layer this client receives for a video track (`current`), the one the server switches to
 * at its next keyframe (`target`), and why. `null` is nothing (paused). */
export interface TrackLayerMessage {
  type: 'track_layer';
  track_id: string;
  current: Quality | null;
  target: Quality | null;
  reason: LayerReason;
  /** Of the current layer, when known (absent or `null` otherwise); bitrate in bit/s. */
  width?: number | null;
  height?: number | null;
  bitrate?: number | null;
}

/** Dynacast: the simulcast encodings (rids) of our transceiver `mid` that anyone receives. */
export interface PublisherLayersMessage {
  type: 'publisher_layers';
  mid: string;
  track_id: string;
  /** Encodings someone receives: turn them on. */
  active: string[];
  /** Encodings nobody receives: turn them off. Rids in neither list are left as they are (the
   * server has not seen them yet, e.g. a layer Chromium starts late). */
  paused: string[];
}

/** A track was muted or unmuted (ours included), by its publisher or an administrator. */
export interface TrackMutedMessage {
  type: 'track_muted';
  participant_id: string;
  track_id: string;
  muted: boolean;
  by: MutedBy;
}

/** Who muted a track: its publisher (`mute`) or an administrator (the admin API). */
export type MutedBy = 'publisher' | 'admin';

/** The room's loudest voice. */
export interface ActiveSpeakerMessage {
  type: 'active_speaker';
  participant_id: string;
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
  | 'unknown_track'
  | 'message_too_large'
  | 'rate_limited'
  | 'token_missing'
  | 'token_malformed'
  | 'token_expired'
  | 'token_not_yet_valid'
  | 'token_invalid_signature'
  | 'token_wrong_room'
  | 'token_missing_grant'
  | 'room_not_found'
  | 'room_full'
  | 'too_many_rooms'
  | 'room_mode_mismatch'
  | 'no_peer'
  | 'publish_not_allowed'
  | 'too_many_tracks'
  | 'data_rejected'
  | 'data_rate_limited'
  | 'muted_by_admin'
  | 'join_timeout'
  | 'too_many_connections'
  | 'server_draining'
  | 'server_shutdown'
  | 'removed'
  | 'room_deleted'
  | 'duplicate_identity'
  | 'cluster_unavailable'
  | 'node_lost'
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
  | TrackLayerMessage
  | PublisherLayersMessage
  | ActiveSpeakerMessage
  | TrackMutedMessage
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
