// Clients behind a NAT join a server behind a 1:1 NAT, through the address the server announces.
// The test builds the networks in namespaces of its own (all traffic stays inside them and on
// the veth pairs it creates):
//
//   browsers ── ns C ──(LAN 10.217.X.0/24)── ns N: home router, masquerade; STUN server (coturn)
//        ──(public 10.215.X.0/24)── ns R: 1:1 NAT, public 10.215.X.10 ↔ private 10.216.X.2
//        ──(private 10.216.X.0/24)── this host: the server, media socket on 10.216.X.2 only
//
// The server learns its public address two ways, one run each: by asking the STUN server at
// start-up (`--announce-stun`), and from a 1:1 mapping (`--nat-map PRIVATE=PUBLIC`). Two
// browsers in C load the page from the public address and call each other: each decodes the
// other's video, each selected pair ends at the public address and the server's UDP port, and
// the server sees both clients at the home router's public address (NAT'd sources). A third run
// has both browsers relay-only through the server's embedded TURN server: its relays must reach
// the server's public media address although R does not hairpin.
// Needs root, iproute2 and nftables (and coturn for the STUN run); skipped with the reason
// otherwise.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import test from 'node:test';
import { decodesVideo, launchBrowserIn, pollUntil, roomUrl, selectedPair } from './browser.mjs';
import { namespacesUnavailable, run } from './netns.mjs';
import { freeTcpPort, startServer, tail } from './server.mjs';

/**
 * Builds the three namespaces and four networks above; returns the addresses, a runner for
 * commands inside a namespace, and removes everything when `t` ends.
 */
function buildNetworks(t) {
  const id = randomBytes(3).toString('hex');
  const x = randomInt(1, 250);
  const ns = { c: `fo-nat-c-${id}`, n: `fo-nat-n-${id}`, r: `fo-nat-r-${id}` };
  const net = {
    lan: `10.217.${x}`,
    pub: `10.215.${x}`,
    priv: `10.216.${x}`,
  };
  const addr = {
    client: `${net.lan}.2`,
    homeLan: `${net.lan}.1`,
    homePublic: `${net.pub}.3`,
    routerPublic: `${net.pub}.1`,
    serverPublic: `${net.pub}.10`,
    routerPrivate: `${net.priv}.1`,
    serverPrivate: `${net.priv}.2`,
  };
  const link = { host: `fonh${id}`, rPriv: `fonr${id}`, rPub: `fonp${id}`, nPub: `fonq${id}`, nLan: `fonl${id}`, c: `fonc${id}` };
  const cleanup = () => {
    for (const n of Object.values(ns)) {
      try { run('ip', 'netns', 'del', n); } catch {}
    }
    try { run('ip', 'link', 'del', link.host); } catch {}
  };
  process.once('exit', cleanup);
  t.after(() => {
    cleanup();
    process.removeListener('exit', cleanup);
  });
  const inNs = (n, ...cmd) => run('ip', 'netns', 'exec', n, ...cmd);
  for (const n of Object.values(ns)) {
    run('ip', 'netns', 'add', n);
    inNs(n, 'ip', 'link', 'set', 'lo', 'up');
  }
  const pair = (a, aNs, b, bNs) => {
    run('ip', 'link', 'add', a, 'type', 'veth', 'peer', 'name', b);
    if (aNs) run('ip', 'link', 'set', a, 'netns', aNs);
    run('ip', 'link', 'set', b, 'netns', bNs);
  };
  const up = (n, dev, cidr) => {
    const cmd = ['ip', 'addr', 'add', cidr, 'dev', dev];
    if (n) inNs(n, ...cmd);
    else run(...cmd);
    if (n) inNs(n, 'ip', 'link', 'set', dev, 'up');
    else run('ip', 'link', 'set', dev, 'up');
  };
  // This host (the server) ↔ R (private network).
  pair(link.host, null, link.rPriv, ns.r);
  up(null, link.host, `${addr.serverPrivate}/24`);
  up(ns.r, link.rPriv, `${addr.routerPrivate}/24`);
  // R ↔ N (public network); R also answers for the server's public address.
  pair(link.rPub, ns.r, link.nPub, ns.n);
  up(ns.r, link.rPub, `${addr.routerPublic}/24`);
  inNs(ns.r, 'ip', 'addr', 'add', `${addr.serverPublic}/32`, 'dev', link.rPub);
  up(ns.n, link.nPub, `${addr.homePublic}/24`);
  // N ↔ C (the home LAN).
  pair(link.nLan, ns.n, link.c, ns.c);
  up(ns.n, link.nLan, `${addr.homeLan}/24`);
  up(ns.c, link.c, `${addr.client}/24`);
  inNs(ns.c, 'ip', 'route', 'add', 'default', 'via', addr.homeLan);
  inNs(ns.n, 'ip', 'route', 'add', 'default', 'via', addr.routerPublic);
  // Only the public network, through R (the route goes with the veth pair).
  run('ip', 'route', 'add', `${net.pub}.0/24`, 'via', addr.routerPrivate, 'dev', link.host);
  for (const n of [ns.r, ns.n]) inNs(n, 'sysctl', '-qw', 'net.ipv4.ip_forward=1');
  // R: 1:1 NAT for the server. N: masquerade the LAN.
  const nft = (n, rules) => {
    const file = path.join(os.tmpdir(), `fanout-nat-${id}-${n}.nft`);
    fs.writeFileSync(file, rules);
    try {
      inNs(n, 'nft', '-f', file);
    } finally {
      fs.rmSync(file, { force: true });
    }
  };
  nft(
    ns.r,
    `table ip nat {
  chain pre { type nat hook prerouting priority dstnat; ip daddr ${addr.serverPublic} dnat to ${addr.serverPrivate}; }
  chain post { type nat hook postrouting priority srcnat; ip saddr ${addr.serverPrivate} oifname "${link.rPub}" snat to ${addr.serverPublic}; }
}
`,
  );
  nft(
    ns.n,
    `table ip nat {
  chain post { type nat hook postrouting priority srcnat; oifname "${link.nPub}" masquerade; }
}
`,
  );
  return { id, ns, addr, inNs };
}

