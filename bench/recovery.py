#!/usr/bin/env python3
"""Recovery benchmark (issue 11): postcopy recovery and precopy resume
between two livemig processes on loopback, through a TCP proxy that can cut
every connection at once and keep listening (the network going away and
coming back). Python 3 standard library only.

    ./bench/recovery.py postcopy --runs 50      cuts in postcopy, a third of
                                                 them twice in a row
    ./bench/recovery.py precopy --runs 5        a 2 GiB guest with 1 GiB of
                                                 data, cut half way through
                                                 its data in the first pass

postcopy: each run is a verified postcopy migration (--postcopy-after-rounds
1) cut at a random moment 50-400 ms after the destination entered
postcopy-active; in every third run it is cut again once the source is back
in postcopy-active. A run passes when both sides complete, the digests
match, and both report as many reconnections as cuts. Reported: pass count,
median and max of the pause (cut to reconnection) and of the resume time
(reconnection to running again, the issue's "resume time after the link
returns").

precopy: a 2 GiB guest whose first 1 GiB is filled once (fill:1G), cut when
512 MiB of its pages have gone through; both sides have --recover-timeout.
Reported per run: what the destination lacked at the reconnection (bytes of
data it never received, 8 bytes for a page that holds nothing) and what the
source sent from then on, their ratio (goal <= 1.1), and the whole run's
bytes against an uncut run's (no starting over).
"""
import argparse, json, os, random, socket, statistics, subprocess, sys, tempfile
import threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class CutProxy:
    """Forwards every connection to target; cut() resets all current ones
    and keeps listening, so the source reconnects through it."""

    def __init__(self, target):
        self.target = target
        self.lock = threading.Lock()
        self.pairs = []
        self.c2s = 0
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        self.port = self.ls.getsockname()[1]
        self.cut_at_c2s = None
        self.cuts = 0
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                cs, _ = self.ls.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(self.target, timeout=5)
                up.settimeout(None)
            except OSError:
                cs.close()
                continue
            with self.lock:
                self.pairs.append((cs, up))
                self.accepted += 1
            threading.Thread(target=self._pump, args=(cs, up, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, cs, False), daemon=True).start()

    def _pump(self, a, b, c2s):
        while True:
            try:
                data = a.recv(262144)
            except OSError:
                data = b""
            if not data:
                try:
                    b.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            try:
                b.sendall(data)
            except OSError:
                return
            if c2s:
                with self.lock:
                    self.c2s += len(data)
                    fire = self.cut_at_c2s is not None and self.c2s >= self.cut_at_c2s
                    if fire:
                        self.cut_at_c2s = None
                if fire:
                    self.cut()

    def cut(self):
        with self.lock:
            pairs, self.pairs = self.pairs, []
            self.cuts += 1
        for pair in pairs:
            for s in pair:
                try:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                    s.close()
                except OSError:
                    pass

    def close(self):
        self.ls.close()
        self.cut()


def start_dest(livemig, tmp, extra):
    err = open(os.path.join(tmp, "dst.err"), "w")
    dst = subprocess.Popen([livemig, "incoming", "--listen", "tcp:127.0.0.1:0", "--verify",
                            "--accept-timeout", "30", "--stats-json",
                            os.path.join(tmp, "dst.json")] + extra,
                           stdout=subprocess.DEVNULL, stderr=err)
    for _ in range(200):
        with open(os.path.join(tmp, "dst.err")) as f:
            for line in f:
                if "waiting for a migration on tcp:" in line:
                    return dst, int(line.rsplit(":", 1)[1])
        time.sleep(0.02)
    dst.kill()
    raise RuntimeError("the destination did not start")


