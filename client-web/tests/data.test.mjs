// Data messages between Chromium browsers through the server (docs/protocol.md, "Data messages"),
// on the demo page's data channels, sent and read through the client library (`window.fanout`):
//   - the channels come up when the client's first offer (its camera) collides with the server's
//     (the server offers the channels; a Chromium that offered them itself and rolled that offer
//     back never negotiated them again);
//   - reliable messages arrive complete and in order (1,000 of them, and one of 64 KiB), stamped
//     with the sender's participant id and identity;
//   - a message to one identity reaches only it; lossy messages are never mixed into the reliable
//     stream; a client that enables data mid-call gets messages from then on;
//   - each limit's error: too large for its channel (the library refuses it), too many per second
//     (the server's `data_rate_limited`); the admin API's message; the metrics;
//   - Firefox and Chromium exchange messages both ways.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import test from 'node:test';
import { decodesVideo, launchBrowser, launchFirefox, pollUntil, roomUrl, signalingLog } from './browser.mjs';
import { startServer } from './server.mjs';

/**
 * A page init script that forces an offer collision on the first negotiation: the client's first
 * offer is held until the server's first offer has arrived (so the server, with its own offer
 * outstanding, ignores the client's), then the server's offer is handed to the page.
 */
function forceOfferCollision() {
  const Native = WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      let ourOffer = null;
      let theirOffer = null;
      const send = Native.prototype.send;
      const release = () => {
        if (ourOffer === null || !theirOffer || theirOffer === 'done') return;
        if (ourOffer) send.call(this, ourOffer);
        const data = theirOffer;
        window.__collided = ourOffer !== '';
        ourOffer = theirOffer = 'done';
        // Our offer reaches the server first; then the page sees the server's (a collision).
        setTimeout(() => this.dispatchEvent(Object.assign(new MessageEvent('message', { data }), { released: true })), 100);
      };
      this.send = (data) => {
        const msg = typeof data === 'string' ? JSON.parse(data) : {};
        if (msg.type === 'offer') window.__offersOut = (window.__offersOut ?? 0) + 1;
        // The descriptions sent, for failure messages.
        if (msg.sdp) (window.__sdpOut ??= []).push(`${msg.type}:\n${msg.sdp}`);
        if (ourOffer === null && msg.type === 'offer') {
          ourOffer = data;
          release();
          return;
        }
        send.call(this, data);
      };
      this.addEventListener('message', (e) => {
        if (e.released || theirOffer !== null || typeof e.data !== 'string' || JSON.parse(e.data).type !== 'offer') return;
        e.stopImmediatePropagation();
        theirOffer = e.data;
        release();
        // A client with nothing to offer would wait for ever.
        setTimeout(() => ourOffer === null && ((ourOffer = ''), release()), 5000);
      });
    }
  };
}

/** Starts recording the page's `data` events in `window.__data` (binary payloads as arrays). */
const recordData = (page) =>
  page.evaluate(() => {
    window.__data = [];
    window.fanout.on('data', (m) =>
      window.__data.push({ ...m, payload: typeof m.payload === 'string' ? m.payload : Array.from(m.payload) }),
    );
    window.__errors = [];
    window.fanout.on('error', (e) => window.__errors.push(e));
  });
const received = (page) => page.evaluate(() => window.__data);

/** Whether the page's reliable data channel is open. */
const dataOpen = (page) => page.evaluate(() => window.fanout.pc?.sctp?.state === 'connected');

/** The page's participant id, once joined. */
const joined = (page) => pollUntil(() => page.evaluate(() => window.fanout.participantId), { timeoutMs: 20_000, what: 'the join' });

/** The identity another page knows `participantId` by. */
const identityOf = (page, participantId) => page.evaluate((id) => window.fanout.participants.get(id)?.identity, participantId);

