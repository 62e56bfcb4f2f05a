// TURN credentials that an unmodified coturn accepts: the test starts Debian's coturn on
// loopback with `use-auth-secret` and a `static-auth-secret`, and Fanout with the same secret as
// `turn_secret`. A browser joined with `?relay=1` (iceTransportPolicy "relay") can reach the
// server only through coturn, with the credentials Fanout made for it in `joined`; the other
// participant decodes its video, and its selected candidate pair is a relay one.
// Skipped with the reason if coturn (`turnserver`) is not installed. A second test does the
// same with no coturn at all: `fanout serve --dev` runs its embedded TURN server and hands it out.

import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import test from 'node:test';
import { diagResult, launchBrowser, pollUntil, roomUrl, rtpStats } from './browser.mjs';
import { startServer } from './server.mjs';

function missingCoturn() {
  try {
    execFileSync('sh', ['-c', 'command -v turnserver'], { stdio: 'ignore' });
    return null;
  } catch {
    return '`turnserver` is not installed (Debian package coturn)';
  }
}

const skip = missingCoturn();
if (skip) console.log(`TURN test skipped: ${skip}`);

/** A free TCP port (coturn listens on UDP and TCP on it). */
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** The local candidate type of the page's selected candidate pair. */
function selectedLocalType(page) {
  return page.evaluate(async () => {
    const stats = await window.fanout.pc.getStats();
    let pair = null;
    stats.forEach((r) => {
      if (r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded') pair = r;
    });
    if (!pair) return null;
    let type = null;
    stats.forEach((r) => {
      if (r.id === pair.localCandidateId) type = `${r.candidateType}/${r.relayProtocol ?? r.protocol}`;
    });
    return type;
  });
}

test('a relay-only browser calls through an unmodified coturn with the credentials from joined', { skip: skip ?? false, timeout: 90_000 }, async (t) => {
  const secret = randomBytes(16).toString('hex');
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fanout-turn-'));
  const log = path.join(dir, 'coturn.log');
  const coturn = spawn(
    'turnserver',
    [
      '-n', // no configuration file
      '--listening-ip=127.0.0.1',
      `--listening-port=${port}`,
      '--relay-ip=127.0.0.1',
      '--min-port=49160',
      '--max-port=49200',
      '--use-auth-secret',
      `--static-auth-secret=${secret}`,
      '--realm=fanout.test',
      '--allow-loopback-peers',
      '--no-cli',
      '--no-tls',
      '--no-dtls',
      '--no-multicast-peers',
      `--log-file=${log}`,
      '--simple-log',
    ],
    { stdio: 'ignore' },
  );
  t.after(() => {
    coturn.kill('SIGTERM');
    if (t.passed !== true && fs.existsSync(log)) console.log(`coturn log:\n${fs.readFileSync(log, 'utf8').slice(-4000)}`);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  await sleep(500);
  assert.equal(coturn.exitCode, null, 'coturn is running');

  // Only coturn: the embedded TURN server (on in --dev) stays off.
  const server = await startServer(t, ['--turn-url', `turn:127.0.0.1:${port}?transport=udp`, '--turn-secret', secret, '--turn-embedded', 'false']);
  const { open } = await launchBrowser(t);
  const relayed = await relayedCall(server, open, 'coturn');
  const servers = await relayed.evaluate(() => window.fanout.pc.getConfiguration().iceServers);
  assert.equal(servers.length, 1, JSON.stringify(servers));
  assert.match([servers[0].urls].flat()[0], new RegExp(`:${port}\\?`));

  // The connection-test page gathers a relay candidate from the same coturn.
  const diag = await open(`${server.url}/diag`, 'diag');
  const r = await diagResult(diag);
  assert.equal(r.state, 'done', JSON.stringify(r));
  assert.ok(r.candidates.some((c) => c.type === 'relay' && c.protocol === 'udp'), `no relay candidate on /diag: ${JSON.stringify(r)}`);
  assert.ok(!r.missing.includes('relay'), JSON.stringify(r));
});

test('a relay-only browser calls out of the box through the embedded TURN server (--dev)', { timeout: 90_000 }, async (t) => {
  const port = await freePort();
  const server = await startServer(t, ['--turn-port', String(port)]);
  const { open } = await launchBrowser(t);
  const relayed = await relayedCall(server, open, 'the embedded TURN server');
  const servers = await relayed.evaluate(() => window.fanout.pc.getConfiguration().iceServers);
  assert.deepEqual(
    servers.flatMap((s) => [s.urls].flat()),
    [`turn:127.0.0.1:${port}?transport=udp`, `turn:127.0.0.1:${port}?transport=tcp`],
  );
});

/**
 * A participant that may only use relay candidates (`?relay=1`) publishes; a viewer on loopback
 * must decode its video, and its selected local candidate must be a relay one. Returns the
 * relayed participant's page.
 */
async function relayedCall(server, open, through) {
  const room = `turn-${randomBytes(4).toString('hex')}`;
  const relayed = await open(roomUrl(server.url, room, 'relayed', { relay: '1' }), 'relayed');
  const viewer = await open(roomUrl(server.url, room, 'viewer', { publish: '0' }), 'viewer');

  let last = [];
  await pollUntil(
    async () => {
      const before = await rtpStats(viewer, 'inbound-rtp');
      await sleep(1500);
      last = await rtpStats(viewer, 'inbound-rtp');
      return last.some((r) => r.kind === 'video' && r.framesDecoded > 0 && r.framesDecoded > (before.find((b) => b.id === r.id)?.framesDecoded ?? 0));
    },
    {
      timeoutMs: 40_000,
      intervalMs: 0,
      what: "the viewer decoding the relayed participant's video",
      describe: async () =>
        `viewer inbound: ${JSON.stringify(last)}\nrelayed outbound: ${JSON.stringify(await rtpStats(relayed, 'outbound-rtp'))}\n` +
        `relayed ice servers: ${JSON.stringify(await relayed.evaluate(() => window.fanout.pc?.getConfiguration().iceServers))}\n` +
        `relayed selected pair: ${await selectedLocalType(relayed)}`,
    },
  );
  const type = await selectedLocalType(relayed);
  assert.equal(type, 'relay/udp', `the relayed participant's selected local candidate is ${type}`);
  const servers = await relayed.evaluate(() => window.fanout.pc.getConfiguration().iceServers);
  assert.match(servers[0].username, /^\d+:dev-/);
  console.log(`relayed participant connected through ${through} (${type}); viewer decodes ${last.find((r) => r.kind === 'video')?.frameWidth} px`);
  return relayed;
}
