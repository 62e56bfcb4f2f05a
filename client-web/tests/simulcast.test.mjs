// Simulcast with per-subscriber layers, end to end in Chromium: one publisher sends its fake
// 1280x720 camera as three encodings; two subscribers show it at 320x180 and 1280x720 and each
// decodes the matching layer. Enlarging the small tile switches that subscriber up within 3 s
// without a stall; with both tiles small the publisher's `f` encoding is paused (dynacast) and
// resumes when a tile grows again; a hidden tile receives nothing.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import test from 'node:test';
import { launchBrowser, pollUntil, roomUrl, rtpStats } from './browser.mjs';
import { startServer } from './server.mjs';

const VIEWPORT = { viewport: { width: 1600, height: 1000 }, deviceScaleFactor: 1 };

/** The one inbound video stream of a subscriber page (or undefined). */
async function inboundVideo(page) {
  return (await rtpStats(page, 'inbound-rtp')).find((r) => r.kind === 'video');
}

/** The publisher's outbound video encodings by rid. */
async function outboundByRid(page) {
  const out = {};
  for (const r of await rtpStats(page, 'outbound-rtp')) if (r.kind === 'video' && r.rid) out[r.rid] = r;
  return out;
}

const layerOverlay = (page) => page.evaluate(() => document.querySelector('[data-remote] .layer')?.textContent ?? '');

test('each subscriber decodes the layer its tile needs; switches, dynacast and hiding', { timeout: 150_000 }, async (t) => {
  const server = await startServer(t);
  const { open } = await launchBrowser(t);
  const room = `sim-${randomBytes(4).toString('hex')}`;

  const pub = await open(roomUrl(server.url, room, 'pub'), 'pub', VIEWPORT);
  const small = await open(roomUrl(server.url, room, 'small', { publish: '0', overlay: '1' }), 'small', VIEWPORT);
  const large = await open(roomUrl(server.url, room, 'large', { publish: '0', overlay: '1' }), 'large', VIEWPORT);
  const size = async (page, w, h) => {
    await pollUntil(() => page.evaluate(() => document.querySelector('[data-remote][data-name="pub"]') !== null), {
      timeoutMs: 20_000,
      what: 'the publisher tile',
    });
    await page.evaluate(([w, h]) => window.fanoutDemo.setTileSize('pub', w, h), [w, h]);
  };
  await size(small, 320, 180);
  await size(large, 1280, 720);

  // (a) Each decodes its layer: about 320 and about 1280 pixels wide.
  const decodes = async (page, lo, hi) => {
    const a = await inboundVideo(page);
    await sleep(500);
    const b = await inboundVideo(page);
    return a && b && b.framesDecoded > a.framesDecoded && b.frameWidth >= lo && b.frameWidth <= hi ? b : null;
  };
  const describe = async () =>
    `small: ${JSON.stringify(await inboundVideo(small))} ${await layerOverlay(small)}\n` +
    `large: ${JSON.stringify(await inboundVideo(large))} ${await layerOverlay(large)}\n` +
    `publisher: ${JSON.stringify(await outboundByRid(pub))}\n` +
    `debug: ${await (await fetch(`${server.url}/debug/rooms`)).text()}`;
  await pollUntil(() => decodes(small, 300, 340), { timeoutMs: 40_000, what: 'the small tile decoding ~320 px', describe });
  await pollUntil(() => decodes(large, 1200, 1280), { timeoutMs: 40_000, what: 'the large tile decoding ~1280 px', describe });
  // The overlays say so too (the report travels over signaling, next to the media).
  const overlayIs = (page, layer) => async () =>
    (await page.evaluate(() => document.querySelector('[data-remote] .layer').dataset.layer)) === layer;
  await pollUntil(overlayIs(small, 'low'), { timeoutMs: 3000, what: 'the small overlay saying low', describe });
  await pollUntil(overlayIs(large, 'high'), { timeoutMs: 3000, what: 'the large overlay saying high', describe });

  // (b) Enlarging the small tile raises it to the high layer within 3 s, and decoding goes on.
  const before = await inboundVideo(small);
  const t0 = Date.now();
  await small.evaluate(() => window.fanoutDemo.setTileSize('pub', 1280, 720));
  let lastGrowth = Date.now();
  let frames = before.framesDecoded;
  let longestStall = 0;
  let switched = null;
  while (Date.now() - t0 < 5000) {
    const r = await inboundVideo(small);
    if (r.framesDecoded > frames) {
      longestStall = Math.max(longestStall, Date.now() - lastGrowth);
      lastGrowth = Date.now();
      frames = r.framesDecoded;
    }
    if (switched === null && r.frameWidth >= 1200) switched = Date.now() - t0;
    await sleep(50);
  }
  longestStall = Math.max(longestStall, Date.now() - lastGrowth);
  console.log(`enlarged: high layer decoded after ${switched} ms; longest gap between decoded frames ${longestStall} ms`);
  assert.ok(switched !== null && switched <= 3000, `switched up after ${switched} ms\n${await describe()}`);
  assert.ok(frames > before.framesDecoded, 'framesDecoded kept rising');

  // (d) Both tiles small: nobody needs `f`, so the publisher's f encoding goes inactive; a tile
  // growing again brings it back.
  await small.evaluate(() => window.fanoutDemo.setTileSize('pub', 320, 180));
  await large.evaluate(() => window.fanoutDemo.setTileSize('pub', 320, 180));
  await pollUntil(async () => (await outboundByRid(pub)).f?.active === false, {
    timeoutMs: 10_000,
    what: "the publisher's f encoding to be paused",
    describe,
  });
  const paused = (await outboundByRid(pub)).f.bytesSent;
  await sleep(1000);
  assert.equal((await outboundByRid(pub)).f.bytesSent, paused, 'a paused encoding sends nothing');
  const grow = Date.now();
  await large.evaluate(() => window.fanoutDemo.setTileSize('pub', 1280, 720));
  await pollUntil(async () => (await outboundByRid(pub)).f?.active === true, {
    timeoutMs: 3_000,
    what: "the publisher's f encoding to resume",
    describe,
  });
  console.log(`f resumed ${Date.now() - grow} ms after a tile grew`);
  await pollUntil(() => decodes(large, 1200, 1280), { timeoutMs: 10_000, what: 'the large tile back on ~1280 px', describe });

  // (c) Hiding a tile stops its inbound bytes.
  await small.evaluate(() => window.fanoutDemo.setTileHidden('pub', true));
  await sleep(1000);
  const hidden = await inboundVideo(small);
  await sleep(2000);
  const later = await inboundVideo(small);
  assert.equal(later.bytesReceived, hidden.bytesReceived, `a hidden tile receives no video\n${await describe()}`);
  await pollUntil(overlayIs(small, 'paused'), { timeoutMs: 3000, what: 'the hidden overlay saying paused', describe });
  // The other subscriber is unaffected.
  assert.ok(await decodes(large, 1200, 1280), `the large tile keeps decoding\n${await describe()}`);
});
