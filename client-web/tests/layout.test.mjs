// The demo page's layout follows the window, and the server's layer choice follows the layout:
//   - in a 1920x1080 window a 1:1 call shows the other participant's tile at least 640 px wide,
//     and that page decodes the high simulcast layer;
//   - in a 480x360 window every participant's tile is inside the window (no scrolling) and
//     every remote video decodes;
//   - a pinned tile (its Pin button's shortcut) takes the stage: larger than the others, which
//     share a strip.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import test from 'node:test';
import { decodesWidth, launchBrowser, pollUntil, roomUrl, rtpStats } from './browser.mjs';
import { startServer } from './server.mjs';

/** Every tile's box on `page` (CSS pixels), by name, and whether the page scrolls. */
const boxes = (page) =>
  page.evaluate(() => ({
    tiles: [...document.querySelectorAll('.tile')].map((t) => {
      const r = t.getBoundingClientRect();
      return { name: t.dataset.name, left: r.left, top: r.top, right: r.right, bottom: r.bottom, width: r.width };
    }),
    scrolls: document.documentElement.scrollHeight > innerHeight || document.documentElement.scrollWidth > innerWidth,
    window: { width: innerWidth, height: innerHeight },
  }));

test('tiles fill a large window (and get the high layer), fit a small one, and a pin takes the stage', { timeout: 150_000 }, async (t) => {
  const server = await startServer(t);
  const { open } = await launchBrowser(t);
  const room = `layout-${randomBytes(4).toString('hex')}`;
  const large = { viewport: { width: 1920, height: 1080 }, deviceScaleFactor: 1 };
  const alice = await open(roomUrl(server.url, room, 'alice'), 'alice', large);
  const bob = await open(roomUrl(server.url, room, 'bob'), 'bob', large);

  // A 1:1 call in 1920x1080: alice's tile at bob is >= 640 px wide; bob decodes her high layer.
  await pollUntil(async () => (await boxes(bob)).tiles.length === 2, { timeoutMs: 20_000, what: "bob's two tiles" });
  const big = (await boxes(bob)).tiles.find((x) => x.name === 'alice');
  assert.ok(big.width >= 640, `alice's tile at bob is ${big.width} px wide`);
  await pollUntil(() => decodesWidth(bob, [1200, 1280]), {
    timeoutMs: 30_000,
    what: "bob decoding alice's high layer",
    describe: async () => JSON.stringify(await rtpStats(bob, 'inbound-rtp')),
  });

  // A 480x360 window with two others: both tiles (and our own) inside it, both videos decode.
  const carol = await open(roomUrl(server.url, room, 'carol', { publish: '0' }), 'carol', { viewport: { width: 480, height: 360 }, deviceScaleFactor: 1 });
  await pollUntil(async () => (await boxes(carol)).tiles.length === 2, { timeoutMs: 20_000, what: "carol's two tiles" });
  const small = await boxes(carol);
  assert.equal(small.scrolls, false, 'the page does not scroll');
  for (const tile of small.tiles) {
    assert.ok(tile.left >= 0 && tile.top >= 0 && tile.right <= small.window.width && tile.bottom <= small.window.height, `${tile.name}: ${JSON.stringify(tile)}`);
    assert.ok(tile.width >= 100, `${tile.name} is ${tile.width} px wide`);
  }
  await pollUntil(
    async () => (await rtpStats(carol, 'inbound-rtp')).filter((r) => r.kind === 'video' && r.framesDecoded > 30).length === 2,
    { timeoutMs: 30_000, what: 'carol decoding both videos' },
  );

  // Alice leaves and dave joins (bob's page has its own, carol's and dave's tiles): bob pins
  // carol, whose tile takes the stage while the others share the strip below it.
  await alice.close();
  await open(roomUrl(server.url, room, 'dave', { publish: '0' }), 'dave', large);
  await pollUntil(async () => (await boxes(bob)).tiles.length === 3, { timeoutMs: 20_000, what: "bob's tiles for carol and dave" });
  // By its shortcut: carol's is the first remote tile, so 1 pins it.
  const pin = bob.getByRole('button', { name: 'Pin carol', exact: true });
  assert.equal(await pin.getAttribute('aria-keyshortcuts'), '1');
  await bob.keyboard.press('1');
  assert.equal(await pin.getAttribute('aria-pressed'), 'true');
  const staged = await boxes(bob);
  const pinned = staged.tiles.find((x) => x.name === 'carol');
  for (const other of staged.tiles.filter((x) => x.name !== 'carol')) {
    assert.ok(pinned.width > 2 * other.width, `pinned ${pinned.width} px vs ${other.name} ${other.width} px`);
    assert.ok(other.top >= pinned.bottom, `${other.name} in the strip below the stage`);
  }
  assert.equal(staged.scrolls, false);
});
