// The Fanout browser client: one WebSocket for signaling (docs/protocol.md) and one
// RTCPeerConnection for both directions, negotiated with the perfect-negotiation pattern in which
// the client is the *polite* side (it yields on offer collisions; the server never does).
//
// In a p2p room (a direct 1:1 call) the peer connection is with the other participant instead;
// the server only relays offers, answers and candidates. Of the two, the one that joined later is
// polite. When the other leaves, the connection is replaced by a fresh one carrying the same
// local tracks, ready for whoever joins next.

import {
  PROTOCOL_VERSION,
  parseServerMessage,
  type ClientMessage,
  type ErrorCode,
  type JoinedMessage,
  type PublisherLayersMessage,
  type Quality,
  type RoomMode,
  type ServerMessage,
  type Track,
  type TrackLayerMessage,
  type TrackSettingsMessage,
  type TrackSource,
} from './protocol';

export type {
  ErrorCode,
  JoinedMessage,
  LayerReason,
  Participant,
  PublisherLayersMessage,
  Quality,
  RoomMode,
  Track,
  TrackLayerMessage,
  TrackSettingsMessage,
  TrackSource,
} from './protocol';

/**
 * The default simulcast encodings of a camera, low to high: a quarter, half and full resolution
 * of the capture (320x180, 640x360 and 1280x720 from 720p), each with a bitrate cap.
 */
export const DEFAULT_SIMULCAST: readonly RTCRtpEncodingParameters[] = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1_700_000 },
];

/** Sources narrower than this are published as one encoding: lower layers would be useless. */
export const MIN_SIMULCAST_WIDTH = 640;

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
  /** The layer received for a remote video track, or why, changed. */
  track_layer: TrackLayerMessage;
  /**
   * Dynacast: the server listed which of our simulcast encodings anyone receives; the client
   * activates exactly those (setParameters, asynchronously; failures are logged, not thrown).
   */
  publisher_layers: PublisherLayersMessage;
  /** The room's active speaker changed. */
  active_speaker: { participantId: string };
  /** An administrator muted or unmuted a track (`participantId` may be our own). */
  track_muted: { participantId: string; trackId: string; muted: boolean };
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

