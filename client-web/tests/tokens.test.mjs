// Outside `--dev` the demo page joins with the access token in its URL (`&token=`); without one
// it says what is missing and does not join.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import test from 'node:test';
import { launchBrowser, pollUntil, roomUrl, rtpStats } from './browser.mjs';
import { startServer } from './server.mjs';

const env = { FANOUT_API_KEY: 'e2e-key', FANOUT_API_SECRET: randomBytes(24).toString('hex') };

test('the demo page joins with a token from its URL, and explains a missing one', { timeout: 120_000 }, async (t) => {
  const { open } = await launchBrowser(t);
  const server = await startServer(t, [], { dev: false, env });
  const room = `tok-${randomBytes(4).toString('hex')}`;
  const token = (identity) =>
    execFileSync(server.bin, ['token', 'create', '--room', room, '--identity', identity, '--name', identity], {
      env: { ...process.env, ...env },
    })
      .toString()
      .trim();

  // No token: refused with a message naming the fix; no peer connection.
  const lost = await open(roomUrl(server.url, room, 'nobody'), 'nobody');
  const status = await pollUntil(
    async () => {
      const text = await lost.locator('#status').textContent();
      return text?.includes('access token') && text;
    },
    { timeoutMs: 15_000, what: 'the page to say a token is needed', describe: async () => await lost.locator('#status').textContent() },
  );
  assert.match(status, /fanout token create/);
  assert.equal(await lost.evaluate(() => window.fanout?.pc ?? null), null);

  // With tokens: the two see each other, named as in their tokens.
  const alice = await open(roomUrl(server.url, room, 'ignored-a', { token: token('alice') }), 'alice');
  const bob = await open(roomUrl(server.url, room, 'ignored-b', { token: token('bob') }), 'bob');
  for (const [page, other] of [[alice, 'bob'], [bob, 'alice']]) {
    await pollUntil(async () => (await page.locator(`[data-name="${other}"]`).count()) === 1, {
      timeoutMs: 20_000,
      what: `a tile named ${other}`,
    });
  }
  await pollUntil(
    async () => (await rtpStats(alice, 'inbound-rtp')).some((r) => r.kind === 'video' && r.framesDecoded > 10),
    { timeoutMs: 30_000, what: 'alice to decode bob', describe: async () => JSON.stringify(await rtpStats(alice, 'inbound-rtp')) },
  );
});
