#!/usr/bin/env python3
"""Multifd benchmarks (issue 3): the seeds' tables scaled to this machine.

Runs `livemig demo` (source and destination as two processes on loopback)
for each configuration, RUNS times after WARMUP discarded runs, and prints
markdown tables of medians beside the limits `lm-limits` measures in the
same run. Every run uses --verify and must verify.

    ./bench/multifd.py                 all sets
    ./bench/multifd.py seed000 comp    some sets
    RUNS=1 WARMUP=0 ./bench/multifd.py quick
Sets: seed000 seed001 comp thp goals converge prealloc. Raw JSON goes to bench/results/.
"""
import collections
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIVEMIG = os.path.join(ROOT, "build", "livemig")
RUNS = int(os.environ.get("RUNS", "3"))
WARMUP = int(os.environ.get("WARMUP", "1"))
OUT = os.path.join(ROOT, "bench", "results", "multifd-" + time.strftime("%Y%m%d-%H%M%S"))

SETS = {
    # seed 000: idle guest with a little data vs mostly data; receivedmap or not.
    "seed000": [
        ("4G, 128M used, receivedmap", "4G", "fill:128M", "--multifd-channels 2 --dest-thp off"),
        ("4G, 128M used, no receivedmap", "4G", "fill:128M", "--multifd-channels 2 --dest-thp off --no-receivedmap"),
        ("4G, 3G used, receivedmap", "4G", "fill:3G", "--multifd-channels 2 --dest-thp off"),
        ("4G, 3G used, no receivedmap", "4G", "fill:3G", "--multifd-channels 2 --dest-thp off --no-receivedmap"),
    ],
    # seed 001: idle guest and stress, plain precopy vs multifd vs multifd + zero pages.
    "seed001": [
        ("idle 4G, precopy", "4G", "idle", "--multifd-channels 0 --zero-page-detection none"),
        ("idle 4G, multifd", "4G", "idle", "--multifd-channels 4 --zero-page-detection none"),
        ("idle 4G, multifd + zero pages", "4G", "idle", "--multifd-channels 4 --zero-page-detection multifd"),
        ("stress:4x100M 2G, precopy", "2G", "stress:4x100M", "--multifd-channels 0 --zero-page-detection none"),
        ("stress:4x100M 2G, multifd", "2G", "stress:4x100M", "--multifd-channels 4 --zero-page-detection none"),
        ("stress:4x100M 2G, multifd + zero pages", "2G", "stress:4x100M", "--multifd-channels 4 --zero-page-detection multifd"),
    ],
    # Compression on text-like data (a quarter of it cleared pages).
    "comp": [(f"text:512M, {m}", "1G", "text:512M", f"--multifd-channels 2 --compress {m}")
             for m in ("none", "zlib", "zstd", "lz4")],
    # Destination RAM backed by 4 KiB pages or transparent huge pages.
    "thp": [
        ("fill:1G 2G, 4 KiB pages", "2G", "fill:1G", "--multifd-channels 2 --dest-thp off"),
        ("fill:1G 2G, huge pages", "2G", "fill:1G", "--multifd-channels 2 --dest-thp on"),
    ],
    # The goals.
    "goals": [
        ("idle 8G with 256M data, multifd 2", "8G", "fill:256M", "--multifd-channels 2"),
        ("fill:1G 2G, multifd 2 nocomp", "2G", "fill:1G", "--multifd-channels 2"),
        ("fill:1G 2G, multifd 4 nocomp", "2G", "fill:1G", "--multifd-channels 4"),
    ],
}
# Convergence policies (issue 5) on the seed's stress guest, 50 ms limit (at 100 ms
# it sometimes converges by itself on loopback here).
SETS["converge"] = [
    (f"stress:4x100M 2G, {name}", "2G", "stress:4x100M",
     f"--multifd-channels 2 --downtime-limit 50 --max-rounds 30 {args}")
    for name, args in (("no policy", ""), ("auto-converge", "--auto-converge"),
                       ("dirty-limit 20000 pages/s", "--dirty-limit 20000"),
                       ("postcopy", "--postcopy"))
]
# A destination whose RAM is populated before the migration (--dest-prealloc,
# QEMU's -mem-prealloc): receiving no longer zeroes pages in first-touch faults.
SETS["prealloc"] = [
    (f"fill:1G 2G, multifd {n} nocomp, {label}", "2G", "fill:1G", f"--multifd-channels {n} {args}")
    for n in (2, 4) for label, args in (("destination on demand", ""),
                                        ("destination preallocated", "--dest-prealloc"))
]
SETS["quick"] = [SETS["seed001"][2], SETS["comp"][2], SETS["goals"][0]]


