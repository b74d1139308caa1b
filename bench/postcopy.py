#!/usr/bin/env python3
"""Postcopy benchmark (issue 4), loopback: page-request latency, total time,
downtime and vCPU blocktime, median of RUNS runs after WARMUP.

    ./bench/postcopy.py            RUNS=3 WARMUP=1 by default
    SHAPED=1 ./bench/postcopy.py   source and destination in two network
                                   namespaces joined by a veth pair limited to
                                   1 Gbit/s (tc tbf) with 0.5 ms delay (tc
                                   netem) each way, when the kernel has netem;
                                   needs root
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
    ("4G stress:4x100M, one stream, no preempt connection", "4G", "stress:4x100M",
     "--multifd-channels 0 --no-postcopy-preempt"),
    ("4G stress:4x100M, 2 channels", "4G", "stress:4x100M", "--multifd-channels 2"),
    ("4G stress:4x100M, 2 channels, no preempt connection", "4G", "stress:4x100M",
     "--multifd-channels 2 --no-postcopy-preempt"),
    ("4G stress:4x100M, 4 channels", "4G", "stress:4x100M", "--multifd-channels 4"),
    ("4G stress:4x100M, 2 channels, UFFDIO_MOVE", "4G", "stress:4x100M",
     "--multifd-channels 2 --postcopy-place move"),
    ("2G hot:4x256M, 2 channels", "2G", "hot:4x256M", "--multifd-channels 2"),
]


NS = ("lmbench-src", "lmbench-dst")
ADDR = ("10.77.0.1", "10.77.0.2")


def sh(*cmd, check=True):
    return subprocess.run(cmd, capture_output=True, text=True, check=check)


def shaped_setup():
    """Two namespaces and a shaped veth pair; returns a description."""
    shaped_teardown()
    sh("ip", "netns", "add", NS[0])
    sh("ip", "netns", "add", NS[1])
    sh("ip", "link", "add", "lmb0", "type", "veth", "peer", "name", "lmb1")
    desc = []
    for i, dev in enumerate(("lmb0", "lmb1")):
        sh("ip", "link", "set", dev, "netns", NS[i])
        sh("ip", "-n", NS[i], "addr", "add", ADDR[i] + "/24", "dev", dev)
        sh("ip", "-n", NS[i], "link", "set", dev, "up")
        sh("ip", "-n", NS[i], "link", "set", "lo", "up")
        netem = sh("ip", "netns", "exec", NS[i], "tc", "qdisc", "add", "dev", dev, "root",
                   "netem", "delay", "0.5ms", "rate", "1gbit", check=False)
        if netem.returncode == 0:
            desc.append(f"{dev}: netem delay 0.5ms rate 1gbit")
        else:
            sh("ip", "netns", "exec", NS[i], "tc", "qdisc", "add", "dev", dev, "root", "tbf",
               "rate", "1gbit", "burst", "128kb", "latency", "5ms")
            desc.append(f"{dev}: tbf rate 1gbit (netem unavailable in this kernel: "
                        f"{netem.stderr.strip()} -> no added delay)")
    return "; ".join(desc)


def shaped_teardown():
    for ns in NS:
        sh("ip", "netns", "del", ns, check=False)


def run_shaped(ram, wl, args, src, dst):
    port = str(40000 + os.getpid() % 20000)
    # --postcopy-place is the destination's option (migrate refuses it).
    src_args, dst_args = args.split(), []
    if "--postcopy-place" in src_args:
        i = src_args.index("--postcopy-place")
        dst_args, src_args = src_args[i:i + 2], src_args[:i] + src_args[i + 2:]
    inc = subprocess.Popen(["ip", "netns", "exec", NS[1], LIVEMIG, "incoming", "--listen",
                            f"tcp:{ADDR[1]}:{port}", "--verify", "--run-for", "0.2",
                            "--stats-json", dst, "--accept-timeout", "30"] + dst_args,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    p = subprocess.run(["ip", "netns", "exec", NS[0], LIVEMIG, "migrate", "--ram", ram,
                        "--workload", wl, "--to", f"tcp:{ADDR[1]}:{port}", "--verify",
                        "--no-progress", "--postcopy", "--postcopy-after-rounds", "1",
                        "--stats-json", src] + src_args, capture_output=True, text=True)
    err = inc.communicate(timeout=120)[1]
    if p.returncode or inc.returncode:
        sys.exit(f"shaped run failed\n{p.stderr[-1500:]}\n{err[-1500:]}")


def main():
    os.makedirs(OUT, exist_ok=True)
    shaped = os.environ.get("SHAPED") == "1"
    configs = CONFIGS
    if shaped:
        print("Shaped link:", shaped_setup())
        configs = [("1G stress:2x64M, 2 channels", "1G", "stress:2x64M", "--multifd-channels 2"),
                   ("1G stress:2x64M, 2 channels, no preempt", "1G", "stress:2x64M",
                    "--multifd-channels 2 --no-postcopy-preempt"),
                   ("1G stress:2x64M, 2 channels, UFFDIO_MOVE", "1G", "stress:2x64M",
                    "--multifd-channels 2 --postcopy-place move"),
                   ("1G stress:2x64M, one stream", "1G", "stress:2x64M", "--multifd-channels 0"),
                   ("1G stress:2x64M, one stream, no preempt", "1G", "stress:2x64M",
                    "--multifd-channels 0 --no-postcopy-preempt")]
    try:
        run_all(configs, shaped)
    finally:
        if shaped:
            shaped_teardown()


def run_all(configs, shaped):
    print(f"{'Shaped veth' if shaped else 'Loopback'}, {os.cpu_count()} CPUs, {os.uname().release}; --postcopy "
          f"--postcopy-after-rounds 1 --verify; median of {RUNS} after {WARMUP} warm-up.\n")
    print("| configuration | total ms | downtime ms | needed pages | requests | latency p50 us | "
          "p99 us | max us | vCPU blocktime ms | verified |")
    print("|---|" + "---:|" * 8 + "---|")
    for k, (label, ram, wl, args) in enumerate(configs):
        rows = []
        for i in range(WARMUP + RUNS):
            src, dst = (os.path.join(OUT, f"{k}-{i}.{r}.json") for r in ("src", "dst"))
            if shaped:
                run_shaped(ram, wl, args, src, dst)
            cmd = [LIVEMIG, "demo", "--ram", ram, "--workload", wl, "--verify", "--no-progress",
                   "--postcopy", "--postcopy-after-rounds", "1", "--stats-json", src,
                   "--dest-stats-json", dst] + args.split()
            p = None if shaped else subprocess.run(cmd, capture_output=True, text=True)
            if p and p.returncode:
                sys.exit(f"{label}: failed\n{p.stderr[-2000:]}")
            s, d = json.load(open(src)), json.load(open(dst))
            if i < WARMUP:
                continue
            pc = d["postcopy"]
            rows.append({"total": s["total-time"], "down": s["downtime-ms"],
                         "needed": s["postcopy"]["needed"], "req": d["ram"]["postcopy-requests"],
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
