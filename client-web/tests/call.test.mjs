// Three browsers' worth of participants in one room: everyone decodes everyone else's video and
// receives their audio, sees their named tiles, and a closed tab disappears from the others. The
// server runs one media driver: all three peer connections use its one UDP port.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import test from 'node:test';
import { growing, launchBrowser, pollUntil, roomUrl, rtpStats, selectedPair } from './browser.mjs';
import { startServer } from './server.mjs';

const NAMES = ['p1', 'p2', 'p3'];

/**
 * Waits (30 s at most) until `page` has exactly two inbound video streams whose framesDecoded
 * grows over 2 s, and two inbound audio streams whose packetsReceived grows.
 */
async function waitForMedia(page, name, serverUrl) {
  let last = [];
  await pollUntil(
    async () => {
      const before = await rtpStats(page, 'inbound-rtp');
      await sleep(2000);
      const after = await rtpStats(page, 'inbound-rtp');
      last = after;
      const video = after.filter((r) => r.kind === 'video');
      const audio = after.filter((r) => r.kind === 'audio');
      return (
        video.length === 2 &&
        audio.length === 2 &&
        growing(before, after, 'video', 'framesDecoded').length === 2 &&
        growing(before, after, 'audio', 'packetsReceived').length === 2
      );
    },
    {
      timeoutMs: 30_000,
      intervalMs: 0,
      what: `${name} to decode 2 videos and receive 2 audio streams`,
      describe: async () =>
        `${name} inbound-rtp: ${JSON.stringify(last, null, 1)}\n` +
        `${name} outbound-rtp: ${JSON.stringify(await rtpStats(page, 'outbound-rtp'))}\n` +
        `server: ${await (await fetch(`${serverUrl}/debug/rooms`)).text()}`,
    },
  );
}

const remoteTileNames = (page) =>
  page.$$eval('[data-remote]', (tiles) => tiles.map((t) => t.dataset.name).sort());

test('three participants see and hear each other; a closed tab disappears', { timeout: 180_000 }, async (t) => {
  const { open } = await launchBrowser(t);
  const server = await startServer(t, ['--media-drivers', '1']);
  const room = `call-${randomBytes(4).toString('hex')}`;

  const pages = {};
  for (const name of NAMES) pages[name] = await open(roomUrl(server.url, room, name), name);

  await Promise.all(NAMES.map((name) => waitForMedia(pages[name], name, server.url)));

  // One server port for every connection: each selected pair ends at 127.0.0.1:<the UDP port>.
  for (const name of NAMES) {
    const pair = await pollUntil(() => selectedPair(pages[name]), { timeoutMs: 10_000, what: `${name}'s selected pair` });
    assert.equal(pair.remote.port, server.udpPort, `${name}: ${JSON.stringify(pair)}`);
    assert.equal(pair.remote.address, '127.0.0.1', `${name}: ${JSON.stringify(pair)}`);
    assert.equal(pair.remote.protocol, 'udp');
  }

  for (const name of NAMES) {
    const others = NAMES.filter((n) => n !== name);
    const tiles = await pollUntil(
      async () => {
        const names = await remoteTileNames(pages[name]);
        return names.join() === others.join() && names;
      },
      { timeoutMs: 10_000, what: `${name} to show tiles ${others}`, describe: async () => `tiles: ${await remoteTileNames(pages[name])}` },
    );
    assert.deepEqual(tiles, others);
  }

  // Closing the tab (no explicit leave from the test) must remove p3 from the others' grids.
  const closedAt = Date.now();
  await pages.p3.close();
  await Promise.all(
    ['p1', 'p2'].map((name) =>
      pollUntil(async () => (await pages[name].locator('[data-name="p3"]').count()) === 0, {
        timeoutMs: Math.max(0, closedAt + 5000 - Date.now()),
        intervalMs: 100,
        what: `${name} to remove p3's tile within 5 s of the tab closing`,
      }),
    ),
  );
  for (const name of ['p1', 'p2']) {
    assert.deepEqual(await remoteTileNames(pages[name]), ['p1', 'p2'].filter((n) => n !== name));
  }
});
