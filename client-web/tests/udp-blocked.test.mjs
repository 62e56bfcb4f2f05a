// A client whose UDP is blocked still gets its call, two ways. Its Chromium runs in a network
// namespace this test creates, joined to this host by a veth pair, where nftables drops every
// UDP datagram it would send: no UDP candidate pair can work.
// 1. ICE over TCP: the server (no TURN) announces passive TCP candidates on its ICE-TCP port;
//    the selected pair is TCP, ending at that port.
// 2. TURN over TCP: the server runs its embedded TURN server (--dev) and no ICE-TCP; the selected
//    local candidate is a relay reached over TCP.
// Each time the blocked participant and one on loopback decode each other's video, and the drop
// counter shows UDP was tried. Needs root, iproute2 and nftables; skipped with the reason
// otherwise.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import test from 'node:test';
import { decodesVideo, launchBrowser, launchBrowserIn, pollUntil, roomUrl, selectedPair } from './browser.mjs';
import { freeTcpPort, startServer } from './server.mjs';

function run(cmd, ...args) {
  return execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
}

function unavailable() {
  if (process.getuid?.() !== 0) return 'needs root to create a network namespace';
  for (const tool of ['ip', 'nft']) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    } catch {
      return `\`${tool}\` is not installed (Debian packages iproute2, nftables)`;
    }
  }
  return null;
}

const skip = unavailable();
if (skip) console.log(`UDP-blocked test skipped: ${skip}`);

/** The namespace with UDP blocked, and the host's address on its veth pair. */
function blockedNamespace(t) {
  const id = randomBytes(3).toString('hex');
  const ns = `fo-udp-${id}`;
  const veth = `foud${id}`;
  const subnet = `10.218.${randomInt(1, 250)}`;
  const hostIp = `${subnet}.1`;
  const cleanup = () => {
    try { run('ip', 'netns', 'del', ns); } catch {}
    try { run('ip', 'link', 'del', `${veth}a`); } catch {}
  };
  process.once('exit', cleanup);
  t.after(() => {
    cleanup();
    process.removeListener('exit', cleanup);
  });
  run('ip', 'netns', 'add', ns);
  run('ip', 'link', 'add', `${veth}a`, 'type', 'veth', 'peer', 'name', `${veth}b`);
  run('ip', 'link', 'set', `${veth}b`, 'netns', ns);
  run('ip', 'addr', 'add', `${hostIp}/30`, 'dev', `${veth}a`);
  run('ip', 'link', 'set', `${veth}a`, 'up');
  run('ip', 'netns', 'exec', ns, 'ip', 'addr', 'add', `${subnet}.2/30`, 'dev', `${veth}b`);
  run('ip', 'netns', 'exec', ns, 'ip', 'link', 'set', `${veth}b`, 'up');
  run('ip', 'netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up');
  run('ip', 'netns', 'exec', ns, 'nft', 'add table inet block');
  run('ip', 'netns', 'exec', ns, 'nft', 'add chain inet block out { type filter hook output priority 0; }');
  run('ip', 'netns', 'exec', ns, 'nft', 'add rule inet block out meta l4proto udp counter drop');
  return { id, ns, hostIp };
}

/**
 * A call between a participant in the UDP-blocked namespace and one on loopback, with the server
 * started with `serverArgs`; returns the blocked participant's selected pair.
 */
async function blockedCall(t, serverArgs) {
  const { id, ns, hostIp } = blockedNamespace(t);
  const server = await startServer(t, ['--media-ip', '0.0.0.0', '--announce-ip', hostIp, ...serverArgs], {
    host: '0.0.0.0',
  });
  const base = `http://${hostIp}:${server.port}`;
  const openBlocked = await launchBrowserIn(t, ns, [`--unsafely-treat-insecure-origin-as-secure=${base}`]);
  const { open } = await launchBrowser(t);
  const room = `udp-${id}`;
  const blocked = await openBlocked(roomUrl(base, room, 'blocked'), 'blocked');
  const free = await open(roomUrl(server.url, room, 'free'), 'free');
  await decodesVideo(free, "free to decode the UDP-blocked participant's video", { timeoutMs: 40_000 });
  await decodesVideo(blocked, 'the UDP-blocked participant to decode free', { timeoutMs: 40_000 });

  const pair = await pollUntil(() => selectedPair(blocked), { timeoutMs: 10_000, what: 'the blocked selected pair' });
  console.log(`blocked participant's pair: ${JSON.stringify(pair)}`);
  const dropped = run('ip', 'netns', 'exec', ns, 'nft', 'list chain inet block out');
  assert.match(dropped, /packets [1-9]/, `UDP was tried and dropped: ${dropped}`);
  return pair;
}

test('a client whose UDP is blocked connects over ICE-TCP to the server\'s TCP port', { skip: skip ?? false, timeout: 120_000 }, async (t) => {
  const tcpPort = await freeTcpPort();
  const pair = await blockedCall(t, ['--ice-tcp-port', String(tcpPort), '--turn-embedded', 'false', '--media-drivers', '1']);
  assert.equal(pair.local.protocol, 'tcp', JSON.stringify(pair));
  assert.equal(pair.remote.protocol, 'tcp', JSON.stringify(pair));
  assert.equal(pair.remote.port, tcpPort, JSON.stringify(pair));
});

test('a client whose UDP is blocked calls through the embedded TURN server over TCP', { skip: skip ?? false, timeout: 120_000 }, async (t) => {
  const turnPort = await freeTcpPort();
  const pair = await blockedCall(t, ['--turn-port', String(turnPort)]);
  assert.equal(pair.local.type, 'relay', JSON.stringify(pair));
  assert.equal(pair.local.relayProtocol, 'tcp', JSON.stringify(pair));
});