/** `ws://host/ws` (or `wss:`) for the page's own origin. */
export function defaultSignalingUrl(): string {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/ws`;
}

export class FanoutClient extends EventTarget {
  /** The peer connection to the server; `null` until `joined`. */
  pc: RTCPeerConnection | null = null;
  /** Everyone else in the room, by participant id. */
  readonly participants = new Map<string, RemoteParticipant>();
  /** Our own participant id; `null` until `joined`. */
  participantId: string | null = null;
  /** `relay`: connect only through the TURN servers the server hands out (set before `join`). */
  iceTransportPolicy: RTCIceTransportPolicy = 'all';
  /** The room mode to ask for (set before `join`); `undefined` takes the room as it is. */
  mode: RoomMode | undefined = undefined;
  /** The joined room's mode (`sfu` until `joined` says otherwise). */
  roomMode: RoomMode = 'sfu';
  /**
   * Join again by itself when the signaling socket drops after a join (set before `join`):
   * back-off from RECONNECT_FIRST_MS doubling to RECONNECT_MAX_MS, for at most
   * RECONNECT_GIVE_UP_MS; then, or after an error that a retry cannot fix (removed, room
   * deleted, token refused…), `disconnected`.
   */
  autoReconnect = true;
  /** While reconnecting: attempts made so far (0 when connected). */
  reconnectAttempts = 0;

  /** What `join` was given, for joining again. */
  private session: { url: string | undefined; room: string; name: string; token?: string } | null = null;
  private leaving = false;
  /** The last `error` code the server sent on the current socket. */
  private lastError: ErrorCode | null = null;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  /** When the socket dropped, while reconnecting. */
  private droppedAt: number | null = null;

  /** Perfect negotiation: whether we yield on an offer collision (always, towards the server). */
  private polite = true;
  private iceServers: RTCIceServer[] = [];
  /** What `publish` was given, re-added when a p2p peer connection is replaced. */
  private published: { stream: MediaStream; options: PublishOptions }[] = [];
  /** p2p: the other participant, once there. */
  private peerId: string | null = null;

  private ws: WebSocket | null = null;
  /** Incoming messages are handled strictly in order, each after the previous one's awaits. */
  private inbox: Promise<void> = Promise.resolve();
  private makingOffer = false;
  /** Remote candidates that arrived before any remote description. */
  private pendingCandidates: RTCIceCandidateInit[] = [];
  /** Local tracks this client captured itself (publishCamera), stopped on leave. */
  private ownedTracks: MediaStreamTrack[] = [];
  /** Remote streams and tracks we already listen to (`removetrack`, `ended`). */
  private watched = new WeakSet<MediaStream | MediaStreamTrack>();
  /** The latest `track_layer` per remote track id. */
  readonly layers = new Map<string, TrackLayerMessage>();
  /** The room's active speaker, once the server named one. */
  activeSpeaker: string | null = null;
  /** Remote MediaStreamTrack → its `TR_` id. */
  private trackIds = new WeakMap<MediaStreamTrack, string>();
  /** Per remote video track id, the elements showing it, observed to report how it is shown. */
  private views = new Map<string, TrackView>();
  /** Elements attached with `attachVideo`, and what they show. */
  private attachments = new Map<HTMLVideoElement, Attachment>();
  /** What we publish on each transceiver, until the server was told (`track_source`). */
  private pendingSources = new Map<RTCRtpTransceiver, TrackSource>();
  /** Dynacast: the latest `active` rid list per sender not yet applied, and senders being updated. */
  private wantedLayers = new Map<RTCRtpSender, { active: string[]; paused: string[] }>();
  private updatingSenders = new Set<RTCRtpSender>();

  /** Typed `addEventListener`; returns a function that removes the listener. */
  on<K extends keyof FanoutEvents>(type: K, listener: (detail: FanoutEvents[K]) => void): () => void {
    const wrapped = (event: Event) => listener((event as CustomEvent<FanoutEvents[K]>).detail);
    this.addEventListener(type, wrapped);
    return () => this.removeEventListener(type, wrapped);
  }

  private emit<K extends keyof FanoutEvents>(type: K, detail: FanoutEvents[K]): void {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /**
   * Opens the signaling socket, joins `room` as `name`, and creates the peer connection.
   * Resolves with the server's `joined` message; rejects with a `FanoutError` if the server
   * answers `error` first or the socket closes.
   */
  join(url: string | undefined, room: string, name: string, token?: string): Promise<JoinedMessage> {
    if (this.session) return Promise.reject(new Error('join() was already called on this client'));
    this.session = { url, room, name, ...(token ? { token } : {}) };
    return this.connect();
  }

  /** Opens a signaling socket and joins (the first time, or again after a drop). */
  private connect(): Promise<JoinedMessage> {
    const { url, room, name, token } = this.session!;
    const ws = new WebSocket(url || defaultSignalingUrl());
    this.ws = ws;
    this.lastError = null;
    return new Promise<JoinedMessage>((resolve, reject) => {
      let joined = false;
      ws.onopen = () => {
        this.send({
          type: 'join',
          v: PROTOCOL_VERSION,
          room,
          name,
          ...(token ? { token } : {}),
          ...(this.mode ? { mode: this.mode } : {}),
        });
      };
      ws.onmessage = (event) => {
        if (ws !== this.ws) return;
        const msg = typeof event.data === 'string' ? parseServerMessage(event.data) : null;
        if (!msg) {
          console.warn('fanout: ignoring a frame that is not a protocol message', event.data);
          return;
        }
        if (!joined) {
          // Before `joined` only `error` is expected; anything else is handled the usual way.
          if (msg.type === 'joined') {
            joined = true;
            this.onJoined(msg);
            resolve(msg);
            return;
          }
          if (msg.type === 'error') {
            this.lastError = msg.code;
            this.emit('error', { code: msg.code, message: msg.message });
            reject(new FanoutError(msg.code, msg.message));
            // This socket is done (a reconnect tries again on a new one).
            ws.close(1000, 'join failed');
            return;
          }
        }
        if (msg.type === 'error') this.lastError = msg.code;
        this.inbox = this.inbox.then(() => this.handle(msg)).catch((err) => this.negotiationFailed(err));
      };
      ws.onclose = (event) => {
        if (ws !== this.ws) return;
        if (!joined) reject(new FanoutError('connection_closed', `signaling socket closed (${event.code})`));
        this.onSocketClosed(event, joined);
      };
    });
  }

  /**
   * The socket closed. After a join (or while reconnecting) and unless the server said why in a
   * way a retry cannot fix, the client joins again; otherwise the session is over.
   */
  private onSocketClosed(event: CloseEvent, wasJoined: boolean): void {
    const retry =
      this.autoReconnect &&
      !this.leaving &&
      (wasJoined || this.droppedAt !== null) &&
      !FINAL_ERRORS.has(this.lastError ?? 'internal_error');
    if (retry) {
      this.droppedAt ??= Date.now();
      if (Date.now() - this.droppedAt < RECONNECT_GIVE_UP_MS) {
        this.scheduleReconnect(event);
        return;
      }
    }
    this.droppedAt = null;
    this.teardown();
    this.emit('disconnected', { code: event.code, reason: event.reason });
  }

  /** Drops what belonged to the lost session and tries again after a back-off. */
  private scheduleReconnect(event: CloseEvent): void {
    this.dropSession();
    const attempt = ++this.reconnectAttempts;
    const base = Math.min(RECONNECT_MAX_MS, RECONNECT_FIRST_MS * 2 ** (attempt - 1));
    const delayMs = Math.round(base * (0.75 + Math.random() * 0.5)); // jitter: not all at once
    console.info(`fanout: signaling closed (${event.code} ${event.reason}); joining again in ${delayMs} ms`);
    this.emit('reconnecting', { attempt, delayMs, code: event.code, reason: event.reason });
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => {
      if (this.leaving) return;
      this.connect().then(
        (joined) => {
          this.reconnectAttempts = 0;
          this.droppedAt = null;
          this.emit('reconnected', joined);
        },
        () => {}, // the socket's close handler decides what next
      );
    }, delayMs);
  }

  /**
   * Forgets the room as the lost session saw it (participants, with `participant_left`; views;
   * the peer connection), keeping what we publish for the next join.
   */
  private dropSession(): void {
    for (const view of this.views.values()) view.dispose();
    this.views.clear();
    this.attachments.clear();
    this.wantedLayers.clear();
    this.pendingSources.clear();
    this.layers.clear();
    this.pc?.close();
    this.pc = null;
    this.peerId = null;
    this.participantId = null;
    for (const [participantId, participant] of [...this.participants]) {
      this.participants.delete(participantId);
      this.emit('participant_left', { participantId, participant });
    }
  }

  /**
   * Sends every track of `stream` to the room (one `sendonly` transceiver per track). Video is
   * sent as simulcast unless `options.simulcast` says otherwise or the source is small.
   */
  publish(stream: MediaStream, options: PublishOptions = {}): void {
    this.requirePc();
    this.published.push({ stream, options });
    this.addTransceivers(stream, options);
    // `negotiationneeded` fires once for all of them and sends the offer.
  }

  private addTransceivers(stream: MediaStream, options: PublishOptions): void {
    const pc = this.requirePc();
    const p2p = this.roomMode === 'p2p';
    for (const track of stream.getTracks()) {
      // In p2p, media goes to the other browser both ways on one transceiver per track.
      const init: RTCRtpTransceiverInit = { direction: p2p ? 'sendrecv' : 'sendonly', streams: [stream] };
      // A browser receives one encoding: no simulcast in p2p.
      if (track.kind === 'video' && !p2p) {
        const encodings = simulcastEncodings(track, options.simulcast ?? true);
        if (encodings) init.sendEncodings = encodings;
      }
      const transceiver = pc.addTransceiver(track, init);
      if (!p2p) this.pendingSources.set(transceiver, options.source ?? (track.kind === 'audio' ? 'microphone' : 'camera'));
    }
  }

  /**
   * Captures camera (1280x720 unless `video` constraints say otherwise) and microphone and
   * publishes them (the camera as simulcast by default); resolves with the local stream.
   */
  async publishCamera(
    options: PublishOptions & { video?: MediaTrackConstraints } = {},
  ): Promise<MediaStream> {
    this.requirePc();
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: true,
      video: options.video ?? { width: 1280, height: 720 },
    });
    this.ownedTracks.push(...stream.getTracks());
    this.publish(stream, options);
    return stream;
  }

  /** Captures a screen or window and publishes it as a screen share (one encoding). */
  async publishScreen(): Promise<MediaStream> {
    this.requirePc();
    const stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    this.ownedTracks.push(...stream.getTracks());
    this.publish(stream, { source: 'screen', simulcast: false });
    return stream;
  }

  /** The `TR_` id of a remote track, once known. */
  trackIdOf(track: MediaStreamTrack): string | null {
    return this.trackIds.get(track) ?? null;
  }

  /** The `TR_` ids of the video tracks received from a participant, in their stream's order. */
  videoTrackIds(participantId: string): string[] {
    const tracks = this.participants.get(participantId)?.stream.getVideoTracks() ?? [];
    return tracks.map((t) => this.trackIds.get(t)).filter((id): id is string => id !== undefined);
  }

  /**
   * Tells the server, for as long as `element` shows remote video, how it is shown, so that it
   * forwards the smallest simulcast layer that looks sharp there and nothing while it is not seen.
   * `target` is a participant id (`PA_…`): the element is taken to play that participant's
   * `stream` (the app sets `srcObject`), whose first video track it shows; the report follows
   * that track as tracks arrive and go. Or `target` is a remote video track id (`TR_…`).
   *
   * Reported (`track_settings`): the displayed size in device pixels (the element's box as
   * `object-fit` fills it, × devicePixelRatio; debounced 100 ms) and visibility (`false` when the
   * element is off-screen, has no size or `display: none`, or the tab is hidden; at once). Sent on
   * change, and again whenever the element is (re)bound to a track. Several elements may show one
   * track: the largest visible one counts. Returns a function that detaches the element.
   */
  attachVideo(target: string, element: HTMLVideoElement): () => void {
    this.attachments.get(element)?.detach();
    const attachment: Attachment = {
      target,
      trackId: null,
      stop: null,
      detach: () => {
        if (this.attachments.get(element) !== attachment) return;
        this.attachments.delete(element);
        attachment.stop?.();
      },
    };
    this.attachments.set(element, attachment);
    this.bind(element, attachment);
    return attachment.detach;
  }

  /**
   * Like `attachVideo(trackId, element)`, without following anything: reports how `element`
   * shows the remote video track `trackId` until the returned function is called (or the track is
   * unpublished).
   */
  observeVideo(trackId: string, element: HTMLVideoElement): () => void {
    let view = this.views.get(trackId);
    if (!view) {
      view = new TrackView(trackId, (msg) => this.send(msg));
      this.views.set(trackId, view);
    }
    const v = view;
    v.add(element);
    return () => {
      if (v.remove(element) && this.views.get(trackId) === v) this.views.delete(trackId);
    };
  }

  /**
   * Caps the quality the server forwards for a remote video track (`track_settings`
   * `max_quality`; `high` lifts the cap). The server keeps it for the track's lifetime.
   */
  setMaxQuality(trackId: string, quality: Quality): void {
    this.send({ type: 'track_settings', track_id: trackId, max_quality: quality });
  }

  /**
   * Re-binds the elements attached to `participantId` (or to `trackId`): their video may have
   * changed. `resend`: report again even if an element still shows the same track.
   */
  private rebind(participantId: string, trackId: string | null = null, resend = true): void {
    for (const [element, attachment] of this.attachments) {
      if (attachment.target === participantId || (trackId !== null && attachment.target === trackId)) {
        this.bind(element, attachment, resend);
      }
    }
  }

  /** Points an attached element's reports at the track it shows now (see `attachVideo`). */
  private bind(element: HTMLVideoElement, attachment: Attachment, resend = true): void {
    const trackId = attachment.target.startsWith('TR_')
      ? attachment.target
      : (this.videoTrackIds(attachment.target)[0] ?? null);
    if (trackId !== null && trackId === attachment.trackId && this.views.has(trackId)) {
      if (resend) this.views.get(trackId)!.refresh(); // re-attached: say it again
      return;
    }
    attachment.stop?.();
    attachment.trackId = trackId;
    attachment.stop = trackId === null ? null : this.observeVideo(trackId, element);
  }

  /** Leaves the room: tells the server, then closes the peer connection and the socket. */
  leave(): void {
    this.leaving = true;
    clearTimeout(this.reconnectTimer);
    if (this.ws?.readyState === WebSocket.OPEN) this.send({ type: 'leave' });
    this.teardown();
    this.ws?.close(1000, 'leave');
  }

  private requirePc(): RTCPeerConnection {
    if (!this.pc) throw new Error('not joined yet: await join() first');
    return this.pc;
  }

  private send(msg: ClientMessage): void {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  private teardown(): void {
    for (const view of this.views.values()) view.dispose();
    this.views.clear();
    this.attachments.clear();
    this.wantedLayers.clear();
    for (const track of this.ownedTracks) track.stop();
    this.ownedTracks = [];
    this.pc?.close();
  }

  private negotiationFailed(error: unknown): void {
    console.error('fanout: negotiation failed:', error);
    this.emit('negotiation_failed', { error });
  }

  private onJoined(msg: JoinedMessage): void {
    this.participantId = msg.participant_id;
    this.roomMode = msg.mode ?? 'sfu';
    this.iceServers = msg.ice_servers;
    const again = this.reconnectAttempts > 0;
    for (const p of msg.participants) {
      const participant = this.addParticipant(p.id, p.name, p.tracks);
      // Joining again: the app removed them when the session dropped.
      if (again) this.emit('participant_joined', participant);
    }
    if (this.roomMode === 'p2p') {
      this.peerId = msg.participants[0]?.id ?? null;
      // The later of the two yields.
      this.polite = this.peerId !== null;
    } else {
      this.polite = true;
    }
    this.createPeerConnection();
    // Joining again: publish what was published (one offer for all, on negotiationneeded).
    if (again) for (const { stream, options } of this.published) this.addTransceivers(stream, options);
  }

  private createPeerConnection(): void {
    const pc = new RTCPeerConnection({
      iceServers: this.iceServers,
      iceTransportPolicy: this.iceTransportPolicy,
      bundlePolicy: 'max-bundle',
    });
    this.pc = pc;
    this.makingOffer = false;
    this.pendingCandidates = [];

    pc.onnegotiationneeded = () => this.negotiate(pc);

    pc.onicecandidate = ({ candidate }) => {
      if (candidate === null) {
        this.send({ type: 'candidate', candidate: null });
      } else if (candidate.candidate !== '') {
        // An empty `candidate` string is an older end-of-candidates marker; `null` follows anyway.
        this.send({ type: 'candidate', candidate: candidate.toJSON() });
      }
    };

    pc.ontrack = (event) => this.onTrack(event);
    // A path that died (a network change: Wi-Fi to cellular, a VPN coming up) is recovered with
    // an ICE restart: new credentials, new candidates, the same call. Chromium may never call a
    // dead path `failed` (it stays `disconnected` once it pruned its pairs), so a path that stays
    // `disconnected` for ICE_RESTART_AFTER_MS is restarted too, and again every
    // ICE_RESTART_AFTER_MS while it does not recover; the server keeps the participant for its
    // consent timeout (30 s by default).
    let restartTimer: ReturnType<typeof setTimeout> | undefined;
    const restart = (why: string) => {
      clearTimeout(restartTimer);
      restartTimer = undefined;
      if (pc !== this.pc || pc.signalingState === 'closed') return;
      console.info(`fanout: ICE ${why}; restarting ICE`);
      pc.restartIce(); // fires negotiationneeded: an offer with new credentials
      restartTimer = setTimeout(check, ICE_RESTART_AFTER_MS);
    };
    const check = () => {
      const state = pc.iceConnectionState;
      if (state === 'disconnected' || state === 'failed') restart(`still ${state}`);
      else restartTimer = undefined;
    };
    pc.oniceconnectionstatechange = () => {
      const state = pc.iceConnectionState;
      if (pc !== this.pc || state === 'closed') {
        clearTimeout(restartTimer);
      } else if (state === 'failed') {
        restart('failed');
      } else if (state === 'disconnected') {
        restartTimer ??= setTimeout(check, ICE_RESTART_AFTER_MS);
      }
    };
  }

  /** Sends an offer for `pc`'s current state (in p2p only once the other participant is there). */
  private async negotiate(pc: RTCPeerConnection): Promise<void> {
    if (pc !== this.pc || pc.signalingState === 'closed') return;
    if (this.roomMode === 'p2p' && this.peerId === null) return; // offered when somebody joins
    try {
      this.makingOffer = true;
      await pc.setLocalDescription();
      this.send({ type: 'offer', sdp: pc.localDescription!.sdp });
      this.sendTrackSources();
    } catch (err) {
      this.negotiationFailed(err);
    } finally {
      this.makingOffer = false;
    }
  }

  /** p2p: the other participant left. A fresh connection with our tracks waits for the next. */
  private replacePeerConnection(): void {
    this.pc?.close();
    this.peerId = null;
    this.polite = false; // whoever joins next joins later
    this.createPeerConnection();
    for (const { stream, options } of this.published) this.addTransceivers(stream, options);
  }

  /** Whether a relayed message comes from someone other than our current p2p peer (stale). */
  private stale(from: string | undefined): boolean {
    return this.roomMode === 'p2p' && from !== undefined && from !== this.peerId;
  }

  private async handle(msg: ServerMessage): Promise<void> {
    switch (msg.type) {
      case 'offer':
      case 'answer':
        if (this.stale(msg.from)) return;
        return this.onDescription({ type: msg.type, sdp: msg.sdp });
      case 'candidate':
        if (this.stale(msg.from)) return;
        return this.onCandidate(msg.candidate);
      case 'participant_joined': {
        const p = msg.participant;
        this.emit('participant_joined', this.addParticipant(p.id, p.name, p.tracks));
        if (this.roomMode === 'p2p' && this.peerId === null) {
          this.peerId = p.id;
          // We were here first: we offer what we publish (the newcomer may offer too; it yields).
          if (this.pc && this.pc.getTransceivers().length > 0) void this.negotiate(this.pc);
        }
        return;
      }
      case 'participant_left': {
        const participant = this.participants.get(msg.participant_id);
        this.participants.delete(msg.participant_id);
        if (this.roomMode === 'p2p' && msg.participant_id === this.peerId) this.replacePeerConnection();
        this.emit('participant_left', { participantId: msg.participant_id, participant });
        return;
      }
      case 'track_published': {
        const p = this.participants.get(msg.participant_id);
        if (p && !p.tracks.some((t) => t.id === msg.track.id)) p.tracks.push(msg.track);
        this.emit('track_published', { participantId: msg.participant_id, track: msg.track });
        return;
      }
      case 'track_unpublished': {
        const p = this.participants.get(msg.participant_id);
        if (p) p.tracks = p.tracks.filter((t) => t.id !== msg.track_id);
        // Nothing more to report about it (the server would answer `unknown_track`).
        this.views.get(msg.track_id)?.dispose();
        this.views.delete(msg.track_id);
        this.layers.delete(msg.track_id);
        this.emit('track_unpublished', { participantId: msg.participant_id, trackId: msg.track_id });
        return;
      }
      case 'track_layer':
        this.layers.set(msg.track_id, msg);
        this.emit('track_layer', msg);
        return;
      case 'publisher_layers':
        this.applyPublisherLayers(msg);
        this.emit('publisher_layers', msg);
        return;
      case 'track_muted': {
        const t = this.participants.get(msg.participant_id)?.tracks.find((t) => t.id === msg.track_id);
        if (t) t.muted = msg.muted;
        this.emit('track_muted', { participantId: msg.participant_id, trackId: msg.track_id, muted: msg.muted });
        return;
      }
      case 'active_speaker':
        this.activeSpeaker = msg.participant_id;
        this.emit('active_speaker', { participantId: msg.participant_id });
        return;
      case 'error':
        this.emit('error', { code: msg.code, message: msg.message });
        return;
      case 'joined':
        console.warn('fanout: unexpected second joined message');
        return;
      default:
        console.warn('fanout: ignoring unknown message', msg satisfies never);
    }
  }

  private async onDescription(description: RTCSessionDescriptionInit): Promise<void> {
    const pc = this.pc;
    if (!pc || pc.signalingState === 'closed') return;
    // The polite side never ignores an offer. On a collision (our own offer outstanding),
    // setRemoteDescription(offer) rolls ours back implicitly; `negotiationneeded` fires again once
    // stable, so our change is offered afterwards (the server ignored our colliding offer). The
    // impolite side (a p2p participant that was there first) ignores the colliding offer.
    const collision = description.type === 'offer' && (this.makingOffer || pc.signalingState !== 'stable');
    if (collision && !this.polite) {
      console.debug('fanout: offer collision, ignoring the other offer');
      return;
    }
    if (collision) console.debug('fanout: offer collision, rolling back our offer');
    await pc.setRemoteDescription(description);
    await this.flushCandidates();
    if (description.type === 'offer') {
      await pc.setLocalDescription();
      this.send({ type: 'answer', sdp: pc.localDescription!.sdp });
    }
    // Our own transceivers got their mids in an offer of ours or, after a collision, here.
    this.sendTrackSources();
  }

  /** Tells the server the source of each transceiver we publish once it has a mid. */
  private sendTrackSources(): void {
    for (const [transceiver, source] of this.pendingSources) {
      if (!transceiver.mid) continue;
      this.send({ type: 'track_source', mid: transceiver.mid, source });
      this.pendingSources.delete(transceiver);
    }
  }

  /**
   * Dynacast: activates exactly the encodings the server lists for transceiver `mid`. One
   * setParameters call at a time per sender; requests arriving meanwhile collapse into the latest.
   * Never throws (failures are logged): it runs beside the message loop, not in it.
   */
  private applyPublisherLayers(msg: PublisherLayersMessage): void {
    const sender = this.pc?.getTransceivers().find((t) => t.mid === msg.mid)?.sender;
    if (!sender) {
      console.warn(`fanout: publisher_layers for unknown mid ${msg.mid}`);
      return;
    }
    this.wantedLayers.set(sender, { active: msg.active, paused: msg.paused ?? [] });
    if (this.updatingSenders.has(sender)) return; // the running update picks the latest up
    this.updatingSenders.add(sender);
    void (async () => {
      try {
        for (let wanted = this.wantedLayers.get(sender); wanted; wanted = this.wantedLayers.get(sender)) {
          this.wantedLayers.delete(sender);
          try {
            await setActiveEncodings(sender, wanted.active, wanted.paused);
          } catch (err) {
            console.warn('fanout: could not apply publisher_layers', err);
          }
        }
      } finally {
        this.updatingSenders.delete(sender);
      }
    })();
  }

  private async onCandidate(candidate: RTCIceCandidateInit): Promise<void> {
    const pc = this.pc;
    if (!pc || pc.signalingState === 'closed') return;
    if (!pc.remoteDescription) {
      this.pendingCandidates.push(candidate);
      return;
    }
    await this.addCandidate(pc, candidate);
  }

  private async flushCandidates(): Promise<void> {
    const pc = this.pc;
    if (!pc) return;
    const pending = this.pendingCandidates;
    this.pendingCandidates = [];
    for (const candidate of pending) await this.addCandidate(pc, candidate);
  }

  private async addCandidate(pc: RTCPeerConnection, candidate: RTCIceCandidateInit): Promise<void> {
    try {
      await pc.addIceCandidate(candidate);
    } catch (err) {
      // The server's candidates are also in every SDP it sends, so a candidate that no longer
      // fits (e.g. its ufrag belongs to a rolled-back description) costs nothing.
      console.warn('fanout: addIceCandidate failed', err);
    }
  }

  private addParticipant(id: string, name: string, tracks: Track[]): RemoteParticipant {
    let p = this.participants.get(id);
    if (p) {
      p.name = name;
      p.tracks = [...tracks];
    } else {
      p = { id, name, tracks: [...tracks], stream: new MediaStream() };
      this.participants.set(id, p);
    }
    return p;
  }

  private onTrack(event: RTCTrackEvent): void {
    // The server sets the msid stream id to the publisher's participant id (docs/protocol.md);
    // in p2p everything comes from the one other participant.
    const remoteStream = event.streams[0];
    if (!remoteStream) {
      console.warn('fanout: remote track without a stream id; cannot attribute it', event.track);
      return;
    }
    const participantId = this.roomMode === 'p2p' ? this.peerId : remoteStream.id;
    if (participantId === null) return;
    const { track } = event;
    // A transceiver can be reused for another publisher's track after renegotiation; the
    // receiver's MediaStreamTrack object stays the same, so detach it from anyone else first.
    for (const other of this.participants.values()) {
      if (other.id !== participantId) other.stream.removeTrack(track);
    }
    // p2p tracks have no `TR_` id: nothing to report to the server about them.
    const trackId = this.roomMode !== 'p2p' && event.transceiver.mid ? msidTrackId(this.pc?.remoteDescription?.sdp, event.transceiver.mid) : null;
    if (trackId) this.trackIds.set(event.track, trackId);
    else this.trackIds.delete(event.track);
    const p = this.participants.get(participantId) ?? this.addParticipant(participantId, '', []);
    if (!p.stream.getTrackById(track.id)) p.stream.addTrack(track);

    // When the server stops sending a track, the browser removes it from the remote stream (and
    // ends it if its transceiver stops); mirror that in the participant's own stream.
    if (!this.watched.has(remoteStream)) {
      this.watched.add(remoteStream);
      remoteStream.addEventListener('removetrack', (e) => {
        this.participants.get(participantId)?.stream.removeTrack(e.track);
        this.rebind(participantId, null, false);
      });
    }
    if (!this.watched.has(track)) {
      this.watched.add(track);
      track.addEventListener('ended', () => {
        for (const other of this.participants.values()) {
          other.stream.removeTrack(track);
          this.rebind(other.id, null, false);
        }
      });
    }

    // Elements attached to this participant or track report for what they show now.
    if (track.kind === 'video') this.rebind(participantId, trackId);

    this.emit('track', { participantId, track, stream: p.stream, trackId });
  }
}

/** An element attached with `attachVideo`: what it follows and the track it reports for. */
interface Attachment {
  target: string;
  trackId: string | null;
  stop: (() => void) | null;
  detach: () => void;
}

/** Sets `active` on exactly the encodings whose rid is listed (a single encoding is left alone). */
async function setActiveEncodings(sender: RTCRtpSender, activeRids: string[], pausedRids: string[]): Promise<void> {
  const params = sender.getParameters();
  if (!params.encodings || params.encodings.length < 2) return;
  let changed = false;
  for (const encoding of params.encodings) {
    if (encoding.rid === undefined) continue;
    const active = activeRids.includes(encoding.rid) ? true : pausedRids.includes(encoding.rid) ? false : null;
    if (active !== null && encoding.active !== active) {
      encoding.active = active;
      changed = true;
    }
  }
  if (changed) await sender.setParameters(params);
}

/** The sendEncodings for a video track, or `undefined` for the browser's single encoding. */
function simulcastEncodings(
  track: MediaStreamTrack,
  simulcast: boolean | RTCRtpEncodingParameters[],
): RTCRtpEncodingParameters[] | undefined {
  if (simulcast === false) return undefined;
  const width = track.getSettings().width ?? 0;
  if (width > 0 && width < MIN_SIMULCAST_WIDTH) return undefined;
  const encodings = simulcast === true ? DEFAULT_SIMULCAST : simulcast;
  return encodings.map((e) => ({ ...e }));
}

/** The track id of `a=msid:<stream> <track>` in the m-section whose `a=mid` is `mid`. */
export function msidTrackId(sdp: string | undefined, mid: string): string | null {
  if (!sdp) return null;
  for (const section of sdp.split(/\r?\nm=/).slice(1)) {
    const lines = section.split(/\r?\n/);
    if (!lines.some((l) => l === `a=mid:${mid}`)) continue;
    const msid = lines.find((l) => l.startsWith('a=msid:'));
    return msid?.slice('a=msid:'.length).split(' ')[1]?.trim() || null;
  }
  return null;
}

/** How long size reports wait for the size to settle. */
const RESIZE_DEBOUNCE_MS = 100;
/** How long ICE may stay `disconnected` before the client restarts it (and between restarts). */
const ICE_RESTART_AFTER_MS = 5_000;

/** Joining again after the signaling socket dropped: the first wait, the longest, and when to stop. */
const RECONNECT_FIRST_MS = 300;
const RECONNECT_MAX_MS = 5_000;
const RECONNECT_GIVE_UP_MS = 120_000;

/** Errors after which joining again cannot help: the session ends. */
const FINAL_ERRORS: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'removed',
  'room_deleted',
  'duplicate_identity',
  'unsupported_version',
  'token_missing',
  'token_malformed',
  'token_expired',
  'token_not_yet_valid',
  'token_invalid_signature',
  'token_wrong_room',
  'token_missing_grant',
  'room_not_found',
  'room_full',
  'too_many_rooms',
  'room_mode_mismatch',
]);

/** How a track is shown: visible or not and, if visible, the size in device pixels. */
interface Shown {
  visible: boolean;
  width: number;
  height: number;
}

/**
 * Watches the elements showing one remote video track and reports (`track_settings`) how the
 * track is shown: visible when any element is (on screen per IntersectionObserver, not zero-sized,
 * the tab visible), at the largest width and height among the visible ones. A change of
 * visibility goes out at once, a change of size once it has settled for 100 ms.
 */
class TrackView {
  private elements = new Set<HTMLVideoElement>();
  private intersecting = new WeakMap<Element, boolean>();
  private resizeObserver = new ResizeObserver(() => this.changed());
  private intersectionObserver = new IntersectionObserver((entries) => {
    for (const e of entries) this.intersecting.set(e.target, e.isIntersecting);
    this.changed();
  });
  private timer: ReturnType<typeof setTimeout> | null = null;
  /** What the server was last told; `null` forces the next report. */
  private last: Shown | null = null;
  private disposed = false;
  private onChange = () => this.changed();

  constructor(
    private readonly trackId: string,
    private readonly send: (msg: TrackSettingsMessage) => void,
  ) {
    document.addEventListener('visibilitychange', this.onChange);
  }

  /** Starts watching `element` and reports at once (also when it was watched already). */
  add(element: HTMLVideoElement): void {
    if (this.disposed) return;
    if (!this.elements.has(element)) {
      this.elements.add(element);
      // Until the observer's first callback, judge by the layout.
      this.intersecting.set(element, inViewport(element));
      this.resizeObserver.observe(element);
      this.intersectionObserver.observe(element);
      // The video's own size (object-fit) arrives with the first frame and may change.
      element.addEventListener('loadedmetadata', this.onChange);
      element.addEventListener('resize', this.onChange);
    }
    this.refresh();
  }

  /**
   * Stops watching `element`. Returns true when no element is left: the view then says the
   * track is not shown (if it said otherwise) and is disposed.
   */
  remove(element: HTMLVideoElement): boolean {
    if (this.elements.delete(element)) {
      this.resizeObserver.unobserve(element);
      this.intersectionObserver.unobserve(element);
      element.removeEventListener('loadedmetadata', this.onChange);
      element.removeEventListener('resize', this.onChange);
    }
    if (this.disposed) return true;
    if (this.elements.size > 0) {
      this.changed();
      return false;
    }
    this.report();
    this.dispose();
    return true;
  }

  /** Reports the current state even if unchanged (after a (re)attachment). */
  refresh(): void {
    this.last = null;
    this.report();
  }

  /** Stops everything without a word (the track is gone). */
  dispose(): void {
    this.disposed = true;
    this.resizeObserver.disconnect();
    this.intersectionObserver.disconnect();
    document.removeEventListener('visibilitychange', this.onChange);
    for (const element of this.elements) {
      element.removeEventListener('loadedmetadata', this.onChange);
      element.removeEventListener('resize', this.onChange);
    }
    this.elements.clear();
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /** Something may have changed: visibility changes are reported now, sizes debounced. */
  private changed(): void {
    if (this.disposed) return;
    const now = this.measure();
    if (!this.last || now.visible !== this.last.visible) {
      this.report();
      return;
    }
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.report();
    }, RESIZE_DEBOUNCE_MS);
  }

  private measure(): Shown {
    let width = 0;
    let height = 0;
    let visible = false;
    if (document.visibilityState === 'visible') {
      for (const element of this.elements) {
        if (!this.intersecting.get(element)) continue;
        const size = displayedSize(element);
        if (size.width === 0 || size.height === 0) continue;
        visible = true;
        width = Math.max(width, size.width);
        height = Math.max(height, size.height);
      }
    }
    return { visible, width, height };
  }

  private report(): void {
    if (this.disposed) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const now = this.measure();
    const last = this.last;
    if (last && last.visible === now.visible && (!now.visible || (last.width === now.width && last.height === now.height))) {
      return;
    }
    this.last = now;
    this.send(
      now.visible
        ? { type: 'track_settings', track_id: this.trackId, visible: true, width: now.width, height: now.height }
        : { type: 'track_settings', track_id: this.trackId, visible: false },
    );
  }
}

/** Whether any of `element`'s box is inside the viewport (before IntersectionObserver says). */
function inViewport(element: Element): boolean {
  const r = element.getBoundingClientRect();
  return r.bottom >= 0 && r.right >= 0 && r.top <= innerHeight && r.left <= innerWidth;
}

/**
 * The size, in device pixels, at which `video` draws its picture: the element's box, scaled as
 * `object-fit` does for the video's aspect ratio (`cover` may draw larger than the box, `none`
 * draws the video's own size). Zero for an element that is not rendered.
 */
function displayedSize(video: HTMLVideoElement): { width: number; height: number } {
  const box = video.getBoundingClientRect();
  const dpr = window.devicePixelRatio || 1;
  let w = box.width;
  let h = box.height;
  const vw = video.videoWidth;
  const vh = video.videoHeight;
  if (w > 0 && h > 0 && vw > 0 && vh > 0) {
    const fit = getComputedStyle(video).objectFit;
    const contain = Math.min(w / vw, h / vh);
    const scale =
      fit === 'cover' ? Math.max(w / vw, h / vh)
      : fit === 'none' ? 1
      : fit === 'scale-down' ? Math.min(1, contain)
      : fit === 'fill' ? null
      : contain; // 'contain', the default for <video>
    if (scale !== null) {
      w = vw * scale;
      h = vh * scale;
    }
  }
  return { width: Math.round(w * dpr), height: Math.round(h * dpr) };
}