test('data channels open when the client offer collides with the server offer', { timeout: 90_000 }, async (t) => {
  const server = await startServer(t);
  const { open } = await launchBrowser(t);
  const room = `dc-${randomBytes(4).toString('hex')}`;
  const pub = await open(roomUrl(server.url, room, 'pub', { data: '1' }), 'pub');
  await pollUntil(() => pub.evaluate(() => window.fanout.pc?.getSenders().filter((s) => s.track).length === 2), {
    timeoutMs: 20_000,
    what: 'the publisher publishing',
  });
  const sub = await open(roomUrl(server.url, room, 'sub', { data: '1' }), 'sub', {}, { initScripts: [forceOfferCollision] });
  const describe = async () =>
    `sub signaling:\n${await signalingLog(sub)}\n` +
    `offers sent by sub: ${await sub.evaluate(() => window.__offersOut)}\n` +
    `descriptions sent by sub:\n${(await sub.evaluate(() => window.__sdpOut ?? [])).join('\n')}\n` +
    `server: ${await (await fetch(`${server.url}/debug/rooms`)).text()}`;
  await pollUntil(() => dataOpen(sub), { timeoutMs: 20_000, what: "the subscriber's data channels", describe });
  await pollUntil(() => dataOpen(pub), { timeoutMs: 20_000, what: "the publisher's data channels", describe });
  await decodesVideo(sub, 'the subscriber');
  await recordData(sub);
  await pub.evaluate(() => window.fanout.sendData('after the collision'));
  await pollUntil(async () => (await received(sub)).length === 1, { timeoutMs: 10_000, what: 'the message', describe });
  assert.equal((await received(sub))[0].payload, 'after the collision');
  // The collision happened, and no offer loop followed: a few offers in all, not the dozens a
  // second of a Chromium that rolled back its own data channels.
  assert.equal(await sub.evaluate(() => window.__collided), true, 'the offers collided');
  const offers = await sub.evaluate(() => window.__offersOut);
  assert.ok(offers <= 4, `the subscriber sent ${offers} offers\n${await describe()}`);
  assert.deepEqual(await sub.evaluate(() => window.__errors), [], 'no error (rate_limited would mean an offer loop)');
});

/** Keys for the server, so that the test can make an admin token with `fanout token create`. */
const KEYS = { FANOUT_API_KEY: 'data-test', FANOUT_API_SECRET: 'data-test-secret-data-test-secret-0123' };

/** The value of the sample `name` (with its labels) in Prometheus text, 0 if absent. */
const sample = (text, name) => Number(text.split('\n').find((l) => l.startsWith(`${name} `))?.split(' ')[1] ?? 0);