def run(label, ram, wl, args, name):
    src, dst = os.path.join(OUT, name + ".src.json"), os.path.join(OUT, name + ".dst.json")
    cmd = [LIVEMIG, "demo", "--ram", ram, "--workload", wl, "--verify", "--no-progress",
           "--stats-json", src, "--dest-stats-json", dst] + args.split()
    p = subprocess.run(cmd, capture_output=True, text=True)
    with open(os.path.join(OUT, name + ".log"), "w") as f:
        f.write(" ".join(cmd) + "\n" + p.stdout + p.stderr)
    if p.returncode:
        sys.exit(f"{label}: migration failed ({p.returncode}), see {name}.log\n{p.stderr[-2000:]}")
    s, d = json.load(open(src)), json.load(open(dst))
    if not (s["verify"]["match"] and d["verify"]["match"]):
        sys.exit(f"{label}: not verified")
    return s, d


def main():
    os.makedirs(OUT, exist_ok=True)
    chosen = sys.argv[1:] or ["seed000", "seed001", "comp", "thp", "goals"]
    lim = json.loads(subprocess.run([os.path.join(ROOT, "build", "lm-limits")], capture_output=True,
                                    text=True, check=True).stdout)
    tcp = lim["loopback_tcp_gbps"]
    print(f"Machine: {os.cpu_count()} CPUs, {os.uname().release}; limits: loopback TCP "
          f"{tcp:.2f} GB/s, memcpy {lim['memcpy_gbps']:.2f} GB/s, first touch 4 KiB "
          f"{lim['fault_4k_gbps']:.2f} GB/s ({lim['fault_4k_us']:.2f} us/fault), huge pages "
          f"{lim['fault_thp_gbps']:.2f} GB/s. Median of {RUNS} run(s) after {WARMUP} warm-up.\n")
    for set_name in chosen:
        print(f"### {set_name}\n")
        policy = set_name == "converge"  # also: how precopy ended, the throttle reached
        print("| configuration | total ms | downtime ms | transferred MiB | data GB/s | of TCP | "
              "zero pages | normal pages | dirty syncs | pages/s | dest faults |" +
              (" ended by | max throttle % |" if policy else ""))
        print("|---|" + "---:|" * 10 + ("---|---:|" if policy else ""))
        for k, (label, ram, wl, args) in enumerate(SETS[set_name]):
            rows = []
            for i in range(WARMUP + RUNS):
                s, d = run(label, ram, wl, args, f"{set_name}-{k}-{i}")
                if i < WARMUP:
                    continue
                t = s["total-time"]
                data = s["ram"]["normal-bytes"] / (t / 1000) / 1e9 if t else 0
                rows.append({"total": t, "down": s["downtime-ms"],
                             "mib": s["ram"]["transferred"] / 2**20, "gbps": data,
                             "zero": s["ram"]["duplicate"], "normal": s["ram"]["normal"],
                             "syncs": s["ram"]["dirty-sync-count"],
                             "pps": s["ram"]["pages-per-second"],
                             "faults": d["dest-minor-faults"],
                             "reason": s.get("switchover-reason", "?"),
                             "throttle": max([r["cpu-throttle-percentage"] for r in s["rounds"]]
                                             or [0])})
            m = {key: statistics.median(r[key] for r in rows) for key in rows[0] if key != "reason"}
            reasons = collections.Counter(r["reason"] for r in rows)
            ended = ", ".join(f"{n} {why}" for why, n in reasons.most_common())
            print(f"| {label} | {m['total']:.0f} | {m['down']:.1f} | {m['mib']:.1f} | "
                  f"{m['gbps']:.2f} | {m['gbps'] / tcp:.0%} | {m['zero']:.0f} | {m['normal']:.0f} | "
                  f"{m['syncs']:g} | {m['pps']:.0f} | {m['faults']:.0f} |" +
                  (f" {ended} | {m['throttle']:.0f} |" if policy else ""), flush=True)
        print()
    print("data GB/s: normal-bytes / total time (the guest data moved); of TCP: that / the "
          f"loopback limit. Raw reports: {os.path.relpath(OUT, ROOT)}")


if __name__ == "__main__":
    main()
