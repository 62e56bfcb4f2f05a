// A client whose network changes mid-call keeps its call. Its Chromium runs in a network
// namespace this test creates (joined to this host by a veth pair), in a call with a browser on
// loopback; the server runs its embedded TURN server (--dev). Two moves, one after the other,
// while the WebSocket (TCP) stays up, as it does when only a phone's UDP path moves:
// 1. NAT rebinding: from now on every UDP datagram the client sends leaves from a new address
//    (stateless nftables rewriting in the namespace; replies to the new address are rewritten
//    back). Chromium knows nothing of it; the server must follow the client to its new source
//    address once a fresh connectivity check arrives from there, with no ICE restart.
// 2. UDP dies altogether (nftables drops every UDP datagram the namespace sends), and for a while
//    TCP to the TURN server too, so no path is left: Chromium's path stays `disconnected` and the
//    client library restarts ICE (every 5 s while that lasts). Then TURN over TCP gets through
//    again and the call comes back through the embedded TURN server over TCP. (With TURN over
//    TCP open from the start, Chromium may switch to the relay pair it already has without any
//    restart, which would leave the library's restart untested.)
// Each time both participants decode each other again and the room never loses anybody.
// Needs root, iproute2 and nftables; skipped with the reason otherwise.

import assert from 'node:assert/strict';
import test from 'node:test';
import { decodesVideo, launchBrowser, launchBrowserIn, pollUntil, roomUrl, rtpStats, selectedPair } from './browser.mjs';
import { namespacesUnavailable, vethNamespace } from './netns.mjs';
import { freeTcpPort, startServer } from './server.mjs';

const skip = namespacesUnavailable(['ip', 'nft']);
if (skip) console.log(`network-change test skipped: ${skip}`);

/** Frames decoded so far by a page, over all its inbound video streams. */
async function framesDecoded(page) {
  return (await rtpStats(page, 'inbound-rtp'))
    .filter((r) => r.kind === 'video')
    .reduce((sum, r) => sum + (r.framesDecoded ?? 0), 0);
}

/** Waits until both pages decode 30 more frames than they had; returns the ms it took. */
async function bothDecodeAgain(pages, since, what) {
  const counts = await Promise.all(pages.map(framesDecoded));
  for (const [i, page] of pages.entries()) {
    await pollUntil(async () => (await framesDecoded(page)) > counts[i] + 30, {
      timeoutMs: 40_000,
      what: `${what}: page ${i} to decode again`,
      describe: async () => `frames ${await framesDecoded(page)} (were ${counts[i]})`,
    });
  }
  return Date.now() - since;
}

