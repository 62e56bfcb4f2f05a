// The connection-test page (`/diag`): what a user or support person needs when "it does not
// connect". It joins a throw-away room like any participant (so it gets the ICE servers the
// server hands out, TURN credentials included), gathers ICE candidates against those servers and
// lists each with its type (host, srflx, relay), protocol and address, then makes a test call to
// the server (a silent audio track) and shows the selected candidate pair and its round-trip
// time. Every result is also in data attributes, for scripts and tests.

import { FanoutClient, FanoutError } from './fanout';

type TokenSource = (room: string, name: string) => Promise<string | undefined>;

interface Gathered {
  type: string;
  protocol: string;
  address: string;
  port: number;
  url: string;
}

function el<K extends keyof HTMLElementTagNameMap>(tag: K, text = '', attrs: Record<string, string> = {}): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  e.textContent = text;
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

function row(table: HTMLTableElement, cells: string[], attrs: Record<string, string> = {}): HTMLTableRowElement {
  const tr = el('tr', '', attrs);
  for (const c of cells) tr.append(el('td', c));
  table.tBodies[0].append(tr);
  return tr;
}

function table(headers: string[], id: string): HTMLTableElement {
  const t = el('table', '', { id });
  const head = el('tr');
  for (const h of headers) head.append(el('th', h));
  t.createTHead().append(head);
  t.createTBody();
  return t;
}

/** Candidates the browser gathers against `iceServers` (until gathering completes, 10 s at most). */
async function gather(iceServers: RTCIceServer[]): Promise<Gathered[]> {
  const pc = new RTCPeerConnection({ iceServers });
  pc.createDataChannel('diag');
  const found: Gathered[] = [];
  const done = new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, 10_000);
    pc.onicecandidate = (e) => {
      if (!e.candidate) {
        clearTimeout(timer);
        resolve();
        return;
      }
      const c = e.candidate;
      if (!c.candidate) return;
      found.push({
        type: c.type ?? '?',
        protocol: c.protocol ?? '?',
        address: c.address ?? '?',
        port: c.port ?? 0,
        url: (e as RTCPeerConnectionIceEvent & { url?: string }).url ?? '',
      });
    };
  });
  await pc.setLocalDescription(await pc.createOffer());
  await done;
  pc.close();
  return found;
}

/** The selected candidate pair of `pc`, once it has one. */
async function selectedPair(pc: RTCPeerConnection): Promise<Record<string, string | number> | null> {
  const stats = await pc.getStats();
  let pair: RTCIceCandidatePairStats | null = null;
  stats.forEach((r) => {
    if (r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded') pair = r as RTCIceCandidatePairStats;
  });
  if (!pair) return null;
  const p = pair as RTCIceCandidatePairStats;
  const local = stats.get(p.localCandidateId);
  const remote = stats.get(p.remoteCandidateId);
  return {
    local: `${local?.candidateType} ${local?.protocol} ${local?.address}:${local?.port}`,
    remote: `${remote?.candidateType} ${remote?.protocol} ${remote?.address}:${remote?.port}`,
    localType: local?.candidateType ?? '?',
    rttMs: p.currentRoundTripTime === undefined ? -1 : Math.round(p.currentRoundTripTime * 1000),
  };
}

/** A silent audio track, so the test call negotiates a connection without a microphone. */
function silence(): MediaStream {
  const ctx = new AudioContext();
  const osc = ctx.createOscillator();
  const gain = ctx.createGain();
  gain.gain.value = 0;
  const dest = ctx.createMediaStreamDestination();
  osc.connect(gain).connect(dest);
  osc.start();
  return dest.stream;
}

export async function runDiag(accessToken: TokenSource): Promise<void> {
  document.title = 'Connection test · Fanout';
  document.getElementById('room')!.textContent = 'connection test';
  const status = document.getElementById('status')!;
  const say = (text: string, kind = 'info') => {
    status.textContent = text;
    status.dataset.kind = kind;
  };
  const grid = document.getElementById('grid')!;
  const section = el('section', '', { id: 'diag', 'data-state': 'running' });
  grid.replaceWith(section);
  const candidates = table(['type', 'protocol', 'address', 'port', 'server'], 'candidates');
  const pairTable = table(['local', 'server', 'round trip'], 'pair');
  section.append(el('h2', 'ICE candidates this browser gathers'), candidates, el('h2', 'Test call to the server'), pairTable);
  const finish = (state: 'done' | 'failed', text: string) => {
    section.dataset.state = state;
    say(text, state === 'done' ? 'ok' : 'error');
  };

  const room = `diag-${Math.random().toString(36).slice(2, 8)}`;
  const name = 'connection test';
  const client = new FanoutClient();
  let joined;
  say('Joining a test room…');
  try {
    joined = await client.join(undefined, room, name, await accessToken(room, name));
  } catch (err) {
    finish('failed', `Could not reach the server: ${err instanceof FanoutError || err instanceof Error ? err.message : String(err)}`);
    return;
  }
  section.dataset.iceServers = String(joined.ice_servers.length);

  say('Gathering ICE candidates…');
  const found = await gather(joined.ice_servers);
  for (const c of found) row(candidates, [c.type, c.protocol, c.address, String(c.port), c.url], { 'data-type': c.type, 'data-protocol': c.protocol });
  for (const type of ['srflx', 'relay']) {
    if (!found.some((c) => c.type === type)) {
      const why = joined.ice_servers.length === 0 ? 'the server hands out no STUN/TURN servers' : 'none gathered';
      row(candidates, [type, '-', `(${why})`, '', ''], { 'data-missing': type });
    }
  }

  say('Test call…');
  client.publish(silence());
  const pc = client.pc!;
  const deadline = Date.now() + 15_000;
  let pair = null;
  while (Date.now() < deadline) {
    pair = await selectedPair(pc);
    if (pair && Number(pair.rttMs) >= 0) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  client.leave();
  if (!pair) {
    row(pairTable, ['-', '-', '-'], { 'data-failed': 'true' });
    finish('failed', `The test call did not connect (connection state: ${pc.connectionState}): UDP to the server's media port is blocked, and no TURN relay got through.`);
    return;
  }
  const rtt = Number(pair.rttMs);
  row(pairTable, [String(pair.local), String(pair.remote), rtt >= 0 ? `${rtt} ms` : 'unknown'], {
    'data-local-type': String(pair.localType),
    'data-rtt-ms': String(rtt),
  });
  finish('done', `Connected (${pair.localType} candidate), round trip ${rtt >= 0 ? `${rtt} ms` : 'unknown'}.`);
}
