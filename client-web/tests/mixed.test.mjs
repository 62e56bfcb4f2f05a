// Mixed audio in the demo page (`&mixed=audio`): three browsers, each with its own microphone
// (a fake capture of a different tone: 440 Hz, 660 Hz, 1500 Hz). The one that asked for the mix
// receives one audio stream holding the two others' tones and not its own (measured in the page
// with an AnalyserNode); the others still receive each microphone as its own stream.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'node:test';
import { launchBrowser, pollUntil, roomUrl, rtpStats } from './browser.mjs';
import { startServer } from './server.mjs';

/** A 10 s, 48 kHz, 16-bit mono WAV file of a sine tone (Chromium loops it as its microphone). */
function toneWav(dir, hz) {
  const rate = 48_000;
  const n = rate * 10;
  const data = Buffer.alloc(n * 2);
  for (let i = 0; i < n; i++) data.writeInt16LE(Math.round(9000 * Math.sin((2 * Math.PI * hz * i) / rate)), i * 2);
  const header = Buffer.alloc(44);
  header.write('RIFF', 0);
  header.writeUInt32LE(36 + data.length, 4);
  header.write('WAVEfmt ', 8);
  header.writeUInt32LE(16, 16);
  header.writeUInt16LE(1, 20); // PCM
  header.writeUInt16LE(1, 22); // mono
  header.writeUInt32LE(rate, 24);
  header.writeUInt32LE(rate * 2, 28);
  header.writeUInt16LE(2, 32);
  header.writeUInt16LE(16, 34);
  header.write('data', 36);
  header.writeUInt32LE(data.length, 40);
  const file = path.join(dir, `${hz}.wav`);
  fs.writeFileSync(file, Buffer.concat([header, data]));
  return file;
}

/**
 * The level (dB) of the page's mixed audio at each of `freqs`, and the median level over the
 * spectrum (the floor), from an AnalyserNode on `#mixed-audio`'s stream, averaged over 1 s.
 */
function mixedLevels(page, freqs) {
  return page.evaluate(async (freqs) => {
    const el = document.querySelector('#mixed-audio');
    if (!el?.srcObject) return null;
    const ctx = new AudioContext();
    await ctx.resume();
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 8192;
    ctx.createMediaStreamSource(el.srcObject).connect(analyser);
    const bins = new Float32Array(analyser.frequencyBinCount);
    const sum = new Float64Array(bins.length);
    for (let i = 0; i < 10; i++) {
      await new Promise((r) => setTimeout(r, 100));
      analyser.getFloatFrequencyData(bins);
      for (let b = 0; b < bins.length; b++) sum[b] += bins[b] / 10;
    }
    await ctx.close();
    const hzPerBin = ctx.sampleRate / analyser.fftSize;
    const at = (hz) => Math.max(...[-2, -1, 0, 1, 2].map((d) => sum[Math.round(hz / hzPerBin) + d]));
    const sorted = [...sum].sort((a, b) => a - b);
    return { levels: Object.fromEntries(freqs.map((f) => [f, at(f)])), floor: sorted[Math.floor(sorted.length / 2)] };
  }, freqs);
}

