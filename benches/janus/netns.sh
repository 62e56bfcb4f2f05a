#!/usr/bin/env bash
# Starts a server in a network namespace of its own, linked to the current one by a veth pair,
# and prints its pid:
#
#   benches/janus/netns.sh NET LOGFILE COMMAND [ARGS...]
#
# NET is the first three octets of a /30 (e.g. 10.214.7): this side gets NET.1 on `fo<last
# octet>h`, the namespace NET.2 on `fons0` (and its own `lo`). The command runs in the namespace
# in the background with its output in LOGFILE; the printed pid is the command's own (this script
# and `unshare` exec into it). When it exits, its namespace and the veth pair go away with it.
# Needs root, `unshare` (util-linux) and `ip` (iproute2).
#
# Why: Janus never gathers ICE candidates on a loopback interface, and its ICE library pins each
# socket to its interface (IP_UNICAST_IF), so a loopback address on another interface cannot
# send either. A veth pair between two namespaces is the smallest network Janus works on that
# reaches nothing but this machine. Run the server Janus is compared with the same way, so both
# see the same path (see docs/benchmarks.md).
set -euo pipefail

NS_IF=fons0

if [ "${1:-}" = "--inside" ]; then
  # In the new namespace: wait for our end of the pair, configure it, become the command.
  NET=$2
  shift 2
  for _ in $(seq 200); do
    ip link show "$NS_IF" >/dev/null 2>&1 && break
    sleep 0.05
  done
  ip link set lo up
  ip addr add "$NET.2/30" dev "$NS_IF"
  ip link set "$NS_IF" up
  exec "$@"
fi

[ $# -ge 3 ] || { sed -n '2,5p' "$0" >&2; exit 2; }
NET=$1
LOG=$2
shift 2
[[ $NET =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "NET must look like 10.214.7" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "a network namespace needs root" >&2; exit 1; }
HOST_IF=fo${NET##*.}h

unshare --net "$0" --inside "$NET" "$@" >"$LOG" 2>&1 </dev/null &
pid=$!
# The pair's far end goes into the child's namespace: wait until it has one of its own.
self_ns=$(readlink /proc/self/ns/net)
for _ in $(seq 200); do
  ns=$(readlink "/proc/$pid/ns/net" 2>/dev/null) || { echo "the command exited; log:" >&2; cat "$LOG" >&2; exit 1; }
  [ "$ns" != "$self_ns" ] && break
  sleep 0.01
done
ip link add "$HOST_IF" type veth peer name "$NS_IF" netns "$pid"
ip addr add "$NET.1/30" dev "$HOST_IF"
ip link set "$HOST_IF" up
echo "$pid"
