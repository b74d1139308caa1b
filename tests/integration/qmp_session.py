"""A full migration driven through QMP alone, as an operator's tool would
(issue 13): deferred start on both sides, parameters and capabilities,
query-migrate and events checked against QEMU's schema, max-bandwidth
raised and lowered mid-run (the rate follows), one migration cancelled
(status cancelled, the guest runs on), postcopy started on another in the
middle of its first pass. Usage: qmp_session.py LIVEMIG TMPDIR"""
import json
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmp import QMP, QMPError  # noqa: E402
import qmp_schema  # noqa: E402

LM, TMP = sys.argv[1], sys.argv[2]
procs = []
MiB = 1 << 20


def spawn(name, *args):
    p = subprocess.Popen([LM, *args], stdout=open(f"{TMP}/{name}.out", "w"),
                         stderr=open(f"{TMP}/{name}.err", "w"))
    procs.append((name, p))
    return p


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print(f"ok: {what}", flush=True)


def expect_error(q, cls, name, **args):
    r = q.execute(name, **args)
    check("error" in r and r["error"]["class"] == cls,
          f"{name} {args or ''} -> {cls} ({r.get('error', {}).get('desc', r)})")
    return r["error"]["desc"]


def schema_ok(info, source, what):
    bad = qmp_schema.check(info, source)
    check(not bad, f"{what} matches QEMU's query-migrate schema {bad or ''}")


def rate(q, seconds):
    """Bytes per second sent over the next 'seconds', from query-migrate."""
    a = q.cmd("query-migrate")["ram"]["transferred"]
    t0 = time.monotonic()
    time.sleep(seconds)
    b = q.cmd("query-migrate")["ram"]["transferred"]
    return (b - a) / (time.monotonic() - t0)


