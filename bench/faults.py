#!/usr/bin/env python3
"""Fault-injection campaign (issue 11): N randomized migrations between two
livemig processes on loopback, each through a TCP proxy in this script, with
one fault at a random point. Python 3 standard library only.

    ./bench/faults.py                          200 runs, every mode and fault
    ./bench/faults.py --runs 60 --seed 7 --out faults.jsonl
    ./bench/faults.py --modes postcopy --faults rst,fin --runs 20
    ./bench/faults.py --replay '{"seed": ..., ...}'   one run again, from a JSON line

Faults: kill-src / kill-dst (SIGKILL of a livemig process), proxy-kill (close
every connection, stop listening), proxy-restart (close every connection,
keep listening, so a reconnecting source can come back), rst (SO_LINGER 0,
then close), fin (shutdown the write side towards both ends, stop
forwarding), half-close (shutdown one direction only), blackhole (stop
forwarding, keep the sockets open). A fault point is a time after the source
started, a byte count in one direction (all connections together), or a
position inside a named frame on the main connection (the proxy follows its
16-byte frame headers, docs/PROTOCOL.md): e.g. "s2c RESUMED +5" fires after
5 bytes of the RESUMED frame reached the source, which aims at the commit
point (docs/STATE-MACHINE.md). A proxy fault hits every connection, or only
the one whose bytes fired it (scope "conn").

Each JSON line has the run's mode, fault, trigger and scope, whether and
when (s after the source started) the fault fired, how many connections it
touched, both exit codes and statuses, each process's exit time after the
fault (after the start when it never fired; null when it was still alive at
the deadline), the last main-connection frames before the fault, the
outcome, and a replay line's worth of options.

Outcomes, from both processes' exit codes and JSON reports:
  completed-verified  both completed, digests equal on both sides
  recovered           both completed, verified, after reconnecting (the
                      proxy restarted, or a connection came back)
  failed-one-side     exactly one side runs the guest (e.g. source failed,
                      destination never ran it)
  paused              no side runs it, but a side holding (part of) it is
                      alive in postcopy-paused / switchover-paused, waiting
  killed-holder       a SIGKILL took the side holding (part of) the guest
  TWO-COPIES          both sides ran it (source failed/cancelled while the
                      destination completed or is in postcopy)
  LOST                no side runs it and nobody waits holding it
  HANG                a process alive past fault + --timeout +
                      --recover-timeout + 5 s that is
                      not paused (killed by this script)
  DIGEST-MISMATCH     both completed but a digest differs or did not match
"""
import argparse, collections, json, os, random, re, shutil, signal, socket, struct
import subprocess, sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAGIC = 0x4C4D4947
MSG = {1: "HELLO", 2: "HELLO_ACK", 3: "PAGES", 4: "ROUND_END", 5: "DEVICE_STATE",
       6: "COMPLETE", 7: "RESUMED", 8: "ERROR", 9: "VERIFY", 10: "PING", 11: "PONG",
       12: "CHANNEL_HELLO", 13: "POSTCOPY_SWITCH", 14: "POSTCOPY_RUN", 15: "PAGE_REQUEST",
       16: "POSTCOPY_END", 17: "POSTCOPY_DONE", 18: "SWITCHOVER_READY", 19: "COMMIT",
       20: "CONFIRMED", 21: "RECOVER_MAP"}
MSG_ID = {v: k for k, v in MSG.items()}

FAULTS = ["kill-src", "kill-dst", "proxy-kill", "proxy-restart", "rst", "fin", "half-close",
          "blackhole"]