test('a client whose network changes mid-call keeps its call', { skip: skip ?? false, timeout: 150_000 }, async (t) => {
  const net = vethNamespace(t, { tag: 'mv', second: 219, prefixLen: 24 });
  const oldIp = net.nsIp;
  const newIp = `${net.subnet}.3`;
  const turnPort = await freeTcpPort();
  const server = await startServer(
    t,
    ['--media-ip', '0.0.0.0', '--announce-ip', net.hostIp, '--media-drivers', '1', '--turn-port', String(turnPort)],
    { host: '0.0.0.0' },
  );
  const base = `http://${net.hostIp}:${server.port}`;
  const openMoving = await launchBrowserIn(t, net.ns, [`--unsafely-treat-insecure-origin-as-secure=${base}`]);
  const { open } = await launchBrowser(t);
  const room = `move-${net.id}`;
  const moving = await openMoving(roomUrl(base, room, 'moving'), 'moving');
  const restarts = [];
  moving.on('console', (m) => {
    if (m.text().includes('restarting ICE')) restarts.push(Date.now());
  });
  const still = await open(roomUrl(server.url, room, 'still'), 'still');
  await decodesVideo(still, "still to decode the moving participant's video", { timeoutMs: 40_000 });
  await decodesVideo(moving, 'the moving participant to decode still', { timeoutMs: 40_000 });

  const participants = async () => {
    const snapshot = await (await fetch(`${server.url}/debug/rooms`)).json();
    return snapshot.rooms.find((r) => r.name === room)?.participants ?? [];
  };
  const remoteAddr = async () => (await participants()).find((p) => p.name === 'moving')?.remote_addr;
  const serverSees = (prefix, what) =>
    pollUntil(async () => {
      const addr = await remoteAddr();
      return addr?.startsWith(prefix) ? addr : null;
    }, { timeoutMs: 30_000, what, describe: async () => `remote_addr ${await remoteAddr()}` });
  const first = await serverSees(`${oldIp}:`, 'the server to see the client at its first address');
  const pairBefore = await selectedPair(moving);
  assert.equal(pairBefore?.local.address, oldIp, JSON.stringify(pairBefore));

  // 1. NAT rebinding: the client's UDP now leaves from newIp (the namespace answers ARP for it).
  net.inNs('ip', 'addr', 'add', `${newIp}/24`, 'dev', net.veth.inner);
  net.inNs('nft', 'add table ip rebind');
  net.inNs('nft', 'add chain ip rebind out { type filter hook postrouting priority 0; }');
  net.inNs('nft', `add rule ip rebind out ip saddr ${oldIp} meta l4proto udp counter ip saddr set ${newIp}`);
  net.inNs('nft', 'add chain ip rebind in { type filter hook prerouting priority -300; }');
  net.inNs('nft', `add rule ip rebind in ip daddr ${newIp} meta l4proto udp counter ip daddr set ${oldIp}`);
  let movedAt = Date.now();
  const rebound = await serverSees(`${newIp}:${first.split(':').pop()}`, 'the server to follow the client to its new source address');
  const followedMs = Date.now() - movedAt;
  const rebindMs = await bothDecodeAgain([still, moving], movedAt, 'after the NAT rebinding');
  assert.equal(restarts.length, 0, 'a NAT rebinding needs no ICE restart');
  assert.match(net.inNs('nft', 'list table ip rebind'), /packets [1-9]/, 'datagrams were rewritten');
  console.log(`NAT rebinding ${first} -> ${rebound}: server followed in ${followedMs} ms, media both ways in ${rebindMs} ms`);

  // 2. UDP dies, and TCP to the TURN server is cut for a while: only the WebSocket gets out.
  net.inNs('nft', 'add table inet dead');
  net.inNs('nft', 'add chain inet dead out { type filter hook output priority 0; }');
  net.inNs('nft', 'add rule inet dead out meta l4proto udp counter drop');
  net.inNs('nft', 'add table inet noturn');
  net.inNs('nft', 'add chain inet noturn out { type filter hook output priority 0; }');
  net.inNs('nft', `add rule inet noturn out tcp dport ${turnPort} counter drop`);
  movedAt = Date.now();
  await pollUntil(async () => restarts.length > 0, {
    timeoutMs: 30_000,
    what: 'the client library to restart ICE on a dead path',
    describe: async () => JSON.stringify(await selectedPair(moving)),
  });
  // TURN over TCP gets through again: the restarted ICE finds the relay.
  net.inNs('nft', 'delete table inet noturn');
  const relayed = await pollUntil(async () => {
    const pair = await selectedPair(moving);
    return pair?.local.type === 'relay' && pair.local.relayProtocol === 'tcp' ? pair : null;
  }, { timeoutMs: 40_000, what: 'a relay over TCP to be selected', describe: async () => JSON.stringify(await selectedPair(moving)) });
  const deadMs = await bothDecodeAgain([still, moving], movedAt, 'after UDP died');
  const viaRelay = await serverSees(`${relayed.local.address}:${relayed.local.port}`, "the server to see the client at its relay's address");
  assert.match(net.inNs('nft', 'list table inet dead'), /packets [1-9]/, 'UDP was tried and dropped');
  console.log(
    `UDP died: ICE restarted ${restarts[0] - movedAt} ms later (${restarts.length} restarts), media both ways in ${deadMs} ms, ` +
      `server sees ${viaRelay} (TURN/TCP relay)`,
  );
  assert.equal((await participants()).length, 2, 'the room never lost anybody');
});
