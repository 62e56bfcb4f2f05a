#!/usr/bin/env python3
"""Writes the measured part of docs/benchmarks.md from the JSON reports of benches/run.sh.

    benches/render_benchmarks.py RESULTS_DIR DOC.md

Everything between the markers `<!-- generated:begin -->` and `<!-- generated:end -->` in DOC.md
is replaced; the hand-written text around them stays. Missing reports show as "not run".
"""

import json
import os
import sys

BEGIN, END = "<!-- generated:begin -->", "<!-- generated:end -->"

TARGETS = [
    ("fanout-1", "Fanout, 1 media driver"),
    ("fanout-2", "Fanout, 2 media drivers"),
    ("janus", "Janus 1.1 VideoRoom"),
]


def load(results, name):
    path = os.path.join(results, name + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def fmt(v, digits=1, unit=""):
    if v is None:
        return "n/a"
    return f"{v:.{digits}f}{unit}"


def rss_slope(ramp):
    """Server memory per additional participant (MB), from the first and last ramp steps."""
    steps = [s for s in ramp or [] if s["window"].get("server")]
    if len(steps) < 2:
        return None
    a, b = steps[0], steps[-1]
    dp = b["participants"] - a["participants"]
    if dp <= 0:
        return None
    return (b["window"]["server"]["rss_mb"] - a["window"]["server"]["rss_mb"]) / dp


def render(results):
    meta_path = os.path.join(results, "machine.txt")
    meta = open(meta_path).read().strip() if os.path.exists(meta_path) else "unknown machine"
    cmds_path = os.path.join(results, "commands.txt")
    cmds = open(cmds_path).read().strip() if os.path.exists(cmds_path) else ""
    ramps = {k: load(results, k + "-ramp") for k, _ in TARGETS}
    fixed = {k: load(results, k + "-fixed") for k, _ in TARGETS}
    out = []
    out.append("### Machine and commands\n")
    out.append("```\n" + meta + "\n```\n")
    if cmds:
        out.append("```\n" + cmds + "\n```\n")
    head = "| | " + " | ".join(label for _, label in TARGETS) + " |"
    out.append("### Side by side\n")
    any_fixed = next((f for f in fixed.values() if f), None)
    if any_fixed:
        sc = any_fixed["scenario"]
        out.append(
            f"Fixed load: {sc['rooms']} room, {sc['publishers']} publishers (audio + 3 simulcast "
            f"layers each, every participant receives the top layer), {sc['subscribers']} "
            f"subscribers, {fmt(any_fixed['window']['seconds'], 0)} s measured. Ramp: subscribers "
            "added step by step until loss reaches 1 %, the latency p99 passes 100 ms, or the "
            "machine saturates.\n"
        )
    out.append(head)
    out.append("|---|" + "---:|" * len(TARGETS))

    def row(label, f):
        cells = []
        for key, _ in TARGETS:
            try:
                cells.append(f(key))
            except (KeyError, TypeError, ZeroDivisionError):
                cells.append("n/a")
        out.append(f"| {label} | " + " | ".join(cells) + " |")

    def fw(key):
        return fixed[key]["window"] if fixed[key] else None

    row("max subscribers per room that keep up (ramp)",
        lambda k: str(ramp["max_usable_subscribers_per_room"]) if (ramp := ramps[k]) and ramp.get("max_usable_subscribers_per_room") is not None else ("not run" if not ramps[k] else "none"))
    row("server CPU per forwarded packet (µs)", lambda k: fmt(fw(k)["server_us_per_forwarded_packet"], 2))
    single = {k: load(results, k + "-fixed-single") for k, _ in TARGETS}
    row("the same, one layer (no simulcast) (µs)",
        lambda k: fmt(single[k]["window"]["server_us_per_forwarded_packet"], 2))
    row("RTP packets/s into the server (simulcast)", lambda k: fmt(fw(k)["sent_pps"], 0))
    row("server CPU (% of one core)", lambda k: fmt(fw(k)["server"]["cpu_percent"]))
    row("forwarded packets/s", lambda k: fmt(fw(k)["recv_pps"], 0))
    row("forwarding latency p50 / p99 (ms)", lambda k: f"{fmt(fw(k)['latency_ms']['p50'], 2)} / {fmt(fw(k)['latency_ms']['p99'], 2)}")
    row("join time p50 / p99 (ms)", lambda k: f"{fmt(fixed[k]['join_ms']['p50'], 0)} / {fmt(fixed[k]['join_ms']['p99'], 0)}")
    row("media connected (ICE + DTLS) p50 / p99 (ms)", lambda k: f"{fmt(fixed[k]['connect_ms']['p50'], 0)} / {fmt(fixed[k]['connect_ms']['p99'], 0)}")
    row("packet loss (%)", lambda k: fmt(fw(k)["loss_percent"], 3))
    row("server memory (RSS, MB)", lambda k: fmt(fw(k)["server"]["rss_mb"]))
    row("memory per added participant (MB, ramp)", lambda k: fmt(rss_slope(ramps[k]["ramp"]), 2))
    row("load tester CPU (% of one core)", lambda k: fmt(fw(k)["loadtester"]["cpu_percent"]))
    row("tracks reached / expected", lambda k: f"{fixed[k]['tracks_reached']} / {fixed[k]['tracks_expected']}")
    row("errors", lambda k: str(fixed[k]["errors"]))
    out.append("")

    for key, label in TARGETS:
        r = ramps[key]
        if not r:
            continue
        out.append(f"### Ramp: {label}\n")
        out.append(f"![{label}: CPU and loss against subscribers](benchmarks/{key}-ramp.svg)\n")
        out.append("| subscribers/room | participants | server CPU % | load tester CPU % | machine busy % | loss % | latency p99 (ms) | server RSS (MB) |")
        out.append("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for s in r["ramp"]:
            w = s["window"]
            srv = w.get("server") or {}
            out.append(
                f"| {s['subscribers_per_room']} | {s['participants']} | {fmt(srv.get('cpu_percent'))} | "
                f"{fmt(w['loadtester']['cpu_percent'])} | {fmt(w.get('machine_busy_percent'), 0)} | "
                f"{fmt(w['loss_percent'], 3)} | {fmt(w['latency_ms']['p99'], 2)} | {fmt(srv.get('rss_mb'))} |"
            )
        if r.get("error_log"):
            out.append("\nErrors: " + "; ".join(r["error_log"][:5]))
        out.append("")

    prof = os.path.join(results, "profile-fanout-1.md")
    if os.path.exists(prof):
        out.append("### Where Fanout's CPU goes (perf, fixed load, one driver)\n")
        out.append(open(prof).read().strip() + "\n")
    return "\n".join(out)


def main():
    results, doc = sys.argv[1], sys.argv[2]
    text = open(doc).read() if os.path.exists(doc) else f"{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        sys.exit(f"{doc} has no {BEGIN} … {END} section")
    before, rest = text.split(BEGIN, 1)
    _, after = rest.split(END, 1)
    with open(doc, "w") as f:
        f.write(before + BEGIN + "\n" + render(results) + "\n" + END + after)


if __name__ == "__main__":
    main()