# name -> (guest, extra options of both sides' migration, postcopy?)
MODES = {
    "precopy": ("thread", [], False),
    "multifd-zstd": ("thread", ["--multifd-channels", "4", "--compress", "zstd"], False),
    "postcopy": ("thread", ["--postcopy-after-rounds", "1", "--downtime-limit", "1"], True),
    "kvm-precopy": ("kvm", [], False),
    "kvm-postcopy": ("kvm", ["--postcopy-after-rounds", "1", "--downtime-limit", "1"], True),
}
# Frames on the main connection that bracket the commit point, per mode kind.
COMMIT_MSGS = {
    False: [("c2s", "PING"), ("s2c", "PONG"), ("c2s", "DEVICE_STATE"), ("c2s", "COMPLETE"),
            ("c2s", "VERIFY"), ("s2c", "SWITCHOVER_READY"), ("c2s", "COMMIT"),
            ("s2c", "RESUMED"), ("s2c", "RESUMED"), ("c2s", "CONFIRMED")],
    True: [("c2s", "POSTCOPY_SWITCH"), ("c2s", "DEVICE_STATE"), ("s2c", "SWITCHOVER_READY"),
           ("c2s", "POSTCOPY_RUN"), ("s2c", "RESUMED"), ("s2c", "RESUMED"),
           ("s2c", "PAGE_REQUEST"), ("c2s", "POSTCOPY_END"), ("c2s", "VERIFY"),
           ("s2c", "POSTCOPY_DONE"), ("s2c", "POSTCOPY_DONE"), ("c2s", "CONFIRMED")],
}
FRAME_LEN = {"RESUMED": 32, "POSTCOPY_DONE": 32, "SWITCHOVER_READY": 32, "COMMIT": 16,
             "CONFIRMED": 16, "PONG": 16, "PING": 16, "COMPLETE": 16,
             "VERIFY": 48, "POSTCOPY_RUN": 16, "POSTCOPY_END": 16, "PAGE_REQUEST": 32,
             "HELLO_ACK": 16, "ROUND_END": 16}
SRC_AWAY = {"completed", "postcopy-active", "postcopy-paused", "postcopy-recover",
            "switchover-paused"}  # the source's guest does not run there
DST_RAN = {"completed", "postcopy-active", "postcopy-paused", "postcopy-recover"}
REPLAY_OPTS = ("timeout", "recover_timeout", "ram", "workload", "max_bandwidth", "max_rounds", "run_for")  # options a replay takes from the run
PAUSED = {"postcopy-paused", "postcopy-recover", "switchover-paused", "precopy-paused"}


# ---------------------------------------------------------------- the proxy

class FrameScanner:
    """Follows frame headers on one direction of the main connection."""

    def __init__(self):
        self.hdr = b""
        self.body_left = 0
        self.pos = 0  # stream offset of the next byte fed

    def feed(self, data):
        """Returns ([(stream offset of a frame start, type, total length)],
        how many leading bytes of data are safe to forward: a header cut in
        two is held back until it is whole, so a frame is known before any
        of its bytes go on)."""
        frames, i, n = [], 0, len(data)
        while i < n:
            if self.body_left:
                k = min(self.body_left, n - i)
                self.body_left -= k
                i += k
                continue
            need = 16 - len(self.hdr)
            if n - i < need:
                # A partial header at the end: hold it (and what came before
                # it in this chunk is forwarded).
                return frames, i, data[i:]
            hdr = self.hdr + data[i:i + need]
            start = self.pos + i - len(self.hdr)
            self.hdr = b""
            i += need
            magic, _ver, typ, length, _r = struct.unpack(">IHHII", hdr)
            if magic != MAGIC:
                self.body_left = 1 << 62  # not frames: stop following
                continue
            frames.append((start, typ, 16 + length))
            self.body_left = length
        return frames, n, b""


class Conn:
    def __init__(self, proxy, cid, client, upstream):
        self.proxy, self.cid, self.client, self.up = proxy, cid, client, upstream
        self.kind = "?"  # main, channel N, preempt
        self.scan = {"c2s": FrameScanner(), "s2c": FrameScanner()}
        self.pos = {"c2s": 0, "s2c": 0}
        self.hold = {"c2s": b"", "s2c": b""}
        self.stopped = {"c2s": False, "s2c": False}  # no more forwarding that way
        self.closed = False


