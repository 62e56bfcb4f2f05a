#!/usr/bin/env bash
# Two builds of the server under the same fixed load, alternated (docs/benchmarks.md): a change
# that should not cost anything is measured against the build before it, in one run, because
# this machine drifts by ~10 % between runs.
#
#   sudo benches/compare.sh BEFORE_BIN AFTER_BIN
#
# BEFORE_BIN and AFTER_BIN are release builds of `fanout` (e.g. from a `git worktree` of the
# older commit). The load: target/release/fanout-loadtest (built here), one driver, 1 room of
# PUBS publishers (3 layers + audio) and SUBS receive-only subscribers, DURATION s windows, the
# server in a network namespace of its own (benches/janus/netns.sh). Knobs: PUBS (2), SUBS (100),
# DURATION (15), RUNS (pairs of runs, 3). Prints one line per run: the build, µs of server CPU
# per forwarded packet, loss, latency p99.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# = 2 ] || { echo "usage: benches/compare.sh BEFORE_BIN AFTER_BIN" >&2; exit 2; }
PUBS=${PUBS:-2}
SUBS=${SUBS:-100}
DURATION=${DURATION:-15}
RUNS=${RUNS:-3}
[ "$(id -u)" = 0 ] || { echo "benches/compare.sh needs root (network namespaces)" >&2; exit 1; }
sysctl -qw net.core.rmem_max=8388608 net.core.wmem_max=8388608
cargo build --release -p fanout-benches --bin fanout-loadtest
export FANOUT_API_KEY=bench
FANOUT_API_SECRET=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
export FANOUT_API_SECRET
# Every simulated client connects from the same address: no per-address socket cap here.
export FANOUT_MAX_CONNECTIONS_PER_IP=0
work=$(mktemp -d)
server_pid=
stop() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$server_pid" 2>/dev/null || true
  fi
  server_pid=
}
trap 'stop; rm -rf "$work"' EXIT
net=10.214.41
for run in $(seq "$RUNS"); do
  for build in before after; do
    bin=$1
    [ "$build" = after ] && bin=$2
    server_pid=$(benches/janus/netns.sh "$net" "$work/server.log" "$bin" serve \
      --bind "$net.2:7880" --udp-port 7882 --media-drivers 1)
    for _ in $(seq 200); do (exec 3<>"/dev/tcp/$net.2/7880") 2>/dev/null && break; sleep 0.05; done
    target/release/fanout-loadtest --url "ws://$net.2:7880" --bind-ip "$net.1" --server-pid "$server_pid" \
      --publishers "$PUBS" --subscribers "$SUBS" --duration "$DURATION" --quiet \
      --room-prefix "$build-$run-" --report-json "$work/report.json" >/dev/null
    python3 - "$work/report.json" "$build" "$run" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
w = r.get("window", r)
print(f"run {sys.argv[3]} {sys.argv[2]:>6}: {w.get('server_us_per_forwarded_packet', float('nan')):.2f} µs per forwarded packet, "
      f"loss {w.get('loss_percent', float('nan')):.3f} %, latency p99 {w.get('latency_ms', {}).get('p99', float('nan'))} ms")
PY
    stop
  done
done
