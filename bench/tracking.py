#!/usr/bin/env python3
"""Dirty tracking and the guest (issue 5): how a THP-backed guest with 2 vCPUs
writing randomly over all of its RAM feels the start of tracking, arming
everything at once against arming chunk by chunk; plus the cost of a sync.

    ./bench/tracking.py          RUNS=3 WARMUP=1, RAM=8G by default
Guest stats per window: 'baseline' (the same guest beside as many busy
threads as the migration runs, before it) and 'tracking-start' (an equal
window from the migration's start, when tracking is armed). Per window: the
longest stall, the longest stall less its run-queue wait (what the kernel
did to the vCPU, or the host took: see host steal), and host steal.
Every run uses --verify and must verify.
"""
import json, os, statistics, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIVEMIG = os.path.join(ROOT, "build", "livemig")
RUNS = int(os.environ.get("RUNS", "3"))
WARMUP = int(os.environ.get("WARMUP", "1"))
RAM = os.environ.get("RAM", "8G")
OUT = os.path.join(ROOT, "bench", "results", "tracking-" + time.strftime("%Y%m%d-%H%M%S"))
CONFIGS = [("protect all at once", "--track-chunk all"),
           ("chunks of 64 MiB (default)", "--track-chunk 64M"),
           ("chunks of 2 MiB", "--track-chunk 2M"),
           # The destination shares this VM: its first touch of fresh memory
           # makes the host steal CPU. Preallocated, it touches none.
           ("protect all at once, destination preallocated", "--track-chunk all --dest-prealloc"),
           ("chunks of 64 MiB, destination preallocated", "--track-chunk 64M --dest-prealloc")]
# ONLY=substring runs the configurations whose label contains it (ONLY=none:
# only the sync cost and the fresh-memory probe).
CONFIGS = [c for c in CONFIGS if os.environ.get("ONLY", "") in c[0]]


def main():
    os.makedirs(OUT, exist_ok=True)
    print(f"{RAM} guest on transparent huge pages (--ram-thp), workload hot:2x{RAM} (2 vCPUs, "
          f"random pages over all RAM, touched once before), 2 channels, --stats-window 0.5 "
          f"(baseline beside 6 busy threads: 1 + 2 channels per side), "
          f"--max-rounds 3 (it never converges: the whole set is rewritten every round); "
          f"median of {RUNS} after "
          f"{WARMUP} warm-up; {os.cpu_count()} CPUs, {os.uname().release}\n")
    print("| arming | total ms | downtime ms | baseline max stall ms (excl. run queue) "
          "| tracking-start max stall ms (excl. run queue) | added stall ms | host steal ms "
          "(baseline / start) | tracking-start p99 us | whole-run max stall ms | whole-run p99 us "
          "| verified |")
    print("|---|" + "---:|" * 9 + "---|")
    clean = {}
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
            b, t = g["baseline"], g["tracking-start"]
            rows.append({"total": s["total-time"], "down": s["downtime-ms"],
                         "base": b["max-stall-ms"], "base_own": b["max-stall-excl-runqueue-ms"],
                         "start": t["max-stall-ms"], "start_own": t["max-stall-excl-runqueue-ms"],
                         "added": t["max-stall-ms"] - b["max-stall-ms"],
                         "steal_b": b.get("host-steal-ms", -1), "steal_t": t.get("host-steal-ms", -1),
                         "p99s": t["write-latency-p99-us"],
                         "whole": g["max-stall-ms"], "p99": g["write-latency-p99-us"],
                         "ok": s["verify"]["match"] and d["verify"]["match"]})
            print("  run: " + ", ".join(f"{key} {v:.1f}" for key, v in rows[-1].items()
                                        if key != "ok"), file=sys.stderr, flush=True)
        m = {key: statistics.median(r[key] for r in rows) for key in rows[0] if key != "ok"}
        quiet = [r for r in rows if r["steal_t"] == 0 and r["steal_b"] == 0]
        clean[label] = (len(quiet), len(rows),
                        statistics.median(r["added"] for r in quiet) if quiet else None,
                        max((r["start_own"] for r in quiet), default=None))
        print(f"| {label} | {m['total']:.0f} | {m['down']:.1f} | {m['base']:.1f} ({m['base_own']:.1f}) "
              f"| {m['start']:.1f} ({m['start_own']:.1f}) | {m['added']:.1f} "
              f"| {m['steal_b']:.0f} / {m['steal_t']:.0f} | {m['p99s']:.1f} | {m['whole']:.1f} "
              f"| {m['p99']:.1f} | {'yes' if all(r['ok'] for r in rows) else 'NO'} |", flush=True)
    print("\nRuns whose two windows saw no host steal:\n")
    print("| arming | runs without steal | added stall ms (median) | longest tracking-start "
          "stall excl. run queue ms |")
    print("|---|---:|---:|---:|")
    for label, (n, total, added, own) in clean.items():
        print(f"| {label} | {n} of {total} | "
              f"{'-' if added is None else f'{added:.1f}'} | {'-' if own is None else f'{own:.1f}'} |")
    print("\nSync cost (build/lm-sync-cost RAM_GIB POPULATED% DIRTY%), median of 5 syncs:\n")
    print("| RAM | populated | dirty | arm ms | sync ms |")
    print("|---:|---:|---:|---:|---:|")
    for ram, pop, dirty in ((16, 0, 0), (16, 1, 1), (4, 1, 1), (1, 1, 1), (4, 100, 1)):
        r = json.loads(subprocess.run([os.path.join(ROOT, "build", "lm-sync-cost"), str(ram),
                                       str(pop), str(dirty)], capture_output=True, text=True,
                                      check=True).stdout)
        print(f"| {ram} GiB | {pop}% | {dirty}% | {r['arm_ms']:.1f} | {r['sync_ms_median']:.2f} |",
              flush=True)
    # What the co-located destination does to this VM, without any migration:
    # fresh memory touched fast (build/lm-cold-touch GIB THREADS), 3 runs each.
    print("\nFresh-memory first touch and host steal (build/lm-cold-touch 4 THREADS, 15 s idle "
          "before each run), median of 3:\n")
    print("| threads | GB/s | host steal ms | seconds |")
    print("|---:|---:|---:|---:|")
    for threads in (1, 2):
        runs = []
        for _ in range(3):
            time.sleep(15)  # the host takes freed memory back within seconds: make it cold
            runs.append(json.loads(subprocess.run(
                [os.path.join(ROOT, "build", "lm-cold-touch"), "4", str(threads)],
                capture_output=True, text=True, check=True).stdout))
        med = {k: statistics.median(r[k] for r in runs) for k in ("gbps", "steal_ms", "seconds")}
        print(f"| {threads} | {med['gbps']:.2f} | {med['steal_ms']:.0f} | {med['seconds']:.1f} |",
              flush=True)
    print(f"\nRaw reports: {os.path.relpath(OUT, ROOT)}")


if __name__ == "__main__":
    main()
