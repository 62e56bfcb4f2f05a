// Headless Debian Chromium for the end-to-end tests (never a downloaded browser), and the page-side
// probes the tests share.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium } from 'playwright-core';
import puppeteer from 'puppeteer-core';

/** Flags known to work headless on loopback (shared/WEBRTC-RS-NOTES.md, "Chromium for tests"). */
export const CHROMIUM_ARGS = [
  '--headless=new',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--autoplay-policy=no-user-gesture-required',
  '--allow-loopback-in-peer-connection',
  '--disable-features=WebRtcHideLocalIpsWithMdns',
  '--disable-background-timer-throttling',
  '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows',
];

/**
 * Launches a browser (with its own fresh temporary profile) that closes when test `t` ends.
 * `open(url, label, contextOptions, { initScripts })` opens a page in a new browser context, so
 * every participant is on its own; the pages' console errors and warnings are printed if the test
 * fails.
 */
export async function launchBrowser(t, extraArgs = []) {
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    // Playwright would add plain `--headless`; ours says `--headless=new`.
    ignoreDefaultArgs: ['--headless'],
    args: [...CHROMIUM_ARGS, ...extraArgs],
    timeout: 30_000,
  });
  const logs = [];
  t.after(async () => {
    await browser.close().catch(() => {});
    if (t.passed !== true && logs.length > 0) console.log(`browser console:\n${logs.join('\n')}`);
  });
  const open = async (url, label, contextOptions = {}, { initScripts = [] } = {}) => {
    const context = await browser.newContext(contextOptions);
    await context.addInitScript(recordSignaling);
    for (const script of initScripts) await context.addInitScript(script);
    const page = await context.newPage();
    page.on('console', (msg) => {
      if (msg.type() === 'error' || msg.type() === 'warning') logs.push(`[${label}] ${msg.type()}: ${msg.text()}`);
    });
    page.on('pageerror', (err) => logs.push(`[${label}] page error: ${err.message}`));
    await load(page, url, (line) => logs.push(`[${label}] ${line}`));
    return page;
  };
  return { browser, open };
}

/**
 * Preferences for Debian's Firefox ESR, headless: fake camera, microphone and screen without a
 * permission prompt, autoplay, and real host addresses in candidates (no mDNS names).
 */
export const FIREFOX_PREFS = {
  'media.navigator.streams.fake': true,
  'media.navigator.permission.disabled': true,
  'media.peerconnection.ice.loopback': true,
  'media.peerconnection.ice.obfuscate_host_addresses': false,
  'media.autoplay.default': 0,
  'media.autoplay.blocking_policy': 0,
  // Camera and microphone allowed for every page: Firefox gathers every interface's address only
  // for a page that captures or may capture (else just the default route's, for privacy).
  'permissions.default.camera': 1,
  'permissions.default.microphone': 1,
  // No updates, telemetry or other calls to the (closed) internet.
  'app.update.enabled': false,
  'network.captive-portal-service.enabled': false,
  'network.connectivity-service.enabled': false,
  'browser.safebrowsing.malware.enabled': false,
  'browser.safebrowsing.phishing.enabled': false,
  'datareporting.policy.dataSubmissionEnabled': false,
  'toolkit.telemetry.enabled': false,
};

/**
 * Launches Debian's Firefox ESR (`/usr/bin/firefox-esr`) headless over WebDriver BiDi, closed when
 * test `t` ends. Like `launchBrowser`, `open(url, label)` opens a page in a browser context of its
 * own (every participant on its own) and prints the pages' console errors and warnings if the test
 * fails. The pages are puppeteer pages: `evaluate` works as with Playwright, and the shared probes
 * (`rtpStats`, `decodesVideo`, ...) take either.
 */
