#!/usr/bin/env python3
"""Dirty tracking and the guest (issue 5): how a THP-backed guest with 2 vCPUs
writing randomly over all of its RAM feels the start of tracking, arming
everything at once against arming chunk by chunk; plus the cost of a sync.

    ./bench/tracking.py          RUNS=3 WARMUP=1, RAM=4G by default
Guest stats per window: 'baseline' (the same guest and load, before the
migration) and 'tracking-start' (an equal window from the migration's start,
when tracking is armed). Every run uses --verify and must verify.
"""
import json, os, statistics, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIVEMIG = os.path.join(ROOT, "build", "livemig")
RUNS = int(os.environ.get("RUNS", "3"))
WARMUP = int(os.environ.get("WARMUP", "1"))
RAM = os.environ.get("RAM", "2G")
OUT = os.path.join(ROOT, "bench", "results", "tracking-" + time.strftime("%Y%m%d-%H%M%S"))
CONFIGS = [("protect all at once", "--track-chunk all"),
           ("chunks of 64 MiB (default)", "--track-chunk 64M"),
           ("chunks of 2 MiB", "--track-chunk 2M")]


def main():
    os.makedirs(OUT, exist_ok=True)
    print(f"{RAM} guest on transparent huge pages (--ram-thp), workload hot:2x{RAM} (2 vCPUs, "
          f"random pages over all RAM, touched once before), 2 channels, --stats-window 0.5, "
          f"--max-rounds 3 (it never converges: the whole set is rewritten every round); "
          f"median of {RUNS} after "
          f"{WARMUP} warm-up; {os.cpu_count()} CPUs, {os.uname().release}\n")
    print("| arming | total ms | downtime ms | baseline max stall ms | tracking-start max stall ms "
          "| added stall ms | tracking-start p99 us | whole-run max stall ms | whole-run p99 us | "
          "verified |")
    print("|---|" + "---:|" * 8 + "---|")
    for k, (label, args) in enumerate(CONFIGS):
        rows = []
        for i in range(WARMUP + RUNS):
            src, dst = (os.path.join(OUT, f"{k}-{i}.{r}.json") for r in ("src", "dst"))
            cmd = [LIVEMIG, "demo", "--ram", RAM, "--workload", f"hot:2x{RAM}", "--ram-thp",
                   "--verify", "--no-progress", "--multifd-channels", "2", "--stats-window", "0.5",
                   "--max-rounds", "3",
                   "--stats-json", src, "--dest-stats-json", dst] + args.split()
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode:
                sys.exit(f"{label}: failed\n{p.stderr[-2000:]}")
            if i < WARMUP:
                continue
            s, d = json.load(open(src)), json.load(open(dst))
            g = s["guest"]
            rows.append({"total": s["total-time"], "down": s["downtime"],
                         "base": g["baseline"]["max-stall-ms"],
                         "start": g["tracking-start"]["max-stall-ms"],
                         "added": g["tracking-start"]["max-stall-ms"] - g["baseline"]["max-stall-ms"],
                         "p99s": g["tracking-start"]["write-latency-p99-us"],
                         "whole": g["max-stall-ms"], "p99": g["write-latency-p99-us"],
                         "ok": s["verify"]["match"] and d["verify"]["match"]})
        m = {key: statistics.median(r[key] for r in rows) for key in rows[0] if key != "ok"}
        print(f"| {label} | {m['total']:.0f} | {m['down']:.1f} | {m['base']:.1f} | {m['start']:.1f} "
              f"| {m['added']:.1f} | {m['p99s']:.1f} | {m['whole']:.1f} | {m['p99']:.1f} | "
              f"{'yes' if all(r['ok'] for r in rows) else 'NO'} |", flush=True)
    print("\nSync cost (build/lm-sync-cost RAM_GIB POPULATED% DIRTY%), median of 5 syncs:\n")
    print("| RAM | populated | dirty | arm ms | sync ms |")
    print("|---:|---:|---:|---:|---:|")
    for ram, pop, dirty in ((16, 0, 0), (16, 1, 1), (4, 1, 1), (1, 1, 1), (4, 100, 1)):
        r = json.loads(subprocess.run([os.path.join(ROOT, "build", "lm-sync-cost"), str(ram),
                                       str(pop), str(dirty)], capture_output=True, text=True,
                                      check=True).stdout)
        print(f"| {ram} GiB | {pop}% | {dirty}% | {r['arm_ms']:.1f} | {r['sync_ms_median']:.2f} |",
              flush=True)
    print(f"\nRaw reports: {os.path.relpath(OUT, ROOT)}")


if __name__ == "__main__":
    main()
