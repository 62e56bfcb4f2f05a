// Firefox beside Chromium: Debian's Firefox ESR, headless over WebDriver BiDi, in calls with
// Debian's Chromium. Firefox differs from Chromium where a server can trip: it nominates its
// candidate pair with its first check against an ICE-lite server, numbers its header extensions
// itself, signals simulcast with its own rids and SSRCs, sends no video-layers-allocation, and
// offers other RTX/FEC payloads. The server follows each offer, never the user agent, so these
// tests only check what a user sees: video decoded, audio received, the right layer per tile.
//   - two Firefox and one Chromium in one call see and hear each other on direct UDP paths, all
//     to the one UDP port of a server with two media drivers;
//   - Firefox publishes simulcast and the server switches a Chromium subscriber between its layers;
//   - a Firefox subscriber receives the layer its tile needs from a Chromium publisher;
//   - Firefox shares its screen beside its camera, and Firefox receives Chromium's screen share;
//   - Firefox calls through the embedded TURN relay, and an ICE restart keeps the call;
//   - Firefox publishes over WHIP and plays over WHEP;
//   - a Firefox that asked for everything mixed (`&mixed=1`) decodes the server's composite.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import test from 'node:test';
import {
  decodesVideo,
  decodesWidth,
  growing,
  inboundVideo,
  launchBrowser,
  launchFirefox,
  pollUntil,
  roomUrl,
  rtpStats,
  selectedPair,
} from './browser.mjs';
import { startServer } from './server.mjs';
import { whepPlay, whipPublish } from './whip-pages.mjs';

const VIEWPORT = { viewport: { width: 1600, height: 1000 }, deviceScaleFactor: 1 };
/** Decoded widths that count as the low and the high layer of a 1280x720 camera. */
const LOW = [300, 340];
const HIGH = [1200, 1280];

const newRoom = (what) => `${what}-${randomBytes(4).toString('hex')}`;
const serverView = async (server) => (await fetch(`${server.url}/debug/rooms`)).text();

/** Waits until `page` decodes `videos` growing video streams and receives `audios` audio streams. */
async function receivesFrom(page, name, { videos, audios }, server) {
  let last = [];
  await pollUntil(
    async () => {
      const before = await rtpStats(page, 'inbound-rtp');
      await sleep(2000);
      const after = (last = await rtpStats(page, 'inbound-rtp'));
      return (
        growing(before, after, 'video', 'framesDecoded').length === videos &&
        growing(before, after, 'audio', 'packetsReceived').length === audios
      );
    },
    {
      timeoutMs: 40_000,
      intervalMs: 0,
      what: `${name} to decode ${videos} videos and receive ${audios} audio streams`,
      describe: async () =>
        `${name} inbound-rtp: ${JSON.stringify(last)}\n${name} outbound-rtp: ${JSON.stringify(await rtpStats(page, 'outbound-rtp'))}\n` +
        `server: ${await serverView(server)}`,
    },
  );
}

const remoteTileNames = (page) =>
  page.evaluate(() => [...document.querySelectorAll('[data-remote]')].map((t) => t.dataset.name).sort());

test('two Firefox and one Chromium in one call see and hear each other on one server UDP port', { timeout: 150_000 }, async (t) => {
  // Two media drivers (one per core here) on one shared port: the three connections are spread
  // over both, and datagrams the kernel gives to the other driver cross to their connection's.
  const server = await startServer(t, ['--media-drivers', '2']);
  const firefox = await launchFirefox(t);
  const chromium = await launchBrowser(t);
  const room = newRoom('ff-call');
  const pages = {
    fox1: await firefox.open(roomUrl(server.url, room, 'fox1'), 'fox1'),
    fox2: await firefox.open(roomUrl(server.url, room, 'fox2'), 'fox2'),
    chrome: await chromium.open(roomUrl(server.url, room, 'chrome'), 'chrome'),
  };
  const names = Object.keys(pages);
  await Promise.all(names.map((name) => receivesFrom(pages[name], name, { videos: 2, audios: 2 }, server)));
  for (const name of names) {
    const others = names.filter((n) => n !== name).sort();
    assert.deepEqual(await remoteTileNames(pages[name]), others, `${name}'s tiles`);
    // A direct path to the server's one port: a host candidate, not the TURN relay.
    const pair = await pollUntil(() => selectedPair(pages[name]), { timeoutMs: 10_000, what: `${name}'s selected pair` });
    assert.equal(pair.local.type, 'host', `${name}: ${JSON.stringify(pair)}`);
    assert.equal(pair.remote.port, server.udpPort, `${name}: ${JSON.stringify(pair)}`);
    assert.equal(pair.remote.protocol, 'udp', `${name}: ${JSON.stringify(pair)}`);
  }
});