/**
 * Two browsers behind the home NAT call through the server's announced public address; with
 * `relay`, relay-only (iceTransportPolicy "relay") through the server's embedded TURN server.
 */
async function callThroughNat(t, networks, serverArgs, { relay = false } = {}) {
  const { addr } = networks;
  const server = await startServer(t, ['--media-ip', addr.serverPrivate, '--media-drivers', '1', ...serverArgs], { host: '0.0.0.0' });
  const base = `http://${addr.serverPublic}:${server.port}`;
  // Cameras need a secure context: plain http is one only on localhost, so vouch for this origin.
  const open = await launchBrowserIn(t, networks.ns.c, [`--unsafely-treat-insecure-origin-as-secure=${base}`]);
  const room = `nat-${networks.id}`;
  const extra = relay ? { relay: '1' } : {};
  const a = await open(roomUrl(base, room, 'a', extra), 'a');
  const b = await open(roomUrl(base, room, 'b', extra), 'b');
  await decodesVideo(a, 'a (behind the NAT) to decode b');
  await decodesVideo(b, 'b (behind the NAT) to decode a');
  for (const [name, page] of [['a', a], ['b', b]]) {
    const pair = await pollUntil(() => selectedPair(page), { timeoutMs: 10_000, what: `${name}'s selected pair` });
    console.log(`${name}: ${JSON.stringify(pair)}`);
    assert.equal(pair.remote.address, addr.serverPublic, `${name} reaches the announced address: ${JSON.stringify(pair)}`);
    assert.equal(pair.remote.port, server.udpPort);
    const local = pair.local;
    if (relay) {
      // A relay on the server's own TURN server: announced at the public address, or the
      // peer-reflexive form of it the server's check response taught Chromium (the relay
      // reaches the media port from the private address).
      assert.ok(local.relayProtocol, `relayed: ${JSON.stringify(pair)}`);
      assert.ok(
        (local.type === 'relay' && local.address === addr.serverPublic) || (local.type === 'prflx' && local.address === addr.serverPrivate),
        JSON.stringify(pair),
      );
    } else {
      // Its own LAN address, or the NAT's mapping of it that the server's check response reported.
      assert.ok(
        (local.type === 'host' && local.address === addr.client) || (['prflx', 'srflx'].includes(local.type) && local.address === addr.homePublic),
        `${name} sends from behind the home NAT: ${JSON.stringify(pair)}`,
      );
    }
  }
  // The server sees both at the home router's public address (their sources were translated),
  // or, relayed, at its own private address: the relays reach its media port directly, not
  // through the 1:1 NAT, which does not hairpin.
  const snapshot = await (await fetch(`${server.url}/debug/rooms`)).json();
  const seen = snapshot.rooms.find((r) => r.name === room).participants.map((p) => p.remote_addr);
  assert.equal(seen.length, 2);
  const source = relay ? addr.serverPrivate : addr.homePublic;
  for (const remote of seen) assert.ok(remote?.startsWith(`${source}:`), `sources ${seen}, expected ${source}`);
  return server;
}