export async function launchFirefox(t, { screen = false } = {}) {
  // Headless Firefox has no screen to capture (getDisplayMedia: NotFoundError); with `screen` it
  // runs in a window on an Xvfb display of its own, whose screen it can share.
  const display = screen ? await startXvfb(t) : null;
  const browser = await puppeteer.launch({
    browser: 'firefox',
    executablePath: '/usr/bin/firefox-esr',
    headless: !display,
    env: display ? { ...process.env, DISPLAY: display } : process.env,
    extraPrefsFirefox: FIREFOX_PREFS,
    // Playwright's default page size (puppeteer's is 800x600), so pages lay out as in Chromium.
    defaultViewport: { width: 1280, height: 720 },
    timeout: 60_000,
    protocolTimeout: 60_000,
  });
  const logs = [];
  t.after(async () => {
    await browser.close().catch(() => {});
    if (t.passed !== true && logs.length > 0) console.log(`firefox console:\n${logs.join('\n')}`);
  });
  const open = async (url, label) => {
    const context = await browser.createBrowserContext();
    // A window, not a tab: a page in a background tab is `document.hidden`, and the client then
    // (rightly) tells the server it shows nothing.
    const page = await context.newPage({ type: 'window' });
    await page.evaluateOnNewDocument(recordSignaling);
    page.on('console', async (msg) => {
      const type = msg.type();
      if (type !== 'error' && type !== 'warn' && type !== 'warning' && type !== 'info') return;
      // An Error argument prints as `JSHandle@error`: ask the page for its message.
      const args = await Promise.all(
        msg.args().map((a) => a.evaluate((v) => (v && v.message ? `${v.name}: ${v.message}` : String(v))).catch(() => '?')),
      );
      logs.push(`[${label}] ${type}: ${args.length > 0 ? args.join(' ') : msg.text()}`);
    });
    page.on('pageerror', (err) => logs.push(`[${label}] page error: ${err.message}`));
    await page.goto(url, { timeout: 30_000 });
    return page;
  };
  return { browser, open };
}

/** Starts `Xvfb` (Debian's xvfb) on a free display, stopped when `t` ends; returns `:N`. */
async function startXvfb(t) {
  let n = 90;
  while (fs.existsSync(`/tmp/.X11-unix/X${n}`) || fs.existsSync(`/tmp/.X${n}-lock`)) n++;
  const display = `:${n}`;
  const xvfb = spawn('Xvfb', [display, '-screen', '0', '1280x720x24', '-nolisten', 'tcp'], { stdio: 'ignore' });
  const killIt = () => xvfb.kill('SIGKILL');
  process.once('exit', killIt);
  t.after(() => {
    process.removeListener('exit', killIt);
    xvfb.kill('SIGTERM');
  });
  for (let i = 0; !fs.existsSync(`/tmp/.X11-unix/X${n}`); i++) {
    if (i === 100 || xvfb.exitCode !== null) throw new Error(`Xvfb ${display} did not start (apt-get install xvfb)`);
    await sleep(50);
  }
  return display;
}

/**
 * Loads `url` in `page`. A network change on this host or in the browser's namespace (a test's
 * namespace or veth coming up or going away) makes Chromium fail the loads in flight with
 * ERR_NETWORK_CHANGED: the page itself (goto throws) or one of its resources (such a page never
 * starts). Either way it is loaded again (at most three times), saying so to `log`.
 */