test('Firefox publishes simulcast and the server switches a Chromium subscriber between its layers', { timeout: 120_000 }, async (t) => {
  const server = await startServer(t);
  const firefox = await launchFirefox(t);
  const chromium = await launchBrowser(t);
  const room = newRoom('ff-sim');
  const pub = await firefox.open(roomUrl(server.url, room, 'pub'), 'pub');
  const sub = await chromium.open(roomUrl(server.url, room, 'sub', { publish: '0', overlay: '1', tile: '320x180' }), 'sub', VIEWPORT);
  const describe = async () =>
    `subscriber: ${JSON.stringify(await inboundVideo(sub))}\n` +
    `publisher: ${JSON.stringify((await rtpStats(pub, 'outbound-rtp')).filter((r) => r.kind === 'video'))}\n` +
    `server: ${await serverView(server)}`;

  // Firefox sends three encodings, each its own SSRC with its rid.
  const layers = await pollUntil(
    async () => {
      const snapshot = JSON.parse(await serverView(server));
      const track = snapshot.rooms[0]?.participants.find((p) => p.name === 'pub')?.published.find((p) => p.kind === 'video');
      return track?.layers.length === 3 && track.layers;
    },
    { timeoutMs: 30_000, what: 'the server to see the three layers Firefox publishes', describe },
  );
  assert.deepEqual(layers.map((l) => l.rid).sort(), ['f', 'h', 'q']);
  assert.equal(new Set(layers.map((l) => l.ssrc)).size, 3);

  const small = await pollUntil(() => decodesWidth(sub, LOW), { timeoutMs: 30_000, intervalMs: 0, what: 'the 320x180 tile to decode the low layer', describe });
  await sub.evaluate(() => window.fanoutDemo.setTileSize('pub', 1280, 720));
  const large = await pollUntil(() => decodesWidth(sub, HIGH), { timeoutMs: 30_000, intervalMs: 0, what: 'the enlarged tile to switch to the high layer', describe });
  await sub.evaluate(() => window.fanoutDemo.setTileSize('pub', 320, 180));
  const back = await pollUntil(() => decodesWidth(sub, LOW), { timeoutMs: 30_000, intervalMs: 0, what: 'the shrunk tile to switch back down', describe });
  // One SSRC on the subscriber's side all along: the switches are the server's rewriting.
  assert.equal(new Set([small.ssrc, large.ssrc, back.ssrc]).size, 1);
  console.log(`Chromium decoded Firefox's layers at ${small.frameWidth}, ${large.frameWidth}, ${back.frameWidth} px`);
});

