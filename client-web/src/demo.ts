// The demo room page: `/?room=R&name=N` joins room R as N at once with camera and microphone and
// shows one tile per participant. `&publish=0` joins receive-only. `window.fanout` is the client,
// for tests and for poking at from the console.

import { FanoutClient, type RemoteParticipant } from './fanout';

declare global {
  interface Window {
    fanout: FanoutClient;
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
  grid.append(tile);
  return tile;
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
function soundBlocked(video: HTMLVideoElement): void {
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

async function main(): Promise<void> {
  const { room, name, publish } = roomAndName();
  document.getElementById('room')!.textContent = `room ${room}`;
  document.title = `${room} · Fanout`;

  const client = new FanoutClient();
  window.fanout = client;
  const localTile = createTile(name, true);
  const remoteTiles = new Map<string, HTMLElement>();

  const inCall = () => {
    const others = client.participants.size;
    setStatus(`In call as ${name} · ${others} other${others === 1 ? '' : 's'}`, 'ok');
  };
  const tileFor = (p: RemoteParticipant): HTMLElement => {
    let tile = remoteTiles.get(p.id);
    if (!tile) {
      tile = createTile(p.name, false);
      tile.dataset.participantId = p.id;
      remoteTiles.set(p.id, tile);
    } else if (p.name && tile.dataset.name !== p.name) {
      tile.dataset.name = p.name;
      tile.querySelector('figcaption')!.textContent = p.name;
    }
    return tile;
  };

  client.on('participant_joined', (p) => {
    tileFor(p);
    inCall();
  });
  client.on('participant_left', ({ participantId }) => {
    remoteTiles.get(participantId)?.remove();
    remoteTiles.delete(participantId);
    inCall();
  });
  client.on('track', ({ participantId, stream }) => {
    const p = client.participants.get(participantId);
    if (p) attach(tileFor(p), stream);
  });
  client.on('error', ({ code, message }) => setStatus(`Error ${code}: ${message}`, 'error'));
  client.on('negotiation_failed', ({ error }) =>
    setStatus(`Negotiation failed: ${error instanceof Error ? error.message : String(error)}`, 'error'),
  );
  let inRoom = false; // a failed join keeps its own message rather than "Disconnected"
  client.on('disconnected', ({ code, reason }) => {
    if (inRoom) setStatus(`Disconnected (${code}${reason ? `: ${reason}` : ''})`, 'error');
  });
  // Closing the tab closes the socket anyway; saying `leave` lets the others know at once.
  addEventListener('pagehide', () => client.leave());

  setStatus('Connecting…');
  try {
    const joined = await client.join(undefined, room, name);
    localTile.dataset.participantId = joined.participant_id;
    inRoom = true;
  } catch (err) {
    setStatus(`Could not join: ${err instanceof Error ? err.message : String(err)}`, 'error');
    return;
  }
  for (const p of client.participants.values()) tileFor(p);
  inCall();
  client.pc!.addEventListener('connectionstatechange', () => {
    if (client.pc!.connectionState === 'failed') setStatus('Media connection failed', 'error');
  });

  if (!publish) {
    localTile.remove();
    showNotice('Receive-only: not sending camera or microphone (publish=0 in the URL).');
    return;
  }
  try {
    attach(localTile, await client.publishCamera());
  } catch (err) {
    const why = err instanceof DOMException ? err.name : String(err);
    showNotice(`No camera or microphone (${why}): you are in the call receive-only.`);
    localTile.querySelector('figcaption')!.textContent = `${name} (you, receive-only)`;
  }
}

void main();
