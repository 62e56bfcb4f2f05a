// WHIP and WHEP with a WebRTC stack we did not write and that is not a browser: aiortc (PyPI,
// with libvpx and libopus through PyAV). An aiortc publisher's test picture (VP8 640x360, Opus)
// is decoded by Chromium on the demo page, and an aiortc WHEP player decodes it too.
// Python with aiortc: $FANOUT_PYTHON, else the venv `.ci/run` makes (`~/.cache/fanout-ci/venv`).

import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'node:test';
import { fileURLToPath } from 'node:url';
import { decodesVideo, decodesWidth, inboundVideo, launchBrowser, pollUntil, roomUrl } from './browser.mjs';
import { startServer } from './server.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const python =
  process.env.FANOUT_PYTHON ||
  path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'fanout-ci/venv/bin/python');

function aiortcMissing() {
  if (!fs.existsSync(python)) return `no Python at ${python} (set FANOUT_PYTHON, or run .ci/run)`;
  try {
    execFileSync(python, ['-c', 'import aiortc'], { stdio: 'ignore' });
    return null;
  } catch {
    return `${python} has no aiortc (pip install aiortc==1.16.0)`;
  }
}
const skip = aiortcMissing();

/** Runs aiortc_client.py; resolves to its JSON result line (rejects with its output if it fails). */
function aiortc(mode, url, seconds) {
  return new Promise((resolve, reject) => {
    const child = spawn(python, [path.join(here, 'aiortc_client.py'), mode, url, String(seconds)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('exit', (code) => {
      const line = out.trim().split('\n').pop();
      if (code !== 0) return reject(new Error(`aiortc ${mode} exited ${code}:\n${out}`));
      try {
        resolve(JSON.parse(line));
      } catch {
        reject(new Error(`aiortc ${mode}: no result:\n${out}`));
      }
    });
  });
}

test('an aiortc WHIP publisher is decoded by Chromium and by an aiortc WHEP player', { skip: skip ?? false, timeout: 120_000 }, async (t) => {
  const server = await startServer(t);
  const { open } = await launchBrowser(t);
  const room = `aiortc-${randomBytes(4).toString('hex')}`;
  const viewer = await open(roomUrl(server.url, room, 'viewer', { publish: '0' }), 'viewer');
  const publishing = aiortc('whip', `${server.url}/whip/${room}?name=Aiortc`, 25);

  await decodesVideo(viewer, 'Chromium decoding the aiortc publisher', { audio: true, timeoutMs: 20_000 });
  await pollUntil(() => decodesWidth(viewer, [640, 640]), {
    timeoutMs: 15_000,
    intervalMs: 0,
    what: 'Chromium decoding the aiortc picture at 640 px',
    describe: async () => JSON.stringify(await inboundVideo(viewer)),
  });
  const publisherId = await pollUntil(
    async () => {
      const snapshot = JSON.parse(await (await fetch(`${server.url}/debug/rooms`)).text());
      return snapshot.rooms[0]?.participants.find((p) => p.name === 'Aiortc')?.id;
    },
    { timeoutMs: 5_000, what: 'the aiortc publisher in the room' },
  );
  const played = await aiortc('whep', `${server.url}/whep/${room}/${publisherId}`, 5);
  assert.ok(played.frames > 20, `the WHEP player decoded ${played.frames} frames`);
  assert.deepEqual([played.width, played.height], [640, 360]);
  assert.equal(played.delete, 200);
  const published = await publishing;
  assert.equal(published.delete, 200);
  console.log(`aiortc: published ${published.frames} frames; its WHEP player decoded ${played.frames}`);
});
