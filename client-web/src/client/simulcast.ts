// Publishing video as simulcast: the encodings a camera is sent with and dynacast, switching
// those encodings on and off as the server says who receives them (`publisher_layers`).

import type { PublisherLayersMessage } from '../protocol';

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

/** Dynacast for our senders: applies each `publisher_layers` message to its sender. */
export class Dynacast {
  /** Dynacast: the latest `active` rid list per sender not yet applied, and senders being updated. */
  private wantedLayers = new Map<RTCRtpSender, { active: string[]; paused: string[] }>();
  private updatingSenders = new Set<RTCRtpSender>();

  /**
   * Dynacast: activates exactly the encodings the server lists for transceiver `mid`. One
   * setParameters call at a time per sender; requests arriving meanwhile collapse into the latest.
   * Never throws (failures are logged): it runs beside the message loop, not in it.
   */
  apply(pc: RTCPeerConnection | null, msg: PublisherLayersMessage): void {
    const sender = pc?.getTransceivers().find((t) => t.mid === msg.mid)?.sender;
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

  /** Forgets the requests not yet applied (the peer connection is gone). */
  clear(): void {
    this.wantedLayers.clear();
  }
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
export function simulcastEncodings(
  track: MediaStreamTrack,
  simulcast: boolean | RTCRtpEncodingParameters[],
): RTCRtpEncodingParameters[] | undefined {
  if (simulcast === false) return undefined;
  const width = track.getSettings().width ?? 0;
  if (width > 0 && width < MIN_SIMULCAST_WIDTH) return undefined;
  const encodings = simulcast === true ? DEFAULT_SIMULCAST : simulcast;
  return encodings.map((e) => ({ ...e }));
}
