// The public shapes of the client: how to publish, who else is in the room, the events a
// `FanoutClient` dispatches and the error a join rejects with. `fanout.ts` re-exports them all.

import type { ErrorCode, JoinedMessage, MutedBy, PublisherLayersMessage, Track, TrackLayerMessage, TrackSource } from '../protocol';
import type { DataMessage } from './data';

/** How a track is published. */
export interface PublishOptions {
  /** What the track carries (default: camera for video, microphone for audio). */
  source?: TrackSource;
  /**
   * Video only: `true` (default) for `DEFAULT_SIMULCAST`, `false` for one encoding, or custom
   * encodings (each with a `rid`, low to high). Sources narrower than `MIN_SIMULCAST_WIDTH` always
   * get one encoding.
   */
  simulcast?: boolean | RTCRtpEncodingParameters[];
}

/** Someone else in the room, and the media received from them. */
export interface RemoteParticipant {
  id: string;
  /** The stable identity from their access token (what `sendData`'s `to` names). */
  identity: string;
  name: string;
  /** Their published tracks, as signaling announced them. */
  tracks: Track[];
  /**
   * The media received from them so far (audio and video). The object stays the same for the
   * participant's whole stay, so a `<video>` can be attached to it once.
   */
  stream: MediaStream;
}

/** The `detail` of each event a `FanoutClient` dispatches. */
export interface FanoutEvents {
  participant_joined: RemoteParticipant;
  participant_left: { participantId: string; participant: RemoteParticipant | undefined };
  track_published: { participantId: string; track: Track };
  track_unpublished: { participantId: string; trackId: string };
  /**
   * A remote MediaStreamTrack arrived and was added to that participant's `stream`. `trackId` is
   * its `TR_` id (from the server's `a=msid`), `null` if the SDP did not say.
   */
  track: { participantId: string; track: MediaStreamTrack; stream: MediaStream; trackId: string | null };
  /**
   * With `mixed` set: a track mixed by the server arrived (the others' voices; with `all`, the
   * composite picture too), in `stream` (no participant's: play it in a media element).
   */
  mixed: { track: MediaStreamTrack; stream: MediaStream };
  /** The layer received for a remote video track, or why, changed. */
  track_layer: TrackLayerMessage;
  /**
   * Dynacast: the server listed which of our simulcast encodings anyone receives; the client
   * activates exactly those (setParameters, asynchronously; failures are logged, not thrown).
   */
  publisher_layers: PublisherLayersMessage;
  /** The room's active speaker changed. */
  active_speaker: { participantId: string };
  /**
   * A track was muted or unmuted, by its publisher or an administrator (`participantId` may be
   * our own: an administrator's mute of our track, or the server confirming ours).
   */
  track_muted: { participantId: string; trackId: string; muted: boolean; by: MutedBy };
  /** A data message from another participant (or the server), on either channel. */
  data: DataMessage;
  /** An `error` message from the server. */
  error: { code: ErrorCode; message: string };
  /** The browser refused a description (ours or the server's); media may be incomplete. */
  negotiation_failed: { error: unknown };
  /**
   * The signaling socket dropped (a network change, the server stopped or drained): the client
   * joins again by itself after `delayMs` (attempt 1, 2, …). Meanwhile the room's participants
   * are gone (each got `participant_left`) and media is stopped.
   */
  reconnecting: { attempt: number; delayMs: number; code: number; reason: string };
  /** Joined again after `reconnecting`: participants come back with `participant_joined`, and
   * what was published is published again. */
  reconnected: JoinedMessage;
  /** The signaling socket closed (after `leave()` too); the session is over. */
  disconnected: { code: number; reason: string };
}

/** A server `error` received while joining, or a join that could not complete. */
export class FanoutError extends Error {
  constructor(
    readonly code: ErrorCode | 'connection_closed',
    message: string,
  ) {
    super(`${code}: ${message}`);
    this.name = 'FanoutError';
  }
}
