// The demo room page: `/?room=R&name=N` joins room R as N at once with camera and microphone and
// shows one tile per participant, with a control bar (demo/controls.ts: microphone M, camera V,
// share screen S, leave Q, then rejoin R) and markers on the tiles of muted participants. `&publish=0` joins receive-only; `&simulcast=0` publishes one
// encoding. Each remote tile reports its size to the server, which picks the simulcast layer; the
// layer overlay (press L, or `&overlay=1`) shows which layer a tile receives and why.
// `&tile=320x180` gives every remote tile exactly that size in CSS pixels. `&token=T` joins with
// the access token T (needed outside `--dev`; `fanout token create` makes one); without one, a
// `--dev` server hands the page a token from `/dev/token`.
// `&data=1` opens the data channels at join (else the chat panel opens them). `window.fanout` is the client and `window.fanoutDemo`
// has helpers, for tests and the console.

import { controlBar } from './demo/controls';
import { keepLaidOut } from './demo/layout';
import { sidePanels } from './demo/panels';
import { runDiag } from './diag';
import { FanoutClient, FanoutError, type RemoteParticipant, type TrackLayerMessage } from './fanout';

/** Test and console helpers. */
interface DemoApi {
  /** Sizes a remote tile (by participant name) to exactly `width` x `height` CSS pixels. */
  setTileSize(name: string, width: number, height: number): void;
  /** Hides (display: none) or shows a remote tile. */
  setTileHidden(name: string, hidden: boolean): void;
  /** Shows or hides the layer overlays. */
  setOverlay(on: boolean): void;
}

declare global {
  interface Window {
    fanout: FanoutClient;
    fanoutDemo: DemoApi;
  }
}

const grid = document.getElementById('grid')!;
const statusEl = document.getElementById('status')!;
const noticeEl = document.getElementById('notice')!;

/** Reads room and name from the URL, filling in defaults there so the URL can be shared as is. */
function roomAndName(): { room: string; name: string; publish: boolean } {
  const params = new URLSearchParams(location.search);
  const room = params.get('room')?.trim() || 'demo';
  const name = params.get('name')?.trim() || `guest-${Math.floor(Math.random() * 10000).toString().padStart(4, '0')}`;
  if (params.get('room') !== room || params.get('name') !== name) {
    params.set('room', room);
    params.set('name', name);
    history.replaceState(null, '', `${location.pathname}?${params}${location.hash}`);
  }
  return { room, name, publish: params.get('publish') !== '0' };
}

/**
 * The access token to join with: `&token=` from the URL, else one from the dev-only endpoint of a
 * `--dev` server, else none (a server outside `--dev` then refuses the join with `token_missing`).
 */
async function accessToken(room: string, name: string): Promise<string | undefined> {
  const fromUrl = new URLSearchParams(location.search).get('token')?.trim();
  if (fromUrl) return fromUrl;
  try {
    const response = await fetch(`/dev/token?${new URLSearchParams({ room, name })}`);
    if (!response.ok) return undefined;
    const body = (await response.json()) as { token?: string };
    return body.token;
  } catch {
    return undefined;
  }
}

/** What to tell the user when a join is refused. */
function joinFailure(err: unknown): string {
  if (err instanceof FanoutError) {
    if (err.code === 'token_missing') {
      return 'This server needs an access token: add &token=… to the URL (make one with `fanout token create --room ROOM --identity NAME`).';
    }
    if (err.code.startsWith('token_')) return `the access token was refused (${err.message})`;
    if (err.code === 'server_draining') return 'This server is shutting down; reload the page to join another one.';
    return err.message;
  }
  return err instanceof Error ? err.message : String(err);
}

function setStatus(text: string, kind: 'info' | 'ok' | 'error' = 'info'): void {
  statusEl.textContent = text;
  statusEl.dataset.kind = kind;
}

function showNotice(text: string): void {
  noticeEl.textContent = text;
  noticeEl.hidden = false;
}

