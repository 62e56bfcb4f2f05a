// Network namespaces for the browser tests: a namespace joined to this host by a veth pair, torn
// down when the test ends (or this process exits). Every packet stays on this machine.

import { execFileSync } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';

/** Runs a command, returning its stdout; throws with its stderr if it fails. */
export function run(cmd, ...args) {
  return execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
}

/** Debian packages of the tools the tests use. */
const PACKAGE = { ip: 'iproute2', tc: 'iproute2', nft: 'nftables', turnserver: 'coturn', openssl: 'openssl' };

/** Why namespaces with `tools` cannot be used here (not root, a tool missing), or null. */
export function namespacesUnavailable(tools = ['ip']) {
  if (process.getuid?.() !== 0) return 'needs root to create network namespaces';
  for (const tool of tools) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    } catch {
      return `\`${tool}\` is not installed (Debian package ${PACKAGE[tool] ?? tool})`;
    }
  }
  return null;
}

/**
 * A new namespace `fo-<tag>-<id>` with a veth pair to this host: the host side gets
 * `<subnet>.1/<prefixLen>`, the namespace side `<subnet>.2/<prefixLen>`, where subnet is
 * `10.<second>.<random>`. Removed when `t` ends. Returns the names and addresses, and `inNs(cmd,
 * ...args)` to run a command inside.
 */
export function vethNamespace(t, { tag, second, prefixLen = 30 }) {
  const id = randomBytes(3).toString('hex');
  const ns = `fo-${tag}-${id}`;
  const name = `fo${tag.slice(0, 2)}${id}`; // + a/b: at most 15 characters
  const host = `${name}a`;
  const inner = `${name}b`;
  const subnet = `10.${second}.${randomInt(1, 250)}`;
  // Removing the namespace removes its end of the veth pair, and with it the pair.
  const cleanup = () => {
    try { run('ip', 'netns', 'del', ns); } catch {}
    try { run('ip', 'link', 'del', host); } catch {}
  };
  process.once('exit', cleanup); // even if this process is torn down mid-test
  t.after(() => {
    cleanup();
    process.removeListener('exit', cleanup);
  });
  const inNs = (cmd, ...args) => run('ip', 'netns', 'exec', ns, cmd, ...args);
  run('ip', 'netns', 'add', ns);
  run('ip', 'link', 'add', host, 'type', 'veth', 'peer', 'name', inner);
  // No IPv6 link-local addresses: one appearing a second after the link comes up is a network
  // change to every Chromium on this host, which then fails its page loads (ERR_NETWORK_CHANGED).
  run('ip', 'link', 'set', host, 'addrgenmode', 'none');
  run('ip', 'link', 'set', inner, 'addrgenmode', 'none');
  run('ip', 'link', 'set', inner, 'netns', ns);
  run('ip', 'addr', 'add', `${subnet}.1/${prefixLen}`, 'dev', host);
  run('ip', 'link', 'set', host, 'up');
  inNs('ip', 'addr', 'add', `${subnet}.2/${prefixLen}`, 'dev', inner);
  inNs('ip', 'link', 'set', inner, 'up');
  inNs('ip', 'link', 'set', 'lo', 'up');
  return { id, ns, veth: { host, inner }, subnet, prefixLen, hostIp: `${subnet}.1`, nsIp: `${subnet}.2`, inNs };
}
