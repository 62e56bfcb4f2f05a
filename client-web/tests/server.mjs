// Starts the real `fanout` binary for one test on free loopback ports and stops it when the test
// ends. The binary is $FANOUT_BIN, or <repo>/target/debug/fanout; it serves client-web/dist.

import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** A TCP port that was free a moment ago (the kernel's pick for port 0). */
export function freeTcpPort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** A UDP port that was free a moment ago. */
export function freeUdpPort() {
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket('udp4');
    socket.once('error', reject);
    socket.bind(0, '127.0.0.1', () => {
      const { port } = socket.address();
      socket.close(() => resolve(port));
    });
  });
}

/** The last `lines` lines of a file, or a note that it cannot be read. */
export function tail(file, lines = 60) {
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch (err) {
    return `(cannot read ${file}: ${err.message})`;
  }
}

/** The status of a GET of `url` (1 s timeout), not checking an HTTPS server's certificate. */
function healthStatus(url) {
  return new Promise((resolve, reject) => {
    const get = url.startsWith('https:') ? https.get : http.get;
    const req = get(url, { rejectUnauthorized: false, timeout: 1000 }, (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

/**
 * Starts `fanout serve --dev` (without `--dev` if `dev` is false; `env` adds environment
 * variables) with `extraArgs` appended and waits until /healthz answers 200.
 * `host` is the address signaling binds to (the media socket follows it); the returned `url`
 * is on `host` (on loopback for a wildcard). With `netns` the server runs inside that network
 * namespace (made by `netns.mjs`; `host` is then its address there).
 * Returns `{ url, port, udpPort, logPath, stop, kill }`; `stop` also runs when test `t` ends, and the
 * log's path and tail are printed if the test failed (and the log is deleted if it passed).
 */
export async function startServer(
  t,
  extraArgs = [],
  { host = '127.0.0.1', dev = true, env = {}, netns = null, staticDir = path.join(repoRoot, 'client-web/dist') } = {},
) {
  const bin = process.env.FANOUT_BIN || path.join(repoRoot, 'target/debug/fanout');
  if (!fs.existsSync(bin)) {
    throw new Error(`no server binary at ${bin}: run \`cargo build -p fanout-signaling --bin fanout\` or set FANOUT_BIN`);
  }
  if (!fs.existsSync(path.join(staticDir, 'index.html'))) {
    throw new Error(`no demo page in ${staticDir}: run \`npm run build\` in client-web first`);
  }

  const port = await freeTcpPort();
  const udpPort = await freeUdpPort();
  const logDir = fs.mkdtempSync(path.join(os.tmpdir(), 'fanout-e2e-'));
  const logPath = path.join(logDir, 'server.log');
  const hostPort = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
  const args = ['serve', ...(dev ? ['--dev'] : []), '--bind', hostPort, '--udp-port', String(udpPort), '--static-dir', staticDir, ...extraArgs];
  fs.writeFileSync(logPath, `$ ${bin} ${args.join(' ')}\n`);
  const logFd = fs.openSync(logPath, 'a');
  // In a network namespace: `ip netns exec` execs the server, so the child is the server itself.
  const [file, argv] = netns ? ['ip', ['netns', 'exec', netns, bin, ...args]] : [bin, args];
  const child = spawn(file, argv, { stdio: ['ignore', logFd, logFd], env: { ...process.env, NO_COLOR: '1', ...env } });
  fs.closeSync(logFd); // the child has its own copy

  let exited = null; // { code, signal } once the process is gone
  const exit = new Promise((resolve) => {
    child.once('exit', (code, signal) => resolve((exited = { code, signal })));
    child.once('error', (err) => resolve((exited = { code: null, signal: null, error: err })));
  });
  // If this test process dies abruptly, do not leave the server behind.
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);

  const stop = async () => {
    process.removeListener('exit', killOnExit);
    if (exited) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exit;
    clearTimeout(timer);
  };
  t.after(async () => {
    await stop();
    if (t.passed !== true) console.log(`server log: ${logPath}\n${tail(logPath)}`);
    else fs.rmSync(logDir, { recursive: true, force: true });
  });

  // With --tls-cert the server speaks HTTPS only (its certificate need not be trusted here).
  const scheme = extraArgs.includes('--tls-cert') ? 'https' : 'http';
  const urlHost = host.includes(':') ? `[${host === '::' ? '::1' : host}]` : host === '0.0.0.0' ? '127.0.0.1' : host;
  const url = `${scheme}://${urlHost}:${port}`;
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (exited) {
      throw new Error(`server exited early (${JSON.stringify(exited)}); log ${logPath}:\n${tail(logPath)}`);
    }
    try {
      if ((await healthStatus(`${url}/healthz`)) === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      throw new Error(`server not healthy within 20 s; log ${logPath}:\n${tail(logPath)}`);
    }
    await sleep(100);
  }
  /** SIGKILL: the process dies at once, no drain. */
  const kill = async () => {
    child.kill('SIGKILL');
    await exit;
  };
  return { url, port, udpPort, logPath, stop, kill, bin };
}
