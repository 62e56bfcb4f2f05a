// WHIP ingest and WHEP egress from a browser: Chromium's own WebRTC stack publishes over plain
// HTTP (RFC 9725, from a page of another origin, so through the CORS preflight), trickling its
// candidates with PATCH; a participant on the demo page sees it in the grid like any browser and
// decodes its video; a WHEP player in another page plays it; DELETE ends it and its tile goes.
//
// The issue asked for an interop run with Debian's `whip-client` (simple-whip-client,
// GStreamer): on Debian 12 that binary aborts at start-up ("libsoup2 symbols detected. Using
// libsoup2 and libsoup3 in the same process is not supported": it links libsoup2 while libnice
// pulls in libsoup3 through gupnp-igd), so Chromium is the WHIP client we did not write.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import test from 'node:test';
import { launchBrowser, pollUntil, roomUrl, rtpStats } from './browser.mjs';
import { startServer } from './server.mjs';
import { whepPlay, whipPublish } from './whip-pages.mjs';

test('a browser publishing over WHIP shows up in the grid and is decoded, a WHEP player plays it; DELETE removes it', { timeout: 90_000 }, async (t) => {
  const { open } = await launchBrowser(t);
  const server = await startServer(t);
  const room = `whip-${randomBytes(4).toString('hex')}`;
  const viewer = await open(roomUrl(server.url, room, 'viewer', { publish: '0' }), 'viewer');

  // Another origin than the server's (localhost, not 127.0.0.1; both secure contexts, as
  // getUserMedia needs): the POST, PATCH and DELETE go through CORS.
  const publisher = await open(server.url.replace('127.0.0.1', 'localhost') + '/healthz', 'whip');
  const session = await publisher.evaluate(whipPublish, `${server.url}/whip/${room}?name=OBS`);
  assert.match(session, new RegExp(`/whip/${room}/PA_`));

  await pollUntil(
    async () => (await viewer.$$eval('[data-remote]', (tiles) => tiles.map((t) => t.dataset.name))).includes('OBS'),
    { timeoutMs: 15_000, what: 'the WHIP publisher tile (OBS) on the viewer' },
  );
  let last = [];
  await pollUntil(
    async () => {
      const before = await rtpStats(viewer, 'inbound-rtp');
      await sleep(1500);
      const after = (last = await rtpStats(viewer, 'inbound-rtp'));
      const grew = (kind, field) =>
        after.some((r) => r.kind === kind && r[field] > (before.find((b) => b.id === r.id)?.[field] ?? 0) && r[field] > 0);
      return grew('video', 'framesDecoded') && grew('audio', 'packetsReceived');
    },
    {
      timeoutMs: 30_000,
      intervalMs: 0,
      what: 'the viewer decoding the WHIP video and receiving its audio',
      describe: async () =>
        `viewer inbound: ${JSON.stringify(last)}\npublisher outbound: ${JSON.stringify(await rtpStats(publisher, 'outbound-rtp'))}\n` +
        `server: ${await (await fetch(`${server.url}/debug/rooms`)).text()}`,
    },
  );
  const video = last.find((r) => r.kind === 'video');
  assert.equal(video.frameWidth, 640, `decoded ${video.frameWidth}x${video.frameHeight}`);
  const patches = await publisher.evaluate(() => window.whipPatches ?? []);
  assert.ok(patches.length > 0 && patches.every((s) => s === 204), `PATCH statuses ${patches}`);

  // A WHEP player (another page of another origin) plays the WHIP publisher.
  const publisherId = session.split('/').pop();
  const player = await open(server.url.replace('127.0.0.1', 'localhost') + '/healthz', 'whep');
  const playing = await player.evaluate(whepPlay, `${server.url}/whep/${room}/${publisherId}`);
  assert.match(playing, new RegExp(`/whep/${room}/${publisherId}/PA_`));
  let played = [];
  await pollUntil(
    async () => {
      const before = await rtpStats(player, 'inbound-rtp');
      await sleep(1500);
      played = await rtpStats(player, 'inbound-rtp');
      return played.some((r) => r.kind === 'video' && r.framesDecoded > (before.find((b) => b.id === r.id)?.framesDecoded ?? 0) && r.framesDecoded > 0);
    },
    { timeoutMs: 30_000, intervalMs: 0, what: 'the WHEP player decoding video', describe: async () => `player inbound: ${JSON.stringify(played)}` },
  );
  const streams = await player.evaluate(() => window.whepStreams ?? []);
  assert.ok(streams.length === 2 && streams.every((s) => s === publisherId), `WHEP streams ${streams}`);
  const whepVideo = played.find((r) => r.kind === 'video');
  assert.equal(whepVideo.frameWidth, 640);
  assert.equal(await player.evaluate(async () => (await fetch(window.whepSession, { method: 'DELETE' })).status), 200);

  const status = await publisher.evaluate(async () => (await fetch(window.whipSession, { method: 'DELETE' })).status);
  assert.equal(status, 200);
  await pollUntil(
    async () => !(await viewer.$$eval('[data-remote]', (tiles) => tiles.map((t) => t.dataset.name))).includes('OBS'),
    { timeoutMs: 10_000, what: 'the WHIP tile to disappear after DELETE' },
  );
  console.log(`WHIP publisher decoded at ${video.frameWidth}x${video.frameHeight}; PATCH statuses ${patches.join(',')}`);
});
