// A client whose UDP is blocked still gets its call, two ways. Its Chromium runs in a network
// namespace this test creates, joined to this host by a veth pair, where nftables drops every
// UDP datagram it would send: no UDP candidate pair can work.
// 1. ICE over TCP: the server (no TURN) announces passive TCP candidates on its ICE-TCP port;
//    the selected pair is TCP, ending at that port.
// 2. TURN over TCP: the server runs its embedded TURN server (--dev) and no ICE-TCP; the selected
//    local candidate is a relay reached over TCP.
// 3. TURN over TLS: the server serves HTTPS with a self-signed certificate and its embedded TURN
//    server on a TLS port too, and the namespace also drops TCP to the plain TURN port: the
//    selected local candidate is a relay reached over TLS (Chromium told to accept the
//    certificate).
// Each time the blocked participant and one on loopback decode each other's video, and the drop
// counter shows UDP was tried. Needs root, iproute2 and nftables (and openssl for the TLS case);
// skipped with the reason otherwise.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'node:test';
import { decodesVideo, launchBrowser, launchBrowserIn, pollUntil, roomUrl, selectedPair } from './browser.mjs';
import { namespacesUnavailable, run, vethNamespace } from './netns.mjs';
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

/** A self-signed certificate for `ip` (openssl), removed when `t` ends: the server's TLS args. */
function certificateFor(t, ip) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fanout-cert-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  run('openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert,
    '-days', '1', '-subj', '/CN=fanout-test', '-addext', `subjectAltName=IP:${ip},IP:127.0.0.1`);
  return ['--tls-cert', cert, '--tls-key', key];
}

/**
 * A call between a participant in the UDP-blocked namespace and one on loopback, with the server
 * started with `serverArgs`; returns the blocked participant's selected pair.
 */
async function blockedCall(t, serverArgs, { tls = false, blockTcpPorts = [] } = {}) {
  const { id, ns, hostIp, inNs } = blockedNamespace(t);
  for (const port of blockTcpPorts) inNs('nft', `add rule inet block out tcp dport ${port} counter drop`);
  const certArgs = tls ? certificateFor(t, hostIp) : [];
  const server = await startServer(t, ['--media-ip', '0.0.0.0', '--announce-ip', hostIp, ...certArgs, ...serverArgs], {
    host: '0.0.0.0',
  });
  const base = `${tls ? 'https' : 'http'}://${hostIp}:${server.port}`;
  // The test's certificate is self-signed: Chromium is told not to check it (page and TURN/TLS).
  const browserArgs = tls ? ['--ignore-certificate-errors'] : [];
  const openBlocked = await launchBrowserIn(t, ns, [`--unsafely-treat-insecure-origin-as-secure=${base}`, ...browserArgs]);
  const { open } = await launchBrowser(t, browserArgs);
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

const skipTls = skip ?? namespacesUnavailable(['openssl']);
if (skipTls && !skip) console.log(`TURN over TLS test skipped: ${skipTls}`);

test('a client that can reach only TLS calls through the embedded TURN server over TLS', { skip: skipTls ?? false, timeout: 120_000 }, async (t) => {
  const turnPort = await freeTcpPort();
  const tlsPort = await freeTcpPort();
  // UDP is dropped, and so is TCP to the TURN port: only the TLS port gets through.
  const pair = await blockedCall(t, ['--turn-port', String(turnPort), '--turn-tls-port', String(tlsPort)], {
    tls: true,
    blockTcpPorts: [turnPort],
  });
  assert.equal(pair.local.type, 'relay', JSON.stringify(pair));
  assert.equal(pair.local.relayProtocol, 'tls', JSON.stringify(pair));
});
