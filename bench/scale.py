#!/usr/bin/env python3
"""Scale: livemig against QEMU 7.2 in one run, huge sparse guests, and the
data rate of a full guest, with this machine's limits measured in the same run.

    ./bench/scale.py [--no-qemu] [--quick]
    ./bench/scale.py --placement      in place vs UFFDIO_COPY, whole migrations

Every migration is two fresh processes on loopback (cold: nothing is reused
from the run before). QEMU is Debian's qemu-system-x86 (`-machine none`,
TCG, no vCPU), its RAM filled from a file of random data through the
generic loader at address 0, multifd on both sides with max-bandwidth out
of the way; livemig's guest gets the same amount of random data at the
start of its RAM (`fill:SIZE`). Both report their own total-time. The huge
guests run verified, and their destination's peak RSS comes from wait4().
Medians of RUNS (default 3) after WARMUP (1) runs per case; raw reports in
bench/results/scale-*.
"""
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIVEMIG = os.path.join(ROOT, "build", "livemig")
QEMU = shutil.which("qemu-system-x86_64")
RUNS = int(os.environ.get("RUNS", "3"))
WARMUP = int(os.environ.get("WARMUP", "1"))
OUT = os.path.join(ROOT, "bench", "results", "scale-" + time.strftime("%Y%m%d-%H%M%S"))
MIB = 1 << 20


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_rusage(p, timeout):
    """Waits for p; returns (exit status, peak RSS in bytes)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            p.returncode = os.waitstatus_to_exitcode(status)
            return p.returncode, ru.ru_maxrss * 1024
        time.sleep(0.01)
    p.kill()
    sys.exit(f"process {p.args[:3]} did not finish in {timeout} s")


def livemig(name, ram, data, channels, verify=True, extra=(), dst_extra=()):
    """One migration between two livemig processes; returns its numbers."""
    port = free_port()
    src_json, dst_json = (os.path.join(OUT, f"{name}.{s}.json") for s in ("src", "dst"))
    v = ["--verify"] if verify else []
    dst = subprocess.Popen([LIVEMIG, "incoming", "--listen", f"tcp:127.0.0.1:{port}",
                            "--run-for", "0", "--stats-json", dst_json] + v + list(dst_extra),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.2)
    src = subprocess.run([LIVEMIG, "migrate", "--ram", ram, "--workload", f"fill:{data}",
                          "--to", f"tcp:127.0.0.1:{port}", "--multifd-channels", str(channels),
                          "--no-progress", "--stats-json", src_json] + v + list(extra),
                         capture_output=True, text=True)
    rc, rss = wait_rusage(dst, 600)
    if src.returncode or rc:
        sys.exit(f"{name}: livemig failed ({src.returncode}/{rc})\n{src.stderr[-2000:]}"
                 f"{dst.stderr.read().decode()[-2000:]}")
    s, d = json.load(open(src_json)), json.load(open(dst_json))
    if verify and not (s["verify"]["match"] and d["verify"]["match"]):
        sys.exit(f"{name}: not verified")
    return {"total_ms": s["total-time"], "wire": s["ram"]["transferred"],
            "normal_bytes": s["ram"]["normal-bytes"], "dst_rss": rss,
            "dst_faults": d.get("dest-minor-faults", 0), "verify_ms": s.get("verify-time", 0),
            "first_pass_ms": s["rounds"][0]["duration"], "placement": d.get("placement")}


class Qmp:
    def __init__(self, path):
        for _ in range(200):
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(path)
                break
            except OSError:
                time.sleep(0.02)
        else:
            sys.exit(f"no QMP socket at {path}")
        self.f = self.sock.makefile("rw")
        json.loads(self.f.readline())
        self.cmd("qmp_capabilities")

    def cmd(self, name, **args):
        self.f.write(json.dumps({"execute": name, "arguments": args}) + "\n")
        self.f.flush()
        while True:
            r = json.loads(self.f.readline())
            if "error" in r:
                sys.exit(f"QMP {name}: {r['error']}")
            if "return" in r:
                return r["return"]


def qemu(name, ram, blob, channels, tmp):
    """One QEMU 7.2 multifd migration of a -machine none guest."""
    port = free_port()
    base = [QEMU, "-machine", "none", "-m", ram, "-nodefaults", "-display", "none"]
    procs = []
    for role, extra in (("src", ["-device", f"loader,file={blob},addr=0,force-raw=on"]),
                        ("dst", ["-incoming", "defer"])):
        sock = os.path.join(tmp, f"{role}.qmp")
        procs.append(subprocess.Popen(base + extra + ["-qmp", f"unix:{sock},server=on,wait=off"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    src, dst = Qmp(os.path.join(tmp, "src.qmp")), Qmp(os.path.join(tmp, "dst.qmp"))
    for q in (src, dst):
        q.cmd("migrate-set-capabilities", capabilities=[{"capability": "multifd", "state": True}])
        q.cmd("migrate-set-parameters", **{"multifd-channels": channels,
                                           "max-bandwidth": 100 * 1000 ** 3})
    dst.cmd("migrate-incoming", uri=f"tcp:127.0.0.1:{port}")
    src.cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
    while True:
        r = src.cmd("query-migrate")
        if r.get("status") in ("completed", "failed", "cancelled"):
            break
        time.sleep(0.005)
    json.dump(r, open(os.path.join(OUT, f"{name}.qemu.json"), "w"))
    for q in (src, dst):
        q.cmd("quit")
    for p in procs:
        p.wait(60)
    if r["status"] != "completed":
        sys.exit(f"{name}: QEMU migration {r['status']}")
    return {"total_ms": r["total-time"], "wire": r["ram"]["transferred"]}


def median(rows, key):
    return statistics.median(r[key] for r in rows)


def repeat(fn, *args):
    rows = []
    for i in range(WARMUP + RUNS):
        r = fn(f"{args[0]}-{i}", *args[1:])
        if i >= WARMUP:
            rows.append(r)
    return rows


def placement(lim):
    """Whole migrations, the destination writing in place (huge pages) or
    copying into missing pages with UFFDIO_COPY (--x-place-copy)."""
    print("| 2G with 512 MiB random, 2 channels | placement | total ms | first pass ms | "
          "verify ms | data GB/s in the first pass |")
    print("|---|---|---:|---:|---:|---:|")
    for verify in (False, True):
        for label, dx in (("in place, huge pages", ()), ("UFFDIO_COPY", ("--x-place-copy",))):
            rows = []
            for i in range(WARMUP + RUNS):
                r = livemig(f"place-{verify}-{len(dx)}-{i}", "2G", "512M", 2, verify, (), dx)
                if i >= WARMUP:
                    rows.append(r)
            rate = statistics.median(r["normal_bytes"] / r["first_pass_ms"] / 1e6 for r in rows)
            print(f"| {'verified' if verify else 'unverified'} | {label} ({rows[0]['placement']}) | "
                  f"{median(rows, 'total_ms'):.0f} | {median(rows, 'first_pass_ms'):.0f} | "
                  f"{median(rows, 'verify_ms'):.0f} | {rate:.2f} |", flush=True)


def main():
    no_qemu = "--no-qemu" in sys.argv
    if not no_qemu and not QEMU:
        sys.exit("qemu-system-x86_64 not found: apt-get install qemu-system-x86, or --no-qemu")
    os.makedirs(OUT, exist_ok=True)
    lim = json.loads(subprocess.run([os.path.join(ROOT, "build", "lm-limits"), "--quick"],
                                    capture_output=True, text=True, check=True).stdout)
    json.dump(lim, open(os.path.join(OUT, "limits.json"), "w"))
    tcp = lim["loopback_tcp_gbps"]
    qv = subprocess.run([QEMU, "--version"], capture_output=True, text=True).stdout.split("\n")[0] \
        if QEMU else "none"
    print(f"Machine: {lim['nproc']} CPUs ({lim['cpu_model']}), {lim['kernel']}; {qv}.")
    print(f"Limits in this run: loopback TCP {tcp:.2f} GB/s, memcpy {lim['memcpy_gbps']:.2f} GB/s, "
          f"first touch 4 KiB {lim['fault_4k_us']:.1f} us/fault ({lim['fault_4k_gbps']:.2f} GB/s), "
          f"huge pages {lim['fault_thp_gbps']:.2f} GB/s warm / {lim['fault_thp_cold_gbps']:.2f} "
          f"GB/s cold, XXH3 {lim['xxh3_gbps']:.2f} GB/s. Median of {RUNS} after {WARMUP} "
          f"warm-up.\n")

    if "--placement" in sys.argv:
        placement(lim)
        return
    tmp = tempfile.mkdtemp(prefix="lm-scale-")
    try:
        if not no_qemu:
            print("| guest | QEMU 7.2 ms | livemig ms | QEMU / livemig | livemig verified ms | "
                  "QEMU wire MB | livemig wire MB |")
            print("|---|---:|---:|---:|---:|---:|---:|")
            for ram, data in (("2G", 512), ("8G", 64)):
                blob = os.path.join(tmp, f"blob{data}")
                with open(blob, "wb") as f:
                    f.write(os.urandom(data * MIB))
                label = f"{ram} with {data} MiB random, 2 channels"
                q = repeat(qemu, f"qemu-{ram}", ram, blob, 2, tmp)
                lm = repeat(livemig, f"lm-{ram}", ram, f"{data}M", 2, False)
                lv = repeat(livemig, f"lmv-{ram}", ram, f"{data}M", 2, True)
                qt, lt = median(q, "total_ms"), median(lm, "total_ms")
                print(f"| {label} | {qt:.0f} | {lt:.0f} | {qt / lt:.1f}x | "
                      f"{median(lv, 'total_ms'):.0f} | {median(q, 'wire') / 1e6:.1f} | "
                      f"{median(lm, 'wire') / 1e6:.1f} |", flush=True)
            print()

        print("| guest (livemig, verified) | total ms | verify ms | wire / data | "
              "destination RSS MiB | RSS / data | destination faults |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        huge = [("64G", 256), ("256G", 1024), ("1T", 1024)]
        if "--quick" in sys.argv:
            huge = huge[:1]
        for ram, data in huge:
            rows = repeat(livemig, f"huge-{ram}", ram, f"{data}M", 2, True)
            d = data * MIB
            print(f"| {ram} with {data} MiB random, 2 channels | {median(rows, 'total_ms'):.0f} | "
                  f"{median(rows, 'verify_ms'):.0f} | {median(rows, 'wire') / d:.4f} | "
                  f"{median(rows, 'dst_rss') / MIB:.0f} | {median(rows, 'dst_rss') / d:.2f} | "
                  f"{median(rows, 'dst_faults'):.0f} |", flush=True)
        print()

        rows = repeat(livemig, "full-2G", "2G", "2G", 4, False)
        rate = [r["normal_bytes"] / (r["total_ms"] / 1000) / 1e9 for r in rows]
        print(f"Fully non-zero 2 GiB guest, 4 channels, destination not preallocated: "
              f"{statistics.median(r['total_ms'] for r in rows):.0f} ms, data at "
              f"{statistics.median(rate):.2f} GB/s = {statistics.median(rate) / tcp:.0%} of "
              f"loopback TCP ({', '.join(f'{x:.2f}' for x in rate)}).")
        print(f"\nRaw reports: {os.path.relpath(OUT, ROOT)}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
