// Recovering from a lost connection: joining again with back-off when the signaling socket drops
// (giving up after RECONNECT_GIVE_UP_MS or on an error a retry cannot fix), and restarting ICE
// when the media path dies while signaling stays up.

import type { ErrorCode } from '../protocol';
import { Signaling } from './signaling';

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

// A path that died (a network change: Wi-Fi to cellular, a VPN coming up) is recovered with
// an ICE restart: new credentials, new candidates, the same call. Chromium may never call a
// dead path `failed` (it stays `disconnected` once it pruned its pairs), so a path that stays
// `disconnected` for ICE_RESTART_AFTER_MS is restarted too, and again every
// ICE_RESTART_AFTER_MS while it does not recover; the server keeps the participant for its
// consent timeout (30 s by default).
// `current()` is the client's peer connection: one it replaced or dropped is left alone.
export function restartIceWhenStuck(pc: RTCPeerConnection, current: () => RTCPeerConnection | null): void {
  let restartTimer: ReturnType<typeof setTimeout> | undefined;
  const restart = (why: string) => {
    clearTimeout(restartTimer);
    restartTimer = undefined;
    if (pc !== current() || pc.signalingState === 'closed') return;
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
    if (pc !== current() || state === 'closed') {
      clearTimeout(restartTimer);
    } else if (state === 'failed') {
      restart('failed');
    } else if (state === 'disconnected') {
      restartTimer ??= setTimeout(check, ICE_RESTART_AFTER_MS);
    }
  };
}

/**
 * The second layer of `FanoutClient`: what happens when the signaling socket closes. What to drop
 * and what to stop is for the client (`dropSession`, `teardown`).
 */
export abstract class Reconnecting extends Signaling {
  /**
   * Join again by itself when the signaling socket drops after a join (set before `join`):
   * back-off from RECONNECT_FIRST_MS doubling to RECONNECT_MAX_MS, for at most
   * RECONNECT_GIVE_UP_MS; then, or after an error that a retry cannot fix (removed, room
   * deleted, token refused…), `disconnected`.
   */
  autoReconnect = true;
  /** While reconnecting: attempts made so far (0 when connected). */
  reconnectAttempts = 0;

  protected leaving = false;
  protected reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  /** When the socket dropped, while reconnecting. */
  private droppedAt: number | null = null;

  /**
   * The socket closed. After a join (or while reconnecting) and unless the server said why in a
   * way a retry cannot fix, the client joins again; otherwise the session is over.
   */
  protected override onSocketClosed(event: CloseEvent, wasJoined: boolean): void {
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

  /** Forgets the room as the lost session saw it, keeping what we publish for the next join. */
  protected abstract dropSession(): void;
  /** Stops everything for good: views, captured tracks, the peer connection. */
  protected abstract teardown(): void;
}
