// A direct 1:1 call (`?mode=p2p`): two browsers decode each other's video over a peer connection
// between themselves. Their selected candidate pair is host or srflx and joins the two browsers'
// own candidates (never the server's media port); the server's engine holds no such room. A third
// browser is refused (room_full); when one leaves, a newcomer gets a call with the one who stayed.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import test from 'node:test';
import { decodesVideo, launchBrowser, pollUntil, roomUrl, selectedPair } from './browser.mjs';
import { startServer } from './server.mjs';

const status = (page) => page.$eval('#status', (el) => el.textContent);
const remoteTileNames = (page) => page.$$eval('[data-remote]', (tiles) => tiles.map((t) => t.dataset.name).sort());

test('a p2p room connects its two browsers directly; a third is refused; a newcomer replaces a leaver', { timeout: 150_000 }, async (t) => {
  const { open } = await launchBrowser(t);
  const server = await startServer(t);
  const room = `p2p-${randomBytes(4).toString('hex')}`;
  const url = (name) => roomUrl(server.url, room, name, { mode: 'p2p' });

  const alice = await open(url('alice'), 'alice');
  // The second one needs no mode parameter: the room is p2p.
  const bob = await open(roomUrl(server.url, room, 'bob'), 'bob');
  await decodesVideo(alice, 'alice to decode bob directly', { audio: true });
  await decodesVideo(bob, 'bob to decode alice directly', { audio: true });

  for (const [page, other] of [[alice, 'bob'], [bob, 'alice']]) {
    assert.equal(await page.evaluate(() => window.fanout.roomMode), 'p2p');
    assert.match(await status(page), /direct call \(p2p\)/);
    assert.deepEqual(await remoteTileNames(page), [other]);
  }

  // Browser to browser: each side's remote candidate is the other side's local one, of type host
  // or srflx, and neither is the server's media port.
  const a = await pollUntil(() => selectedPair(alice), { timeoutMs: 10_000, what: 'alice to select a pair' });
  const b = await pollUntil(() => selectedPair(bob), { timeoutMs: 10_000, what: 'bob to select a pair' });
  console.log(`alice's pair ${JSON.stringify(a)}; bob's pair ${JSON.stringify(b)}; server media ports from ${server.udpPort}`);
  for (const pair of [a, b]) {
    assert.ok(['host', 'srflx'].includes(pair.local.type), JSON.stringify(pair));
    assert.ok(['host', 'srflx', 'prflx'].includes(pair.remote.type), JSON.stringify(pair));
    assert.notEqual(pair.remote.port, server.udpPort, 'media must not go through the server');
  }
  assert.equal(a.remote.port, b.local.port, 'alice talks to bob\'s own candidate');
  assert.equal(b.remote.port, a.local.port, 'bob talks to alice\'s own candidate');

  // The media engine never saw the room: it only relayed signaling.
  const engine = await (await fetch(`${server.url}/debug/rooms`)).json();
  assert.ok(!engine.rooms.some((r) => r.name === room), JSON.stringify(engine));

  // A direct call is 1:1.
  const carol = await open(url('carol'), 'carol');
  const refused = await pollUntil(async () => /Could not join/.test(await status(carol)) && (await status(carol)), {
    timeoutMs: 10_000,
    what: 'carol to be refused',
    describe: async () => `carol's status: ${await status(carol)}`,
  });
  assert.match(refused, /full/);
  await carol.close();

  // Bob leaves; alice's connection is replaced, and dave, who joins next, gets a call with her.
  await bob.close();
  await pollUntil(async () => (await remoteTileNames(alice)).length === 0, {
    timeoutMs: 10_000,
    what: "bob's tile to leave alice's grid",
  });
  const dave = await open(url('dave'), 'dave');
  await decodesVideo(dave, 'dave to decode alice directly', { audio: true });
  await decodesVideo(alice, 'alice to decode dave directly', { audio: true });
  assert.deepEqual(await remoteTileNames(alice), ['dave']);
  const d = await pollUntil(() => selectedPair(dave), { timeoutMs: 10_000, what: 'dave to select a pair' });
  assert.notEqual(d.remote.port, server.udpPort);
});
