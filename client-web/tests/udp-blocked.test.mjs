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
import test from 'node:test';
import { decodesVideo, launchBrowser, launchBrowserIn, pollUntil, roomUrl, selectedPair } from './browser.mjs';
import { namespacesUnavailable, vethNamespace } from './netns.mjs';
import { freeTcpPort, startServer } from './server.mjs';

const skip = namespacesUnavailable(['ip', 'nft']);
if (skip) console.log(`UDP-blocked test skipped: ${skip}`);

/** The namespace with UDP blocked, and the host's address on its veth pair. */
function blockedNamespace(t) {
  const net = vethNamespace(t, { tag: 'udp', second: 218 });
  net.inNs('nft', 'add table inet block');
  net.inNs('nft', 'add chain inet block out { type filter hook output priority 0; }');
  net.inNs('nft', 'add rule inet block out meta l4proto udp counter drop');
  return net;
}

/**
 * A call between a participant in the UDP-blocked namespace and one on loopback, with the server
 * started with `serverArgs`; returns the blocked participant's selected pair.
 */
async function blockedCall(t, serverArgs) {
  const { id, ns, hostIp, inNs } = blockedNamespace(t);
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
  const dropped = inNs('nft', 'list chain inet block out');
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
