#!/usr/bin/env python3
"""Postcopy benchmark (issue 4), loopback: page-request latency, total time,
downtime and vCPU blocktime, median of RUNS runs after WARMUP.

    ./bench/postcopy.py            RUNS=3 WARMUP=1 by default
Every run uses --verify and must verify. Raw JSON goes to bench/results/.
"""
import json, os, statistics, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIVEMIG = os.path.join(ROOT, "build", "livemig")
RUNS = int(os.environ.get("RUNS", "3"))
WARMUP = int(os.environ.get("WARMUP", "1"))
OUT = os.path.join(ROOT, "bench", "results", "postcopy-" + time.strftime("%Y%m%d-%H%M%S"))
CONFIGS = [
    ("4G stress:4x100M, one stream", "4G", "stress:4x100M", "--multifd-channels 0"),
    ("4G stress:4x100M, 2 channels", "4G", "stress:4x100M", "--multifd-channels 2"),
    ("4G stress:4x100M, 4 channels", "4G", "stress:4x100M", "--multifd-channels 4"),
    ("2G hot:4x256M, 2 channels", "2G", "hot:4x256M", "--multifd-channels 2"),
]


def main():
    os.makedirs(OUT, exist_ok=True)
    print(f"Loopback, {os.cpu_count()} CPUs, {os.uname().release}; --postcopy "
          f"--postcopy-after-rounds 1 --verify; median of {RUNS} after {WARMUP} warm-up.\n")
    print("| configuration | total ms | downtime ms | needed pages | requests | latency p50 us | "
          "p99 us | max us | vCPU blocktime ms | verified |")
    print("|---|" + "---:|" * 8 + "---|")
    for k, (label, ram, wl, args) in enumerate(CONFIGS):
        rows = []
        for i in range(WARMUP + RUNS):
            src, dst = (os.path.join(OUT, f"{k}-{i}.{r}.json") for r in ("src", "dst"))
            cmd = [LIVEMIG, "demo", "--ram", ram, "--workload", wl, "--verify", "--no-progress",
                   "--postcopy", "--postcopy-after-rounds", "1", "--stats-json", src,
                   "--dest-stats-json", dst] + args.split()
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode:
                sys.exit(f"{label}: failed\n{p.stderr[-2000:]}")
            s, d = json.load(open(src)), json.load(open(dst))
            if i < WARMUP:
                continue
            pc = d["postcopy"]
            rows.append({"total": s["total-time"], "down": s["downtime"],
                         "needed": s["postcopy"]["needed"], "req": pc["requests"],
                         "p50": pc["request-latency-p50-us"], "p99": pc["request-latency-p99-us"],
                         "max": pc["request-latency-max-us"], "block": pc["vcpu-blocktime-ms"],
                         "ok": s["verify"]["match"] and d["verify"]["match"]})
        m = {key: statistics.median(r[key] for r in rows) for key in rows[0] if key != "ok"}
        ok = all(r["ok"] for r in rows)
        print(f"| {label} | {m['total']:.0f} | {m['down']:.1f} | {m['needed']:.0f} | {m['req']:.0f} | "
              f"{m['p50']:.0f} | {m['p99']:.0f} | {m['max']:.0f} | {m['block']:.0f} | "
              f"{'yes' if ok else 'NO'} |", flush=True)
    print(f"\nRaw reports: {os.path.relpath(OUT, ROOT)}")


if __name__ == "__main__":
    main()
