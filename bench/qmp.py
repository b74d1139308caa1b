#!/usr/bin/env python3
"""How fast QMP's changes take effect (issue 13), RUNS times, medians.

1. max-bandwidth raised mid-run from LOW to HIGH MiB/s: the published
   counters (query-migrate, every 100 ms) are polled every 5 ms. In the
   published interval that holds the change, the bytes beyond what the old
   cap allowed before it give the rate over the rest of that interval (the
   first 100 ms or less after the change), compared with the steady rate of
   the intervals that follow.
2. migrate-start-postcopy in the middle of the first pass (a guest of
   fill:FILL, capped at 64 MiB/s so the pass takes seconds): the time from
   the command to the MIGRATION "device" event (the pass stopped, the guest
   paused), to "postcopy-active" (the guest runs on the destination), and
   what precopy had sent.

Source and destination are two `livemig` processes on loopback, both
driven through QMP alone (--to defer, --listen defer).

    ./bench/qmp.py
    RUNS=5 LOW=16 HIGH=256 FILL=384M ./bench/qmp.py
"""
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from qmp import QMP  # noqa: E402

LIVEMIG = os.path.join(ROOT, "build", "livemig")
RUNS = int(os.environ.get("RUNS", "5"))
LOW = int(os.environ.get("LOW", "16")) << 20
HIGH = int(os.environ.get("HIGH", "256")) << 20
FILL = os.environ.get("FILL", "384M")
MiB = 1 << 20


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def pair(tmp, n):
    dst = subprocess.Popen([LIVEMIG, "incoming", "--listen", "defer", "--qmp",
                            f"unix:{tmp}/d{n}.sock", "--run-for", "0.1"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    src = subprocess.Popen([LIVEMIG, "migrate", "--ram", "512M", "--workload", f"fill:{FILL}",
                            "--to", "defer", "--qmp", f"unix:{tmp}/s{n}.sock", "--no-progress",
                            "--stats-window", "0"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    s, d = QMP(f"{tmp}/s{n}.sock"), QMP(f"{tmp}/d{n}.sock")
    port = free_port()
    d.cmd("migrate-incoming", uri=f"tcp:127.0.0.1:{port}")
    return src, dst, s, d, port


def finish(src, dst, s, d):
    for q in (s, d):
        try:
            q.cmd("quit")
        except Exception:
            pass
    for p in (src, dst):
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()


def bandwidth_run(tmp, n):
    src, dst, s, d, port = pair(tmp, n)
    s.cmd("migrate-set-parameters", **{"max-bandwidth": LOW})
    s.cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
    s.wait_status({"active"})
    time.sleep(1.0)
    samples = []  # (monotonic time the value was first seen, transferred)

    def poll(until):
        while time.monotonic() < until:
            v = s.cmd("query-migrate")["ram"]["transferred"]
            if not samples or v != samples[-1][1]:
                samples.append((time.monotonic(), v))
            time.sleep(0.005)

    poll(time.monotonic() + 0.5)
    t_change = time.monotonic()
    s.cmd("migrate-set-parameters", **{"max-bandwidth": HIGH})
    poll(time.monotonic() + 0.6)
    s.cmd("migrate-cancel")
    s.wait_status({"cancelled", "failed"})
    finish(src, dst, s, d)
    # The published interval that holds the change: its bytes, less what
    # the old cap allowed before the change, over the time after it, is the
    # rate in the first <= 100 ms after the change; against the steady rate
    # of the intervals that begin 200 ms or more after it.
    pairs = list(zip(samples, samples[1:]))
    cross = next((a, b) for a, b in pairs if a[0] <= t_change < b[0])
    after = (cross[1][1] - cross[0][1] - LOW * (t_change - cross[0][0])) / (cross[1][0] - t_change)
    steady = statistics.median((b[1] - a[1]) / (b[0] - a[0]) for a, b in pairs
                               if a[0] >= t_change + 0.2)
    return after / steady, (cross[1][0] - t_change) * 1000, steady / MiB


def postcopy_run(tmp, n):
    src, dst, s, d, port = pair(tmp, n)
    s.cmd("migrate-set-capabilities", capabilities=[{"capability": "postcopy-ram",
                                                     "state": True}])
    s.cmd("migrate-set-parameters", **{"max-bandwidth": 64 * MiB})
    s.cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
    s.wait_status({"active"})
    time.sleep(1.0)
    t0 = time.time()
    s.cmd("migrate-start-postcopy")
    dev = s.wait_event("MIGRATION", 30, lambda e: e["data"]["status"] == "device")
    run = s.wait_event("MIGRATION", 30, lambda e: e["data"]["status"] == "postcopy-active")
    s.wait_status({"completed", "failed"}, timeout=120)
    info = s.cmd("query-migrate")
    finish(src, dst, s, d)

    def at(e):
        return e["timestamp"]["seconds"] + e["timestamp"]["microseconds"] / 1e6

    return ((at(dev) - t0) * 1000, (at(run) - t0) * 1000, info["ram"]["precopy-bytes"] / MiB,
            info["status"])


def main():
    with tempfile.TemporaryDirectory() as tmp:
        bw = [bandwidth_run(tmp, i) for i in range(RUNS)]
        pc = [postcopy_run(tmp, 100 + i) for i in range(RUNS)]
    print(f"machine: {os.cpu_count()} CPUs, {os.uname().release}; {RUNS} runs, medians\n")
    print(f"| max-bandwidth {LOW >> 20} -> {HIGH >> 20} MiB/s | median | runs |")
    print("|---|---:|---|")
    print(f"| rate in the first window after the change, share of the steady rate after | "
          f"{statistics.median(b[0] for b in bw) * 100:.0f}% | "
          f"{', '.join(f'{b[0] * 100:.0f}%' for b in bw)} |")
    print(f"| that window: from the command to the next published counters, ms | "
          f"{statistics.median(b[1] for b in bw):.0f} | {', '.join(f'{b[1]:.0f}' for b in bw)} |")
    print(f"| steady rate after the change, MiB/s (the cap, or what this host reaches) | "
          f"{statistics.median(b[2] for b in bw):.0f} | {', '.join(f'{b[2]:.0f}' for b in bw)} |")
    print(f"\n| migrate-start-postcopy, {FILL} at 64 MiB/s, 1 s in | median | runs |")
    print("|---|---:|---|")
    print(f"| to MIGRATION device (the pass stopped, guest paused), ms | "
          f"{statistics.median(p[0] for p in pc):.1f} | "
          f"{', '.join(f'{p[0]:.1f}' for p in pc)} |")
    print(f"| to MIGRATION postcopy-active (the guest runs on the destination), ms | "
          f"{statistics.median(p[1] for p in pc):.1f} | "
          f"{', '.join(f'{p[1]:.1f}' for p in pc)} |")
    print(f"| precopy sent before the switch, MiB | {statistics.median(p[2] for p in pc):.0f} | "
          f"{', '.join(f'{p[2]:.0f}' for p in pc)} |")
    print(f"| outcome | | {', '.join(p[3] for p in pc)} |")


main()
