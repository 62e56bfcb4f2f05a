#!/usr/bin/env bash
# Reproduces docs/benchmarks.md: Fanout with one and with two media drivers, then Janus VideoRoom,
# under identical load from fanout-loadtest, back to back on this machine. Writes the JSON reports,
# ramp charts and profile to docs/benchmarks/ and the generated section of docs/benchmarks.md.
#
#   sudo benches/run.sh
#
# Needs root (network namespaces, perf). Installs what a fresh Debian machine lacks (janus,
# linux-perf, iproute2). Every server runs in a network namespace of its own behind a veth pair,
# the load tester on the other end (benches/janus/netns.sh says why). Knobs, as environment
# variables: PUBS (publishers per room, 2), FIXED_SUBS (subscribers of the fixed-load run, 150),
# DURATION (its measured seconds, 20), RAMP_START (10), RAMP_STEP (20), STEP_SECONDS (8),
# MAX_SUBS (600), TARGETS ("fanout-1 fanout-2 janus").
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/docs/benchmarks
PUBS=${PUBS:-2}
FIXED_SUBS=${FIXED_SUBS:-150}
DURATION=${DURATION:-20}
RAMP_START=${RAMP_START:-10}
RAMP_STEP=${RAMP_STEP:-20}
STEP_SECONDS=${STEP_SECONDS:-8}
MAX_SUBS=${MAX_SUBS:-600}
TARGETS=${TARGETS:-"fanout-1 fanout-2 janus"}

[ "$(id -u)" = 0 ] || { echo "benches/run.sh needs root (network namespaces, perf)" >&2; exit 1; }

# ── What the machine lacks ─────────────────────────────────────────────────────────────────
missing=()
command -v janus >/dev/null || missing+=(janus)
command -v perf >/dev/null || missing+=(linux-perf)
command -v ip >/dev/null || missing+=(iproute2)
command -v unshare >/dev/null || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# One UDP socket carries every connection of a media driver: let it have large buffers.
sysctl -qw net.core.rmem_max=8388608 net.core.wmem_max=8388608

cargo build --release -p fanout-signaling --bin fanout -p fanout-benches --bin fanout-loadtest
FANOUT=$ROOT/target/release/fanout
# Fanout outside --dev, as in production: the load tester signs an access token per participant
# with the same key pair (both read FANOUT_API_KEY and FANOUT_API_SECRET).
export FANOUT_API_KEY=bench
FANOUT_API_SECRET=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
export FANOUT_API_SECRET
# Every simulated client connects from the same address: no per-address socket cap here.
export FANOUT_MAX_CONNECTIONS_PER_IP=0
LOADTEST=$ROOT/target/release/fanout-loadtest

mkdir -p "$OUT"
LOGS=$(mktemp -d)
{
  echo "date:     $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "commit:   $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "cpu:      $(lscpu | sed -n 's/^Model name: *//p') ($(nproc) cores)"
  echo "memory:   $(free -g | awk '/^Mem:/ {print $2}') GiB"
  echo "kernel:   $(uname -r)"
  echo "janus:    $(dpkg-query -W -f '${Version}' janus 2>/dev/null || echo 'not installed')"
  echo "rustc:    $(rustc --version)"
} >"$OUT/machine.txt"
: >"$OUT/commands.txt"

server_pid=
stop_server() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid"
    for _ in $(seq 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$server_pid" 2>/dev/null || true
  fi
  server_pid=
}
trap stop_server EXIT

wait_tcp() {
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on $1:$2" >&2
  return 1
}

# loadtest NAME ARGS...: runs the load tester and records the command.
loadtest() {
  local name=$1
  shift
  echo "fanout-loadtest $*" | sed -e "s#$OUT/##g" -e "s#--server-pid [0-9]*#--server-pid PID#" >>"$OUT/commands.txt"
  echo "── $name" >&2
  "$LOADTEST" "$@"
}

measure() { # TARGET-NAME URL BIND-IP [LOADTEST ARGS...]
  local name=$1 url=$2 bind=$3
  shift 3
  local common=(--url "$url" --bind-ip "$bind" --server-pid "$server_pid" --publishers "$PUBS" "$@")
  loadtest "$name fixed load" "${common[@]}" --subscribers "$FIXED_SUBS" --duration "$DURATION" \
    --report-json "$OUT/$name-fixed.json"
  # The same without simulcast: publishers send one 1.5 Mbit/s encoding, so both servers ingest
  # exactly the same packets (with simulcast, Fanout's dynacast pauses layers nobody receives).
  loadtest "$name fixed load, one layer" "${common[@]}" --subscribers "$FIXED_SUBS" \
    --duration "$DURATION" --layers 1 --room-prefix single- --report-json "$OUT/$name-fixed-single.json"
  if [ "$name" = fanout-1 ]; then
    # A second fixed-load run, profiled in its middle (perf's own cost would skew the first).
    loadtest "$name profiled" "${common[@]}" --subscribers "$FIXED_SUBS" --duration 25 --quiet \
      --room-prefix profiled- >/dev/null &
    local lt=$!
    sleep 18
    benches/profile.sh "$server_pid" 8 "$OUT/profile-$name.md"
    echo "benches/profile.sh SERVER_PID 8 (during the profiled run)" >>"$OUT/commands.txt"
    wait "$lt"
  fi
  loadtest "$name ramp" "${common[@]}" --subscribers "$RAMP_START" --ramp "$RAMP_STEP" \
    --step-seconds "$STEP_SECONDS" --max-subscribers "$MAX_SUBS" --room-prefix ramp- \
    --report-json "$OUT/$name-ramp.json" --chart "$OUT/$name-ramp.svg"
}

for target in $TARGETS; do
  case $target in
    fanout-*)
      drivers=${target#fanout-}
      net=10.214.$((20 + drivers))
      echo "fanout serve --bind $net.2:7880 --udp-port 7882 --media-drivers $drivers  (in a netns; FANOUT_API_KEY/SECRET set)" >>"$OUT/commands.txt"
      server_pid=$(benches/janus/netns.sh "$net" "$LOGS/$target.log" \
        "$FANOUT" serve --bind "$net.2:7880" --udp-port 7882 --media-drivers "$drivers")
      wait_tcp "$net.2" 7880
      measure "$target" "ws://$net.2:7880" "$net.1"
      stop_server
      ;;
    janus)
      net=10.214.7
      echo "benches/janus/start.sh CONFDIR --net $net  (janus in a netns)" >>"$OUT/commands.txt"
      server_pid=$(benches/janus/start.sh "$LOGS/janus" --net "$net" --debug-level 2)
      measure janus "ws://$net.2:8188" "$net.1" --target janus
      stop_server
      ;;
    *) echo "unknown target $target" >&2; exit 2 ;;
  esac
done

python3 benches/render_benchmarks.py "$OUT" docs/benchmarks.md
echo "wrote docs/benchmarks.md and $OUT/" >&2
