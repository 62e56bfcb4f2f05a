// The Fanout browser client: one WebSocket for signaling (docs/protocol.md) and one
// RTCPeerConnection for both directions. This file is the public client: the room as the client
// sees it (participants, their tracks and media), publishing, p2p rooms and everything the
// library exports. It stacks on three layers in client/: signaling.ts (the socket, events),
// reconnect.ts (joining again, ICE restarts) and negotiation.ts (the peer connection); layers.ts
// reports how remote video is shown and simulcast.ts switches our encodings.
//
// In a p2p room (a direct 1:1 call) the peer connection is with the other participant instead;
// the server only relays offers, answers and candidates. Of the two, the one that joined later is
// polite. When the other leaves, the connection is replaced by a fresh one carrying the same
// local tracks, ready for whoever joins next.

import type { JoinedMessage, Quality, ServerMessage, Track, TrackLayerMessage, TrackSource } from './protocol';
import { VideoReports } from './client/layers';
import { Negotiation, msidTrackId } from './client/negotiation';
import { Dynacast, simulcastEncodings } from './client/simulcast';
import type { PublishOptions, RemoteParticipant } from './client/types';
import { DataChannels, type SendDataOptions } from './client/data';

export type {
  ErrorCode,
  JoinedMessage,
  LayerReason,
  MutedBy,
  Participant,
  PublisherLayersMessage,
  Quality,
  RoomMode,
  Track,
  TrackLayerMessage,
  TrackSettingsMessage,
  TrackSource,
} from './protocol';
export type { FanoutEvents, PublishOptions, RemoteParticipant } from './client/types';
export type { DataMessage, SendDataOptions } from './client/data';
export { MAX_LOSSY_BYTES, MAX_RELIABLE_BYTES } from './client/data';
export { FanoutError } from './client/types';
export { defaultSignalingUrl } from './client/signaling';
export { msidTrackId } from './client/negotiation';
export { DEFAULT_SIMULCAST, MIN_SIMULCAST_WIDTH } from './client/simulcast';

/** The stream id of the server's mixed audio track (docs/protocol.md, `mixed`). */
export const MIXED_STREAM = 'mixed';

export class FanoutClient extends Negotiation {
  /** Everyone else in the room, by participant id. */
  readonly participants = new Map<string, RemoteParticipant>();
  /** With `mixed` set: the stream of what the server mixed (voices, composite), once it arrived. */
  mixedStream: MediaStream | null = null;
  /** Our own participant id; `null` until `joined`. */
  participantId: string | null = null;

  /** What `publish` was given, re-added when a p2p peer connection is replaced. */
  private published: { stream: MediaStream; options: PublishOptions }[] = [];
  /** Local tracks this client captured itself (publishCamera), stopped on leave. */
  private ownedTracks: MediaStreamTrack[] = [];
  /** The camera constraints of `publishCamera`, to capture again when the camera is turned on. */
  private cameraConstraints: MediaTrackConstraints | boolean = true;
  /** The sources we muted (microphone, camera): kept through reconnects. */
  private readonly mutedSources = new Set<TrackSource>();
  /** Remote streams and tracks we already listen to (`removetrack`, `ended`). */
  private watched = new WeakSet<MediaStream | MediaStreamTrack>();
  /** The latest `track_layer` per remote track id. */
  readonly layers = new Map<string, TrackLayerMessage>();
  /** The room's active speaker, once the server named one. */
  activeSpeaker: string | null = null;
  /** Remote MediaStreamTrack → its `TR_` id. */
  private trackIds = new WeakMap<MediaStreamTrack, string>();
  /** How remote video is shown, reported to the server (`attachVideo`, `observeVideo`). */
  private readonly reports = new VideoReports(
    (msg) => this.send(msg),
    (participantId) => this.videoTrackIds(participantId),
  );
  /** Dynacast: our simulcast encodings switched as the server says (`publisher_layers`). */
  private readonly dynacast = new Dynacast();
  /** The two data channels (sfu rooms; docs/protocol.md "Data messages"). */
  private readonly data = new DataChannels((m) => this.emit('data', m));
  /** Whether the data channels are wanted (`enableData()`, or the first `sendData()`). */
  private dataEnabled = false;
  /** Whether this session asked the server for them (`enable_data`). */
  private dataRequested = false;

