// The demo page as a meeting, used as a person would: by the controls' accessible names (and a
// keyboard shortcut), each control's effect seen from the other browser's receiver stats and
// tiles: the microphone button stops that audio stream and marks the tile, the camera button
// stops that video (and a new capture brings it back), sharing the screen adds a video and
// stopping it removes it, leaving removes the participant from the other page within 5 s, and
// rejoining brings it back.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import test from 'node:test';
import { launchBrowser, pollUntil, roomUrl, rtpStats } from './browser.mjs';
import { startServer } from './server.mjs';

/** How many inbound streams of `kind` grew `field` over 2 s. */
async function growing(page, kind, field) {
  const before = await rtpStats(page, 'inbound-rtp');
  await sleep(2000);
  const after = await rtpStats(page, 'inbound-rtp');
  return after.filter((r) => {
    const b = before.find((x) => x.id === r.id);
    return r.kind === kind && b && r[field] > b[field];
  }).length;
}

/** Waits until `page` has `want` growing inbound streams of `kind`. */
async function waitGrowing(page, kind, want, what) {
  const field = kind === 'video' ? 'framesDecoded' : 'packetsReceived';
  let last = null;
  await pollUntil(async () => (last = await growing(page, kind, field)) === want, {
    timeoutMs: 30_000,
    intervalMs: 0,
    what,
    describe: async () => `${last} growing ${kind} streams; inbound: ${JSON.stringify(await rtpStats(page, 'inbound-rtp'))}`,
  });
}

const pressed = (page, name) => page.getByRole('button', { name, exact: true }).getAttribute('aria-pressed');

test('the control bar mutes, turns the camera off, shares the screen, leaves and rejoins', { timeout: 180_000 }, async (t) => {
  const server = await startServer(t);
  const { open } = await launchBrowser(t);
  const room = `meet-${randomBytes(4).toString('hex')}`;
  const alice = await open(roomUrl(server.url, room, 'alice'), 'alice');
  const bob = await open(roomUrl(server.url, room, 'bob', { publish: '0' }), 'bob');
  const aliceTile = bob.locator('[data-remote][data-name="alice"]');
  const started = Date.now();
  const step = (what) => console.log(`${((Date.now() - started) / 1000).toFixed(1)} s: ${what}`);
  await waitGrowing(bob, 'audio', 1, "bob receiving alice's audio");
  await waitGrowing(bob, 'video', 1, "bob decoding alice's video");
  const mic = alice.getByRole('button', { name: 'Microphone', exact: true });
  await pollUntil(async () => (await mic.isEnabled()) && (await pressed(alice, 'Microphone')) === 'true', {
    timeoutMs: 10_000,
    what: 'the microphone button, on',
  });

  step('Microphone');
  // Microphone: muted by a click, unmuted by its shortcut.
  await mic.click({ timeout: 10_000 });
  assert.equal(await pressed(alice, 'Microphone'), 'false');
  await waitGrowing(bob, 'audio', 0, "alice's audio stopping at bob");
  assert.equal(await growing(bob, 'video', 'framesDecoded'), 1, 'her video goes on');
  await pollUntil(() => aliceTile.evaluate((t) => t.hasAttribute('data-audio-muted')), { timeoutMs: 5000, what: 'the muted marker' });
  assert.equal(await aliceTile.getByRole('img', { name: 'microphone muted' }).count(), 1);
  await alice.keyboard.press('m');
  assert.equal(await pressed(alice, 'Microphone'), 'true');
  await waitGrowing(bob, 'audio', 1, "alice's audio again at bob");
  await pollUntil(() => aliceTile.evaluate((t) => !t.hasAttribute('data-audio-muted')), { timeoutMs: 5000, what: 'the marker gone' });

  step('Camera');
  // Camera: off, then on again (captured anew).
  await alice.getByRole('button', { name: 'Camera', exact: true }).click({ timeout: 10_000 });
  assert.equal(await pressed(alice, 'Camera'), 'false');
  await waitGrowing(bob, 'video', 0, "alice's video stopping at bob");
  await pollUntil(() => aliceTile.evaluate((t) => t.hasAttribute('data-video-muted')), { timeoutMs: 5000, what: 'the camera-off marker' });
  await alice.getByRole('button', { name: 'Camera', exact: true }).click({ timeout: 10_000 });
  await pollUntil(async () => (await pressed(alice, 'Camera')) === 'true', { timeoutMs: 10_000, what: 'the camera on' });
  await waitGrowing(bob, 'video', 1, "alice's video again at bob");
  assert.equal(await alice.evaluate(() => window.fanout.isMuted('camera')), false);

  step('Share screen');
  // Share screen: a second video at bob; stopping it unpublishes it.
  await alice.getByRole('button', { name: 'Share screen', exact: true }).click({ timeout: 10_000 });
  await pollUntil(async () => (await pressed(alice, 'Share screen')) === 'true', { timeoutMs: 10_000, what: 'the share started' });
  await waitGrowing(bob, 'video', 2, "bob decoding alice's camera and screen");
  // The share has a tile of its own, on the stage: larger than alice's camera tile.
  const widths = await bob.evaluate(() =>
    [...document.querySelectorAll('[data-remote]')].map((t) => [t.hasAttribute('data-screen'), t.getBoundingClientRect().width]),
  );
  const [screen, camera] = [widths.find(([s]) => s)?.[1], widths.find(([s]) => !s)?.[1]];
  assert.ok(screen > 2 * camera, `screen tile ${screen} px, camera tile ${camera} px`);
  const unpublished = bob.evaluate(
    () => new Promise((resolve) => window.fanout.on('track_unpublished', ({ trackId }) => resolve(trackId))),
  );
  await alice.keyboard.press('s');
  assert.equal(await pressed(alice, 'Share screen'), 'false');
  assert.match(await unpublished, /^TR_/);
  await waitGrowing(bob, 'video', 1, "only alice's camera at bob");

  step('Leave');
  // Leave: gone from bob's page within 5 s; rejoin: back.
  const left = Date.now();
  await alice.getByRole('button', { name: 'Leave', exact: true }).click({ timeout: 10_000 });
  await pollUntil(async () => (await aliceTile.count()) === 0, { timeoutMs: 5000, what: "alice's tile gone at bob" });
  console.log(`bob saw alice leave after ${Date.now() - left} ms`);
  const rejoin = alice.getByRole('button', { name: 'Rejoin', exact: true });
  assert.equal(await rejoin.isVisible(), true);
  await rejoin.click({ timeout: 10_000 });
  await pollUntil(async () => (await aliceTile.count()) === 1, { timeoutMs: 20_000, what: 'alice back at bob' });
  await waitGrowing(bob, 'video', 1, "alice's video after she rejoined");
});