class Proxy:
    """Listens on 127.0.0.1:0 and forwards each connection to target, one
    thread per direction, counting bytes; fires one fault at a trigger."""

    def __init__(self, target, trigger, action, scope, on_fire):
        self.target = target
        self.trigger = trigger  # ("time", s) | ("bytes", dir, n) | ("msg", dir, NAME, k)
        self.action, self.scope, self.on_fire = action, scope, on_fire
        self.lock = threading.Lock()
        self.conns = []
        self.bytes = {"c2s": 0, "s2c": 0}
        self.armed = trigger is not None
        self.pending = False  # a pump is about to fire
        self.fired_at = None
        self.fire_conn = None
        self.state = "forward"  # forward | blackhole (new conns too) | down
        self.accepts_after_fault = 0
        self.log = []  # main connection frames: (t, dir, name)
        self.t0 = time.monotonic()
        self.fire_done = threading.Event()
        self.fire_done.set()
        self.fire_pos = None  # (conn, stream offset) once the msg trigger's frame is seen
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        self.port = self.ls.getsockname()[1]
        self.threads = []
        self._spawn(self._accept_loop)

    def _spawn(self, fn, *a):
        t = threading.Thread(target=fn, args=a, daemon=True)
        t.start()
        self.threads.append(t)

    def start_clock(self):
        self.t0 = time.monotonic()
        if self.armed and self.trigger[0] == "time":
            self._spawn(self._timer, self.trigger[1])

    def _timer(self, delay):
        time.sleep(delay)
        with self.lock:
            if not self.armed:
                return
            self.armed, self.pending = False, True
            self.fire_done.clear()
            live = [c for c in self.conns if not c.closed]
            conn = random.Random(int(delay * 1e6)).choice(live) if live else None
        self._fire(conn, "timer")

    def _accept_loop(self):
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
            for s in (cs, up):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                c = Conn(self, len(self.conns), cs, up)
                self.conns.append(c)
                if self.fired_at is not None:
                    self.accepts_after_fault += 1
                if self.state == "blackhole":
                    c.stopped = {"c2s": True, "s2c": True}  # accepted, never served
            self._spawn(self._pump, c, "c2s")
            self._spawn(self._pump, c, "s2c")

    def _classify(self, c, frames):
        for start, typ, _ln in frames:
            if start == 0 and c.kind == "?":
                c.kind = "main" if typ == 1 else ("channel" if typ == 12 else "other")
                if c.kind != "main":
                    c.scan["c2s"].body_left = 1 << 62  # raw packets follow

    def _pump(self, c, d):
        src, dst = (c.client, c.up) if d == "c2s" else (c.up, c.client)
        while True:
            if c.stopped[d] or c.closed:
                return  # black hole / after FIN: stop reading, keep the socket
            try:
                data = src.recv(262144)
            except OSError:
                data = None
            if not data:
                # EOF (or error) from this end: pass the FIN on, unless a
                # fault already decided what this direction does.
                if self.pending:
                    self.fire_done.wait()
                with self.lock:
                    stop = c.stopped[d] or c.closed
                if not stop:
                    if data is None:
                        self._close_conn(c, rst=False)
                    else:
                        try:
                            dst.shutdown(socket.SHUT_WR)
                        except OSError:
                            pass
                return
            data = c.hold[d] + data
            c.hold[d] = b""
            while True:
                with self.lock:
                    if not self.pending:
                        fire_here, data, cut = self._account(c, d, data)
                        break
                self.fire_done.wait()
            if c.stopped[d] or c.closed:
                return
            self._send(c, dst, data[:cut], d)
            if not fire_here:
                continue
            self._fire(c, "%s@%d conn %d (%s)" % (d, c.pos[d], c.cid, c.kind))
            rest = data[cut:]
            with self.lock:
                st = c.stopped[d] or c.closed
                if not st:
                    self.bytes[d] += len(rest)
                    c.pos[d] += len(rest)
            if st:
                return
            if rest:
                self._send(c, dst, rest, d)

    def _account(self, c, d, data):
        """Under the lock: follows frames, counts, and finds whether (and
        after how many bytes of data) the trigger fires. Returns (fires,
        data to forward, bytes of it to forward before firing)."""
        frames = []
        if c.kind == "main" or (d == "c2s" and c.kind == "?"):
            frames, ok, hold = c.scan[d].feed(data)
            c.scan[d].pos += ok
            c.hold[d] = hold
            data = data[:ok]
            self._classify(c, frames)
            if c.kind == "main":
                now = round(time.monotonic() - self.t0, 4)
                for start, typ, _ln in frames:
                    self.log.append((now, d, MSG.get(typ, str(typ)), start))
        cut, fire = len(data), False
        tr = self.trigger
        if self.armed and tr[0] == "msg" and tr[1] == d and c.kind == "main" \
                and self.fire_pos is None:
            for start, typ, ln in frames:
                if MSG.get(typ) == tr[2]:
                    self.fire_pos = (c, start + min(tr[3], ln))
                    break
        if self.armed and tr[0] == "bytes" and tr[1] == d and self.bytes[d] + len(data) >= tr[2]:
            cut, fire = max(0, tr[2] - self.bytes[d]), True
        elif self.armed and self.fire_pos and self.fire_pos[0] is c and tr[1] == d \
                and c.pos[d] + len(data) >= self.fire_pos[1]:
            cut, fire = max(0, self.fire_pos[1] - c.pos[d]), True
        if fire:
            self.armed, self.pending = False, True
            self.fire_done.clear()
        self.bytes[d] += cut
        c.pos[d] += cut
        return fire, data, cut

    def _send(self, c, dst, data, d):
        try:
            dst.sendall(data)
        except OSError:
            self._close_conn(c, rst=False)

    def _close_conn(self, c, rst):
        with self.lock:
            if c.closed:
                return
            c.closed = True
        for s in (c.client, c.up):
            try:
                if rst:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                else:
                    s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass

    def _fire(self, conn, where):
        self.fired_at = time.monotonic()
        self.fire_conn = (conn.cid, conn.kind) if conn else None
        self.fire_where = where
        try:
            self.on_fire()  # kills a process for kill-src / kill-dst
            a = self.action
            with self.lock:
                scope = [c for c in self.conns if not c.closed]
            if self.scope == "conn" and conn is not None:
                scope = [conn]
            self.hit = len(self.conns) if a in ("proxy-kill", "proxy-restart") else len(scope)
            if a == "proxy-kill":
                self.state = "down"
                try:
                    self.ls.close()
                except OSError:
                    pass
                for c in list(self.conns):
                    self._close_conn(c, rst=False)
            elif a == "proxy-restart":
                for c in list(self.conns):
                    self._close_conn(c, rst=False)
            elif a == "rst":
                for c in scope:
                    self._close_conn(c, rst=True)
            elif a == "fin":
                for c in scope:
                    with self.lock:
                        c.stopped = {"c2s": True, "s2c": True}
                    for s in (c.client, c.up):
                        try:
                            s.shutdown(socket.SHUT_WR)
                        except OSError:
                            pass
            elif a in ("half-close-c2s", "half-close-s2c"):
                d = a[-3:]
                for c in scope:
                    with self.lock:
                        c.stopped[d] = True
                    try:
                        (c.up if d == "c2s" else c.client).shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
            elif a == "blackhole":
                with self.lock:
                    if self.scope != "conn":
                        self.state = "blackhole"
                    for c in scope:
                        c.stopped = {"c2s": True, "s2c": True}
        finally:
            with self.lock:
                self.pending = False
            self.fire_done.set()

    def close(self):
        try:
            self.ls.close()
        except OSError:
            pass
        for c in list(self.conns):
            self._close_conn(c, rst=False)


