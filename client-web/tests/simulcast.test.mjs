// Simulcast with per-subscriber layers, end to end in Chromium: one publisher sends its fake
// 1280x720 camera as three encodings (q/h/f); two receive-only subscribers show it at 320x180 and
// 1280x720 device pixels and each decodes the matching layer. Then:
//   (b) enlarging the small tile switches that subscriber up within 3 s while decoding goes on;
//   (c) a hidden tile receives no video bytes, and decodes again once shown;
//   (d) with both tiles small nobody needs `f`, so the publisher's f encoding is paused
//       (dynacast, `publisher_layers` → setParameters), and it resumes when a tile grows again;
//   (e) `setMaxQuality('low')` caps a large tile at the low layer, and `high` lifts the cap.
// Only (b) has a wall-clock deadline (3 s, issue 4); everything else is polled generously.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import test from 'node:test';
import { decodesWidth, inboundVideo, launchBrowser, pollUntil, roomUrl, rtpStats, signalingLog } from './browser.mjs';
import { startServer } from './server.mjs';

const VIEWPORT = { viewport: { width: 1600, height: 1000 }, deviceScaleFactor: 1 };
/** Decoded widths that count as the low and the high layer of a 1280x720 source. */
const LOW = [300, 340];
const HIGH = [1200, 1280];

/** The publisher's outbound video encodings by rid. */
async function outboundByRid(page) {
  const out = {};
  for (const r of await rtpStats(page, 'outbound-rtp')) if (r.kind === 'video' && r.rid) out[r.rid] = r;
  return out;
}

/** The remote tile's layer overlay: `data-layer` (low/medium/high/paused/none), reason and text. */
const overlay = (page) =>
  page.evaluate(() => {
    const el = document.querySelector('[data-remote][data-name="pub"] .layer');
    return el ? { layer: el.dataset.layer, reason: el.dataset.reason, text: el.textContent } : null;
  });

const setTile = (page, w, h) => page.evaluate(([w, h]) => window.fanoutDemo.setTileSize('pub', w, h), [w, h]);
const hideTile = (page, hidden) => page.evaluate((hidden) => window.fanoutDemo.setTileHidden('pub', hidden), hidden);

const compact = (r) =>
  r ? `frameWidth=${r.frameWidth} framesDecoded=${r.framesDecoded} bytesReceived=${r.bytesReceived} packetsReceived=${r.packetsReceived}` : 'no inbound video';
const compactOut = (byRid) =>
  Object.entries(byRid)
    .map(([rid, r]) => `${rid}: active=${r.active} ${r.frameWidth}x${r.frameHeight} framesEncoded=${r.framesEncoded} bytesSent=${r.bytesSent}`)
    .join('; ');