function createTile(name: string, local: boolean): HTMLElement {
  const tile = document.createElement('figure');
  tile.className = 'tile';
  tile.dataset.name = name;
  tile.toggleAttribute(local ? 'data-local' : 'data-remote', true);
  const video = document.createElement('video');
  video.autoplay = true;
  video.playsInline = true;
  video.muted = local; // never play our own microphone back
  const label = document.createElement('figcaption');
  label.textContent = local ? `${name} (you)` : name;
  tile.append(video, label);
  if (!local) {
    // Pinned: this tile takes the stage, the others a strip.
    const pin = document.createElement('button');
    pin.type = 'button';
    pin.className = 'pin';
    pin.setAttribute('aria-label', `Pin ${name}`);
    pin.setAttribute('aria-pressed', 'false');
    pin.textContent = '📌';
    pin.addEventListener('click', () => {
      const on = !tile.hasAttribute('data-pinned');
      for (const other of grid.querySelectorAll<HTMLElement>('.tile[data-pinned]')) {
        other.removeAttribute('data-pinned');
        other.querySelector('.pin')?.setAttribute('aria-pressed', 'false');
      }
      tile.toggleAttribute('data-pinned', on);
      pin.setAttribute('aria-pressed', String(on));
    });
    tile.append(pin);
    const overlay = document.createElement('div');
    overlay.className = 'layer';
    overlay.dataset.layer = 'none';
    overlay.textContent = 'no video yet';
    tile.append(overlay);
  }
  grid.append(tile);
  return tile;
}

/**
 * A remote tile's connection quality marker, from its layer report: poor when the server pauses
 * or lowers the video for want of bandwidth (or nothing comes from the publisher), fair when the
 * layer is below what the tile needs, good otherwise.
 */
function renderQuality(tile: HTMLElement, msg: TrackLayerMessage): void {
  if (msg.reason === 'hidden') return;
  const level =
    (msg.reason === 'bandwidth' && msg.current === null) || msg.reason === 'publisher_not_sending'
      ? 'poor'
      : msg.reason === 'bandwidth' || msg.current !== msg.target
        ? 'fair'
        : 'good';
  let marker = tile.querySelector<HTMLElement>('.quality');
  if (!marker) {
    marker = document.createElement('span');
    marker.className = 'quality';
    marker.setAttribute('role', 'img');
    tile.append(marker);
  }
  marker.dataset.level = level;
  marker.setAttribute('aria-label', `connection ${level}`);
  marker.textContent = level === 'good' ? '▂▄▆' : level === 'fair' ? '▂▄' : '▂';
}

/**
 * Shows on a remote tile whether its microphone is muted and its camera off (a badge with an
 * accessible label; `data-audio-muted`, `data-video-muted`), from the participant's tracks.
 */
function renderMuted(tile: HTMLElement, p: RemoteParticipant): void {
  const audio = p.tracks.some((t) => t.kind === 'audio' && t.muted);
  const video = p.tracks.some((t) => t.kind === 'video' && t.source === 'camera' && t.muted);
  tile.toggleAttribute('data-audio-muted', audio);
  tile.toggleAttribute('data-video-muted', video);
  let badge = tile.querySelector<HTMLElement>('.muted');
  if (!badge) {
    badge = document.createElement('span');
    badge.className = 'muted';
    tile.append(badge);
  }
  const what = [audio ? 'microphone muted' : '', video ? 'camera off' : ''].filter(Boolean).join(', ');
  badge.hidden = what === '';
  badge.textContent = `${audio ? '🔇' : ''}${video ? '🚫📷' : ''}`;
  badge.setAttribute('role', 'img');
  badge.setAttribute('aria-label', what);
}

function attach(tile: HTMLElement, stream: MediaStream): void {
  const video = tile.querySelector('video')!;
  // Assigned again on every new track: reloading makes the element pick up tracks added to a
  // stream it is already showing.
  video.srcObject = stream;
  video.play().catch((err: unknown) => {
    if (err instanceof DOMException && err.name === 'NotAllowedError') soundBlocked(video);
  });
}

/** The autoplay policy refused sound: play muted and unmute on the first click. */
function soundBlocked(video: HTMLMediaElement): void {
  video.muted = true;
  void video.play().catch(() => {});
  showNotice('Sound is blocked by the browser: click anywhere to turn it on.');
  document.addEventListener(
    'click',
    () => {
      for (const v of grid.querySelectorAll<HTMLVideoElement>('[data-remote] video')) {
        v.muted = false;
        void v.play().catch(() => {});
      }
      noticeEl.hidden = true;
    },
    { once: true },
  );
}

const mbps = (bps: number) => (bps >= 1e6 ? `${(bps / 1e6).toFixed(1)} Mb/s` : `${Math.round(bps / 1e3)} kb/s`);