test('a Firefox subscriber receives the layer its tile needs from a Chromium publisher', { timeout: 120_000 }, async (t) => {
  const server = await startServer(t);
  const firefox = await launchFirefox(t);
  const chromium = await launchBrowser(t);
  const room = newRoom('ff-sub');
  const pub = await chromium.open(roomUrl(server.url, room, 'pub'), 'pub', VIEWPORT);
  const sub = await firefox.open(roomUrl(server.url, room, 'sub', { publish: '0', overlay: '1', tile: '320x180' }), 'sub');
  const describe = async () =>
    `subscriber: ${JSON.stringify(await inboundVideo(sub))}\n` +
    `publisher: ${JSON.stringify((await rtpStats(pub, 'outbound-rtp')).filter((r) => r.kind === 'video'))}\n` +
    `server: ${await serverView(server)}`;
  const small = await pollUntil(() => decodesWidth(sub, LOW), { timeoutMs: 30_000, intervalMs: 0, what: 'the 320x180 tile to decode the low layer', describe });
  await sub.evaluate(() => window.fanoutDemo.setTileSize('pub', 1280, 720));
  const large = await pollUntil(() => decodesWidth(sub, HIGH), { timeoutMs: 30_000, intervalMs: 0, what: 'the enlarged tile to switch to the high layer', describe });
  assert.equal(small.ssrc, large.ssrc);
  await receivesFrom(sub, 'sub', { videos: 1, audios: 1 }, server);
  console.log(`Firefox decoded Chromium's layers at ${small.frameWidth} and ${large.frameWidth} px`);
});

/**
 * Shares `page`'s screen through the client library. getDisplayMedia needs a user gesture: a real
 * click (CDP or BiDi input) on a button the test adds.
 */
async function shareScreen(page) {
  await page.evaluate(() => {
    const button = document.createElement('button');
    button.id = 'test-share';
    button.textContent = 'Share screen';
    button.onclick = () => {
      window.fanout.publishScreen().then(
        () => (button.dataset.state = 'sharing'),
        (err) => (button.dataset.state = `failed: ${err}`),
      );
    };
    document.body.prepend(button);
  });
  await page.click('#test-share');
  const state = await pollUntil(() => page.evaluate(() => document.getElementById('test-share').dataset.state), {
    timeoutMs: 10_000,
    what: 'the page to start sharing its screen',
  });
  assert.equal(state, 'sharing');
}

/** The sources the server lists for participant `name`'s published tracks, sorted. */
async function publishedSources(server, name) {
  const snapshot = JSON.parse(await serverView(server));
  return snapshot.rooms[0].participants.find((p) => p.name === name).published.map((p) => p.source).sort();
}

// Each browser shares its screen to the other.
for (const [sharer, viewing] of [
  ['Firefox', 'Chromium'],
  ['Chromium', 'Firefox'],
]) {
  test(`${sharer} shares its screen beside its camera; ${viewing} decodes both`, { timeout: 120_000 }, async (t) => {
    const server = await startServer(t);
    // Headless Firefox has no screen: a sharing Firefox runs on an Xvfb display.
    const browsers = {
      Firefox: await launchFirefox(t, { screen: sharer === 'Firefox' }),
      Chromium: await launchBrowser(t),
    };
    const room = newRoom('screen');
    const sharing = await browsers[sharer].open(roomUrl(server.url, room, 'sharer'), 'sharer');
    const viewer = await browsers[viewing].open(roomUrl(server.url, room, 'viewer', { publish: '0' }), 'viewer');
    await receivesFrom(viewer, 'viewer', { videos: 1, audios: 1 }, server);
    await shareScreen(sharing);
    await receivesFrom(viewer, 'viewer', { videos: 2, audios: 1 }, server);
    assert.deepEqual(await publishedSources(server, 'sharer'), ['camera', 'microphone', 'screen']);
  });
}