test('&mixed=audio: one stream with the others’ voices and not one’s own', { timeout: 150_000 }, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fanout-tones-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const server = await startServer(t);
  const room = `mix-${randomBytes(4).toString('hex')}`;
  const mic = (hz) => [`--use-file-for-fake-audio-capture=${toneWav(dir, hz)}`];
  const [a, b, l] = await Promise.all([440, 660, 1500].map((hz) => launchBrowser(t, mic(hz))));
  const alice = await a.open(roomUrl(server.url, room, 'alice'), 'alice');
  const bob = await b.open(roomUrl(server.url, room, 'bob'), 'bob');
  const lena = await l.open(roomUrl(server.url, room, 'lena', { mixed: 'audio' }), 'lena');

  // Lena receives one audio stream (the mix) and both cameras; Alice each microphone apart.
  const audioIn = async (page) => (await rtpStats(page, 'inbound-rtp')).filter((r) => r.kind === 'audio' && r.packetsReceived > 50);
  await pollUntil(async () => (await audioIn(lena)).length === 1 && (await audioIn(alice)).length === 2, {
    timeoutMs: 40_000,
    what: "lena's mixed audio and alice's two microphones",
    describe: async () => JSON.stringify({ lena: await rtpStats(lena, 'inbound-rtp'), alice: await rtpStats(alice, 'inbound-rtp') }),
  });
  await pollUntil(async () => (await rtpStats(lena, 'inbound-rtp')).filter((r) => r.kind === 'video' && r.framesDecoded > 10).length === 2, {
    timeoutMs: 30_000,
    what: 'lena to decode both cameras (video is forwarded as usual)',
  });
  assert.equal(await lena.evaluate(() => window.fanout.participants.size), 2, 'the mix is no participant');

  // What lena hears: 440 and 660 Hz well above the floor, her own 1500 Hz not.
  let last = null;
  await pollUntil(
    async () => {
      last = await mixedLevels(lena, [440, 660, 1500]);
      if (!last) return false;
      const { levels, floor } = last;
      // The others' tones well above the floor; hers at least 40 dB below them (what is left
      // there is the codec's noise: -121 dB against -51 dB for the others in one CI run).
      const others = Math.min(levels[440], levels[660]);
      return others > floor + 30 && levels[1500] < others - 40;
    },
    { timeoutMs: 20_000, intervalMs: 0, what: 'the two others’ tones in the mix, and not her own', describe: () => JSON.stringify(last) },
  );
  t.diagnostic(`mixed audio levels (dB): ${JSON.stringify(last)}`);
  // Bob, forwarding as usual, hears lena's own microphone (so the mix really left it out).
  await pollUntil(async () => (await audioIn(bob)).length === 2, { timeoutMs: 20_000, what: "bob to receive alice's and lena's microphones" });
});

test('&mixed=1: one composite picture of the room and the mixed voices', { timeout: 120_000 }, async (t) => {
  const server = await startServer(t);
  const { open } = await launchBrowser(t);
  const room = `comp-${randomBytes(4).toString('hex')}`;
  const alice = await open(roomUrl(server.url, room, 'alice'), 'alice');
  const bob = await open(roomUrl(server.url, room, 'bob'), 'bob');
  const carol = await open(roomUrl(server.url, room, 'carol'), 'carol');
  const viewer = await open(roomUrl(server.url, room, 'vera', { mixed: '1' }), 'vera');
  // One video (the composite) and one audio (the mix) arrive, whatever the room's size.
  const inbound = async () => (await rtpStats(viewer, 'inbound-rtp')).filter((r) => r.packetsReceived > 30);
  await pollUntil(
    async () => {
      const rs = await inbound();
      const video = rs.filter((r) => r.kind === 'video');
      // The composite's large (640x360) or small (320x180) layer, as the viewer's bandwidth allows.
      return video.length === 1 && video[0].framesDecoded > 15 && [320, 640].includes(video[0].frameWidth) && rs.filter((r) => r.kind === 'audio').length === 1;
    },
    { timeoutMs: 40_000, what: 'one composite video and one mixed audio stream', describe: async () => JSON.stringify(await rtpStats(viewer, 'inbound-rtp')) },
  );
  // The page shows it in a tile of its own (playing), and hides the others' empty tiles.
  const shown = await viewer.evaluate(() => {
    const v = document.querySelector('.tile.composite video');
    const hidden = [...document.querySelectorAll('.tile[data-remote]:not(.composite)')].every((t) => t.style.display === 'none');
    return { width: v?.videoWidth, paused: v?.paused, hidden, remotes: document.querySelectorAll('.tile[data-remote]:not(.composite)').length };
  });
  assert.ok([320, 640].includes(shown.width), JSON.stringify(shown));
  assert.deepEqual({ ...shown, width: 0 }, { width: 0, paused: false, hidden: true, remotes: 3 });
  // The others still receive each camera.
  await pollUntil(async () => (await rtpStats(alice, 'inbound-rtp')).filter((r) => r.kind === 'video' && r.framesDecoded > 5).length === 3, {
    timeoutMs: 30_000,
    what: "alice to decode bob's, carol's and vera's cameras",
  });
  void bob;
  void carol;
});
