#!/usr/bin/env bash
# Profiles a running server: samples its CPU with perf (cpu-clock, DWARF call graphs, so no frame
# pointers are needed) for a while, then prints where the time went by stage as a Markdown table
# (benches/perf_categories.py).
#
#   benches/profile.sh PID [SECONDS] [OUTPUT.md]
#
# Needs `perf` (Debian package linux-perf) and root or kernel.perf_event_paranoid <= 1. Hardware
# counters are not needed: cpu-clock is a software event, available on virtual machines too.
set -euo pipefail
pid=${1:?usage: benches/profile.sh PID [SECONDS] [OUTPUT.md]}
seconds=${2:-10}
out=${3:-/dev/stdout}
here="$(cd "$(dirname "$0")" && pwd)"
command -v perf >/dev/null || { echo "perf is missing: apt-get install linux-perf" >&2; exit 1; }
data="$(mktemp -d)/perf.data"
perf record -q -e cpu-clock -F 499 --call-graph dwarf,16384 -p "$pid" -o "$data" -- sleep "$seconds" >/dev/null 2>&1
perf script -i "$data" 2>/dev/null | python3 "$here/perf_categories.py" >"$out"
rm -rf "$(dirname "$data")"
