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
import { growing, launchBrowser, pollUntil, roomUrl, rtpStats } from './browser.mjs';
import { startServer } from './server.mjs';

/** How many inbound streams of `kind` grew `field` over 2 s. */
async function growingOver2s(page, kind, field) {
  const before = await rtpStats(page, 'inbound-rtp');
  await sleep(2000);
  return growing(before, await rtpStats(page, 'inbound-rtp'), kind, field).length;
}

/** Waits until `page` has `want` growing inbound streams of `kind`. */
async function waitGrowing(page, kind, want, what) {
  const field = kind === 'video' ? 'framesDecoded' : 'packetsReceived';
  let last = null;
  await pollUntil(async () => (last = await growingOver2s(page, kind, field)) === want, {
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
  assert.equal(await growingOver2s(bob, 'video', 'framesDecoded'), 1, 'her video goes on');
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

  step('Devices');
  // Devices: the camera list comes from enumerateDevices; choosing one switches the capture on
  // the same transceiver (no renegotiation) and bob goes on decoding.
  await alice.getByRole('button', { name: 'Devices', exact: true }).click({ timeout: 10_000 });
  const cameraSelect = alice.getByRole('combobox', { name: 'Camera', exact: true });
  await pollUntil(async () => (await cameraSelect.locator('option').count()) >= 1, { timeoutMs: 5000, what: 'the camera list' });
  const device = await cameraSelect.locator('option').last().getAttribute('value');
  await cameraSelect.selectOption(device);
  await pollUntil(() => alice.evaluate(() => document.getElementById('devices').dataset.switched === 'camera'), {
    timeoutMs: 10_000,
    what: 'the camera switched',
    describe: () => alice.evaluate(() => document.getElementById('devices').dataset.problem ?? ''),
  });
  await waitGrowing(bob, 'video', 1, "alice's video after the device switch");
  await alice.getByRole('button', { name: 'Devices', exact: true }).click({ timeout: 10_000 });

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

test('three browsers chat in the panel; the participants list shows everyone and who is muted', { timeout: 120_000 }, async (t) => {
  const server = await startServer(t);
  const { open } = await launchBrowser(t);
  const room = `chat-${randomBytes(4).toString('hex')}`;
  // Receive-only, but for alice (the mute marker in the list).
  const pages = {
    alice: await open(roomUrl(server.url, room, 'alice', { data: '1' }), 'alice'),
    bob: await open(roomUrl(server.url, room, 'bob', { publish: '0', data: '1' }), 'bob'),
    carol: await open(roomUrl(server.url, room, 'carol', { publish: '0', data: '1' }), 'carol'),
  };
  const { alice, bob, carol } = pages;
  for (const page of Object.values(pages)) {
    await pollUntil(() => page.evaluate(() => window.fanout.pc?.sctp?.state === 'connected'), { timeoutMs: 20_000, what: 'the data channels' });
  }
  const messages = (page) =>
    page.locator('#chat .messages li').evaluateAll((items) =>
      items.map((li) => [li.querySelector('.sender').textContent, li.querySelector('p').textContent, li.querySelector('time').dateTime !== '']),
    );

  // Alice writes (Enter sends); bob and carol see an unread count, then the message.
  await alice.getByRole('button', { name: 'Chat', exact: true }).click({ timeout: 10_000 });
  const box = alice.getByRole('textbox', { name: 'Message' });
  await box.fill('hello from alice');
  await box.press('Enter');
  assert.equal(await box.inputValue(), '');
  for (const page of [bob, carol]) {
    await pollUntil(async () => (await page.locator('.control .unread').textContent()) === '1', { timeoutMs: 10_000, what: 'the unread count' });
    await page.keyboard.press('c');
    assert.equal(await page.getByRole('button', { name: 'Chat', exact: true }).getAttribute('aria-pressed'), 'true');
    assert.deepEqual(await messages(page), [['alice', 'hello from alice', true]]);
    assert.equal(await page.locator('.control .unread').isHidden(), true, 'read once the panel is open');
  }
  // Bob answers with the Send button; alice and carol see it after hers.
  await bob.getByRole('textbox', { name: 'Message' }).fill('hi, bob here');
  await bob.getByRole('button', { name: 'Send', exact: true }).click({ timeout: 10_000 });
  for (const page of [alice, carol]) {
    await pollUntil(async () => (await messages(page)).length === 2, { timeoutMs: 10_000, what: "bob's answer" });
  }
  assert.deepEqual((await messages(carol)).map(([from, text]) => [from, text]), [
    ['alice', 'hello from alice'],
    ['bob', 'hi, bob here'],
  ]);
  assert.deepEqual((await messages(alice)).map(([from]) => from), ['alice (you)', 'bob']);

  // The participants list: everyone; alice's muted microphone marked at carol.
  await alice.getByRole('button', { name: 'Microphone', exact: true }).click({ timeout: 10_000 });
  await carol.getByRole('button', { name: 'Participants', exact: true }).click({ timeout: 10_000 });
  const people = carol.getByRole('complementary', { name: 'Participants' });
  await pollUntil(async () => (await people.getByRole('listitem').count()) === 3, { timeoutMs: 10_000, what: 'three people listed' });
  await pollUntil(async () => (await people.getByRole('img', { name: 'microphone muted' }).count()) === 1, {
    timeoutMs: 10_000,
    what: "alice's muted microphone in the list",
  });
  assert.deepEqual((await people.getByRole('listitem').allTextContents()).map((x) => x.replace(/[^\w ()]/gu, '').trim()).sort(), [
    'alice',
    'bob',
    'carol (you)',
  ]);
});
