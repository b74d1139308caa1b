#!/usr/bin/env python3
"""A/B: the same migrations with two livemig builds, interleaved.

    ./bench/ab.py OLD_LIVEMIG NEW_LIVEMIG

For a change that should not move performance (a refactor), or one that
should: each configuration runs WARMUP + RUNS times per build, A and B
alternating so that drift on this shared machine (host steal, reclaimed
memory) falls on both alike, and the table gives medians, the ratio B/A,
and the loopback TCP limit measured in the same run. Every run verifies.
Raw reports go to bench/results/ab-*.
"""
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = int(os.environ.get("RUNS", "5"))
WARMUP = int(os.environ.get("WARMUP", "1"))
OUT = os.path.join(ROOT, "bench", "results", "ab-" + time.strftime("%Y%m%d-%H%M%S"))

CONFIGS = [
    ("fill:1G 2G, multifd 2, destination preallocated", "2G", "fill:1G",
     "--multifd-channels 2 --dest-prealloc"),
    ("idle 8G with 256M data, multifd 2", "8G", "fill:256M", "--multifd-channels 2"),
    ("fill:512M 1G, one stream", "1G", "fill:512M", "--multifd-channels 0"),
    ("text:512M 1G, multifd 2, zstd", "1G", "text:512M", "--multifd-channels 2 --compress zstd"),
    ("stress:2x64M 1G, postcopy after round 1", "1G", "stress:2x64M",
     "--multifd-channels 2 --postcopy --postcopy-after-rounds 1"),
]


def run(binary, ram, wl, args, name):
    src, dst = os.path.join(OUT, name + ".src.json"), os.path.join(OUT, name + ".dst.json")
    cmd = [binary, "demo", "--ram", ram, "--workload", wl, "--verify", "--no-progress",
           "--stats-json", src, "--dest-stats-json", dst] + args.split()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        sys.exit(f"{name}: {' '.join(cmd)} failed ({p.returncode})\n{p.stderr[-2000:]}")
    s, d = json.load(open(src)), json.load(open(dst))
    if not (s["verify"]["match"] and d["verify"]["match"]):
        sys.exit(f"{name}: not verified")
    return s


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    builds = {"A": os.path.abspath(sys.argv[1]), "B": os.path.abspath(sys.argv[2])}
    os.makedirs(OUT, exist_ok=True)
    lim = json.loads(subprocess.run([os.path.join(ROOT, "build", "lm-limits")],
                                    capture_output=True, text=True, check=True).stdout)
    tcp = lim["loopback_tcp_gbps"]
    print(f"A = {builds['A']}\nB = {builds['B']}\n")
    print(f"Machine: {os.cpu_count()} CPUs, {os.uname().release}; loopback TCP {tcp:.2f} GB/s, "
          f"memcpy {lim['memcpy_gbps']:.2f} GB/s. Median of {RUNS} run(s) per build after "
          f"{WARMUP} warm-up, A and B interleaved.\n")
    print("| configuration | A total ms | B total ms | B/A | A best ms | B best ms | B/A best | "
          "A downtime ms | B downtime ms | B data GB/s (of TCP) |")
    print("|---|" + "---:|" * 9)
    for k, (label, ram, wl, args) in enumerate(CONFIGS):
        rows = {"A": [], "B": []}
        for i in range(WARMUP + RUNS):
            for b in ("A", "B") if i % 2 == 0 else ("B", "A"):
                s = run(builds[b], ram, wl, args, f"{k}-{i}-{b}")
                if i >= WARMUP:
                    t = s["total-time"]
                    rows[b].append((t, s["downtime-ms"], s["ram"]["normal-bytes"] / (t / 1000) / 1e9))
        med = {b: [statistics.median(r[j] for r in rows[b]) for j in range(3)] for b in rows}
        best = {b: min(r[0] for r in rows[b]) for b in rows}
        a, bb = med["A"], med["B"]
        print(f"| {label} | {a[0]:.0f} | {bb[0]:.0f} | {bb[0] / a[0]:.2f} | {best['A']:.0f} | "
              f"{best['B']:.0f} | {best['B'] / best['A']:.2f} | {a[1]:.1f} | {bb[1]:.1f} | "
              f"{bb[2]:.2f} ({bb[2] / tcp:.0%}) |", flush=True)
    print(f"\nbest: the fastest run (on this shared host a run is sometimes twice as slow when the "
          f"host steals CPU or hands out reclaimed memory; the best run shows the code). data GB/s: "
          f"normal-bytes / total time. Raw reports: {os.path.relpath(OUT, ROOT)}")


if __name__ == "__main__":
    main()
