// The Fanout browser client: one WebSocket for signaling (docs/protocol.md) and one
// RTCPeerConnection for both directions, negotiated with the perfect-negotiation pattern in which
// the client is the *polite* side (it yields on offer collisions; the server never does).

import {
  PROTOCOL_VERSION,
  parseServerMessage,
  type ClientMessage,
  type ErrorCode,
  type JoinedMessage,
  type ServerMessage,
  type Track,
} from './protocol';

export type { ErrorCode, JoinedMessage, Participant, Track } from './protocol';

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
  /** A remote MediaStreamTrack arrived and was added to that participant's `stream`. */
  track: { participantId: string; track: MediaStreamTrack; stream: MediaStream };
  /** An `error` message from the server. */
  error: { code: ErrorCode; message: string };
  /** The browser refused a description (ours or the server's); media may be incomplete. */
  negotiation_failed: { error: unknown };
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
    if (this.ws) return Promise.reject(new Error('join() was already called on this client'));
    const ws = new WebSocket(url || defaultSignalingUrl());
    this.ws = ws;
    return new Promise<JoinedMessage>((resolve, reject) => {
      let joined = false;
      ws.onopen = () => {
        this.send({ type: 'join', v: PROTOCOL_VERSION, room, name, ...(token ? { token } : {}) });
      };
      ws.onmessage = (event) => {
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
            this.emit('error', { code: msg.code, message: msg.message });
            reject(new FanoutError(msg.code, msg.message));
            ws.close(1000, 'join failed'); // this client is done; a new one can try again
            return;
          }
        }
        this.inbox = this.inbox.then(() => this.handle(msg)).catch((err) => this.negotiationFailed(err));
      };
      ws.onclose = (event) => {
        if (!joined) reject(new FanoutError('connection_closed', `signaling socket closed (${event.code})`));
        this.teardown();
        this.emit('disconnected', { code: event.code, reason: event.reason });
      };
    });
  }

  /** Sends every track of `stream` to the room (one `sendonly` transceiver per track). */
  publish(stream: MediaStream): void {
    const pc = this.requirePc();
    for (const track of stream.getTracks()) {
      pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
    }
    // `negotiationneeded` fires once for all of them and sends the offer.
  }

  /** Captures camera (720p) and microphone and publishes them; resolves with the local stream. */
  async publishCamera(): Promise<MediaStream> {
    this.requirePc();
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: true,
      video: { width: 1280, height: 720 },
    });
    this.ownedTracks.push(...stream.getTracks());
    this.publish(stream);
    return stream;
  }

  /** Leaves the room: tells the server, then closes the peer connection and the socket. */
  leave(): void {
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
    for (const p of msg.participants) this.addParticipant(p.id, p.name, p.tracks);

    const pc = new RTCPeerConnection({ iceServers: msg.ice_servers, bundlePolicy: 'max-bundle' });
    this.pc = pc;

    pc.onnegotiationneeded = async () => {
      try {
        this.makingOffer = true;
        await pc.setLocalDescription();
        this.send({ type: 'offer', sdp: pc.localDescription!.sdp });
      } catch (err) {
        this.negotiationFailed(err);
      } finally {
        this.makingOffer = false;
      }
    };

    pc.onicecandidate = ({ candidate }) => {
      if (candidate === null) {
        this.send({ type: 'candidate', candidate: null });
      } else if (candidate.candidate !== '') {
        // An empty `candidate` string is an older end-of-candidates marker; `null` follows anyway.
        this.send({ type: 'candidate', candidate: candidate.toJSON() });
      }
    };

    pc.ontrack = (event) => this.onTrack(event);
  }

  private async handle(msg: ServerMessage): Promise<void> {
    switch (msg.type) {
      case 'offer':
      case 'answer':
        return this.onDescription({ type: msg.type, sdp: msg.sdp });
      case 'candidate':
        return this.onCandidate(msg.candidate);
      case 'participant_joined': {
        const p = msg.participant;
        this.emit('participant_joined', this.addParticipant(p.id, p.name, p.tracks));
        return;
      }
      case 'participant_left': {
        const participant = this.participants.get(msg.participant_id);
        this.participants.delete(msg.participant_id);
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
        this.emit('track_unpublished', { participantId: msg.participant_id, trackId: msg.track_id });
        return;
      }
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
    // stable, so our change is offered afterwards (the server ignored our colliding offer).
    const collision = description.type === 'offer' && (this.makingOffer || pc.signalingState !== 'stable');
    if (collision) console.debug('fanout: offer collision, rolling back our offer');
    await pc.setRemoteDescription(description);
    await this.flushCandidates();
    if (description.type === 'offer') {
      await pc.setLocalDescription();
      this.send({ type: 'answer', sdp: pc.localDescription!.sdp });
    }
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
    // The server sets the msid stream id to the publisher's participant id (docs/protocol.md).
    const remoteStream = event.streams[0];
    if (!remoteStream) {
      console.warn('fanout: remote track without a stream id; cannot attribute it', event.track);
      return;
    }
    const participantId = remoteStream.id;
    const { track } = event;
    // A transceiver can be reused for another publisher's track after renegotiation; the
    // receiver's MediaStreamTrack object stays the same, so detach it from anyone else first.
    for (const other of this.participants.values()) {
      if (other.id !== participantId) other.stream.removeTrack(track);
    }
    const p = this.participants.get(participantId) ?? this.addParticipant(participantId, '', []);
    if (!p.stream.getTrackById(track.id)) p.stream.addTrack(track);

    // When the server stops sending a track, the browser removes it from the remote stream (and
    // ends it if its transceiver stops); mirror that in the participant's own stream.
    if (!this.watched.has(remoteStream)) {
      this.watched.add(remoteStream);
      remoteStream.addEventListener('removetrack', (e) => {
        this.participants.get(remoteStream.id)?.stream.removeTrack(e.track);
      });
    }
    if (!this.watched.has(track)) {
      this.watched.add(track);
      track.addEventListener('ended', () => {
        for (const other of this.participants.values()) other.stream.removeTrack(track);
      });
    }

    this.emit('track', { participantId, track, stream: p.stream });
  }
}
