// The signaling socket (docs/protocol.md): opening it and joining, handling incoming messages
// strictly in order, sending, and the typed events. Reconnecting, negotiation and the room's
// state are layered on top (reconnect.ts, negotiation.ts, ../fanout.ts).

import {
  PROTOCOL_VERSION,
  parseServerMessage,
  type ClientMessage,
  type ErrorCode,
  type JoinedMessage,
  type RoomMode,
  type ServerMessage,
} from '../protocol';
import { FanoutError, type FanoutEvents } from './types';

/** `ws://host/ws` (or `wss:`) for the page's own origin. */
export function defaultSignalingUrl(): string {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/ws`;
}

/**
 * The bottom layer of `FanoutClient`: the socket and the events. What a message means, and what
 * a closed socket means, is for the layers above (`handle`, `onJoined`, `onSocketClosed`).
 */
export abstract class Signaling extends EventTarget {
  /** The room mode to ask for (set before `join`); `undefined` takes the room as it is. */
  mode: RoomMode | undefined = undefined;
  /** `audio`: receive the room's voices mixed into one track; `all`: and one composite picture
   * (set before `join`). */
  mixed: 'audio' | 'all' | undefined = undefined;
  /** What `join` was given, for joining again. */
  private session: { url: string | undefined; room: string; name: string; token?: string } | null = null;
  /** The last `error` code the server sent on the current socket. */
  protected lastError: ErrorCode | null = null;

  protected ws: WebSocket | null = null;
  /** Incoming messages are handled strictly in order, each after the previous one's awaits. */
  private inbox: Promise<void> = Promise.resolve();

  /** Typed `addEventListener`; returns a function that removes the listener. */
  on<K extends keyof FanoutEvents>(type: K, listener: (detail: FanoutEvents[K]) => void): () => void {
    const wrapped = (event: Event) => listener((event as CustomEvent<FanoutEvents[K]>).detail);
    this.addEventListener(type, wrapped);
    return () => this.removeEventListener(type, wrapped);
  }

  protected emit<K extends keyof FanoutEvents>(type: K, detail: FanoutEvents[K]): void {
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
  protected connect(): Promise<JoinedMessage> {
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
          ...(this.mixed ? { mixed: this.mixed } : {}),
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

  protected send(msg: ClientMessage): void {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  protected negotiationFailed(error: unknown): void {
    console.error('fanout: negotiation failed:', error);
    this.emit('negotiation_failed', { error });
  }

  /** The server's `joined`: set up the room and the peer connection. */
  protected abstract onJoined(msg: JoinedMessage): void;
  /** Any other message, in order: the inbox waits for the returned promise. */
  protected abstract handle(msg: ServerMessage): Promise<void>;
  /** The socket `connect` opened closed; `wasJoined` if it got as far as `joined`. */
  protected abstract onSocketClosed(event: CloseEvent, wasJoined: boolean): void;
}