# ---------------------------------------------------------------- one run

def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


class Run:
    def __init__(self, args, spec, tmp):
        self.a, self.spec, self.tmp = args, spec, tmp

    def commands(self, dest_uri=None, port=None):
        a, s = self.a, self.spec
        guest, extra, _pc = MODES[s["mode"]]
        g = ["--guest", "kvm"] if guest == "kvm" else []
        rec = ["--recover-timeout", str(a.recover_timeout)] if a.recover_timeout else []
        dst = [a.livemig, "incoming", "--listen", "tcp:127.0.0.1:0", "--verify", "--run-for",
               str(a.run_for), "--timeout", str(a.timeout), "--accept-timeout",
               str(a.timeout), "--stats-json", os.path.join(self.tmp, "dst.json")] + g + rec
        src = [a.livemig, "migrate", "--ram", a.ram, "--workload", a.workload, "--to",
               "tcp:127.0.0.1:%s" % (port if port else "PROXYPORT"), "--verify", "--timeout",
               str(a.timeout), "--max-bandwidth", a.max_bandwidth, "--max-rounds", str(a.max_rounds),
               "--stats-window", "0",
               "--no-progress", "--seed", str(s["seed"] % 1000000 + 1),
               "--stats-json", os.path.join(self.tmp, "src.json")] + g + rec + extra
        return dst, src

    def go(self):
        a, s = self.a, self.spec
        dst_cmd, _ = self.commands()
        errs = {k: open(os.path.join(self.tmp, k + ".err"), "wb") for k in ("src", "dst")}
        dst = subprocess.Popen(dst_cmd, stdout=subprocess.DEVNULL, stderr=errs["dst"])
        uri = None
        for _ in range(200):
            with open(os.path.join(self.tmp, "dst.err"), "rb") as f:
                m = re.search(rb"waiting for a migration on tcp:([0-9.]+):(\d+)", f.read())
            if m:
                uri = (m.group(1).decode(), int(m.group(2)))
                break
            if dst.poll() is not None:
                break
            time.sleep(0.02)
        if uri is None:
            dst.kill()
            dst.wait()
            return dict(outcome="SETUP-ERROR", error="destination did not listen")
        procs = {"dst": dst}

        def on_fire():
            if s["fault"] in ("kill-src", "kill-dst"):
                p = procs.get(s["fault"][5:])
                if p and p.poll() is None:
                    p.kill()

        action = s["fault"]
        if action == "half-close":
            action = "half-close-" + s["half"]
        proxy = Proxy(uri, s["trigger"], action, s["scope"], on_fire)
        _, src_cmd = self.commands(port=proxy.port)
        self.cmdlines = (dst_cmd, src_cmd)
        t0 = time.monotonic()
        procs["src"] = subprocess.Popen(src_cmd, stdout=subprocess.DEVNULL, stderr=errs["src"])
        proxy.start_clock()
        exit_t, rc, hung, paused_alive = {}, {}, {}, {}
        hard = t0 + a.max_run
        paused_since = None
        while True:
            now = time.monotonic()
            for k, p in procs.items():
                if k not in exit_t and p.poll() is not None:
                    exit_t[k], rc[k] = now, p.returncode
            if len(exit_t) == 2:
                break
            # A side may legitimately wait --timeout to notice the break and
            # then --recover-timeout for the other side to come back.
            deadline = (proxy.fired_at + a.timeout + (a.recover_timeout or 0) + 5) \
                if proxy.fired_at else hard
            if now >= deadline:
                break
            if a.paused_grace is not None and proxy.fired_at:
                # Every live side has reported a pause: stop waiting after
                # the grace (they wait for a recovery that never comes).
                live = [k for k in procs if k not in exit_t]
                if all((read_json(os.path.join(self.tmp, k + ".json")) or {}).get("status")
                       in PAUSED for k in live):
                    paused_since = paused_since or now
                    if now - paused_since >= a.paused_grace:
                        break
                else:
                    paused_since = None
            time.sleep(0.01)
        # Anything alive now: paused (its report says it waits) or a hang.
        for k, p in procs.items():
            if k in exit_t:
                continue
            j = read_json(os.path.join(self.tmp, k + ".json"))
            st = j.get("status") if j else None
            if st in PAUSED:
                paused_alive[k] = st
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            else:
                hung[k] = st or "no report"
                p.kill()
                p.wait()
            exit_t[k], rc[k] = None, p.returncode
        proxy.close()
        for f in errs.values():
            f.close()
        reps = {k: read_json(os.path.join(self.tmp, k + ".json")) for k in ("src", "dst")}
        fired = proxy.fired_at
        rec = dict(
            fired=fired is not None,
            fault_at_s=round(fired - t0, 3) if fired else None,
            fault_where=getattr(proxy, "fire_where", None),
            fault_conn=proxy.fire_conn,
            fault_hit_conns=getattr(proxy, "hit", None),  # connections the fault touched
            rc_src=rc["src"], rc_dst=rc["dst"],
            status_src=(reps["src"] or {}).get("status"),
            status_dst=(reps["dst"] or {}).get("status"),
            exit_src_s=round(exit_t["src"] - (fired or t0), 3) if exit_t["src"] else None,
            exit_dst_s=round(exit_t["dst"] - (fired or t0), 3) if exit_t["dst"] else None,
            paused_alive=paused_alive, hung=hung,
            accepts_after_fault=proxy.accepts_after_fault,
            conns=len(proxy.conns), bytes=dict(proxy.bytes),
            main_frames_before_fault=[m for m in proxy.log
                                      if not fired or m[0] <= fired - proxy.t0
                                      if m[2] != "PAGES"][-4:],
            duration_s=round(max(e for e in exit_t.values() if e) - t0, 3)
            if any(exit_t.values()) else None,
        )
        rec["outcome"], rec["runs_on"] = classify(s, rec, reps)
        if rec["outcome"] in ("completed-verified", "recovered", "DIGEST-MISMATCH"):
            rec["digest_src"] = ((reps["src"] or {}).get("verify") or {}).get("digest")
            rec["digest_dst"] = ((reps["dst"] or {}).get("verify") or {}).get("digest")
        rec["err_src"] = tail(os.path.join(self.tmp, "src.err"))
        rec["err_dst"] = tail(os.path.join(self.tmp, "dst.err"))
        return rec