const skipMap = namespacesUnavailable(['ip', 'nft']);
if (skipMap) console.log(`NAT tests skipped: ${skipMap}`);
const skipStun = skipMap ?? namespacesUnavailable(['turnserver']);
if (skipStun && !skipMap) console.log(`NAT test with a STUN server skipped: ${skipStun}`);

test('clients behind a NAT call a server behind a 1:1 NAT announced with --nat-map', { skip: skipMap ?? false, timeout: 120_000 }, async (t) => {
  const networks = buildNetworks(t);
  const { addr } = networks;
  await callThroughNat(t, networks, ['--nat-map', `${addr.serverPrivate}=${addr.serverPublic}`]);
});

test('relay-only clients behind a NAT call through the embedded TURN server of a server behind a 1:1 NAT', { skip: skipMap ?? false, timeout: 120_000 }, async (t) => {
  const networks = buildNetworks(t);
  const { addr } = networks;
  const turnPort = await freeTcpPort();
  await callThroughNat(t, networks, ['--nat-map', `${addr.serverPrivate}=${addr.serverPublic}`, '--turn-port', String(turnPort)], { relay: true });
});

test('the server learns its public address from a STUN server at start-up (--announce-stun)', { skip: skipStun ?? false, timeout: 120_000 }, async (t) => {
  const networks = buildNetworks(t);
  const { addr } = networks;
  // A STUN server on the public network (in the home router's namespace, on its public address).
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fanout-nat-stun-'));
  const log = path.join(dir, 'coturn.log');
  const coturn = spawn(
    'ip',
    ['netns', 'exec', networks.ns.n, 'turnserver', '-n', '--stun-only', `--listening-ip=${addr.homePublic}`, '--listening-port=3478', '--no-cli', '--no-tls', '--no-dtls', `--log-file=${log}`, '--simple-log'],
    { stdio: 'ignore' },
  );
  t.after(() => {
    coturn.kill('SIGTERM');
    if (t.passed !== true && fs.existsSync(log)) console.log(`coturn log:\n${fs.readFileSync(log, 'utf8').slice(-3000)}`);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  await sleep(500);
  assert.equal(coturn.exitCode, null, 'coturn is running');
  const server = await callThroughNat(t, networks, ['--announce-stun', `stun:${addr.homePublic}:3478`]);
  const startLog = tail(server.logPath, 400);
  assert.match(startLog, new RegExp(`announcing the public address the STUN server sees ip=${addr.serverPublic.replaceAll('.', '\\.')}`));
});
