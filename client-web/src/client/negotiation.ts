// Negotiating the one RTCPeerConnection with the perfect-negotiation pattern: offers on
// `negotiationneeded`, answers, collisions, candidates (held until there is a remote description),
// and telling the server each transceiver's source once it has a mid. Towards the server the
// client is the *polite* side (it yields on offer collisions; the server never does); in a p2p
// room, of the two participants, the one that joined later is polite.

import type { RoomMode, TrackSource } from '../protocol';
import { Reconnecting, restartIceWhenStuck } from './reconnect';

/**
 * The third layer of `FanoutClient`: the peer connection and its negotiation. What arrives on it
 * (`onTrack`) is for the client.
 */
export abstract class Negotiation extends Reconnecting {
  /** The peer connection to the server; `null` until `joined`. */
  pc: RTCPeerConnection | null = null;
  /** `relay`: connect only through the TURN servers the server hands out (set before `join`). */
  iceTransportPolicy: RTCIceTransportPolicy = 'all';
  /** The joined room's mode (`sfu` until `joined` says otherwise). */
  roomMode: RoomMode = 'sfu';

  /** Perfect negotiation: whether we yield on an offer collision (always, towards the server). */
  protected polite = true;
  protected iceServers: RTCIceServer[] = [];
  /** p2p: the other participant, once there. */
  protected peerId: string | null = null;
  private makingOffer = false;
  /** Remote candidates that arrived before any remote description. */
  private pendingCandidates: RTCIceCandidateInit[] = [];
  /** What we publish on each transceiver, until the server was told (`track_source`). */
  protected pendingSources = new Map<RTCRtpTransceiver, TrackSource>();
  /** What we publish on each transceiver of this peer connection. */
  protected sources = new Map<RTCRtpTransceiver, TrackSource>();

  protected createPeerConnection(): void {
    const pc = new RTCPeerConnection({
      iceServers: this.iceServers,
      iceTransportPolicy: this.iceTransportPolicy,
      bundlePolicy: 'max-bundle',
    });
    this.pc = pc;
    this.makingOffer = false;
    this.pendingCandidates = [];
    this.sources.clear();

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
    restartIceWhenStuck(pc, () => this.pc);
  }

  /** Sends an offer for `pc`'s current state (in p2p only once the other participant is there). */
  protected async negotiate(pc: RTCPeerConnection): Promise<void> {
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

  protected async onDescription(description: RTCSessionDescriptionInit): Promise<void> {
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
    this.negotiated(pc);
  }

  /** A remote description was applied (and an offer answered). */
  protected negotiated(_pc: RTCPeerConnection): void {}

  /** Tells the server the source of each transceiver we publish once it has a mid. */
  private sendTrackSources(): void {
    for (const [transceiver, source] of this.pendingSources) {
      if (!transceiver.mid) continue;
      this.send({ type: 'track_source', mid: transceiver.mid, source });
      this.pendingSources.delete(transceiver);
      this.sourceAnnounced(transceiver.mid, source);
    }
  }

  /** The server was told what transceiver `mid` publishes. */
  protected sourceAnnounced(_mid: string, _source: TrackSource): void {}

  protected async onCandidate(candidate: RTCIceCandidateInit): Promise<void> {
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

  /** A remote track arrived on the peer connection. */
  protected abstract onTrack(event: RTCTrackEvent): void;
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
