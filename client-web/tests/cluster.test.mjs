// Two Fanout nodes behind one URL, as behind a Kubernetes Service: a real redis-server on a free
// loopback port, nodes on 127.0.0.2 and 127.0.0.3, and a TCP load balancer on 127.0.0.1 that
// hands each connection to the next node that accepts it (round robin). Two browsers open the
// demo page through the balancer, so their page loads, tokens and signaling sockets land on
// either node; they are in one call. Then the room's node is killed (SIGKILL): both pages say
// "Reconnecting", the client library joins again through the balancer, the room is placed on the
// surviving node, and both decode each other's video again.

import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import test from 'node:test';
import { decodesVideo, launchBrowser, pollUntil, roomUrl } from './browser.mjs';
import { freeTcpPort, startServer } from './server.mjs';

// Loopback only (no namespaces), so it runs without root; it needs Redis.
const missing = (() => {
  try {
    execFileSync('sh', ['-c', 'command -v redis-server'], { stdio: 'ignore' });
    return null;
  } catch {
    return '`redis-server` is not installed (Debian package redis-server)';
  }
})();
if (missing) console.log(`cluster test skipped: ${missing}`);

/** A `redis-server` (no persistence) on a free port, killed when `t` ends; `get(key)` reads one key. */
async function startRedis(t) {
  const port = await freeTcpPort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: 'ignore',
  });
  const kill = () => child.kill('SIGKILL');
  process.once('exit', kill);
  t.after(() => {
    kill();
    process.removeListener('exit', kill);
  });
  /** Sends one inline command, resolves with the raw reply. */
  const command = (line) =>
    new Promise((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1');
      let reply = '';
      socket.on('data', (d) => {
        reply += d;
        if (/\r\n$/.test(reply) && (!reply.startsWith('$') || reply.startsWith('$-1') || reply.split('\r\n').length >= 3)) {
          socket.end();
          resolve(reply);
        }
      });
      socket.on('error', reject);
      socket.write(`${line}\r\n`);
    });
  await pollUntil(async () => (await command('PING').catch(() => '')).startsWith('+PONG'), { timeoutMs: 10_000, what: 'redis-server to start' });
  return {
    url: `redis://127.0.0.1:${port}`,
    async get(key) {
      const reply = await command(`GET ${key}`);
      return reply.startsWith('$-1') ? null : reply.split('\r\n')[1];
    },
  };
}

/**
 * A TCP load balancer on 127.0.0.1: each connection goes to the next of `backends` (round
 * robin) that accepts it, skipping nodes that refuse. Closed when `t` ends.
 */
async function loadBalancer(t, backends) {
  let next = 0;
  const sockets = new Set();
  const server = net.createServer((client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => {});
    const attempt = (left) => {
      const { host, port } = backends[next++ % backends.length];
      const upstream = net.connect(port, host);
      upstream.once('error', () => {
        upstream.destroy();
        if (left > 1 && !client.destroyed) attempt(left - 1);
        else client.destroy();
      });
      upstream.once('connect', () => {
        upstream.removeAllListeners('error');
        upstream.on('error', () => client.destroy());
        upstream.on('close', () => client.destroy());
        client.on('close', () => upstream.destroy());
        client.pipe(upstream);
        upstream.pipe(client);
      });
    };
    attempt(backends.length);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  return { url: `http://127.0.0.1:${server.address().port}` };
}

/** Records the page's client library reconnect events in `window.__reconnects`. */
function recordReconnects(page) {
  return page.evaluate(() => {
    window.__reconnects = [];
    window.fanout.on('reconnecting', (e) => window.__reconnects.push({ type: 'reconnecting', ...e }));
    window.fanout.on('reconnected', () => window.__reconnects.push({ type: 'reconnected' }));
  });
}

const status = (page) => page.evaluate(() => document.getElementById('status').textContent);

test(
  'two nodes behind one URL: a call through either node, and it resumes on the other when its node is killed',
  { skip: missing ?? false, timeout: 150_000 },
  async (t) => {
    const redis = await startRedis(t);
    const env = { FANOUT_API_KEY: 'cluster', FANOUT_API_SECRET: 'cluster-browser-test-secret-0123456789' };
    const common = ['--redis-url', redis.url, '--turn-embedded', 'false', '--media-drivers', '1'];
    const a = await startServer(t, [...common, '--node-id', 'node-a'], { host: '127.0.0.2', env });
    const b = await startServer(t, [...common, '--node-id', 'node-b'], { host: '127.0.0.3', env });
    const lb = await loadBalancer(t, [
      { host: '127.0.0.2', port: a.port },
      { host: '127.0.0.3', port: b.port },
    ]);
    const { open } = await launchBrowser(t);
    const room = `cluster-${randomBytes(3).toString('hex')}`;
    const alice = await open(roomUrl(lb.url, room, 'alice'), 'alice');
    const bob = await open(roomUrl(lb.url, room, 'bob'), 'bob');
    await decodesVideo(alice, "alice to decode bob's video");
    await decodesVideo(bob, "bob to decode alice's video");
    await recordReconnects(alice);
    await recordReconnects(bob);

    const owner = await redis.get(`fanout:room:${room}`);
    assert.ok(owner === 'node-a' || owner === 'node-b', `the room is claimed by a node: ${owner}`);
    const [victim, survivor] = owner === 'node-a' ? [a, 'node-b'] : [b, 'node-a'];
    await victim.kill();
    const killed = Date.now();

    // Both pages say so while the client library joins again.
    for (const [page, who] of [
      [alice, 'alice'],
      [bob, 'bob'],
    ]) {
      await pollUntil(async () => /Reconnecting/.test(await status(page)), {
        timeoutMs: 10_000,
        intervalMs: 50,
        what: `${who}'s page to show "Reconnecting"`,
        describe: async () => `status: ${await status(page)}`,
      });
    }
    await decodesVideo(alice, "alice to decode bob's video again", { timeoutMs: 40_000 });
    await decodesVideo(bob, "bob to decode alice's video again", { timeoutMs: 40_000 });
    const resumed = Date.now() - killed;
    console.log(`room's node killed: media both ways again after ${resumed} ms (this includes 1.5 s decode sampling per page)`);

    assert.equal(await redis.get(`fanout:room:${room}`), survivor, 'the room moved to the surviving node');
    for (const page of [alice, bob]) {
      const events = await page.evaluate(() => window.__reconnects);
      assert.ok(events.some((e) => e.type === 'reconnecting'), JSON.stringify(events));
      assert.equal(events.at(-1)?.type, 'reconnected', JSON.stringify(events));
      assert.match(await status(page), /In call as \w+ · 1 other/);
    }
  },
);
