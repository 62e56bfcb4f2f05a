// The client library as an app gets it: `npm pack` makes the tarball, a fresh app directory
// `npm install`s it (offline: it has no dependencies), type-checks a small app against its
// declarations and bundles it with Vite, and the real server serves that app: two Chromium pages
// of it join a room, see each other's video and exchange a data message, through nothing but the
// package's public API.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'node:test';
import { decodesVideo, launchBrowser, pollUntil } from './browser.mjs';
import { repoRoot, startServer } from './server.mjs';

const clientDir = path.join(repoRoot, 'client-web');
const bin = (name) => path.join(clientDir, 'node_modules/.bin', name);
const run = (file, args, cwd) => execFileSync(file, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] }).toString();

/** The app: joins the room in its URL, publishes its camera, shows the others, says hello. */
const APP = `import { FanoutClient, type DataMessage } from '@fanout/client';

const params = new URLSearchParams(location.search);
const room = params.get('room') ?? 'app';
const name = params.get('name') ?? 'guest';
const got: DataMessage[] = [];
(window as unknown as { app: unknown }).app = { got };

const client = new FanoutClient();
(window as unknown as { fanout: FanoutClient }).fanout = client;
client.enableData();
client.on('data', (m) => got.push(m));
client.on('track', ({ participantId, stream }) => {
  let video = document.getElementById(participantId) as HTMLVideoElement | null;
  if (!video) {
    video = document.createElement('video');
    video.id = participantId;
    video.autoplay = true;
    video.muted = true;
    video.width = 640;
    video.height = 360;
    document.body.append(video);
    client.attachVideo(participantId, video);
  }
  video.srcObject = stream;
});

const token = await (await fetch(\`/dev/token?room=\${room}&name=\${name}\`)).json();
await client.join(undefined, room, name, token.token);
await client.publishCamera();
`;

test('an app installs the packed client library, builds against it and holds a call with it', { timeout: 180_000 }, async (t) => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'fanout-app-'));
  t.after(() => fs.rmSync(work, { recursive: true, force: true }));

  // npm pack (its prepack builds lib/, run first here so that its output stays out of the JSON):
  // the tarball holds the module and its declarations only.
  run('npm', ['run', 'build:lib'], clientDir);
  const packed = JSON.parse(run('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', work], clientDir))[0];
  const files = packed.files.map((f) => f.path);
  for (const want of ['package.json', 'lib/fanout.js', 'lib/fanout.d.ts', 'lib/protocol.d.ts', 'lib/client/types.d.ts']) {
    assert.ok(files.includes(want), `${want} in ${files.join(', ')}`);
  }
  assert.ok(!files.some((f) => f.startsWith('src/') || f.startsWith('tests/') || f.startsWith('dist/')), files.join(', '));
  assert.equal(packed.name, '@fanout/client');

  // A fresh app installs it, type-checks against it, and bundles it.
  const app = path.join(work, 'app');
  fs.mkdirSync(path.join(app, 'src'), { recursive: true });
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
  fs.writeFileSync(path.join(app, 'index.html'), '<!doctype html><title>app</title><script type="module" src="./src/main.ts"></script>');
  fs.writeFileSync(path.join(app, 'src/main.ts'), APP);
  fs.writeFileSync(
    path.join(app, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: { target: 'ES2022', module: 'ESNext', moduleResolution: 'bundler', lib: ['ES2022', 'DOM', 'DOM.Iterable'], types: [], strict: true, noEmit: true },
      include: ['src'],
    }),
  );
  run('npm', ['install', '--offline', '--no-audit', '--no-fund', path.join(work, packed.filename)], app);
  assert.ok(fs.existsSync(path.join(app, 'node_modules/@fanout/client/lib/fanout.js')));
  run(bin('tsc'), ['-p', app], app);
  run(bin('vite'), ['build', '--base', './', '--outDir', path.join(app, 'dist'), '--emptyOutDir'], app);

  // The real server serves the app; two pages of it call each other.
  const server = await startServer(t, [], { staticDir: path.join(app, 'dist') });
  const { open } = await launchBrowser(t);
  const room = `app-${randomBytes(4).toString('hex')}`;
  const ann = await open(`${server.url}/?room=${room}&name=ann`, 'ann');
  const ben = await open(`${server.url}/?room=${room}&name=ben`, 'ben');
  await decodesVideo(ann, "ann decoding ben's video");
  await decodesVideo(ben, "ben decoding ann's video");
  for (const page of [ann, ben]) {
    await pollUntil(() => page.evaluate(() => window.fanout.pc?.sctp?.state === 'connected'), { timeoutMs: 20_000, what: 'the data channels' });
  }
  await ben.evaluate(() => window.fanout.sendData('hello ann', { topic: 'greeting' }));
  await pollUntil(() => ann.evaluate(() => window.app.got.length === 1), { timeoutMs: 20_000, what: "ben's greeting at ann" });
  const greeting = await ann.evaluate(() => window.app.got[0]);
  assert.deepEqual([greeting.payload, greeting.topic], ['hello ann', 'greeting']);
  assert.equal(greeting.participantId, await ben.evaluate(() => window.fanout.participantId));
});