def tail(path, n=2):
    try:
        with open(path, errors="replace") as f:
            lines = [l.strip() for l in f if l.startswith("livemig")]
        return lines[-n:]
    except OSError:
        return []


def classify(spec, rec, reps):
    """Returns (outcome, where the guest runs: 'src', 'dst', 'both', 'none')."""
    if rec["hung"]:
        return "HANG", "?"
    killed = spec["fault"][5:] if spec["fault"].startswith("kill-") and rec["fired"] else None
    st = {"src": rec["status_src"], "dst": rec["status_dst"]}
    waiting = set(rec["paused_alive"])  # alive at the deadline, paused
    src_runs = killed != "src" and st["src"] in ("failed", "cancelled")
    dst_ran = killed != "dst" and st["dst"] in DST_RAN
    dst_runs = dst_ran and (st["dst"] not in PAUSED or "dst" in waiting)
    if src_runs and dst_ran:
        return "TWO-COPIES", "both"
    if st["dst"] == "completed" and (st["src"] == "completed" or killed == "src"):
        vs = (reps["src"] or {}).get("verify") or {}
        vd = (reps["dst"] or {}).get("verify") or {}
        ok = vd.get("match") is True and (killed == "src" or (
            vs.get("match") is True and vs.get("digest") == vd.get("digest")))
        if not ok:
            return "DIGEST-MISMATCH", "dst"
        if killed == "dst":
            return "killed-holder", "none"
        reconnects = max(((reps[k] or {}).get("recovery") or {}).get("reconnects", 0)
                         for k in ("src", "dst"))
        if rec["fired"] and reconnects:
            return "recovered", "dst"
        return "completed-verified", "dst"
    if dst_runs and st["dst"] in PAUSED:
        # The guest runs on the destination but waits for missing pages.
        return ("killed-holder" if killed == "src" else "paused"), "dst"
    if src_runs or dst_runs:
        return "failed-one-side", "src" if src_runs else "dst"
    if killed:
        return "killed-holder", "none"
    if waiting:
        return "paused", "none"
    return "LOST", "none"