def wait_line(path, text, count, deadline):
    while time.monotonic() < deadline:
        with open(path) as f:
            if f.read().count(text) >= count:
                return True
        time.sleep(0.005)
    return False


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def postcopy_run(a, rng, ncuts):
    tmp = tempfile.mkdtemp(prefix="lm-recovery-")
    dst, port = start_dest(a.livemig, tmp, ["--recover-timeout", "20"])
    proxy = CutProxy(("127.0.0.1", port))
    src_err = os.path.join(tmp, "src.err")
    src = subprocess.Popen([a.livemig, "migrate", "--ram", "256M", "--workload", "stress:2x32M",
                            "--to", "tcp:127.0.0.1:%d" % proxy.port, "--verify", "--postcopy",
                            "--postcopy-after-rounds", "1", "--downtime-limit", "1",
                            "--max-bandwidth", "50M", "--multifd-channels", "2",
                            "--recover-timeout", "20", "--no-progress", "--stats-json",
                            os.path.join(tmp, "src.json")],
                           stdout=subprocess.DEVNULL, stderr=open(src_err, "w"))
    deadline = time.monotonic() + 60
    done_cuts = 0
    for i in range(ncuts):
        if i == 0:
            # The watcher's line: the source entered postcopy-active.
            if not wait_line(src_err, "postcopy-active: the guest", 1, deadline):
                break
        else:
            # Recovered: the source's main connection, 2 channels and the
            # preempt connection came back through the proxy.
            while proxy.accepted < accepted + 4 and time.monotonic() < deadline:
                time.sleep(0.002)
        time.sleep(rng.uniform(0.05, 0.4) if i == 0 else rng.uniform(0.01, 0.1))
        accepted = proxy.accepted
        if src.poll() is not None:
            break
        proxy.cut()
        done_cuts += 1
    rc = {}
    for name, p in (("src", src), ("dst", dst)):
        try:
            rc[name] = p.wait(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            rc[name] = "hang"
    proxy.close()
    rs, rd = load(os.path.join(tmp, "src.json")), load(os.path.join(tmp, "dst.json"))
    rec_s, rec_d = rs.get("recovery") or {}, rd.get("recovery") or {}
    ok = (rc == {"src": 0, "dst": 0} and rs.get("status") == "completed" and
          rd.get("status") == "completed" and (rs.get("verify") or {}).get("match") is True and
          (rd.get("verify") or {}).get("match") is True and
          rec_s.get("reconnects", 0) == done_cuts and rec_d.get("reconnects", 0) == done_cuts)
    return {"cuts": done_cuts, "ok": ok, "rc": rc, "paused_ms": rec_s.get("paused-time"),
            "resume_ms": rec_s.get("resume-time"), "dst_resume_ms": rec_d.get("resume-time"),
            "dir": tmp}


def precopy_run(a, cut):
    tmp = tempfile.mkdtemp(prefix="lm-resume-")
    dst, port = start_dest(a.livemig, tmp, ["--recover-timeout", "20"])
    proxy = CutProxy(("127.0.0.1", port))
    if cut:
        proxy.cut_at_c2s = 512 << 20
    src = subprocess.Popen([a.livemig, "migrate", "--ram", "2G", "--workload", "fill:1G",
                            "--to", "tcp:127.0.0.1:%d" % proxy.port, "--verify",
                            "--recover-timeout", "20", "--no-progress", "--stats-json",
                            os.path.join(tmp, "src.json")],
                           stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "src.err"), "w"))
    rc = {"src": src.wait(timeout=120), "dst": dst.wait(timeout=60)}
    proxy.close()
    rs = load(os.path.join(tmp, "src.json"))
    rec = rs.get("recovery") or {}
    ram = rs.get("ram") or {}
    return {"cut": cut, "rc": rc, "status": rs.get("status"),
            "verified": (rs.get("verify") or {}).get("match"),
            "reconnects": rec.get("reconnects", 0), "lacked": rec.get("lacked-bytes"),
            "after": rec.get("bytes-after"), "transferred": ram.get("transferred"), "dir": tmp}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["postcopy", "precopy"])
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--livemig", default=os.path.join(ROOT, "build", "livemig"))
    a = ap.parse_args()
    rng = random.Random(a.seed)
    if a.what == "postcopy":
        runs = a.runs or 50
        res = []
        for i in range(runs):
            r = postcopy_run(a, rng, 2 if i % 3 == 2 else 1)
            res.append(r)
            print("run %2d: %d cut(s) %s, paused %s ms, resumed in %s ms (destination %s ms)%s"
                  % (i + 1, r["cuts"], "recovered, verified" if r["ok"] else "FAILED %s" % r["rc"],
                     r["paused_ms"], r["resume_ms"], r["dst_resume_ms"],
                     "" if r["ok"] else "  " + r["dir"]), flush=True)
        good = [r for r in res if r["ok"]]
        cuts = sum(r["cuts"] for r in res)
        print("\n%d of %d runs recovered and verified (%d cuts, %d runs cut twice)"
              % (len(good), runs, cuts, sum(1 for r in res if r["cuts"] == 2)))
        if good:
            for key, name in (("paused_ms", "paused (cut to reconnection)"),
                              ("resume_ms", "resume (reconnection to running)")):
                v = [r[key] for r in good if r[key] is not None]
                print("%s: median %.1f ms, max %.1f ms" % (name, statistics.median(v), max(v)))
        sys.exit(0 if len(good) == runs else 1)
    runs = a.runs or 5
    base = precopy_run(a, False)
    print("uncut: %s, %d bytes on the wire" % (base["status"], base["transferred"] or 0))
    ratios = []
    for i in range(runs):
        r = precopy_run(a, True)
        ok = r["status"] == "completed" and r["verified"] and r["reconnects"] == 1
        ratio = r["after"] / r["lacked"] if ok and r["lacked"] else None
        if ratio:
            ratios.append(ratio)
        print("run %d: %s; lacked %s bytes, sent after %s: %s; whole run %s bytes (%.2fx uncut)"
              % (i + 1, "resumed, verified" if ok else "FAILED %s %s" % (r["rc"], r["dir"]),
                 r["lacked"], r["after"], "%.3fx" % ratio if ratio else "-", r["transferred"],
                 (r["transferred"] or 0) / max(1, base["transferred"] or 1)), flush=True)
    if ratios:
        print("\nbytes after reconnecting / what the destination lacked: median %.3f, max %.3f"
              % (statistics.median(ratios), max(ratios)))
    sys.exit(0 if len(ratios) == runs else 1)


if __name__ == "__main__":
    main()
