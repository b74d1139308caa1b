#!/usr/bin/env python3
"""KVM guests (issue 10): tracking-start vCPU stall, sync cost per tracker,
downtime, postcopy page-request latency against the thread guest.

    ./bench/kvm.py            RUNS=3 WARMUP=1; ONLY=stall|sync|downtime|postcopy|up
Each `livemig demo --guest kvm` run uses --verify and must verify (and the
KVM guest's continuity check must hold). The vCPU stall of the KVM guest is
the longest gap between two exits of any vCPU (src/guest/kvm_vcpu.c,
"max-exit-gap-ms" in the JSON) in the baseline window (no migration, beside
as many busy threads as the migration runs) and in the tracking-start window
(the first --stats-window of the migration). The guest runs --x-warmup
seconds before the baseline so that both windows see it warm. Limits from
build/lm-limits in the same run. Raw JSON in bench/results/kvm-*.
"""
import json, os, statistics, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
B = os.path.join(ROOT, "build")
LIVEMIG = os.path.join(B, "livemig")
RUNS = int(os.environ.get("RUNS", "3"))
WARMUP = int(os.environ.get("WARMUP", "1"))
ONLY = os.environ.get("ONLY", "")
OUT = os.path.join(ROOT, "bench", "results", "kvm-" + time.strftime("%Y%m%d-%H%M%S"))
WINDOW = "0.5"


def demo(tag, args):
    src, dst = (os.path.join(OUT, f"{tag}.{r}.json") for r in ("src", "dst"))
    p = subprocess.run([LIVEMIG, "demo", "--verify", "--no-progress", "--stats-json", src,
                        "--dest-stats-json", dst] + args, capture_output=True, text=True)
    if p.returncode:
        sys.exit(f"{tag}: failed\n{' '.join(args)}\n{p.stderr[-2000:]}")
    s, d = json.load(open(src)), json.load(open(dst))
    assert s["verify"]["match"] and d["verify"]["match"], tag
    if d.get("guest", {}).get("kind") == "kvm":
        assert d["guest"]["continuity"], tag
    return s, d


def runs(tag, args):
    out = []
    for i in range(WARMUP + RUNS):
        r = demo(f"{tag}-{i}", args)
        if i >= WARMUP:
            out.append(r)
    return out


def med(xs):
    return statistics.median(xs)


def stall():
    print(f"\n### vCPU stall at tracking start\n\n4 GiB KVM guest, hot:Nx256M (N vCPUs writing "
          f"random pages of a 256 MiB region, 1024 writes between two exits), one stream, "
          f"--stats-window {WINDOW}, --x-warmup 3; median of {RUNS} after {WARMUP} warm-up.\n")
    print("| vCPUs | tracker | arming | baseline max gap ms | tracking-start max gap ms | "
          "added ms | ratio | host steal ms (baseline / start) | per run: added ms | "
          "downtime ms | verified |")
    print("|---:|---|---|---:|---:|---:|---:|---:|---|---:|---|")
    for n in (2, 4):
        for tracker in ("kvm-log", "uffd-async"):
            for arming, chunk in (("protect all at once", "all"), ("chunks of 64 MiB", "64M")):
                rs = runs(f"stall-{n}-{tracker}-{chunk}",
                          ["--guest", "kvm", "--ram", "4G", "--workload", f"hot:{n}x256M",
                           "--dirty-tracker", tracker, "--track-chunk", chunk, "--stats-window",
                           WINDOW, "--x-warmup", "3"])
                b = [s["guest"]["baseline"]["max-exit-gap-ms"] for s, _ in rs]
                t = [s["guest"]["tracking-start"]["max-exit-gap-ms"] for s, _ in rs]
                sb = [s["guest"]["baseline"].get("host-steal-ms", -1) for s, _ in rs]
                st = [s["guest"]["tracking-start"].get("host-steal-ms", -1) for s, _ in rs]
                added = [y - x for x, y in zip(b, t)]
                print(f"| {n} | {tracker} | {arming} | {med(b):.1f} | {med(t):.1f} | "
                      f"{med(added):+.1f} | {med(t) / med(b):.2f} | {med(sb):.0f} / {med(st):.0f} | "
                      f"{', '.join(f'{a:+.1f}' for a in added)} | "
                      f"{med(s['downtime-ms'] for s, _ in rs):.1f} | yes |", flush=True)


