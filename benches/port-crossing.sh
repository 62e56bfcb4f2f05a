#!/usr/bin/env bash
# What one shared UDP port costs (docs/benchmarks.md, "One UDP port"): Fanout with two media
# drivers, once with every driver on one port (the default: datagrams the kernel hands to the
# other driver cross to their connection's) and once with a port per driver
# (--udp-port-per-driver true: nothing crosses), alternated RUNS times under the same load from
# fanout-loadtest, each in a network namespace of its own (benches/janus/netns.sh).
#
#   sudo benches/port-crossing.sh
#
# Knobs, as environment variables: ROOMS (rooms, 4), PUBS (publishers per room, 2), SUBS
# (subscribers per room, 20), DURATION (measured seconds, 15), RUNS (pairs of runs, 3).
# Prints one line per run: the variant, µs of server CPU per forwarded packet, loss, and the
# datagrams that crossed between drivers.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOMS=${ROOMS:-4}
PUBS=${PUBS:-2}
SUBS=${SUBS:-20}
DURATION=${DURATION:-15}
RUNS=${RUNS:-3}
[ "$(id -u)" = 0 ] || { echo "benches/port-crossing.sh needs root (network namespaces)" >&2; exit 1; }
sysctl -qw net.core.rmem_max=8388608 net.core.wmem_max=8388608
cargo build --release -p fanout-signaling --bin fanout -p fanout-benches --bin fanout-loadtest
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
net=10.214.40
for run in $(seq "$RUNS"); do
  for variant in shared per-driver; do
    per_driver=false
    [ "$variant" = per-driver ] && per_driver=true
    server_pid=$(benches/janus/netns.sh "$net" "$work/server.log" target/release/fanout serve \
      --bind "$net.2:7880" --udp-port 7882 --media-drivers 2 --udp-port-per-driver "$per_driver")
    for _ in $(seq 200); do (exec 3<>"/dev/tcp/$net.2/7880") 2>/dev/null && break; sleep 0.05; done
    target/release/fanout-loadtest --url "ws://$net.2:7880" --bind-ip "$net.1" --server-pid "$server_pid" \
      --rooms "$ROOMS" --publishers "$PUBS" --subscribers "$SUBS" --duration "$DURATION" --quiet \
      --room-prefix "$variant-$run-" --report-json "$work/report.json" >/dev/null
    crossed=$(curl -s "http://$net.2:7880/metrics" 2>/dev/null \
      | awk '/^fanout_datagrams_crossed_total/ {print $2}')
    python3 - "$work/report.json" "$variant" "$run" "${crossed:-?}" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
w = r.get("window", r)
print(f"run {sys.argv[3]} {sys.argv[2]:>10}: {w.get('server_us_per_forwarded_packet', float('nan')):.2f} µs per forwarded packet, "
      f"loss {w.get('loss_percent', float('nan')):.3f} %, crossed {sys.argv[4]}")
EOF
    stop
  done
done
