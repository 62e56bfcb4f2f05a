// An IPv6-only join: the server listens on [::1] only (signaling, and its media socket follows),
// the pages are loaded from http://[::1]:…, and two browsers call each other through the server's
// one media port over IPv6: each decodes the other's video, and each selected pair ends at
// [::1]:<the server's UDP port>.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import test from 'node:test';
import { decodesVideo, launchBrowser, pollUntil, roomUrl, selectedPair } from './browser.mjs';
import { startServer } from './server.mjs';

test('two browsers call over IPv6 only ([::1] signaling and media)', { timeout: 90_000 }, async (t) => {
  const { open } = await launchBrowser(t);
  const server = await startServer(t, ['--media-drivers', '1'], { host: '::1' });
  assert.match(server.url, /^http:\/\/\[::1\]:/);
  const room = `v6-${randomBytes(4).toString('hex')}`;
  const a = await open(roomUrl(server.url, room, 'a6'), 'a6');
  const b = await open(roomUrl(server.url, room, 'b6'), 'b6');
  await decodesVideo(a, 'a6 to decode b6 over IPv6');
  await decodesVideo(b, 'b6 to decode a6 over IPv6');
  for (const [name, page] of [['a6', a], ['b6', b]]) {
    const pair = await pollUntil(() => selectedPair(page), { timeoutMs: 10_000, what: `${name}'s selected pair` });
    console.log(`${name}: ${JSON.stringify(pair)}`);
    assert.equal(pair.remote.address, '::1', JSON.stringify(pair));
    assert.equal(pair.remote.port, server.udpPort, JSON.stringify(pair));
    // Chromium names its candidate by the interface address it gathered (::1 or another IPv6).
    assert.ok(pair.local.address.includes(':'), `an IPv6 local candidate: ${JSON.stringify(pair)}`);
  }
});