def main():
    port_a = free_port()
    spawn("dst_a", "incoming", "--listen", "defer", "--qmp", f"unix:{TMP}/dst_a.sock",
          "--run-for", "0.2", "--accept-timeout", "60")
    src_p = spawn("src", "migrate", "--ram", "512M", "--workload", "fill:384M", "--to", "defer",
                  "--qmp", f"unix:{TMP}/src.sock", "--verify", "--no-progress",
                  "--stats-window", "0", "--stats-json", f"{TMP}/src.json")
    src = QMP(f"{TMP}/src.sock", negotiate=False)
    dst_a = QMP(f"{TMP}/dst_a.sock")
    check(src.greeting["QMP"]["capabilities"] == [] and "qemu" in src.greeting["QMP"]["version"],
          "QEMU's greeting")

    # The protocol's rules, as QEMU states them.
    expect_error(src, "CommandNotFound", "query-migrate")
    check(src.cmd("qmp_capabilities") == {}, "qmp_capabilities")
    expect_error(src, "CommandNotFound", "qmp_capabilities")
    expect_error(src, "CommandNotFound", "no-such-command")
    src.send_raw('{"execute": "query-status", "id": "bad" \r\n}{oops}\r\n')
    r = src.reply()
    check(r.get("return", {}).get("status") == "running" and r.get("id") == "bad",
          "a command split over lines, with a string id")
    r = src.reply()
    check(r.get("error", {}).get("class") == "GenericError", "invalid JSON -> GenericError")
    expect_error(src, "GenericError", "migrate-set-parameters", **{"max-bandwidth": "fast"})
    expect_error(src, "GenericError", "migrate-set-parameters", **{"no-such-parameter": 1})
    expect_error(src, "GenericError", "migrate-set-parameters", **{"cpu-throttle-initial": 100})
    expect_error(src, "GenericError", "migrate-set-parameters",  # 30 once cut to 32 bits
                 **{"cpu-throttle-initial": (1 << 32) + 30})
    expect_error(src, "GenericError", "migrate-set-parameters", **{"downtime-limit": -1})
    expect_error(src, "GenericError", "migrate-set-capabilities",
                 capabilities=[{"capability": "xbzrle", "state": True}])
    expect_error(src, "GenericError", "migrate-start-postcopy")  # postcopy-ram is off
    expect_error(src, "GenericError", "migrate", uri="127.0.0.1:4444")  # no scheme
    expect_error(src, "GenericError", "migrate-incoming", uri="tcp:127.0.0.1:1")  # a source
    check(src.cmd("query-migrate") == {}, "query-migrate before any migration: {}")
    st = src.cmd("query-status")
    check(st["status"] == "running" and st["running"] is True, "query-status: running")

    # Parameters and capabilities before the start.
    src.cmd("migrate-set-parameters", **{"max-bandwidth": 16 * MiB, "downtime-limit": 50,
                                         "cpu-throttle-initial": 30, "multifd-channels": 2})
    src.cmd("migrate-set-capabilities", capabilities=[{"capability": "multifd", "state": True},
                                                      {"capability": "auto-converge",
                                                       "state": True}])
    p = src.cmd("query-migrate-parameters")
    check(p["max-bandwidth"] == 16 * MiB and p["downtime-limit"] == 50 and
          p["cpu-throttle-initial"] == 30 and p["multifd-channels"] == 2,
          f"query-migrate-parameters shows the new values {p}")
    caps = {c["capability"]: c["state"] for c in src.cmd("query-migrate-capabilities")}
    check(caps["multifd"] and caps["auto-converge"] and not caps["postcopy-ram"],
          f"query-migrate-capabilities {caps}")

    # The first migration: deferred on both sides, then cancelled.
    check(dst_a.cmd("migrate-incoming", uri=f"tcp:127.0.0.1:{port_a}") == {}, "migrate-incoming")
    expect_error(dst_a, "GenericError", "migrate-incoming", uri=f"tcp:127.0.0.1:{port_a}")
    check(dst_a.cmd("query-status")["status"] == "inmigrate", "destination: inmigrate")
    check(src.cmd("migrate", uri=f"tcp:127.0.0.1:{port_a}") == {}, "migrate")
    check(src.wait_status({"setup"}) == "setup", "event MIGRATION setup")
    check(src.wait_status({"active"}) == "active", "event MIGRATION active")
    expect_error(src, "GenericError", "migrate", uri=f"tcp:127.0.0.1:{port_a}")
    expect_error(src, "GenericError", "migrate-set-parameters", **{"multifd-channels": 4})
    expect_error(src, "GenericError", "migrate-set-capabilities",
                 capabilities=[{"capability": "postcopy-ram", "state": True}])
    info = src.cmd("query-migrate")
    schema_ok(info, True, "query-migrate while active")
    check(info["status"] == "active" and info["ram"]["remaining"] > 0,
          f"active with {info['ram']['remaining']} bytes remaining")

    time.sleep(0.3)
    low = rate(src, 1.0)
    src.cmd("migrate-set-parameters", **{"max-bandwidth": 256 * MiB})
    time.sleep(0.1)
    high = rate(src, 0.6)
    src.cmd("migrate-set-parameters", **{"max-bandwidth": 16 * MiB})
    time.sleep(0.1)
    low2 = rate(src, 1.0)
    print(f"rates: {low / MiB:.1f} MiB/s at 16 MiB/s, {high / MiB:.1f} at 256, "
          f"{low2 / MiB:.1f} at 16 again", flush=True)
    check(low < 1.3 * 16 * MiB and low2 < 1.3 * 16 * MiB, "the rate holds at 16 MiB/s")
    check(high > 3 * max(low, low2), "raising max-bandwidth mid-run raises the rate")

    check(src.cmd("migrate-cancel") == {}, "migrate-cancel")
    check(src.wait_status({"cancelled", "failed"}) == "cancelled", "event MIGRATION cancelled")
    info = src.cmd("query-migrate")
    schema_ok(info, True, "query-migrate after a cancel")
    check(info["status"] == "cancelled" and "cancel" in info["error-desc"],
          f"status cancelled, error-desc '{info['error-desc']}'")
    time.sleep(0.3)
    st = src.cmd("query-status")
    check(st["status"] == "running" and st["running"], "the source's guest runs on")
    d = dst_a.wait_status({"failed", "cancelled"})
    info = dst_a.cmd("query-migrate")
    schema_ok(info, False, "the destination's query-migrate after the cancel")
    check(info["error-desc"] != "", f"the destination says why: {d}, '{info['error-desc']}'")
    dst_a.cmd("quit")

    # The second: postcopy started in the middle of the first pass.
    port_b = free_port()
    spawn("dst_b", "incoming", "--listen", f"tcp:127.0.0.1:{port_b}", "--qmp",
          f"unix:{TMP}/dst_b.sock", "--run-for", "0.3", "--stats-json", f"{TMP}/dst_b.json")
    dst_b = QMP(f"{TMP}/dst_b.sock")
    src.cmd("migrate-set-capabilities", capabilities=[{"capability": "postcopy-ram",
                                                       "state": True}])
    src.cmd("migrate-set-parameters", **{"max-bandwidth": 32 * MiB})
    deadline = time.monotonic() + 10  # the listener may still be coming up
    while True:
        try:
            src.cmd("migrate", uri=f"tcp:127.0.0.1:{port_b}")
            break
        except QMPError as e:
            if time.monotonic() > deadline:
                raise
            print(f"retry: {e}", flush=True)
            time.sleep(0.1)
    src.wait_status({"active"})
    time.sleep(0.5)
    check(src.cmd("migrate-start-postcopy") == {}, "migrate-start-postcopy")
    check(src.wait_status({"postcopy-active", "completed", "failed"}) == "postcopy-active",
          "event MIGRATION postcopy-active")
    expect_error(src, "GenericError", "migrate-cancel")  # the guest is split: refused
    # Pause (the links cut, held), recover, resume.
    expect_error(dst_b, "GenericError", "migrate-recover", uri=f"tcp:127.0.0.1:{port_b}")
    check(src.cmd("migrate-pause") == {}, "migrate-pause")
    check(src.wait_status({"postcopy-paused", "completed"}) == "postcopy-paused",
          "event MIGRATION postcopy-paused")
    check(dst_b.wait_status({"postcopy-paused", "completed"}) == "postcopy-paused",
          "the destination pauses too")
    expect_error(src, "GenericError", "migrate-pause")
    expect_error(src, "GenericError", "migrate", uri="tcp:127.0.0.1:1", resume=True)
    expect_error(dst_b, "GenericError", "migrate-recover", uri="tcp:127.0.0.1:1")
    check(dst_b.cmd("migrate-recover", uri=f"tcp:127.0.0.1:{port_b}") == {}, "migrate-recover")
    time.sleep(0.5)
    check(src.cmd("query-migrate")["status"] == "postcopy-paused",
          "held paused until migrate resume")
    src.cmd("migrate-set-parameters", **{"max-bandwidth": 0})
    check(src.cmd("migrate", uri=f"tcp:127.0.0.1:{port_b}", resume=True) == {},
          "migrate resume: true")
    check(src.wait_status({"postcopy-recover", "completed", "failed"}) == "postcopy-recover",
          "event MIGRATION postcopy-recover")
    check(src.wait_status({"postcopy-active", "completed", "failed"}) != "failed",
          "back to postcopy-active")
    check(src.wait_status({"completed", "failed"}, timeout=120) == "completed",
          "event MIGRATION completed")
    info = src.cmd("query-migrate")
    schema_ok(info, True, "query-migrate after postcopy")
    ram = info["ram"]
    check(ram["precopy-bytes"] + ram["downtime-bytes"] + ram["postcopy-bytes"] ==
          ram["transferred"], "precopy + downtime + postcopy bytes = transferred")
    check(ram["precopy-bytes"] < 128 * MiB,
          f"postcopy began mid-pass: {ram['precopy-bytes'] / MiB:.0f} MiB of 384 MiB sent before")
    check(ram["postcopy-bytes"] > 128 * MiB, "the rest went in postcopy")
    check(info["recovery"]["reconnects"] == 1, "one reconnection")
    check(src.cmd("query-status")["status"] == "postmigrate", "the source: postmigrate")
    expect_error(src, "GenericError", "migrate", uri=f"tcp:127.0.0.1:{port_b}")
    dst_b.wait_status({"completed"})
    info = dst_b.cmd("query-migrate")
    schema_ok(info, False, "the destination's query-migrate after postcopy")
    check(info["ram"]["precopy-bytes"] + info["ram"]["downtime-bytes"] +
          info["ram"]["postcopy-bytes"] == info["ram"]["transferred"],
          "the destination's bytes add up too")
    check(dst_b.cmd("query-status")["status"] in ("running", "paused"), "the destination runs it")
    time.sleep(0.5)
    dst_b.cmd("quit")
    src.cmd("quit")
    with open(f"{TMP}/src.json") as f:
        j = json.load(f)
    check(j["status"] == "completed" and j["verify"]["match"], "verified")
    for name, p in procs:
        rc = p.wait(timeout=30)
        want = 1 if name == "dst_a" else 0
        check(rc == want, f"{name} exits {rc}")


try:
    main()
except BaseException:
    for name, p in procs:
        if p.poll() is None:
            p.kill()
        for ext in ("err", "out"):
            try:
                print(f"--- {name}.{ext}:\n" + open(f"{TMP}/{name}.{ext}").read()[-3000:],
                      file=sys.stderr)
            except OSError:
                pass
    raise
