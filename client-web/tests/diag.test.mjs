// The connection-test page: /diag lists the ICE candidates the browser gathers, then the test
// call's selected candidate pair with its round-trip time. Without STUN/TURN servers only host
// candidates (the page says srflx and relay are missing); with the embedded TURN server that
// --dev runs, relay candidates too.

import assert from 'node:assert/strict';
import test from 'node:test';
import { diagResult, launchBrowser } from './browser.mjs';
import { freeTcpPort, startServer } from './server.mjs';

test('/diag lists the gathered candidates and the test call\'s selected pair with its round trip', { timeout: 60_000 }, async (t) => {
  const server = await startServer(t, ['--turn-embedded', 'false']);
  const { open } = await launchBrowser(t);
  const page = await open(`${server.url}/diag`, 'diag');
  const r = await diagResult(page);
  assert.equal(r.state, 'done', JSON.stringify(r));
  assert.ok(r.candidates.some((c) => c.type === 'host' && c.protocol === 'udp'), JSON.stringify(r.candidates));
  assert.deepEqual(r.missing.sort(), ['relay', 'srflx']);
  assert.equal(r.pair.localType, 'host', JSON.stringify(r.pair));
  assert.ok(r.pair.rttMs >= 0 && r.pair.rttMs < 1000, JSON.stringify(r.pair));
  console.log(`/diag: ${r.candidates.length} candidates; ${r.status}`);
});

test('/diag gathers relay candidates from the embedded TURN server of a --dev server', { timeout: 60_000 }, async (t) => {
  const server = await startServer(t, ['--turn-port', String(await freeTcpPort())]);
  const { open } = await launchBrowser(t);
  const r = await diagResult(await open(`${server.url}/diag`, 'diag'));
  assert.equal(r.state, 'done', JSON.stringify(r));
  assert.ok(r.candidates.some((c) => c.type === 'relay'), JSON.stringify(r.candidates));
  assert.deepEqual(r.missing, ['srflx']);
});