test('reliable, lossy and addressed messages between three browsers; enabling data mid-call; limits; the admin API', { timeout: 120_000 }, async (t) => {
  const server = await startServer(t, [], { env: KEYS });
  const { open } = await launchBrowser(t);
  const room = `data-${randomBytes(4).toString('hex')}`;
  // Receive-only pages: this test is about data, not media. Carol starts without data channels.
  const a = await open(roomUrl(server.url, room, 'alice', { publish: '0', data: '1' }), 'alice');
  const b = await open(roomUrl(server.url, room, 'bob', { publish: '0', data: '1' }), 'bob');
  const c = await open(roomUrl(server.url, room, 'carol', { publish: '0', data: '0' }), 'carol');
  const [aliceId, bobId, carolId] = [await joined(a), await joined(b), await joined(c)];
  for (const page of [a, b]) await pollUntil(() => dataOpen(page), { timeoutMs: 20_000, what: 'the data channels' });
  for (const page of [a, b, c]) await recordData(page);

  // 1,000 reliable messages, complete and in order, stamped with the sender.
  await a.evaluate(() => {
    for (let i = 0; i < 1000; i++) window.fanout.sendData(`m${i}`, { topic: 'seq' });
  });
  await pollUntil(async () => (await received(b)).length === 1000, { timeoutMs: 30_000, what: 'bob receiving 1,000 messages' });
  const got = await received(b);
  assert.deepEqual(
    got.map((m) => m.payload),
    Array.from({ length: 1000 }, (_, i) => `m${i}`),
  );
  const aliceIdentity = await identityOf(b, aliceId);
  for (const m of got) {
    assert.deepEqual([m.participantId, m.identity, m.topic, m.reliable], [aliceId, aliceIdentity, 'seq', true]);
  }
  // Carol has no data channels: nothing reached her.
  assert.deepEqual(await received(c), []);

  // One message of the largest size (64 KiB with its envelope), intact.
  const size = await a.evaluate(() => {
    const bytes = new Uint8Array(64 * 1024 - 7); // version, flags, topic "big" (1 + 3), recipient count
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7) & 0xff;
    window.fanout.sendData(bytes, { topic: 'big' });
    return bytes.length;
  });
  await pollUntil(async () => (await received(b)).length === 1001, {
    timeoutMs: 20_000,
    what: 'the 64 KiB message',
    describe: async () =>
      `alice's sctp max message size: ${await a.evaluate(() => window.fanout.pc.sctp?.maxMessageSize)}, ` +
      `bob's: ${await b.evaluate(() => window.fanout.pc.sctp?.maxMessageSize)}, alice's errors: ${JSON.stringify(await a.evaluate(() => window.__errors))}\n` +
      `metrics: ${(await (await fetch(`${server.url}/metrics`)).text()).split('\n').filter((l) => l.includes('data')).join('\n')}`,
  });
  const big = (await received(b))[1000];
  assert.equal(big.topic, 'big');
  assert.equal(big.payload.length, size);
  assert.ok(big.payload.every((v, i) => v === ((i * 7) & 0xff)), 'the 64 KiB message arrives intact');
  // One byte more is refused by the library, before it is sent.
  const tooBig = await a.evaluate(() => {
    try {
      window.fanout.sendData(new Uint8Array(64 * 1024 - 6), { topic: 'big' });
      return null;
    } catch (err) {
      return `${err.name}: ${err.message}`;
    }
  });
  assert.match(tooBig ?? 'sent', /^RangeError: .*exceeds the reliable channel's limit of 65536 bytes/);

  // Carol enables data mid-call; then bob writes to carol's identity only, and to everyone.
  await c.evaluate(() => window.fanout.enableData());
  await pollUntil(() => dataOpen(c), { timeoutMs: 20_000, what: "carol's data channels, enabled mid-call" });
  const carolIdentity = await identityOf(b, carolId);
  await b.evaluate((to) => {
    window.fanout.sendData('for carol only', { to: [to] });
    window.fanout.sendData('for everyone');
  }, carolIdentity);
  await pollUntil(async () => (await received(c)).length === 2, { timeoutMs: 20_000, what: 'carol receiving 2 messages' });
  assert.deepEqual((await received(c)).map((m) => [m.payload, m.participantId]), [
    ['for carol only', bobId],
    ['for everyone', bobId],
  ]);
  await pollUntil(async () => (await received(a)).length === 1, { timeoutMs: 10_000, what: "alice receiving bob's broadcast" });
  assert.deepEqual((await received(a)).map((m) => m.payload), ['for everyone'], 'the addressed message did not reach alice');

  // Lossy messages (loopback loses none, but they may be) arrive on their own channel, never as
  // reliable ones, and the reliable stream sent between them stays complete and in order.
  for (const page of [b]) await page.evaluate(() => (window.__data.length = 0));
  await a.evaluate(() => {
    for (let i = 0; i < 100; i++) {
      window.fanout.sendData(`r${i}`);
      window.fanout.sendData(`l${i}`, { reliable: false });
    }
  });
  await pollUntil(async () => (await received(b)).filter((m) => m.reliable).length === 100, { timeoutMs: 20_000, what: 'the reliable 100' });
  const mixed = await received(b);
  assert.deepEqual(
    mixed.filter((m) => m.reliable).map((m) => m.payload),
    Array.from({ length: 100 }, (_, i) => `r${i}`),
  );
  const lossy = mixed.filter((m) => !m.reliable).map((m) => m.payload);
  assert.ok(lossy.every((p) => /^l\d+$/.test(p)), `lossy payloads ${lossy.slice(0, 5)}`);
  assert.ok(lossy.length <= 100);

  // The admin API sends into the room, as the server (no participant id, no identity).
  const admin = execFileSync(server.bin, ['token', 'create', '--identity', 'ops', '--grants', 'admin'], {
    env: { ...process.env, ...KEYS },
  })
    .toString()
    .trim();
  for (const page of [a, b, c]) await page.evaluate(() => (window.__data.length = 0));
  const res = await fetch(`${server.url}/api/rooms/${room}/data`, {
    method: 'POST',
    headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
    body: JSON.stringify({ text: 'from the server', topic: 'ops' }),
  });
  assert.deepEqual([res.status, await res.json()], [200, { delivered: 3 }]);
  for (const page of [a, b, c]) {
    await pollUntil(async () => (await received(page)).length === 1, { timeoutMs: 10_000, what: "the server's message" });
    const [m] = await received(page);
    assert.deepEqual([m.payload, m.topic, m.participantId, m.identity], ['from the server', 'ops', null, '']);
  }

  // Too many messages a second: the server drops the excess and says so.
  await a.evaluate(() => {
    for (let i = 0; i < 1500; i++) window.fanout.sendData('flood');
  });
  await pollUntil(() => a.evaluate(() => window.__errors.some((e) => e.code === 'data_rate_limited')), {
    timeoutMs: 20_000,
    what: 'the data_rate_limited error',
    describe: async () => JSON.stringify(await a.evaluate(() => window.__errors)),
  });
  // The metrics count what was relayed and what was dropped.
  const metrics = await (await fetch(`${server.url}/metrics`)).text();
  assert.ok(sample(metrics, 'fanout_data_messages_relayed_total') >= 1000 + 1 + 3 + 100, metrics);
  assert.ok(sample(metrics, 'fanout_data_bytes_relayed_total') > 64 * 1024);
  assert.ok(sample(metrics, 'fanout_data_messages_dropped_total{reason="rate_limited"}') > 0);
});