# ---------------------------------------------------------------- the campaign

def pick(rng, mode, faults, calib):
    fault = rng.choice(faults)
    spec = {"mode": mode, "fault": fault, "seed": rng.randrange(1 << 31)}
    spec["half"] = rng.choice(["c2s", "s2c"]) if fault == "half-close" else None
    spec["scope"] = "all" if fault in ("kill-src", "kill-dst", "proxy-kill", "proxy-restart") \
        else rng.choice(["all", "all", "conn"])
    c = calib[mode]
    kinds = ["time", "bytes-c2s", "bytes-s2c", "msg", "msg"]
    kind = rng.choice(kinds)
    if kind == "time":
        trig = ("time", round(rng.uniform(0.0, 1.15 * c["duration"]), 3))
    elif kind == "bytes-c2s":
        trig = ("bytes", "c2s", rng.randrange(0, int(c["c2s"] * 1.02) + 1))
    elif kind == "bytes-s2c":
        trig = ("bytes", "s2c", rng.randrange(0, int(c["s2c"] * 1.02) + 1))
    else:
        d, name = rng.choice(COMMIT_MSGS[MODES[mode][2]])
        trig = ("msg", d, name, rng.randrange(0, FRAME_LEN.get(name, 16) + 1))
    spec["trigger"] = trig
    return spec


def describe(trig):
    if trig is None:
        return "none"
    if trig[0] == "time":
        return "t=%.3fs" % trig[1]
    if trig[0] == "bytes":
        return "%s %dB" % (trig[1], trig[2])
    return "%s %s +%d" % (trig[1], trig[2], trig[3])


def calibrate(args, mode):
    """One migration through the proxy without a fault: its duration and
    bytes each way, which scale the random fault points."""
    tmp = tempfile.mkdtemp(prefix="lm-faults-cal.")
    try:
        spec = {"mode": mode, "fault": "none", "seed": 1, "scope": "all", "half": None,
                "trigger": None}
        rec = Run(args, spec, tmp).go()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if rec.get("outcome") != "completed-verified":
        raise SystemExit("calibration of %s failed: %s" % (mode, json.dumps(rec)))
    return {"duration": rec["duration_s"], "c2s": rec["bytes"]["c2s"],
            "s2c": rec["bytes"]["s2c"]}


def shell_line(cmd):
    return " ".join(c if re.match(r"^[\w@%+=:,./-]+$", c) else "'%s'" % c for c in cmd)