test('Firefox calls through the embedded TURN relay, and an ICE restart keeps the call', { timeout: 120_000 }, async (t) => {
  const server = await startServer(t);
  const firefox = await launchFirefox(t);
  const chromium = await launchBrowser(t);
  const room = newRoom('ff-relay');
  const fox = await firefox.open(roomUrl(server.url, room, 'fox', { relay: '1' }), 'fox');
  const chrome = await chromium.open(roomUrl(server.url, room, 'chrome'), 'chrome');
  await receivesFrom(fox, 'fox', { videos: 1, audios: 1 }, server);
  await receivesFrom(chrome, 'chrome', { videos: 1, audios: 1 }, server);
  const pair = await selectedPair(fox);
  assert.equal(pair?.local.type, 'relay', `Firefox's selected pair: ${JSON.stringify(pair)}`);

  const ufrag = () => fox.evaluate(() => /a=ice-ufrag:(\S+)/.exec(window.fanout.pc.localDescription.sdp)?.[1]);
  const before = await ufrag();
  await fox.evaluate(() => window.fanout.pc.restartIce());
  await pollUntil(async () => (await ufrag()) !== before, { timeoutMs: 10_000, what: 'new ICE credentials after restartIce()' });
  await pollUntil(() => fox.evaluate(() => window.fanout.pc.iceConnectionState === 'connected' || window.fanout.pc.iceConnectionState === 'completed'), {
    timeoutMs: 15_000,
    what: 'Firefox connected again after the ICE restart',
  });
  await receivesFrom(fox, 'fox', { videos: 1, audios: 1 }, server);
  await receivesFrom(chrome, 'chrome', { videos: 1, audios: 1 }, server);
});

test('Firefox publishes over WHIP and plays over WHEP', { timeout: 120_000 }, async (t) => {
  const server = await startServer(t);
  const firefox = await launchFirefox(t);
  const chromium = await launchBrowser(t);
  const room = newRoom('ff-whip');
  const viewer = await chromium.open(roomUrl(server.url, room, 'viewer', { publish: '0' }), 'viewer');
  const publisher = await firefox.open(`${server.url}/healthz`, 'whip');
  const session = await publisher.evaluate(whipPublish, `${server.url}/whip/${room}?name=FoxWhip`);
  assert.match(session, new RegExp(`/whip/${room}/PA_`));
  await decodesVideo(viewer, 'the Chromium viewer decoding the Firefox WHIP publisher', { audio: true });
  // Firefox starts small and scales up to the 640x360 it captures as its estimate grows.
  await pollUntil(() => decodesWidth(viewer, [640, 640]), {
    timeoutMs: 30_000,
    intervalMs: 0,
    what: 'the viewer decoding the WHIP video at 640 px',
    describe: async () => JSON.stringify(await inboundVideo(viewer)),
  });

  const player = await firefox.open(`${server.url}/healthz`, 'whep');
  await player.evaluate(whepPlay, `${server.url}/whep/${room}/${session.split('/').pop()}`);
  await decodesVideo(player, 'the Firefox WHEP player decoding the WHIP publisher', { audio: true });
  assert.equal(await player.evaluate(async () => (await fetch(window.whepSession, { method: 'DELETE' })).status), 200);
  assert.equal(await publisher.evaluate(async () => (await fetch(window.whipSession, { method: 'DELETE' })).status), 200);
});

test('a Firefox that asks for everything mixed decodes the composite and gets one audio stream', { timeout: 120_000 }, async (t) => {
  const server = await startServer(t);
  const firefox = await launchFirefox(t);
  const chromium = await launchBrowser(t);
  const room = newRoom('ff-mix');
  await chromium.open(roomUrl(server.url, room, 'pub'), 'pub', VIEWPORT);
  const fox = await firefox.open(roomUrl(server.url, room, 'fox', { mixed: '1' }), 'fox');
  const composite = await pollUntil(() => decodesWidth(fox, [320, 640]), {
    timeoutMs: 40_000,
    intervalMs: 0,
    what: 'Firefox to decode the composite (640x360 or its 320x180 copy)',
    describe: async () => JSON.stringify(await rtpStats(fox, 'inbound-rtp')),
  });
  const inbound = (await rtpStats(fox, 'inbound-rtp')).filter((r) => r.packetsReceived > 0);
  assert.deepEqual(
    inbound.map((r) => r.kind).sort(),
    ['audio', 'video'],
    JSON.stringify(inbound),
  );
  console.log(`Firefox decoded the composite at ${composite.frameWidth}x${composite.frameHeight}`);
});