test('each subscriber gets the layer its tile needs: switching up, hiding, dynacast, max quality', { timeout: 120_000 }, async (t) => {
  const server = await startServer(t);
  const { open } = await launchBrowser(t);
  const room = `sim-${randomBytes(4).toString('hex')}`;
  const started = Date.now();
  const since = () => `${((Date.now() - started) / 1000).toFixed(1)} s`;

  const pub = await open(roomUrl(server.url, room, 'pub'), 'pub', VIEWPORT);
  // Receive-only subscribers whose remote tiles are exactly 320x180 and 1280x720 (device pixels).
  const small = await open(roomUrl(server.url, room, 'small', { publish: '0', overlay: '1', tile: '320x180' }), 'small', VIEWPORT);
  const large = await open(roomUrl(server.url, room, 'large', { publish: '0', overlay: '1', tile: '1280x720' }), 'large', VIEWPORT);

  /** Everything a failure message needs: stats, overlays, signaling and the server's view. */
  const describe = async () =>
    `small: ${compact(await inboundVideo(small))} overlay=${JSON.stringify(await overlay(small))}\n` +
    `large: ${compact(await inboundVideo(large))} overlay=${JSON.stringify(await overlay(large))}\n` +
    `publisher: ${compactOut(await outboundByRid(pub))}\n` +
    `small signaling:\n${await signalingLog(small)}\n` +
    `large signaling:\n${await signalingLog(large)}\n` +
    `publisher signaling:\n${await signalingLog(pub)}\n` +
    `GET /debug/rooms: ${await (await fetch(`${server.url}/debug/rooms`)).text()}`;

  // The fake camera honours the 1280x720 request (the layers below are fractions of it).
  const camera = await pollUntil(
    () => pub.evaluate(() => window.fanout.pc?.getSenders().find((s) => s.track?.kind === 'video')?.track.getSettings()),
    { timeoutMs: 20_000, what: "the publisher's camera", describe },
  );
  assert.deepEqual([camera.width, camera.height], [1280, 720], `fake camera settings ${JSON.stringify(camera)}`);

  for (const page of [small, large]) {
    await pollUntil(() => page.evaluate(() => document.querySelector('[data-remote][data-name="pub"]') !== null), {
      timeoutMs: 20_000,
      what: 'the publisher tile',
      describe,
    });
  }

  // (a) Each decodes its layer: about 320 and about 1280 pixels wide.
  await pollUntil(() => decodesWidth(small, LOW), { timeoutMs: 30_000, what: 'the 320x180 tile decoding ~320 px', describe });
  await pollUntil(() => decodesWidth(large, HIGH), { timeoutMs: 30_000, what: 'the 1280x720 tile decoding ~1280 px', describe });
  console.log(`(a) small decodes ~320 px and large ~1280 px at ${since()}`);
  // The library reported the tiles' sizes in device pixels (what the server chose from).
  const reported = (page) =>
    page.evaluate(() => window.__signaling.filter((e) => e.dir === 'out' && e.msg.type === 'track_settings').map((e) => e.msg).at(-1));
  assert.deepEqual(
    [(await reported(small))?.width, (await reported(small))?.height, (await reported(large))?.width, (await reported(large))?.height],
    [320, 180, 1280, 720],
    `last track_settings sent\n${await describe()}`,
  );
  // The overlays say so too: the server's `track_layer` reached the page.
  const overlayIs = (page, layer, reason) => async () => {
    const o = await overlay(page);
    return o?.layer === layer && (reason === undefined || o.reason === reason);
  };
  await pollUntil(overlayIs(small, 'low', 'display_size'), { timeoutMs: 5000, what: 'the small overlay saying low (display_size)', describe });
  await pollUntil(overlayIs(large, 'high', 'display_size'), { timeoutMs: 5000, what: 'the large overlay saying high (display_size)', describe });

  // (b) Enlarging the small tile raises it to the high layer within 3 s, and decoding goes on.
  const before = await inboundVideo(small);
  const t0 = Date.now();
  await setTile(small, 1280, 720);
  let lastGrowth = Date.now();
  let frames = before.framesDecoded;
  let longestGap = 0;
  let switched = null;
  let last = before;
  while (Date.now() - t0 < 5000) {
    last = await inboundVideo(small);
    if (last.framesDecoded > frames) {
      longestGap = Math.max(longestGap, Date.now() - lastGrowth);
      lastGrowth = Date.now();
      frames = last.framesDecoded;
    }
    if (switched === null && last.frameWidth >= HIGH[0]) switched = Date.now() - t0;
    await sleep(50);
  }
  longestGap = Math.max(longestGap, Date.now() - lastGrowth);
  console.log(`(b) enlarged: ~1280 px decoded after ${switched} ms; longest gap between decoded frames ${longestGap} ms`);
  assert.ok(switched !== null && switched <= 3000, `switched up after ${switched} ms (deadline 3000 ms)\n${await describe()}`);
  assert.ok(
    last.framesDecoded > before.framesDecoded && (await decodesWidth(small, HIGH)),
    `framesDecoded kept rising through the switch (${before.framesDecoded} → ${last.framesDecoded})\n${await describe()}`,
  );

  // (c) Hiding a tile stops its inbound bytes (after ~1 s for the switch); showing it resumes.
  await hideTile(small, true);
  await sleep(1000);
  const hidden = await inboundVideo(small);
  await sleep(2000);
  const stillHidden = await inboundVideo(small);
  assert.equal(
    stillHidden.bytesReceived,
    hidden.bytesReceived,
    `a hidden tile received ${stillHidden.bytesReceived - hidden.bytesReceived} video bytes in 2 s\n${await describe()}`,
  );
  await pollUntil(overlayIs(small, 'paused', 'hidden'), { timeoutMs: 5000, what: 'the hidden overlay saying paused (hidden)', describe });
  assert.ok(await decodesWidth(large, HIGH), `the other subscriber keeps decoding ~1280 px\n${await describe()}`);
  const shown = Date.now();
  await hideTile(small, false);
  await pollUntil(() => decodesWidth(small, HIGH), { timeoutMs: 10_000, what: 'the tile decoding again once shown', describe });
  console.log(`(c) hidden tile got no bytes; decoding again ${Date.now() - shown} ms after being shown`);

  // (d) Both tiles small: nobody needs `f`, so the publisher's f encoding goes inactive and stops
  // sending; a tile growing again brings it back.
  const shrunk = Date.now();
  await setTile(small, 320, 180);
  await setTile(large, 320, 180);
  await pollUntil(async () => (await outboundByRid(pub)).f?.active === false, {
    timeoutMs: 10_000,
    what: "the publisher's f encoding to be inactive",
    describe,
  });
  console.log(`(d) f inactive ${Date.now() - shrunk} ms after both tiles shrank`);
  // Packets already in Chromium's pacer when the encoding went inactive still leave (and the
  // stats lag a little): a CI run saw 3 packets (3282 bytes) after the flip. Let it settle,
  // then nothing more may be sent.
  await sleep(500);
  const paused = (await outboundByRid(pub)).f;
  await sleep(1000);
  const pausedLater = (await outboundByRid(pub)).f;
  assert.equal(pausedLater.bytesSent, paused.bytesSent, `the inactive f encoding still sends\n${await describe()}`);
  assert.ok(await decodesWidth(small, LOW), `the small tiles keep decoding ~320 px\n${await describe()}`);
  const grown = Date.now();
  await setTile(large, 1280, 720);
  await pollUntil(async () => (await outboundByRid(pub)).f?.active === true, {
    timeoutMs: 3000,
    what: "the publisher's f encoding to be active again",
    describe,
  });
  const resumedMs = Date.now() - grown;
  await pollUntil(() => decodesWidth(large, HIGH), { timeoutMs: 10_000, what: 'the large tile back on ~1280 px', describe });
  console.log(`(d) f active ${resumedMs} ms after a tile grew; ~1280 px decoded after ${Date.now() - grown} ms`);

  // (e) max_quality: a 1280x720 tile capped at low decodes ~320 px (reason preference); lifting
  // the cap brings the high layer back.
  const trackId = await large.evaluate(() => window.fanout.videoTrackIds(document.querySelector('[data-remote][data-name="pub"]').dataset.participantId)[0]);
  assert.match(trackId ?? '', /^TR_/, 'the library maps the received video to its TR_ id');
  await large.evaluate((id) => window.fanout.setMaxQuality(id, 'low'), trackId);
  await pollUntil(() => decodesWidth(large, LOW), { timeoutMs: 10_000, what: 'the capped tile decoding ~320 px', describe });
  await pollUntil(overlayIs(large, 'low', 'preference'), { timeoutMs: 5000, what: 'the capped overlay saying low (preference)', describe });
  await large.evaluate((id) => window.fanout.setMaxQuality(id, 'high'), trackId);
  await pollUntil(() => decodesWidth(large, HIGH), { timeoutMs: 10_000, what: 'the uncapped tile back on ~1280 px', describe });
  console.log(`(e) max_quality low/high honoured; done at ${since()}`);
});