def kvm_works(livemig):
    try:
        return subprocess.run([livemig, "kvm-check"], capture_output=True,
                              timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def table(rows, key):
    outs = ["completed-verified", "recovered", "failed-one-side", "paused", "killed-holder",
            "TWO-COPIES", "LOST", "HANG", "DIGEST-MISMATCH", "SETUP-ERROR"]
    counts = collections.OrderedDict()
    for r in rows:
        counts.setdefault(key(r), collections.Counter())[r["outcome"]] += 1
    used = [o for o in outs if any(c[o] for c in counts.values())]
    lines = ["| run | n | " + " | ".join(used) + " |", "|---|---:|" + "---:|" * len(used)]
    for k, c in sorted(counts.items()):
        lines.append("| %s | %d | " % (k, sum(c.values())) +
                     " | ".join(str(c[o]) if c[o] else "" for o in used) + " |")
    tot = collections.Counter(r["outcome"] for r in rows)
    lines.append("| **all** | %d | " % len(rows) + " | ".join(str(tot[o]) for o in used) + " |")
    return "\n".join(lines)


def exit_table(rows):
    """Seconds from the fault to each side's exit, over the runs whose
    fault fired and whose processes exited on their own."""
    lines = ["| mode | fired | src exit s (median / max) | dst exit s (median / max) |"
             " alive at the deadline (paused) |", "|---|---:|---|---|---:|"]
    by = collections.OrderedDict()
    for r in rows:
        if r.get("fired"):
            by.setdefault(r["mode"], []).append(r)
    for m, rs in by.items():
        cell = []
        for k in ("src", "dst"):
            v = sorted(r["exit_%s_s" % k] for r in rs if r.get("exit_%s_s" % k) is not None
                       and r.get("rc_%s" % k) != -9)
            cell.append("%.2f / %.2f" % (v[len(v) // 2], v[-1]) if v else "-")
        alive = sum(1 for r in rs if r.get("paused_alive"))
        lines.append("| %s | %d | %s | %s | %d |" % (m, len(rs), cell[0], cell[1], alive))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n", 2)[2])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--modes", default="all",
                    help="comma list of %s (kvm-* only where kvm-check passes)" % ",".join(MODES))
    ap.add_argument("--faults", default="all", help="comma list of " + ",".join(FAULTS))
    ap.add_argument("--out", default=None, help="JSON lines, one per run "
                    "(default bench/results/faults-DATE.jsonl)")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time (1: sequential)")
    ap.add_argument("--livemig", default=os.path.join(ROOT, "build", "livemig"))
    ap.add_argument("--timeout", type=float, default=3, help="livemig --timeout (3)")
    ap.add_argument("--recover-timeout", type=float, default=3,
                    help="livemig --recover-timeout on both sides (3; 0: not passed)")
    ap.add_argument("--ram", default="256M")
    ap.add_argument("--workload", default="stress:2x16M")
    ap.add_argument("--max-bandwidth", default="100M")
    ap.add_argument("--max-rounds", type=int, default=5)
    ap.add_argument("--run-for", type=float, default=0.3, help="incoming --run-for")
    ap.add_argument("--max-run", type=float, default=40,
                    help="a run whose fault never fired is a HANG past this (s)")
    ap.add_argument("--paused-grace", type=float, default=None,
                    help="stop waiting this many seconds after every live side reported "
                    "a pause (default: wait until fault + --timeout + --recover-timeout + 5 s)")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 when an outcome of --fail-on occurred")
    ap.add_argument("--fail-on", default="TWO-COPIES,HANG,LOST,DIGEST-MISMATCH,SETUP-ERROR")
    ap.add_argument("--keep", action="store_true", help="keep each run's directory")
    ap.add_argument("--replay", default=None, help="a JSON line of an earlier run: run it again")
    ap.add_argument("-q", "--quiet", action="store_true")
    a = ap.parse_args()
    if a.timeout == int(a.timeout):
        a.timeout = int(a.timeout)
    if a.recover_timeout == int(a.recover_timeout):
        a.recover_timeout = int(a.recover_timeout)
    if not os.access(a.livemig, os.X_OK):
        raise SystemExit("no %s: run make first" % a.livemig)

    if a.replay:
        old = json.loads(a.replay)
        for k, v in old.get("opts", {}).items():
            setattr(a, k, v)
        specs = [{k: old[k] for k in ("mode", "fault", "seed", "half", "scope")}]
        specs[0]["trigger"] = tuple(old["trigger"]) if old["trigger"] else None
        modes = [old["mode"]]
    else:
        modes = list(MODES) if a.modes == "all" else a.modes.split(",")
        for m in modes:
            if m not in MODES:
                raise SystemExit("unknown mode " + m)
        if any(MODES[m][0] == "kvm" for m in modes) and not kvm_works(a.livemig):
            print("kvm-check fails here: skipping the KVM guest's modes", file=sys.stderr)
            modes = [m for m in modes if MODES[m][0] != "kvm"]
        faults = FAULTS if a.faults == "all" else a.faults.split(",")
        for f in faults:
            if f not in FAULTS:
                raise SystemExit("unknown fault " + f)
        seed = a.seed if a.seed is not None else random.randrange(1 << 30)
        rng = random.Random(seed)
        calib = {}
        for m in modes:
            calib[m] = calibrate(a, m)
            if not a.quiet:
                print("calibrated %s: %s" % (m, calib[m]), file=sys.stderr)
        specs = []
        for i in range(a.runs):
            specs.append(pick(rng, modes[i % len(modes)], faults, calib))
    out = a.out or os.path.join(ROOT, "bench", "results",
                                "faults-" + time.strftime("%Y%m%d-%H%M%S") + ".jsonl")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    rows, lock = [], threading.Lock()
    todo = list(enumerate(specs))

    def worker(fh):
        while True:
            with lock:
                if not todo:
                    return
                i, spec = todo.pop(0)
            tmp = tempfile.mkdtemp(prefix="lm-faults.")
            r = Run(a, spec, tmp)
            try:
                rec = r.go()
            except Exception as e:  # a bug here must not hide the others
                rec = dict(outcome="SETUP-ERROR", error=repr(e))
            row = dict(run=i, **spec, point=describe(spec["trigger"]), **rec)
            row["opts"] = {k: getattr(a, k) for k in REPLAY_OPTS}
            if hasattr(r, "cmdlines"):
                row["cmd_dst"] = shell_line(r.cmdlines[0])
                row["cmd_src"] = shell_line(r.cmdlines[1])
            if a.keep:
                row["dir"] = tmp
            else:
                shutil.rmtree(tmp, ignore_errors=True)
            with lock:
                rows.append(row)
                fh.write(json.dumps(row) + "\n")
                fh.flush()
                if not a.quiet:
                    print("%3d %-13s %-14s %-22s src %s/%s dst %s/%s -> %s" % (
                        i, spec["mode"], spec["fault"] + ("" if spec["scope"] == "all" else
                                                          "(conn)"),
                        row["point"], row.get("status_src"), row.get("rc_src"),
                        row.get("status_dst"), row.get("rc_dst"), row["outcome"]),
                        file=sys.stderr, flush=True)

    with open(out, "w") as fh:
        ths = [threading.Thread(target=worker, args=(fh,)) for _ in range(max(1, a.jobs))]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
    rows.sort(key=lambda r: r["run"])
    if not a.replay:
        print("seed %d, %d runs, %s, timeout %s s -> %s\n" % (seed, len(rows), a.ram + " " +
              a.workload, a.timeout, out))
    print(table(rows, lambda r: "%s x %s" % (r["mode"], r["fault"])))
    print()
    print(table(rows, lambda r: r["mode"]))
    print()
    print(exit_table(rows))
    bad = [r for r in rows if r["outcome"] in ("TWO-COPIES", "HANG", "LOST", "DIGEST-MISMATCH",
                                               "SETUP-ERROR")]
    for r in bad:
        print("\n%s: run %d, mode %s, fault %s at %s (scope %s), statuses %s/%s, exits %s/%s"
              % (r["outcome"], r["run"], r["mode"], r["fault"], r["point"], r["scope"],
                 r.get("status_src"), r.get("status_dst"), r.get("rc_src"), r.get("rc_dst")))
        print("  replay: %s --replay '%s'" % (os.path.relpath(__file__), json.dumps(
            {k: r[k] for k in ("mode", "fault", "seed", "half", "scope", "trigger", "opts")})))
        if "cmd_dst" in r:
            print("  dst: %s\n  src: %s" % (r["cmd_dst"], r["cmd_src"]))
    fail_on = set(a.fail_on.split(","))
    if a.check and any(r["outcome"] in fail_on for r in rows):
        print("\nFAIL: %s\n" % ", ".join("%s %d" % (o, n) for o, n in collections.Counter(
            r["outcome"] for r in rows if r["outcome"] in fail_on).items()))
        sys.exit(1)


if __name__ == "__main__":
    main()