async function load(page, url, log) {
  let changed = false;
  page.on('requestfailed', (req) => {
    if (req.failure()?.errorText === 'net::ERR_NETWORK_CHANGED') changed = true;
  });
  for (let attempt = 1; ; attempt++) {
    changed = false;
    try {
      await page.goto(url, { timeout: 15_000 });
    } catch (err) {
      if (attempt === 3 || !String(err?.message).includes('ERR_NETWORK_CHANGED')) throw err;
      changed = true;
    }
    if (!changed || attempt === 3) return;
    log('page load hit a network change; loading it again');
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

/** Signaling message types `recordSignaling` keeps (not SDP and candidates). */
const RECORDED_TYPES = ['track_settings', 'track_source', 'track_layer', 'publisher_layers', 'track_published', 'error'];

/**
 * A page init script: records the simulcast-related signaling messages in both directions in
 * `window.__signaling` (`{ ms, dir: 'in' | 'out', msg }`, ms since the page started), for the
 * tests' failure messages. Pass it to `context.addInitScript` (the tests' `open` does).
 */
export function recordSignaling() {
  // This function is serialized into the page, so it names the types itself.
  const RECORDED = ['track_settings', 'track_source', 'track_layer', 'publisher_layers', 'track_published', 'error'];
  const log = [];
  const keep = (dir, data) => {
    try {
      const msg = JSON.parse(data);
      if (RECORDED.includes(msg.type)) log.push({ ms: Math.round(performance.now()), dir, msg });
    } catch {
      // not JSON: not ours
    }
  };
  Object.defineProperty(window, '__signaling', { value: log });
  const send = WebSocket.prototype.send;
  WebSocket.prototype.send = function (data) {
    if (typeof data === 'string') keep('out', data);
    return send.call(this, data);
  };
  const NativeWebSocket = WebSocket;
  window.WebSocket = class extends NativeWebSocket {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', (e) => typeof e.data === 'string' && keep('in', e.data));
    }
  };
}

/** The recorded signaling messages of a page (see `recordSignaling`), one per line. */
export async function signalingLog(page, types = RECORDED_TYPES) {
  const log = await page.evaluate(() => window.__signaling ?? []).catch(() => []);
  return log
    .filter((e) => types.includes(e.msg.type))
    .map((e) => `  ${String(e.ms).padStart(6)} ms ${e.dir === 'in' ? '←' : '→'} ${JSON.stringify(e.msg)}`)
    .join('\n');
}

/** The demo page's URL for `room` and `name`, with optional extra query parameters. */
export function roomUrl(base, room, name, extra = {}) {
  const query = new URLSearchParams({ room, name, ...extra });
  return `${base}/?${query}`;
}

/** The RTP stream entries of `window.fanout.pc.getStats()` of the given `type`. */
export function rtpStats(page, type) {
  return page.evaluate(async (type) => {
    const pc = window.fanout?.pc;
    if (!pc) return [];
    const out = [];
    (await pc.getStats()).forEach((r) => {
      if (r.type !== type) return;
      out.push({
        id: r.id,
        kind: r.kind,
        ssrc: r.ssrc,
        framesDecoded: r.framesDecoded ?? 0,
        framesEncoded: r.framesEncoded ?? 0,
        packetsReceived: r.packetsReceived ?? 0,
        packetsSent: r.packetsSent ?? 0,
        packetsLost: r.packetsLost ?? 0,
        nackCount: r.nackCount ?? 0,
        retransmittedPacketsSent: r.retransmittedPacketsSent ?? 0,
        frameWidth: r.frameWidth ?? 0,
        frameHeight: r.frameHeight ?? 0,
        rid: r.rid,
        active: r.active,
        trackIdentifier: r.trackIdentifier,
        bytesReceived: r.bytesReceived ?? 0,
        bytesSent: r.bytesSent ?? 0,
        qualityLimitationReason: r.qualityLimitationReason,
        keyFramesDecoded: r.keyFramesDecoded ?? 0,
        framesDropped: r.framesDropped ?? 0,
        freezeCount: r.freezeCount ?? 0,
        pliCount: r.pliCount ?? 0,
        retransmittedBytesReceived: r.retransmittedBytesReceived ?? 0,
        headerBytesReceived: r.headerBytesReceived ?? 0,
        firCount: r.firCount ?? 0,
      });
    });
    return out;
  }, type);
}

/** Inbound streams of `kind` whose `field` was > 0 in `before` and grew by `after`. */
export function growing(before, after, kind, field) {
  return after.filter((r) => {
    const b = before.find((x) => x.id === r.id);
    return r.kind === kind && b && b[field] > 0 && r[field] > b[field];
  });
}

/** The one inbound video stream of a subscriber page (or undefined). */
export async function inboundVideo(page) {
  return (await rtpStats(page, 'inbound-rtp')).find((r) => r.kind === 'video');
}

/** A subscriber's video decodes frames (over 500 ms) of a width within [lo, hi]; returns the stats. */
export async function decodesWidth(page, [lo, hi]) {
  const a = await inboundVideo(page);
  await sleep(500);
  const b = await inboundVideo(page);
  return a && b && b.framesDecoded > a.framesDecoded && b.frameWidth >= lo && b.frameWidth <= hi ? b : null;
}

/** The selected ICE candidate pair's estimates: availableOutgoingBitrate, round-trip time. */
export function transportStats(page) {
  return page.evaluate(async () => {
    const pc = window.fanout?.pc;
    if (!pc) return null;
    let pair = null;
    (await pc.getStats()).forEach((r) => {
      if (r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded') pair = r;
    });
    return pair && {
      availableOutgoingBitrate: pair.availableOutgoingBitrate,
      availableIncomingBitrate: pair.availableIncomingBitrate,
      currentRoundTripTime: pair.currentRoundTripTime,
      bytesSent: pair.bytesSent,
      bytesReceived: pair.bytesReceived,
    };
  });
}

/** The page's selected candidate pair: local and remote candidate types, addresses and ports. */
export function selectedPair(page) {
  return page.evaluate(async () => {
    const stats = await window.fanout?.pc?.getStats();
    if (!stats) return null;
    let selected = null;
    stats.forEach((r) => {
      if (r.type === 'transport' && r.selectedCandidatePairId) selected = r.selectedCandidatePairId;
    });
    const pair = selected && stats.get(selected);
    if (!pair) return null;
    const out = {};
    stats.forEach((r) => {
      const side = r.id === pair.localCandidateId ? 'local' : r.id === pair.remoteCandidateId ? 'remote' : null;
      if (side) out[side] = { type: r.candidateType, address: r.address, port: r.port, protocol: r.protocol, relayProtocol: r.relayProtocol };
    });
    return out;
  });
}

/**
 * A headless Chromium inside network namespace `ns` (through an `ip netns exec` wrapper; playwright
 * talks to it over pipes), closed when `t` ends. Returns `open(url, label, contextOptions)`.
 */
export async function launchBrowserIn(t, ns, extraArgs = []) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fanout-nat-'));
  const wrapper = path.join(dir, 'chromium-in-ns');
  fs.writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${ns} /usr/bin/chromium "$@"\n`, { mode: 0o755 });
  const browser = await chromium.launch({
    executablePath: wrapper,
    headless: true,
    ignoreDefaultArgs: ['--headless'],
    args: [...CHROMIUM_ARGS, ...extraArgs],
    timeout: 30_000,
  });
  const logs = [];
  t.after(async () => {
    await browser.close().catch(() => {});
    fs.rmSync(dir, { recursive: true, force: true });
    if (t.passed !== true && logs.length) console.log(`browser console:\n${logs.join('\n')}`);
  });
  return async (url, label, contextOptions = {}) => {
    const context = await browser.newContext(contextOptions);
    await context.addInitScript(recordSignaling);
    const page = await context.newPage();
    page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warning') logs.push(`[${label}] ${m.type()}: ${m.text()}`);
    });
    await load(page, url, (line) => logs.push(`[${label}] ${line}`));
    return page;
  };
}

/**
 * Waits (`timeoutMs`, 30 s by default) until `page` decodes a growing video stream (framesDecoded
 * above 0 and rising over 1.5 s) and, with `audio`, receives a growing audio stream too.
 */
export async function decodesVideo(page, what, { timeoutMs = 30_000, audio = false } = {}) {
  let last = [];
  await pollUntil(
    async () => {
      const before = await rtpStats(page, 'inbound-rtp');
      await sleep(1500);
      last = await rtpStats(page, 'inbound-rtp');
      const grew = (kind, field) =>
        last.some((r) => {
          const b = before.find((x) => x.id === r.id);
          return r.kind === kind && b && b[field] > 0 && r[field] > b[field];
        });
      return grew('video', 'framesDecoded') && (!audio || grew('audio', 'packetsReceived'));
    },
    { timeoutMs, intervalMs: 0, what, describe: async () => `inbound-rtp: ${JSON.stringify(last)}` },
  );
}

/**
 * Polls `check()` until it returns a truthy value or `timeoutMs` passes; returns the value, or
 * throws with `describe()`'s account of the last state.
 */
export async function pollUntil(check, { timeoutMs, intervalMs = 200, what, describe = () => '' }) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() + intervalMs > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}\n${await describe()}`);
    }
    await sleep(intervalMs);
  }
}

/** What /diag shows once done: candidate rows, missing kinds and the pair row. */
export async function diagResult(page) {
  await page.waitForSelector('#diag[data-state="done"], #diag[data-state="failed"]', { timeout: 40_000 });
  return page.evaluate(() => ({
    state: document.getElementById('diag').dataset.state,
    status: document.getElementById('status').textContent,
    candidates: [...document.querySelectorAll('#candidates tbody tr[data-type]')].map((r) => ({ type: r.dataset.type, protocol: r.dataset.protocol })),
    missing: [...document.querySelectorAll('#candidates tbody tr[data-missing]')].map((r) => r.dataset.missing),
    pair: (() => {
      const r = document.querySelector('#pair tbody tr[data-local-type]');
      return r && { localType: r.dataset.localType, rttMs: Number(r.dataset.rttMs), text: r.textContent };
    })(),
  }));
}
