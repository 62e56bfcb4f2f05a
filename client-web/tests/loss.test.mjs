// A high-bitrate source (random noise, which no encoder can compress) under 5 % injected loss on
// the publisher's uplink: the subscriber's video must never stall. The per-second stats are printed
// so the run log shows what loss, NACKs and retransmissions happened.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import test from 'node:test';
import { launchBrowser, pollUntil, roomUrl, rtpStats } from './browser.mjs';
import { startServer } from './server.mjs';

const WIDTH = 640;
const HEIGHT = 360;
const FRAMES = 90; // 3 s at 30 fps; Chromium loops the file

/** Writes a YUV4MPEG2 file of random 4:2:0 frames for `--use-file-for-fake-video-capture`. */
function writeNoiseY4m(file) {
  const fd = fs.openSync(file, 'w');
  try {
    fs.writeSync(fd, `YUV4MPEG2 W${WIDTH} H${HEIGHT} F30:1 Ip A1:1 C420jpeg\n`);
    for (let i = 0; i < FRAMES; i++) {
      fs.writeSync(fd, 'FRAME\n');
      fs.writeSync(fd, randomBytes((WIDTH * HEIGHT * 3) / 2));
    }
  } finally {
    fs.closeSync(fd);
  }
}

/** The one inbound (or outbound) video stream of `page`, or undefined. */
async function video(page, type) {
  const streams = (await rtpStats(page, type)).filter((r) => r.kind === 'video');
  // Should be exactly one; if a stale one lingers, the one carrying the most bytes is the live one.
  return streams.sort((a, b) => b.bytesReceived + b.bytesSent - (a.bytesReceived + a.bytesSent))[0];
}

test('no video stall under 5 % uplink loss with a noise source', { timeout: 180_000 }, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fanout-loss-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const y4m = path.join(dir, 'noise.y4m');
  writeNoiseY4m(y4m);

  // Separate browsers: the capture file is a browser-wide flag.
  const pub = await launchBrowser(t, [`--use-file-for-fake-video-capture=${y4m}`]);
  const sub = await launchBrowser(t);
  const server = await startServer(t, ['--inject-loss', '5']);
  const room = `loss-${randomBytes(4).toString('hex')}`;

  // One encoding: this test is about the uplink's retransmissions for one high-bitrate stream.
  // (Simulcast caps each layer's rate, so the noise source would run at a few frames per second.)
  const publisher = await pub.open(roomUrl(server.url, room, 'publisher', { simulcast: '0' }), 'publisher');
  const subscriber = await sub.open(roomUrl(server.url, room, 'subscriber', { publish: '0' }), 'subscriber');

  await pollUntil(async () => (await video(subscriber, 'inbound-rtp'))?.framesDecoded > 0, {
    timeoutMs: 30_000,
    intervalMs: 500,
    what: 'the subscriber to decode its first video frames',
    describe: async () => `subscriber inbound-rtp: ${JSON.stringify(await rtpStats(subscriber, 'inbound-rtp'))}`,
  });

  const samples = [];
  console.log('s  framesDecoded packetsLost nackCount frameWidth bytesReceived | pub nackCount retransmitted limitation');
  for (let s = 0; s <= 20; s++) {
    if (s > 0) await sleep(1000);
    const [inbound, outbound] = await Promise.all([video(subscriber, 'inbound-rtp'), video(publisher, 'outbound-rtp')]);
    const row = { s, ...inbound, pub: outbound };
    // The server's view: what the subscriber gets and why, and which layers arrive.
    const debug = await (await fetch(`${server.url}/debug/rooms`)).json().catch(() => null);
    const people = debug?.rooms?.[0]?.participants ?? [];
    const layers = people.find((p) => p.name === 'publisher')?.published.find((t) => t.kind === 'video')?.layers ?? [];
    row.server = `${(people.find((p) => p.name === 'subscriber')?.subscriptions ?? []).map((x) => `${x.current}->${x.target} ${x.reason}`).join(', ')} | ${layers.map((l) => `${l.rid}${l.active ? '' : '(idle)'}${l.requested ? '' : '(paused)'}:${Math.round(l.bitrate_bps / 1000)}k`).join(' ')}`;
    samples.push(row);
    console.log(
      [
        String(s).padStart(2),
        String(row.framesDecoded).padStart(13),
        String(row.packetsLost).padStart(11),
        String(row.nackCount).padStart(9),
        String(row.frameWidth).padStart(10),
        String(row.bytesReceived).padStart(13),
        '|',
        String(outbound?.nackCount).padStart(13),
        String(outbound?.retransmittedPacketsSent).padStart(13),
        outbound?.qualityLimitationReason,
        row.server,
      ].join(' '),
    );
  }

  for (let i = 0; i + 2 < samples.length; i++) {
    assert.ok(
      samples[i + 2].framesDecoded > samples[i].framesDecoded,
      `video stalled between second ${i} and ${i + 2}: framesDecoded ${samples[i].framesDecoded} -> ${samples[i + 2].framesDecoded}`,
    );
  }
});
