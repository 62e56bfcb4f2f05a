// A subscriber behind a real bottleneck: its Chromium runs in a network namespace this test
// creates, reaching the server over a veth pair whose server side is shaped to 400 kbit/s with
// `tc tbf` (server → subscriber). It shows the publisher at 1280x720, so only bandwidth can keep
// it below the top layer: it must settle on a lower layer (about 320 or 640 px wide: the fake
// camera's 640x360 layer runs at ~150-200 kbit/s, which such a link carries) and keep decoding
// without flooding the link (no retransmission storm: the shaper drops next to nothing once
// settled), while a subscriber on loopback, also at 1280x720, gets the high layer. All traffic stays on this
// machine: loopback, and the veth pair between the root namespace and the test's namespace.
// Needs root and iproute2 (`ip`, `tc`); skipped with the reason otherwise.

import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import test from 'node:test';
import { launchBrowser, launchBrowserIn, pollUntil, roomUrl, rtpStats, signalingLog, transportStats } from './browser.mjs';
import { namespacesUnavailable, run, vethNamespace } from './netns.mjs';
import { startServer } from './server.mjs';

const RATE = '400kbit';
const VIEWPORT = { viewport: { width: 1600, height: 1000 }, deviceScaleFactor: 1 };
/** How long the limited subscriber must keep decoding a lower layer once it settled. */
const STEADY_MS = 10_000;
const WINDOW_MS = 2_000;
/** Widest frame of a layer below the top one (the 640x360 layer, with some slack). */
const MAX_WIDTH = 660;

const skip = namespacesUnavailable(['ip', 'tc']);
if (skip) console.log(`bandwidth test skipped: ${skip}`);

