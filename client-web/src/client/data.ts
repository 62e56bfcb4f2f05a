// Data messages (docs/protocol.md, "Data messages"): the two negotiated data channels on the one
// peer connection (reliable on SCTP stream 0, lossy on stream 1), the binary envelope in front of
// the application's bytes, and a bounded queue for what is sent before the channels open.

/** The envelope's version byte. */
const VERSION = 1;
const FLAG_TEXT = 1;
export const RELIABLE_STREAM = 0;
export const LOSSY_STREAM = 1;
/** The server's default limits on an envelope (settings `data_max_reliable`, `data_max_lossy`). */
export const MAX_RELIABLE_BYTES = 64 * 1024;
export const MAX_LOSSY_BYTES = 1200;
/** Messages held while the channels open, at most (older ones beyond it are refused). */
const MAX_QUEUED = 1000;

/** How a data message is sent. */
export interface SendDataOptions {
  /** A label the receivers see (at most 255 bytes of UTF-8; default empty). */
  topic?: string;
  /** The identities it is for (at most 64); default: everyone else in the room. */
  to?: string[];
  /** `true` (default): ordered and retransmitted; `false`: may be lost, never retransmitted. */
  reliable?: boolean;
}

/** A data message received: who sent it (stamped by the server), its topic and payload. */
export interface DataMessage {
  /** The sender's participant id, or `null` when the server sent it (the admin API). */
  participantId: string | null;
  /** The sender's identity (from its token), or `''` for the server. */
  identity: string;
  topic: string;
  /** A string if it was sent as one, else the bytes. */
  payload: string | Uint8Array;
  reliable: boolean;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

function putString(out: number[], s: string): void {
  let bytes = encoder.encode(s);
  if (bytes.length > 255) {
    // Cut to 255 bytes on a character boundary.
    let end = 255;
    while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--;
    bytes = bytes.subarray(0, end);
  }
  out.push(bytes.length, ...bytes);
}

/** The envelope a client sends (exported for tests). */
export function encodeOutgoing(payload: string | Uint8Array, topic: string, to: string[]): Uint8Array<ArrayBuffer> {
  const text = typeof payload === 'string';
  const body = text ? encoder.encode(payload) : payload;
  const head: number[] = [VERSION, text ? FLAG_TEXT : 0];
  putString(head, topic);
  head.push(to.length);
  for (const id of to) putString(head, id);
  const out = new Uint8Array(head.length + body.length);
  out.set(head);
  out.set(body, head.length);
  return out;
}

/** Reads an envelope the server delivered; `null` if it is not one. */
export function decodeDelivery(data: Uint8Array, reliable: boolean): DataMessage | null {
  let at = 0;
  const byte = (): number => {
    if (at >= data.length) throw new RangeError('truncated');
    return data[at++]!;
  };
  const string = (): string => {
    const len = byte();
    if (at + len > data.length) throw new RangeError('truncated');
    const s = decoder.decode(data.subarray(at, at + len));
    at += len;
    return s;
  };
  try {
    if (byte() !== VERSION) return null;
    const text = (byte() & FLAG_TEXT) !== 0;
    const topic = string();
    const participantId = string();
    const identity = string();
    const body = data.subarray(at);
    return {
      participantId: participantId === '' ? null : participantId,
      identity,
      topic,
      payload: text ? decoder.decode(body) : body.slice(),
      reliable,
    };
  } catch {
    return null;
  }
}

/** A participant's two data channels on the current peer connection. */
export class DataChannels {
  private reliable: RTCDataChannel | null = null;
  private lossy: RTCDataChannel | null = null;
  /** The peer connection the channels are on. */
  private pc: RTCPeerConnection | null = null;
  /** Sent before the channels opened, in order. */
  private queue: { envelope: Uint8Array<ArrayBuffer>; reliable: boolean }[] = [];

  constructor(private readonly deliver: (m: DataMessage) => void) {}

  /** Creates both channels on `pc` (before its first offer, so that it carries them). */
  attach(pc: RTCPeerConnection): void {
    if (this.pc === pc) return;
    this.detach();
    this.pc = pc;
    const reliable = pc.createDataChannel('fanout-reliable', { negotiated: true, id: RELIABLE_STREAM });
    const lossy = pc.createDataChannel('fanout-lossy', {
      negotiated: true,
      id: LOSSY_STREAM,
      ordered: false,
      maxRetransmits: 0,
    });
    for (const [channel, isReliable] of [
      [reliable, true],
      [lossy, false],
    ] as const) {
      channel.binaryType = 'arraybuffer';
      channel.onmessage = (event) => {
        if (!(event.data instanceof ArrayBuffer)) return;
        const m = decodeDelivery(new Uint8Array(event.data), isReliable);
        if (m) this.deliver(m);
        else console.warn('fanout: ignoring a data message that is not an envelope');
      };
      channel.onopen = () => this.flush();
    }
    this.reliable = reliable;
    this.lossy = lossy;
  }

  /** Forgets the channels (the peer connection closes); queued messages wait for the next. */
  detach(): void {
    this.pc = null;
    this.reliable = null;
    this.lossy = null;
  }

  /** Drops what is still queued (leaving). */
  clear(): void {
    this.detach();
    this.queue = [];
  }

  /**
   * Sends a message to the room, or to `options.to`. Throws a `RangeError` if it is larger than
   * the channel's limit; queued (up to 1,000) until the channels are open.
   */
  send(payload: string | Uint8Array, options: SendDataOptions = {}): void {
    const reliable = options.reliable ?? true;
    const to = options.to ?? [];
    if (to.length > 64) throw new RangeError('a data message may name at most 64 identities');
    const envelope = encodeOutgoing(payload, options.topic ?? '', to);
    const max = reliable ? MAX_RELIABLE_BYTES : MAX_LOSSY_BYTES;
    if (envelope.length > max) {
      throw new RangeError(
        `a data message of ${envelope.length} bytes exceeds the ${reliable ? 'reliable' : 'lossy'} channel's limit of ${max} bytes`,
      );
    }
    const channel = reliable ? this.reliable : this.lossy;
    if (channel?.readyState === 'open' && this.queue.length === 0) {
      channel.send(envelope);
      return;
    }
    if (this.queue.length >= MAX_QUEUED) throw new RangeError('too many data messages waiting for the channels to open');
    this.queue.push({ envelope, reliable });
  }

  private flush(): void {
    while (this.queue.length > 0) {
      const next = this.queue[0]!;
      const channel = next.reliable ? this.reliable : this.lossy;
      if (channel?.readyState !== 'open') return;
      channel.send(next.envelope);
      this.queue.shift();
    }
  }
}
