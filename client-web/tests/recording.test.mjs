// Recording through the admin API, from a real browser's camera and microphone (Chromium's fake
// devices, real VP8 and Opus): the tracks' WebM files decode in ffprobe (every frame counted),
// and the video file plays in Chromium with a finite duration and seeks; the room's recording
// (its composite picture and its mix in one file) too.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { launchBrowser, pollUntil, roomUrl, rtpStats } from './browser.mjs';
import { startServer } from './server.mjs';

const KEYS = { FANOUT_API_KEY: 'rec-test', FANOUT_API_SECRET: 'rec-test-secret-rec-test-secret-01234' };

/** ffprobe's view of a file's one stream, decoding every frame (with its picture width). */
function probe(file) {
  const out = execFileSync('ffprobe', [
    '-v', 'error',
    '-show_entries', 'stream=codec_name:frame=width:format=duration',
    '-of', 'json', file,
  ]);
  const { streams, frames, format } = JSON.parse(out.toString());
  assert.equal(streams.length, 1, out.toString().slice(0, 500));
  const widths = frames.map((f) => f.width).filter((w) => w !== undefined);
  return { codec_name: streams[0].codec_name, frames: frames.length, widths, duration: Number(format.duration) };
}

test('a browser’s camera and microphone recorded through the admin API: files that decode, play and seek', { timeout: 120_000 }, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fanout-rec-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const server = await startServer(t, [], { env: { ...KEYS, FANOUT_RECORDINGS_DIR: dir } });
  const { open } = await launchBrowser(t);
  const room = `rec-${randomBytes(4).toString('hex')}`;
  const admin = execFileSync(server.bin, ['token', 'create', '--identity', 'ops', '--grants', 'admin'], {
    env: { ...process.env, ...KEYS },
  })
    .toString()
    .trim();
  const api = async (method, p, body) => {
    const res = await fetch(`${server.url}/api/rooms/${room}${p}`, {
      method,
      headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
      body: body && JSON.stringify(body),
    });
    return [res.status, await res.json()];
  };

  // Alone in the room: nobody subscribes, so only the recording keeps the top layer on.
  const page = await open(roomUrl(server.url, room, 'alice'), 'alice');
  const tracks = await pollUntil(
    async () => {
      const [status, body] = await api('GET', '');
      const ts = status === 200 ? body.room.tracks : [];
      return ts.length === 2 && ts;
    },
    { timeoutMs: 20_000, what: 'the camera and microphone published' },
  );
  const video = tracks.find((tr) => tr.kind === 'video').id;
  const audio = tracks.find((tr) => tr.kind === 'audio').id;
  const started = [];
  for (const body of [{ track_id: video }, { track_id: audio }, {}]) {
    const [status, rec] = await api('POST', '/recordings', body);
    assert.equal(status, 201, JSON.stringify(rec));
    started.push(rec);
  }
  await sleep(6000);
  const ended = [];
  for (const rec of started) {
    const [status, body] = await api('DELETE', `/recordings/${rec.id}`);
    assert.equal(status, 200, JSON.stringify(body));
    assert.equal(body.state, 'finished', JSON.stringify(body));
    ended.push(body);
  }
  const sent = await rtpStats(page, 'outbound-rtp');
  const [v, a] = ended.slice(0, 2).map((r) => probe(r.file));
  const describe = JSON.stringify({ ended, v, a, sent });
  const widths = [...new Set(v.widths)];
  t.diagnostic(`video ${v.frames} frames ${v.duration} s, widths ${widths}; audio ${a.frames} frames ${a.duration} s`);
  assert.equal(v.codec_name, 'vp8', describe);
  assert.equal(a.codec_name, 'opus', describe);
  // ~6 s (headless Chromium's fake camera gives 15-30 fps), every frame decoded; it ends on the
  // highest layer the page sends (a page starts with its lowest layer alone, and the recording
  // switches up at a keyframe when the others start).
  const top = Math.max(...sent.filter((s) => s.kind === 'video').map((s) => s.frameWidth ?? 0));
  assert.equal(v.widths.length, v.frames, describe);
  assert.equal(v.widths.at(-1), top, describe);
  assert.ok(v.frames >= 60, describe);
  assert.ok(a.frames >= 250, describe); // 20 ms frames
  for (const [probed, rec] of [[v, ended[0]], [a, ended[1]]]) {
    assert.ok(probed.duration > 4 && probed.duration < 8, describe);
    assert.ok(Math.abs(probed.duration * 1000 - rec.duration_ms) < 250, describe);
  }

  // The file plays in Chromium: a finite duration (written at the end) and a seek that lands.
  const player = await (await page.context().browser().newContext()).newPage();
  await player.goto(`file://${ended[0].file}`);
  const played = await pollUntil(
    () =>
      player.evaluate(async () => {
        const el = document.querySelector('video');
        if (!el || !(el.readyState >= 1)) return null;
        el.muted = true;
        const seeked = new Promise((resolve) => el.addEventListener('seeked', resolve, { once: true }));
        el.currentTime = el.duration - 0.5;
        await seeked;
        return { duration: el.duration, width: el.videoWidth, at: el.currentTime };
      }),
    { timeoutMs: 15_000, what: 'the recording to load in a <video>' },
  );
  assert.ok(Number.isFinite(played.duration) && played.duration > 4, JSON.stringify(played));
  assert.equal(played.width, top);
  assert.ok(Math.abs(played.at - (played.duration - 0.5)) < 0.5, JSON.stringify(played));

  // The room: the composite (VP8, 640x360) and the mix (Opus), both decoding, and it plays.
  const roomFile = ended[2].file;
  const streams = JSON.parse(
    execFileSync('ffprobe', ['-v', 'error', '-count_frames', '-show_entries', 'stream=codec_name,width,nb_read_frames', '-of', 'json', roomFile]).toString(),
  ).streams;
  t.diagnostic(`room recording: ${JSON.stringify(streams)} ${ended[2].duration_ms} ms`);
  assert.deepEqual(streams.map((s) => s.codec_name), ['vp8', 'opus'], JSON.stringify(streams));
  assert.equal(streams[0].width, 640);
  assert.ok(Number(streams[0].nb_read_frames) >= 40 && Number(streams[1].nb_read_frames) >= 200, JSON.stringify(streams));
  await player.goto(`file://${roomFile}`);
  const room_played = await pollUntil(
    () => player.evaluate(() => {
      const el = document.querySelector('video');
      return el && el.readyState >= 1 && Number.isFinite(el.duration) ? { duration: el.duration, width: el.videoWidth } : null;
    }),
    { timeoutMs: 15_000, what: 'the room recording to load in a <video>' },
  );
  assert.equal(room_played.width, 640);
  assert.ok(room_played.duration > 4, JSON.stringify(room_played));
});
