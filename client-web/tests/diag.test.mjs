// The connection-test page: /diag lists the ICE candidates the browser gathers (here only host
// ones: the server hands out no STUN/TURN servers, and the page says so for srflx and relay),
// then the test call's selected candidate pair with its round-trip time.

import assert from 'node:assert/strict';
import test from 'node:test';
import { diagResult, launchBrowser } from './browser.mjs';
import { startServer } from './server.mjs';

test('/diag lists the gathered candidates and the test call\'s selected pair with its round trip', { timeout: 60_000 }, async (t) => {
  const server = await startServer(t);
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