test('a subscriber with a 400 kbit/s downlink settles below the top layer and keeps decoding without flooding the link', { skip: skip ?? false, timeout: 180_000 }, async (t) => {
  const { id, ns, veth: { host: veth }, hostIp: serverIp } = vethNamespace(t, { tag: 'bw', second: 213 });
  // Shape what the server sends into the namespace.
  run('tc', 'qdisc', 'add', 'dev', veth, 'root', 'tbf', 'rate', RATE, 'burst', '20kb', 'latency', '200ms');
  const qdisc = () => {
    try {
      return run('tc', '-s', 'qdisc', 'show', 'dev', veth).replace(/\s+/g, ' ').trim();
    } catch (err) {
      return `(tc: ${err.message})`;
    }
  };

  /** The shaper's cumulative packet counters. */
  const shaperPackets = () => {
    const m = qdisc().match(/Sent \d+ bytes (\d+) pkt \(dropped (\d+)/);
    return m ? { sent: Number(m[1]), dropped: Number(m[2]) } : { sent: 0, dropped: 0 };
  };
  /** The shaper's cumulative counters, short: `sent <bytes> B <packets> p, dropped <n>, backlog <bytes>`. */
  const shaperCounters = () => {
    const m = qdisc().match(/Sent (\d+) bytes (\d+) pkt \(dropped (\d+).*?backlog (\S+)/);
    return m ? `sent=${m[1]}B/${m[2]}p dropped=${m[3]} backlog=${m[4]}` : '?';
  };

  // Signaling and media on every address; candidates for loopback and the veth address.
  const server = await startServer(t, ['--media-ip', '0.0.0.0', '--announce-ip', '127.0.0.1', '--announce-ip', serverIp], {
    host: '0.0.0.0',
  });
  const { open } = await launchBrowser(t);

  // The limited subscriber's Chromium runs inside the namespace.
  const openLimited = await launchBrowserIn(t, ns);

  const room = `bw-${id}`;
  const pub = await open(roomUrl(server.url, room, 'pub'), 'pub', VIEWPORT);
  // Without data channels (data=0): this test is about the media downlink. With them, the
  // receive-only `free` page twice never finished DTLS in CI (its first negotiation was the
  // server's offer of the data section alone); an open bug of issue 18, see its note.
  const free = await open(roomUrl(server.url, room, 'free', { publish: '0', overlay: '1', tile: '1280x720', data: '0' }), 'free', VIEWPORT);
  const limited = await openLimited(
    roomUrl(`http://${serverIp}:${server.port}`, room, 'limited', { publish: '0', overlay: '1', tile: '1280x720', data: '0' }),
    'limited',
    VIEWPORT,
  );

  const video = async (page) => (await rtpStats(page, 'inbound-rtp')).find((r) => r.kind === 'video');
  const overlay = (page) =>
    page.evaluate(() => {
      const el = document.querySelector('[data-remote][data-name="pub"] .layer');
      return el ? { layer: el.dataset.layer, reason: el.dataset.reason } : null;
    });
  /** The server's downlink estimate and budget for the limited subscriber, in kbit/s. */
  const downlinkEstimate = async () => {
    const snapshot = await (await fetch(`${server.url}/debug/rooms`)).json();
    const p = snapshot.rooms.flatMap((r) => r.participants).find((x) => x.name === 'limited');
    const k = (bps) => (bps == null ? '-' : `${Math.round(bps / 1000)}k`);
    return p ? `${k(p.estimate_bps)}/${k(p.budget_bps)}${p.congestion_hold ? ' held' : ''}` : '?';
  };
  /** Once a second: the limited subscriber's video stats, its overlay and the shaper's counters. */
  const samples = [];
  const started = Date.now();
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const inbound = await rtpStats(limited, 'inbound-rtp').catch(() => []);
      const r = inbound.find((s) => s.kind === 'video');
      const audio = inbound.find((s) => s.kind === 'audio');
      const o = await overlay(limited).catch(() => null);
      const link = await transportStats(limited).catch(() => null);
      const est = await downlinkEstimate().catch(() => null);
      samples.push(
        `${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s ` +
          (r
            ? `${r.frameWidth}x${r.frameHeight} decoded=${r.framesDecoded} key=${r.keyFramesDecoded} dropped=${r.framesDropped} ` +
              `freezes=${r.freezeCount} bytes=${r.bytesReceived} packets=${r.packetsReceived} lost=${r.packetsLost} ` +
              `nacks=${r.nackCount} plis=${r.pliCount} rtxBytes=${r.retransmittedBytesReceived} ` +
              `headerBytes=${r.headerBytesReceived} audioBytes=${(audio?.bytesReceived ?? 0) + (audio?.headerBytesReceived ?? 0)} ` +
              `linkBytes=${link?.bytesReceived}`
            : 'no inbound video') +
          ` overlay=${o?.layer}/${o?.reason} estimate=${est} | shaper ${shaperCounters()}`,
      );
      await sleep(1000);
    }
  })();
  t.after(async () => {
    sampling = false;
    await sampler;
  });
  /** The publisher's encodings and its uplink estimate. */
  const publisherStats = async () =>
    (await rtpStats(pub, 'outbound-rtp'))
      .filter((r) => r.kind === 'video')
      .map((r) => `${r.rid}: active=${r.active} ${r.frameWidth}x${r.frameHeight} bytesSent=${r.bytesSent} limited by ${r.qualityLimitationReason}`)
      .join('; ') + `; transport ${JSON.stringify(await transportStats(pub))}`;
  const describe = async () =>
    `limited subscriber, once a second:\n  ${samples.slice(-40).join('\n  ')}\n` +
    `free: ${JSON.stringify(await video(free))} ${JSON.stringify(await overlay(free))}\n` +
    `publisher: ${await publisherStats()}\n` +
    `shaper: ${qdisc()}\n` +
    `limited signaling:\n${await signalingLog(limited)}\n` +
    `publisher signaling:\n${await signalingLog(pub)}\n` +
    `GET /debug/rooms: ${await (await fetch(`${server.url}/debug/rooms`)).text()}`;

  for (const page of [free, limited]) {
    await pollUntil(() => page.evaluate(() => document.querySelector('[data-remote][data-name="pub"]') !== null), {
      timeoutMs: 20_000,
      what: 'the publisher tile',
      describe,
    });
  }

  // The premise: the top layer needs more than the limited link. The publisher's encoder starts
  // small and grows with its uplink estimate; once (in CI) its top layer stayed under 300 kbit/s
  // for 40 s, so it fit the 400 kbit/s link and nothing had to switch down. Wait until the free
  // subscriber receives more than 700 kbit/s of video.
  let freeKbps = 0;
  await pollUntil(
    async () => {
      const a = await video(free);
      await sleep(1000);
      const b = await video(free);
      freeKbps = a && b ? ((b.bytesReceived - a.bytesReceived) * 8) / 1000 : 0;
      return freeKbps > 700;
    },
    { timeoutMs: 60_000, intervalMs: 0, what: 'the top layer to outgrow the limited link (the free subscriber over 700 kbit/s)', describe: async () => `${freeKbps} kbit/s\n${await describe()}` },
  );
  // Switches down: the overlay says low or medium for bandwidth and ~320 or ~640 px frames are
  // decoded.
  const belowTopNow = async () => {
    const r = await video(limited);
    const o = await overlay(limited);
    return r && r.frameWidth > 0 && r.frameWidth <= MAX_WIDTH && ['low', 'medium'].includes(o?.layer) && o.reason === 'bandwidth'
      ? r
      : null;
  };
  await pollUntil(belowTopNow, {
    timeoutMs: 40_000,
    what: 'the limited subscriber below the top layer (reason bandwidth), decoding at most ~640 px',
    describe,
  });
  const switched = Date.now() - started;
  // Settles: still below the top layer and decoding at 5 frames/s or more. The switch happens on a congested
  // link, so the first low frames may take a moment; the issue sets no deadline for this.
  await pollUntil(
    async () => {
      const a = await belowTopNow();
      await sleep(1000);
      const b = await belowTopNow();
      return a && b && b.framesDecoded >= a.framesDecoded + 5;
    },
    { timeoutMs: 30_000, intervalMs: 0, what: 'the limited subscriber decoding a lower layer steadily', describe },
  );
  const settled = Date.now() - started;
  // And keeps decoding for 10 s: frames decoded in every 2 s window, none of the top layer, and
  // the link is not flooded (a retransmission storm had the shaper drop ~90 % for 20 s).
  let last = await video(limited);
  const first = last;
  const shaperBefore = shaperPackets();
  for (let i = 0; i < STEADY_MS / WINDOW_MS; i++) {
    await sleep(WINDOW_MS);
    const now = await video(limited);
    assert.ok(
      now.framesDecoded > last.framesDecoded,
      `no frame decoded between ${i * 2} s and ${i * 2 + 2} s after settling\n${await describe()}`,
    );
    assert.ok(
      now.frameWidth <= MAX_WIDTH,
      `went up to the top layer (${now.frameWidth} px wide) ${i * 2 + 2} s after settling\n${await describe()}`,
    );
    last = now;
  }
  const shaperAfter = shaperPackets();
  const offered = shaperAfter.sent + shaperAfter.dropped - shaperBefore.sent - shaperBefore.dropped;
  const dropped = shaperAfter.dropped - shaperBefore.dropped;
  assert.ok(
    dropped <= 0.05 * offered,
    `the link was flooded once settled: the shaper dropped ${dropped} of ${offered} packets\n${await describe()}`,
  );
  const fps = ((last.framesDecoded - first.framesDecoded) * 1000) / STEADY_MS;
  // The subscriber without a bottleneck is not held back.
  await pollUntil(
    async () => {
      const r = await video(free);
      return r && r.frameWidth >= 1200 && (await overlay(free))?.layer === 'high';
    },
    { timeoutMs: 10_000, what: 'the free subscriber on the high layer', describe },
  );
  console.log(
    `limited subscriber: lower layer decoded ${(switched / 1000).toFixed(1)} s after joining, decoding steadily from ` +
      `${(settled / 1000).toFixed(1)} s, then ${fps.toFixed(1)} frames/s ` +
      `at ${last.frameWidth}x${last.frameHeight} for ${STEADY_MS / 1000} s, the shaper dropping ${dropped} of ${offered} packets; ` +
      `shaper: ${qdisc()}`,
  );
});