  /**
   * Forgets the room as the lost session saw it (participants, with `participant_left`; views;
   * the peer connection), keeping what we publish for the next join.
   */
  protected override dropSession(): void {
    this.data.detach();
    this.dataRequested = false;
    this.reports.clear();
    this.dynacast.clear();
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
      const source = options.source ?? (track.kind === 'audio' ? 'microphone' : 'camera');
      this.sources.set(transceiver, source);
      if (!p2p) this.pendingSources.set(transceiver, source);
      // Muted before a reconnect: still muted after it.
      if (this.mutedSources.has(source) && track.kind === 'audio') track.enabled = false;
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
    this.cameraConstraints = options.video ?? { width: 1280, height: 720 };
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: this.cameraConstraints });
    this.ownedTracks.push(...stream.getTracks());
    this.publish(stream, options);
    return stream;
  }

  /**
   * Captures a screen or window and publishes it as a screen share (one encoding). Ending the
   * share from the browser's own controls stops it as `stopScreenShare()` does.
   */
  async publishScreen(): Promise<MediaStream> {
    this.requirePc();
    const stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    this.ownedTracks.push(...stream.getTracks());
    this.publish(stream, { source: 'screen', simulcast: false });
    stream.getVideoTracks()[0]?.addEventListener('ended', () => this.stopScreenShare());
    return stream;
  }

  /**
   * Stops the screen share: its capture ends and its track leaves the connection (the server
   * unpublishes it: the others get `track_unpublished`).
   */
  stopScreenShare(): void {
    this.published = this.published.filter(({ options }) => options.source !== 'screen');
    for (const [transceiver, source] of this.sources) {
      if (source !== 'screen') continue;
      const track = transceiver.sender.track;
      track?.stop();
      this.ownedTracks = this.ownedTracks.filter((t) => t !== track);
      if (this.pc && this.pc.signalingState !== 'closed' && track) this.pc.removeTrack(transceiver.sender);
      this.sources.delete(transceiver);
    }
  }

  /** Whether we muted our microphone (`setMicrophoneEnabled(false)`) or camera. */
  isMuted(source: 'microphone' | 'camera'): boolean {
    return this.mutedSources.has(source);
  }

  /**
   * Mutes or unmutes the microphone: the track goes on, silent (`enabled`), and the server
   * forwards nothing of it meanwhile; the room gets `track_muted` (by `publisher`).
   */
  setMicrophoneEnabled(enabled: boolean): void {
    this.setMuted('microphone', !enabled);
    for (const t of this.transceiversOf('microphone')) if (t.sender.track) t.sender.track.enabled = enabled;
  }

  /**
   * Turns the camera off (its capture stops, so its light goes off; the server forwards nothing
   * and the room gets `track_muted`) or on again: captured anew with `publishCamera`'s
   * constraints, sent on the same transceiver, and the server asks for a keyframe at once.
   * Resolves with the new camera track when turned on (the published stream holds it too).
   */
  async setCameraEnabled(enabled: boolean): Promise<MediaStreamTrack | null> {
    const transceivers = this.transceiversOf('camera');
    if (!enabled) {
      this.setMuted('camera', true);
      for (const t of transceivers) {
        const old = t.sender.track;
        await t.sender.replaceTrack(null);
        // Stopped, but left in the published stream: a reconnect publishes it again, muted.
        old?.stop();
      }
      return null;
    }
    let fresh: MediaStreamTrack | null = null;
    if (transceivers.length > 0) {
      const stream = await navigator.mediaDevices.getUserMedia({ video: this.cameraConstraints });
      fresh = stream.getVideoTracks()[0] ?? null;
      if (fresh) {
        this.ownedTracks.push(fresh);
        for (const t of transceivers) await t.sender.replaceTrack(fresh);
        this.replaceInStreams(fresh);
      }
    }
    this.setMuted('camera', false);
    return fresh;
  }

  /**
   * Switches the published microphone or camera to another input device (`deviceId` from
   * `enumerateDevices`) on the same transceiver, without renegotiating; a muted microphone
   * stays muted, and a camera that is off uses the device when turned on. Resolves with the new
   * track (`null` for a camera that is off).
   */
  async switchDevice(source: 'microphone' | 'camera', deviceId: string): Promise<MediaStreamTrack | null> {
    const exact = { deviceId: { exact: deviceId } };
    if (source === 'camera') {
      this.cameraConstraints = { ...(typeof this.cameraConstraints === 'object' ? this.cameraConstraints : {}), ...exact };
      if (this.mutedSources.has('camera')) return null;
    }
    const stream = await navigator.mediaDevices.getUserMedia(source === 'camera' ? { video: this.cameraConstraints } : { audio: exact });
    const fresh = (source === 'camera' ? stream.getVideoTracks() : stream.getAudioTracks())[0];
    if (!fresh) throw new Error(`no ${source} track from device ${deviceId}`);
    if (source === 'microphone') fresh.enabled = !this.mutedSources.has('microphone');
    this.ownedTracks.push(fresh);
    for (const t of this.transceiversOf(source)) {
      const old = t.sender.track;
      await t.sender.replaceTrack(fresh);
      old?.stop();
    }
    this.replaceInStreams(fresh);
    return fresh;
  }

  /** Our transceivers that publish `source` on the current peer connection. */
  private transceiversOf(source: TrackSource): RTCRtpTransceiver[] {
    return [...this.sources].filter(([t, s]) => s === source && t.currentDirection !== 'stopped').map(([t]) => t);
  }

  /**
   * Puts a new camera or microphone track in the published stream that holds that kind (not a
   * screen share), in place of the old one.
   */
  private replaceInStreams(fresh: MediaStreamTrack): void {
    for (const { stream, options } of this.published) {
      const olds = stream.getTracks().filter((t) => t.kind === fresh.kind);
      if (options.source === 'screen' || olds.length === 0) continue;
      for (const old of olds) {
        stream.removeTrack(old);
        this.ownedTracks = this.ownedTracks.filter((t) => t !== old);
      }
      stream.addTrack(fresh);
    }
  }

  /** Records and tells the server (for each transceiver with a mid) that `source` is muted. */
  private setMuted(source: TrackSource, muted: boolean): void {
    if (muted) this.mutedSources.add(source);
    else this.mutedSources.delete(source);
    if (this.roomMode !== 'sfu') return;
    for (const t of this.transceiversOf(source)) if (t.mid && !this.pendingSources.has(t)) this.send({ type: 'mute', mid: t.mid, muted });
  }

  /** A muted source published again (after a reconnect): the server hears it is muted. */
  protected override sourceAnnounced(mid: string, source: TrackSource): void {
    if (this.mutedSources.has(source)) this.send({ type: 'mute', mid, muted: true });
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
    return this.reports.attachVideo(target, element);
  }

  /**
   * Like `attachVideo(trackId, element)`, without following anything: reports how `element`
   * shows the remote video track `trackId` until the returned function is called (or the track is
   * unpublished).
   */
  observeVideo(trackId: string, element: HTMLVideoElement): () => void {
    return this.reports.observeVideo(trackId, element);
  }

  /**
   * Caps the quality the server forwards for a remote video track (`track_settings`
   * `max_quality`; `high` lifts the cap). The server keeps it for the track's lifetime.
   */
  setMaxQuality(trackId: string, quality: Quality): void {
    this.send({ type: 'track_settings', track_id: trackId, max_quality: quality });
  }

  /**
   * Sends a data message to everyone else in the room, or to the identities in `options.to`,
   * on the reliable channel (default) or the lossy one. Receivers get a `data` event stamped with
   * our participant id and identity. Throws a `RangeError` if the message is larger than its
   * channel allows (`MAX_RELIABLE_BYTES`, `MAX_LOSSY_BYTES`); messages sent before the channels
   * open wait for them. Not available in p2p rooms.
   */
  sendData(payload: string | Uint8Array, options: SendDataOptions = {}): void {
    if (this.roomMode === 'p2p') throw new Error('data messages go through the server: not in p2p rooms');
    this.enableData();
    this.data.send(payload, options);
  }

  /**
   * Opens the two data channels (now if joined, else at join), so that `data` events arrive;
   * `sendData()` does it too. Opt-in: a client that never uses data messages negotiates no
   * application section.
   */
  enableData(): void {
    this.dataEnabled = true;
    this.requestData();
  }

  /**
   * Asks the server for the data channels once per session: its next offer carries the
   * application section, and the channels are created once that offer is applied
   * (`negotiated`). The client never offers the section itself: Chromium, once such an offer
   * of its own is rolled back in an offer collision, never negotiates data channels again on
   * that connection.
   */
  private requestData(): void {
    if (!this.dataEnabled || this.dataRequested || this.roomMode !== 'sfu' || !this.pc) return;
    this.dataRequested = true;
    this.send({ type: 'enable_data' });
  }

  protected override negotiated(pc: RTCPeerConnection): void {
    if (this.dataRequested && pc === this.pc && /\nm=application /.test(pc.remoteDescription?.sdp ?? '')) this.data.attach(pc);
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

  protected override teardown(): void {
    this.data.clear();
    this.reports.clear();
    this.dynacast.clear();
    for (const track of this.ownedTracks) track.stop();
    this.ownedTracks = [];
    this.pc?.close();
  }

  protected override onJoined(msg: JoinedMessage): void {
    this.participantId = msg.participant_id;
    this.roomMode = msg.mode ?? 'sfu';
    this.iceServers = msg.ice_servers;
    const again = this.reconnectAttempts > 0;
    for (const p of msg.participants) {
      const participant = this.addParticipant(p.id, p.identity, p.name, p.tracks);
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
    this.requestData();
    // Joining again: publish what was published (one offer for all, on negotiationneeded).
    if (again) for (const { stream, options } of this.published) this.addTransceivers(stream, options);
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

  protected override async handle(msg: ServerMessage): Promise<void> {
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
        this.emit('participant_joined', this.addParticipant(p.id, p.identity, p.name, p.tracks));
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
        this.reports.forget(msg.track_id);
        this.layers.delete(msg.track_id);
        this.emit('track_unpublished', { participantId: msg.participant_id, trackId: msg.track_id });
        return;
      }
      case 'track_layer':
        this.layers.set(msg.track_id, msg);
        this.emit('track_layer', msg);
        return;
      case 'publisher_layers':
        this.dynacast.apply(this.pc, msg);
        this.emit('publisher_layers', msg);
        return;
      case 'track_muted': {
        const t = this.participants.get(msg.participant_id)?.tracks.find((t) => t.id === msg.track_id);
        if (t) t.muted = msg.muted;
        this.emit('track_muted', { participantId: msg.participant_id, trackId: msg.track_id, muted: msg.muted, by: msg.by });
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

  private addParticipant(id: string, identity: string, name: string, tracks: Track[]): RemoteParticipant {
    let p = this.participants.get(id);
    if (p) {
      if (identity) p.identity = identity;
      p.name = name;
      p.tracks = [...tracks];
    } else {
      p = { id, identity, name, tracks: [...tracks], stream: new MediaStream() };
      this.participants.set(id, p);
    }
    return p;
  }

  protected override onTrack(event: RTCTrackEvent): void {
    // The server sets the msid stream id to the publisher's participant id (docs/protocol.md);
    // in p2p everything comes from the one other participant.
    const remoteStream = event.streams[0];
    if (!remoteStream) {
      console.warn('fanout: remote track without a stream id; cannot attribute it', event.track);
      return;
    }
    const { track } = event;
    if (remoteStream.id === MIXED_STREAM && this.roomMode !== 'p2p') {
      this.mixedStream = remoteStream;
      this.emit('mixed', { track, stream: remoteStream });
      return;
    }
    const participantId = this.roomMode === 'p2p' ? this.peerId : remoteStream.id;
    if (participantId === null) return;
    // A transceiver can be reused for another publisher's track after renegotiation; the
    // receiver's MediaStreamTrack object stays the same, so detach it from anyone else first.
    for (const other of this.participants.values()) {
      if (other.id !== participantId) other.stream.removeTrack(track);
    }
    // p2p tracks have no `TR_` id: nothing to report to the server about them.
    const trackId = this.roomMode !== 'p2p' && event.transceiver.mid ? msidTrackId(this.pc?.remoteDescription?.sdp, event.transceiver.mid) : null;
    if (trackId) this.trackIds.set(event.track, trackId);
    else this.trackIds.delete(event.track);
    const p = this.participants.get(participantId) ?? this.addParticipant(participantId, '', '', []);
    if (!p.stream.getTrackById(track.id)) p.stream.addTrack(track);

    // When the server stops sending a track, the browser removes it from the remote stream (and
    // ends it if its transceiver stops); mirror that in the participant's own stream.
    if (!this.watched.has(remoteStream)) {
      this.watched.add(remoteStream);
      remoteStream.addEventListener('removetrack', (e) => {
        this.participants.get(participantId)?.stream.removeTrack(e.track);
        this.reports.rebind(participantId, null, false);
      });
    }
    if (!this.watched.has(track)) {
      this.watched.add(track);
      track.addEventListener('ended', () => {
        for (const other of this.participants.values()) {
          other.stream.removeTrack(track);
          this.reports.rebind(other.id, null, false);
        }
      });
    }

    // Elements attached to this participant or track report for what they show now.
    if (track.kind === 'video') this.reports.rebind(participantId, trackId);

    this.emit('track', { participantId, track, stream: p.stream, trackId });
  }
}
