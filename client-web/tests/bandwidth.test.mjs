// A subscriber behind a real bottleneck: its Chromium runs in a network namespace this test
// creates, reaching the server over a veth pair whose server side is shaped to 400 kbit/s with
// `tc tbf` (server → subscriber). It shows the publisher at 1280x720, so only bandwidth can keep
// it low: it must settle on the lowest layer (about 320 px wide) and keep decoding, while a
// subscriber on loopback, also at 1280x720, gets the high layer. All traffic stays on this
// machine: loopback, and the veth pair between the root namespace and the test's namespace.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import test from 'node:test';
import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS, launchBrowser, pollUntil, roomUrl, rtpStats } from './browser.mjs';
import { startServer } from './server.mjs';

const RATE = '400kbit';
const VIEWPORT = { viewport: { width: 1600, height: 1000 }, deviceScaleFactor: 1 };

function run(cmd, ...args) {
  execFileSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** Why namespaces cannot be used here, or null if they can. */
function namespacesUnavailable() {
  if (process.getuid?.() !== 0) return 'not root';
  for (const tool of ['ip', 'tc']) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    } catch {
      return `\`${tool}\` is not installed (Debian package iproute2)`;
    }
  }
  return null;
}

const skip = namespacesUnavailable();

test('a subscriber with a 400 kbit/s downlink settles on the low layer and keeps decoding', { skip: skip ?? false, timeout: 150_000 }, async (t) => {
  const id = randomBytes(3).toString('hex');
  const ns = `fo-bw-${id}`;
  const veth = `fobw${id}`; // ≤ 15 characters
  const subnet = `10.213.${randomInt(1, 250)}`;
  const serverIp = `${subnet}.1`;
  t.after(() => {
    try { run('ip', 'netns', 'del', ns); } catch {}
    try { run('ip', 'link', 'del', `${veth}a`); } catch {}
  });
  run('ip', 'netns', 'add', ns);
  run('ip', 'link', 'add', `${veth}a`, 'type', 'veth', 'peer', 'name', `${veth}b`);
  run('ip', 'link', 'set', `${veth}b`, 'netns', ns);
  run('ip', 'addr', 'add', `${serverIp}/30`, 'dev', `${veth}a`);
  run('ip', 'link', 'set', `${veth}a`, 'up');
  run('ip', 'netns', 'exec', ns, 'ip', 'addr', 'add', `${subnet}.2/30`, 'dev', `${veth}b`);
  run('ip', 'netns', 'exec', ns, 'ip', 'link', 'set', `${veth}b`, 'up');
  run('ip', 'netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up');
  // Shape what the server sends into the namespace.
  run('tc', 'qdisc', 'add', 'dev', `${veth}a`, 'root', 'tbf', 'rate', RATE, 'burst', '20kb', 'latency', '200ms');

  // Signaling and media on every address; candidates for loopback and the veth address.
  const server = await startServer(t, ['--announce-ip', '127.0.0.1', '--announce-ip', serverIp], { host: '0.0.0.0' });
  const { open } = await launchBrowser(t);

  // The limited subscriber's Chromium runs inside the namespace (playwright talks to it over pipes).
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fanout-bw-'));
  const wrapper = path.join(dir, 'chromium-in-ns');
  fs.writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${ns} /usr/bin/chromium "$@"\n`, { mode: 0o755 });
  const nsBrowser = await chromium.launch({
    executablePath: wrapper,
    headless: true,
    ignoreDefaultArgs: ['--headless'],
    args: CHROMIUM_ARGS,
    timeout: 30_000,
  });
  t.after(async () => {
    await nsBrowser.close().catch(() => {});
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const room = `bw-${id}`;
  await open(roomUrl(server.url, room, 'pub'), 'pub', VIEWPORT);
  const free = await open(roomUrl(server.url, room, 'free', { publish: '0', overlay: '1' }), 'free', VIEWPORT);
  const limitedPage = await (await nsBrowser.newContext(VIEWPORT)).newPage();
  await limitedPage.goto(roomUrl(`http://${serverIp}:${server.port}`, room, 'limited', { publish: '0', overlay: '1' }), {
    timeout: 15_000,
  });
  for (const page of [free, limitedPage]) {
    await pollUntil(() => page.evaluate(() => document.querySelector('[data-remote][data-name="pub"]') !== null), {
      timeoutMs: 20_000,
      what: 'the publisher tile',
    });
    await page.evaluate(() => window.fanoutDemo.setTileSize('pub', 1280, 720));
  }

  const video = async (page) => (await rtpStats(page, 'inbound-rtp')).find((r) => r.kind === 'video');
  const overlay = (page) => page.evaluate(() => document.querySelector('[data-remote] .layer')?.dataset.layer);
  const describe = async () =>
    `limited: ${JSON.stringify(await video(limitedPage))} ${await overlay(limitedPage)}\n` +
    `free: ${JSON.stringify(await video(free))} ${await overlay(free)}\n` +
    `debug: ${await (await fetch(`${server.url}/debug/rooms`)).text()}`;

  // Settles low: the overlay says low for bandwidth and ~320 px frames are decoded.
  await pollUntil(
    async () => {
      const r = await video(limitedPage);
      const reason = await limitedPage.evaluate(() => document.querySelector('[data-remote] .layer')?.dataset.reason);
      return r && r.frameWidth > 0 && r.frameWidth <= 340 && (await overlay(limitedPage)) === 'low' && reason === 'bandwidth';
    },
    { timeoutMs: 30_000, what: 'the limited subscriber on the low layer for bandwidth', describe },
  );
  // And keeps decoding: frames in every 2 s window for 10 s, all of them ~320 px wide.
  let last = await video(limitedPage);
  for (let i = 0; i < 5; i++) {
    await sleep(2000);
    const now = await video(limitedPage);
    assert.ok(now.framesDecoded > last.framesDecoded, `no frame decoded in window ${i}\n${await describe()}`);
    assert.ok(now.frameWidth <= 340, `left the low layer in window ${i}\n${await describe()}`);
    last = now;
  }
  // The subscriber without a bottleneck is not held back.
  await pollUntil(
    async () => {
      const r = await video(free);
      return r && r.frameWidth >= 1200 && (await overlay(free)) === 'high';
    },
    { timeoutMs: 10_000, what: 'the free subscriber on the high layer', describe },
  );
});