/** Writes a tile's overlay: the layer received, its size and rate, why, and what it switches to. */
function renderLayer(tile: HTMLElement, msg: TrackLayerMessage | undefined, decodedWidth: number | null): void {
  const overlay = tile.querySelector<HTMLElement>('.layer');
  if (!overlay) return;
  if (!msg) {
    overlay.dataset.layer = 'none';
    overlay.textContent = 'no layer report yet';
    return;
  }
  overlay.dataset.layer = msg.current ?? 'paused';
  overlay.dataset.reason = msg.reason;
  const size = msg.width && msg.height ? ` ${msg.width}x${msg.height}` : '';
  const rate = msg.bitrate ? ` · ${mbps(msg.bitrate)}` : '';
  const target = msg.target !== msg.current ? ` → ${msg.target ?? 'paused'}` : '';
  const decoded = decodedWidth ? ` · decoding ${decodedWidth} px wide` : '';
  overlay.textContent = `${msg.current ?? 'paused'}${size}${rate}${target} (${msg.reason})${decoded}`;
}

async function main(): Promise<void> {
  const { room, name, publish } = roomAndName();
  document.getElementById('room')!.textContent = `room ${room}`;
  document.title = `${room} · Fanout`;

  const client = new FanoutClient();
  window.fanout = client;
  const localTile = createTile(name, true);
  const remoteTiles = new Map<string, HTMLElement>();
  /** Per remote participant, stops its tile's size reports. */
  const detachers = new Map<string, () => void>();
  const params = new URLSearchParams(location.search);
  // `?relay=1`: media only through the TURN servers in `joined` (to try a TURN setup).
  if (params.get('relay') === '1') client.iceTransportPolicy = 'relay';
  // `?mode=p2p`: join (or create) the room as a direct 1:1 call; media goes browser to browser.
  const mode = params.get('mode');
  if (mode === 'p2p' || mode === 'sfu') client.mode = mode;
  // `?mixed=audio`: the others' voices mixed by the server into one track, played by one element;
  // `?mixed=1`: and one composite picture of the room, in a tile of its own (the others' tiles,
  // which would stay empty, are hidden).
  const mixed = params.get('mixed');
  if (mixed === 'audio') client.mixed = 'audio';
  const composite = mixed === '1' || mixed === 'all';
  if (composite) client.mixed = 'all';
  client.on('mixed', ({ track, stream }) => {
    if (composite) {
      let tile = grid.querySelector<HTMLElement>('.tile.composite');
      if (!tile) {
        tile = createTile('Room', false);
        tile.classList.add('composite');
        grid.append(tile);
      }
      if (track.kind === 'video' || !tile.querySelector('video')!.srcObject) attach(tile, stream);
      return;
    }
    let el = document.querySelector<HTMLAudioElement>('#mixed-audio');
    if (!el) {
      el = document.createElement('audio');
      el.id = 'mixed-audio';
      el.autoplay = true;
      document.body.append(el);
    }
    el.srcObject = stream;
    el.play().catch((err: unknown) => {
      if (err instanceof DOMException && err.name === 'NotAllowedError') soundBlocked(el);
    });
  });
  // The data channels (chat): at join with `?data=1`, else once the chat panel is opened. Not at
  // every join yet: see issue 18's note (a page that joined with them sometimes never connected
  // in CI).
  if (params.get('data') === '1' && mode !== 'p2p') client.enableData();
  document.body.classList.toggle('show-layers', params.get('overlay') === '1');
  addEventListener('keydown', (e) => {
    const typing = e.target instanceof HTMLElement && ['INPUT', 'TEXTAREA'].includes(e.target.tagName);
    if ((e.key === 'l' || e.key === 'L') && !e.ctrlKey && !e.metaKey && !e.altKey && !typing) {
      document.body.classList.toggle('show-layers');
    }
  });
  const relayout = keepLaidOut(grid);
  // The pin buttons' shortcuts: 1 to 9 pin the remote tiles in their order.
  const pins = () => [...grid.querySelectorAll<HTMLButtonElement>('[data-remote] .pin')];
  new MutationObserver(() =>
    pins().forEach((pin, i) => {
      if (i < 9) pin.setAttribute('aria-keyshortcuts', String(i + 1));
      else pin.removeAttribute('aria-keyshortcuts');
    }),
  ).observe(grid, { childList: true });
  addEventListener('keydown', (e) => {
    const typing = e.target instanceof HTMLElement && ['INPUT', 'TEXTAREA', 'SELECT'].includes(e.target.tagName);
    if (typing || e.ctrlKey || e.metaKey || e.altKey || !/^[1-9]$/.test(e.key)) return;
    pins()[Number(e.key) - 1]?.click();
  });
  const tileParam = /^(\d+)x(\d+)$/.exec(params.get('tile') ?? '');
  const fixedTile = tileParam ? { width: Number(tileParam[1]), height: Number(tileParam[2]) } : null;
  const sizeTile = (tile: HTMLElement, width: number, height: number) => {
    tile.toggleAttribute('data-fixed-size', true);
    tile.style.width = `${width}px`;
    tile.style.height = `${height}px`;
    relayout();
  };
  const tileByName = (n: string) =>
    [...remoteTiles.values()].find((t) => t.dataset.name === n) ??
    (() => {
      throw new Error(`no remote tile named ${n}`);
    })();
  window.fanoutDemo = {
    setTileSize(n, width, height) {
      sizeTile(tileByName(n), width, height);
    },
    setTileHidden(n, hidden) {
      tileByName(n).style.display = hidden ? 'none' : '';
      relayout();
    },
    setOverlay(on) {
      document.body.classList.toggle('show-layers', on);
    },
  };
  /** Remote video track id → its tile, for the overlays. */
  const videoTiles = new Map<string, { tile: HTMLElement; track: MediaStreamTrack }>();
  client.on('track_layer', (msg) => {
    const v = videoTiles.get(msg.track_id);
    if (v) {
      renderLayer(v.tile, msg, null);
      renderQuality(v.tile, msg);
    }
  });
  // The decoded width, from the receiver's stats, once a second.
  setInterval(async () => {
    if (!client.pc || !document.body.classList.contains('show-layers')) return;
    const widths = new Map<string, number>();
    (await client.pc.getStats()).forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video' && r.trackIdentifier) widths.set(r.trackIdentifier, r.frameWidth ?? 0);
    });
    for (const [trackId, { tile, track }] of videoTiles) {
      renderLayer(tile, client.layers.get(trackId), widths.get(track.id) ?? null);
    }
  }, 1000);
  client.on('active_speaker', ({ participantId }) => {
    for (const tile of grid.querySelectorAll<HTMLElement>('.tile')) {
      tile.toggleAttribute('data-speaking', tile.dataset.participantId === participantId);
    }
  });

  const inCall = () => {
    const others = client.participants.size;
    const direct = client.roomMode === 'p2p' ? ' · direct call (p2p)' : '';
    setStatus(`In call as ${name} · ${others} other${others === 1 ? '' : 's'}${direct}`, 'ok');
  };
  const tileFor = (p: RemoteParticipant): HTMLElement => {
    let tile = remoteTiles.get(p.id);
    if (!tile) {
      tile = createTile(p.name, false);
      tile.dataset.participantId = p.id;
      remoteTiles.set(p.id, tile);
      if (composite) tile.style.display = 'none'; // seen in the composite
      if (fixedTile) sizeTile(tile, fixedTile.width, fixedTile.height);
      // The tile's size and visibility pick the simulcast layer the server forwards.
      detachers.set(p.id, client.attachVideo(p.id, tile.querySelector('video')!));
    } else if (p.name && tile.dataset.name !== p.name) {
      tile.dataset.name = p.name;
      tile.querySelector('figcaption')!.textContent = p.name;
    }
    renderMuted(tile, p);
    return tile;
  };
  const refreshMuted = (participantId: string) => {
    const p = client.participants.get(participantId);
    const tile = remoteTiles.get(participantId);
    if (p && tile) renderMuted(tile, p);
  };
  client.on('track_published', ({ participantId }) => refreshMuted(participantId));
  client.on('track_muted', ({ participantId }) => refreshMuted(participantId));

  client.on('participant_joined', (p) => {
    tileFor(p);
    inCall();
  });
  /** Screen shares, by track id: a tile of their own (on the stage), and its report's detacher. */
  const screenTiles = new Map<string, { tile: HTMLElement; participantId: string; detach: () => void }>();
  const dropScreen = (trackId: string) => {
    const s = screenTiles.get(trackId);
    s?.detach();
    s?.tile.remove();
    screenTiles.delete(trackId);
  };
  const screenTile = (p: RemoteParticipant, track: MediaStreamTrack, trackId: string) => {
    if (screenTiles.has(trackId)) return;
    const tile = createTile(`${p.name} (screen)`, false);
    tile.toggleAttribute('data-screen', true);
    tile.dataset.participantId = p.id;
    attach(tile, new MediaStream([track]));
    screenTiles.set(trackId, { tile, participantId: p.id, detach: client.observeVideo(trackId, tile.querySelector('video')!) });
    track.addEventListener('ended', () => dropScreen(trackId));
  };
  client.on('participant_left', ({ participantId }) => {
    detachers.get(participantId)?.();
    detachers.delete(participantId);
    remoteTiles.get(participantId)?.remove();
    remoteTiles.delete(participantId);
    for (const [trackId, s] of screenTiles) if (s.participantId === participantId) dropScreen(trackId);
    inCall();
  });
  client.on('track', ({ participantId, stream, track, trackId }) => {
    const p = client.participants.get(participantId);
    if (!p) return;
    if (trackId && p.tracks.find((t) => t.id === trackId)?.source === 'screen') {
      screenTile(p, track, trackId);
      return;
    }
    const tile = tileFor(p);
    attach(tile, stream);
    if (track.kind === 'video' && trackId) {
      videoTiles.set(trackId, { tile, track });
      renderLayer(tile, client.layers.get(trackId), null);
    }
  });
  client.on('track_unpublished', ({ participantId, trackId }) => {
    videoTiles.delete(trackId);
    dropScreen(trackId);
    refreshMuted(participantId);
  });
  client.on('error', ({ code, message }) => setStatus(`Error ${code}: ${message}`, 'error'));
  client.on('negotiation_failed', ({ error }) =>
    setStatus(`Negotiation failed: ${error instanceof Error ? error.message : String(error)}`, 'error'),
  );
  /** Says so when the current peer connection fails. */
  const watchMedia = () => {
    const pc = client.pc;
    pc?.addEventListener('connectionstatechange', () => {
      if (pc === client.pc && pc.connectionState === 'failed') setStatus('Media connection failed', 'error');
    });
  };
  let inRoom = false; // a failed join keeps its own message rather than "Disconnected"
  let localStream: MediaStream | null = null;
  const controls = controlBar(document.getElementById('controls')!, client, {
    camera(off) {
      localTile.toggleAttribute('data-video-muted', off);
      if (!off && localStream) attach(localTile, localStream);
    },
    left() {
      inRoom = false;
      for (const id of [...remoteTiles.keys()]) {
        detachers.get(id)?.();
        remoteTiles.get(id)?.remove();
      }
      detachers.clear();
      remoteTiles.clear();
      videoTiles.clear();
      localTile.remove();
      setStatus('You left the room', 'info');
    },
    problem: (text) => setStatus(text, 'error'),
  });
  sidePanels(document.getElementById('panels')!, client, controls.add, name);
  client.on('disconnected', ({ code, reason }) => {
    if (inRoom) setStatus(`Disconnected (${code}${reason ? `: ${reason}` : ''})`, 'error');
  });
  // The connection to the server dropped (it stopped, or this network changed): the client joins
  // again by itself, and the others come back as it does.
  client.on('reconnecting', ({ attempt }) => {
    if (inRoom) setStatus(`Reconnecting…${attempt > 1 ? ` (attempt ${attempt})` : ''}`, 'info');
    document.body.dataset.reconnecting = 'true';
  });
  client.on('reconnected', (joined) => {
    localTile.dataset.participantId = joined.participant_id;
    delete document.body.dataset.reconnecting;
    watchMedia();
    inCall();
  });
  // Closing the tab closes the socket anyway; saying `leave` lets the others know at once.
  addEventListener('pagehide', () => client.leave());

  setStatus('Connecting…');
  try {
    const token = await accessToken(room, name);
    const joined = await client.join(undefined, room, name, token);
    localTile.dataset.participantId = joined.participant_id;
    document.body.dataset.mode = joined.mode;
    inRoom = true;
  } catch (err) {
    setStatus(`Could not join: ${joinFailure(err)}`, 'error');
    return;
  }
  for (const p of client.participants.values()) tileFor(p);
  inCall();
  watchMedia();

  if (!publish) {
    localTile.remove();
    showNotice('Receive-only: not sending camera or microphone (publish=0 in the URL).');
    controls.ready(false);
    return;
  }
  try {
    localStream = await client.publishCamera({ simulcast: params.get('simulcast') !== '0' });
    attach(localTile, localStream);
    controls.ready(true);
  } catch (err) {
    const why = err instanceof DOMException ? err.name : String(err);
    showNotice(`No camera or microphone (${why}): you are in the call receive-only.`);
    localTile.querySelector('figcaption')!.textContent = `${name} (you, receive-only)`;
    controls.ready(false);
  }
}

// `/diag`: the connection test instead of a room.
if (/\/diag\/?$/.test(location.pathname)) void runDiag(accessToken);
else void main();