test('Firefox and Chromium exchange data messages through the server', { timeout: 120_000 }, async (t) => {
  const server = await startServer(t);
  const { open } = await launchBrowser(t);
  const { open: openFirefox } = await launchFirefox(t);
  const room = `dataff-${randomBytes(4).toString('hex')}`;
  const fx = await openFirefox(roomUrl(server.url, room, 'fx', { publish: '0', data: '1' }), 'firefox');
  const ch = await open(roomUrl(server.url, room, 'ch', { publish: '0', data: '1' }), 'chromium');
  const [fxId, chId] = [await joined(fx), await joined(ch)];
  for (const page of [fx, ch]) {
    await pollUntil(() => dataOpen(page), { timeoutMs: 30_000, what: 'the data channels' });
    await recordData(page);
  }
  for (const [from, to, id] of [
    [fx, ch, fxId],
    [ch, fx, chId],
  ]) {
    await from.evaluate(() => {
      for (let i = 0; i < 200; i++) window.fanout.sendData(`m${i}`);
      window.fanout.sendData(new Uint8Array([1, 2, 3]), { topic: 'bin', reliable: false });
    });
    await pollUntil(async () => (await received(to)).filter((m) => m.reliable).length === 200, { timeoutMs: 20_000, what: '200 messages' });
    const got = await received(to);
    assert.deepEqual(
      got.filter((m) => m.reliable).map((m) => m.payload),
      Array.from({ length: 200 }, (_, i) => `m${i}`),
    );
    assert.ok(got.every((m) => m.participantId === id));
    // Loopback loses nothing: the lossy one arrives too (binary, on its channel).
    await pollUntil(async () => (await received(to)).some((m) => !m.reliable), { timeoutMs: 10_000, what: 'the lossy message' });
    assert.deepEqual(
      (await received(to)).filter((m) => !m.reliable).map((m) => [m.topic, m.payload]),
      [['bin', [1, 2, 3]]],
    );
  }
});