def downtime():
    print(f"\n### Downtime, 4 GiB KVM guest, 256 MiB working set\n\nstress:2x128M, default "
          f"--downtime-limit 300, one stream; median of {RUNS} after {WARMUP} warm-up.\n")
    print("| tracker | total ms | downtime ms | of limit | rounds | transferred MiB | verified |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for tracker in ("kvm-log", "uffd-async"):
        rs = runs(f"down-{tracker}", ["--guest", "kvm", "--ram", "4G", "--workload",
                                      "stress:2x128M", "--dirty-tracker", tracker])
        down = med(s["downtime-ms"] for s, _ in rs)
        print(f"| {tracker} | {med(s['total-time'] for s, _ in rs):.0f} | {down:.1f} | "
              f"{down / 300:.2f} | {med(len(s['rounds']) for s, _ in rs):.0f} | "
              f"{med(s['ram']['transferred'] for s, _ in rs) / 2**20:.1f} | yes |", flush=True)


def postcopy():
    print(f"\n### Postcopy page requests, KVM vCPUs against thread vCPUs\n\n4 GiB, stress:2x128M, "
          f"--postcopy-after-rounds 1 --downtime-limit 1 (so that it does not converge "
          f"first), one stream with the preempt connection; median of {RUNS} "
          f"after {WARMUP} warm-up.\n")
    print("| guest | total ms | downtime ms | requests | latency p50 us | p99 us | max us | "
          "vCPU blocktime ms | p50 / thread p50 | verified |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    base = None
    for guest in ("thread", "kvm"):
        rs = runs(f"post-{guest}", ["--guest", guest, "--ram", "4G", "--workload",
                                    "stress:2x128M", "--postcopy-after-rounds", "1",
                                    "--downtime-limit", "1"])
        pc = [d["postcopy"] for _, d in rs]
        p50 = med(p["request-latency-p50-us"] for p in pc)
        base = base or p50
        print(f"| {guest} | {med(s['total-time'] for s, _ in rs):.0f} | "
              f"{med(s['downtime-ms'] for s, _ in rs):.1f} | {med(d['ram']['postcopy-requests'] for _, d in rs):.0f} | "
              f"{p50:.0f} | {med(p['request-latency-p99-us'] for p in pc):.0f} | "
              f"{med(p['request-latency-max-us'] for p in pc):.0f} | "
              f"{med(p['vcpu-blocktime-ms'] for p in pc):.0f} | {p50 / base:.2f} | yes |",
              flush=True)


def sync():
    print("\n### The cost of one sync, 4 GiB KVM guest (build/lm-kvm-sync)\n\nAll of RAM "
          "populated; 2 stress vCPUs rewrite DIRTY% of the pages each pass; guest stopped for "
          "each timed sync (with re-arm); median of 5 syncs.\n")
    print("| tracker | dirty | dirty pages reported | arm ms | sync ms (min-max) | "
          "ms per GiB | vs kvm-log |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    res = {}
    for dirty in (1, 10):
        for tracker in ("kvm-log", "uffd-async", "kvm-ring"):
            p = subprocess.run([os.path.join(B, "lm-kvm-sync"), "sync", "4", str(dirty), tracker],
                               capture_output=True, text=True)
            if p.returncode == 77:
                print(f"| {tracker} | {dirty}% | not measured: {p.stderr.strip()} | | | | |")
                continue
            if p.returncode:
                sys.exit(p.stderr)
            r = json.loads(p.stdout)
            open(os.path.join(OUT, f"sync-{tracker}-{dirty}.json"), "w").write(p.stdout)
            res[(tracker, dirty)] = r["sync_ms_median"]
            print(f"| {tracker} | {dirty}% | {r['dirty_pages_reported'][2]} | {r['arm_ms']:.1f} | "
                  f"{r['sync_ms_median']:.2f} ({r['sync_ms_min']:.2f}-{r['sync_ms_max']:.2f}) | "
                  f"{r['sync_ms_median'] / 4:.2f} | "
                  f"{r['sync_ms_median'] / res[('kvm-log', dirty)]:.1f}x |", flush=True)


def up():
    print("\n### Bring-up of the KVM guest (build/lm-kvm-sync up)\n")
    print("| RAM | workload | host populates the regions first | populate s | guest up s |")
    print("|---:|---|---|---:|---:|")
    for wl, pre in (("stress:2x128M", 0), ("stress:2x128M", 1), ("stress:2x2000M", 1)):
        r = json.loads(subprocess.run([os.path.join(B, "lm-kvm-sync"), "up", "4", wl, str(pre)],
                                      capture_output=True, text=True, check=True).stdout)
        print(f"| 4 GiB | {wl} | {'yes' if pre else 'no'} | {r['prefault_s']:.2f} | "
              f"{r['up_s']:.2f} |", flush=True)


def main():
    os.makedirs(OUT, exist_ok=True)
    lim = json.loads(subprocess.run([os.path.join(B, "lm-limits"), "--quick"], capture_output=True,
                                    text=True, check=True).stdout)
    open(os.path.join(OUT, "limits.json"), "w").write(json.dumps(lim))
    print(f"{lim['nproc']} CPUs ({lim['cpu_model']}), {lim['kernel']}; limits in this run: "
          f"loopback TCP {lim['loopback_tcp_gbps']:.2f} GB/s, memcpy {lim['memcpy_gbps']:.2f} GB/s, "
          f"first touch {lim['fault_4k_us']:.2f} us a 4 KiB page ({lim['fault_4k_gbps']:.2f} GB/s, "
          f"cold {lim['fault_4k_cold_us']:.2f} us)")
    for name, f in (("up", up), ("sync", sync), ("stall", stall), ("downtime", downtime),
                    ("postcopy", postcopy)):
        if ONLY in name:
            f()
    print(f"\nRaw reports: {os.path.relpath(OUT, ROOT)}")


if __name__ == "__main__":
    main()
