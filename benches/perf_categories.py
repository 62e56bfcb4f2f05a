#!/usr/bin/env python3
"""Where the server's CPU goes: classifies `perf script` samples (with call graphs) by stage.

Reads `perf script` output on stdin and prints a Markdown table of categories with their share
of samples. Each sample goes to one category:

- allocation: the sampled function is the allocator (malloc, free, realloc, ...);
- kernel: the sampled function is in the kernel (syscalls, the UDP stack, wake-ups) or is a libc
  socket call; on loopback this includes delivering packets into the receivers' sockets;
- otherwise the innermost frame of the stack that names a stage: SRTP, the interceptor chain,
  ICE/DTLS, the rest of rtc's connection pipeline, Fanout's own forwarding (driver and engine),
  the async runtime; memmove/memcpy count for the stage that called them.
"""

import collections
import re
import sys

ALLOC = re.compile(r"^(__libc_)?(malloc|free|realloc|calloc|cfree)$|^_int_(malloc|free|realloc)|^malloc_consolidate|^tcache|^__rust_(alloc|dealloc|realloc)|alloc::alloc::|^sdallocx|^je_")
LIBC_SOCKET = re.compile(r"^__libc_(sendto|recvfrom|sendmsg|recvmsg|send|recv)$|^(sendto|recvfrom|sendmmsg|recvmmsg)$")
STAGES = [
    ("SRTP (encrypt/decrypt)", re.compile(r"rtc_srtp|SrtpHandler|aes_gcm|aes_hw|ring::aead|RingAead|gcm_|ghash|aesni|vaes")),
    ("interceptors (NACK, reports, TWCC/GCC)", re.compile(r"rtc_interceptor|InterceptorHandler")),
    ("ICE / DTLS / demux in rtc", re.compile(r"rtc_ice|IceHandler|rtc_dtls|DtlsHandler|rtc_stun")),
    ("rtc pipeline (other)", re.compile(r"\brtc::|rtc_rtp|rtc_rtcp|rtc_shared|sansio")),
    ("Fanout forwarding (driver, engine)", re.compile(r"\bsfu::")),
    ("async runtime (tokio)", re.compile(r"\btokio::|mio::")),
]


def classify(frames):
    """frames: innermost first, as (symbol, dso)."""
    if not frames:
        return "unknown"
    leaf_sym, leaf_dso = frames[0]
    if ALLOC.search(leaf_sym):
        return "allocation"
    if "kernel" in leaf_dso or leaf_sym.startswith("[k]") or LIBC_SOCKET.search(leaf_sym):
        return "kernel (syscalls, UDP stack)"
    for sym, _ in frames:
        if ALLOC.search(sym) and sym is not leaf_sym:
            return "allocation"
        for name, pat in STAGES:
            if pat.search(sym):
                return name
    return "other"


def samples(lines):
    frames = []
    in_sample = False
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if in_sample:
                yield frames
            frames, in_sample = [], False
            continue
        if not line.startswith((" ", "\t")):
            in_sample = True  # the sample's header line
            continue
        parts = line.strip().split(None, 1)
        if len(parts) < 2:
            continue
        rest = parts[1]
        m = re.match(r"(.*) \((.*)\)$", rest)
        sym, dso = (m.group(1), m.group(2)) if m else (rest, "")
        sym = re.sub(r"\+0x[0-9a-f]+$", "", sym)
        frames.append((sym, dso))
    if in_sample:
        yield frames


def main():
    counts = collections.Counter()
    total = 0
    for frames in samples(sys.stdin):
        counts[classify(frames)] += 1
        total += 1
    if total == 0:
        print("no samples", file=sys.stderr)
        sys.exit(1)
    print("| stage | share of server CPU |")
    print("|---|---:|")
    for name, n in counts.most_common():
        print(f"| {name} | {100.0 * n / total:.1f} % |")
    print(f"\n{total} samples.")


if __name__ == "__main__":
    main()
