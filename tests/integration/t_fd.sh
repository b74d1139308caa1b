#!/usr/bin/env bash
# fd:N (QEMU's fd: URI): sockets the embedding program opened itself.
#  - a connected socket pair, one end each, TLS on top, verified;
#  - a listening socket handed to the destination, the source with channels;
#  - what one connection cannot carry (channels, the preempt connection) and
#    descriptors that are not sockets are refused by name, before anything.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/tls_creds.sh"
make_tls_creds "$TMP/creds"

python3 - "$LIVEMIG" "$TMP" <<'PY'
import json, os, socket, subprocess, sys
lm, tmp = sys.argv[1], sys.argv[2]
psk = f"{tmp}/creds/keys.psk"

def run_pair(dest_args, src_args, dest_fd, src_fd, name):
    common = ["--verify", "--timeout", "10"]
    dst = subprocess.Popen([lm, "incoming", "--listen", f"fd:{dest_fd}", "--run-for", "0",
                            "--stats-json", f"{tmp}/{name}.dst.json"] + common + dest_args,
                           pass_fds=[dest_fd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    src = subprocess.Popen([lm, "migrate", "--ram", "64M", "--workload", "fill:16M",
                            "--no-progress", "--stats-json", f"{tmp}/{name}.src.json"] + common +
                           src_args + (["--to", f"fd:{src_fd}"] if src_fd is not None else []),
                           pass_fds=[src_fd] if src_fd is not None else [],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    sout = src.communicate(timeout=120)[0].decode()
    dout = dst.communicate(timeout=120)[0].decode()
    if src.returncode or dst.returncode:
        sys.exit(f"FAIL: {name}: source {src.returncode}, destination {dst.returncode}\n{sout}\n{dout}")
    for side in ("src", "dst"):
        j = json.load(open(f"{tmp}/{name}.{side}.json"))
        assert j["status"] == "completed" and j["verify"]["match"], (name, side, j)
    return sout

# 1. A connected pair: one end each, TLS (PSK) on top.
a, b = socket.socketpair()
run_pair(["--tls-psk", psk], ["--tls-psk", psk], b.fileno(), a.fileno(), "pair")
j = json.load(open(f"{tmp}/pair.src.json"))
assert j["tls"]["enabled"], j["tls"]
a.close(); b.close()
print("-- a connected pair, PSK: verified", file=sys.stderr)

# 2. A listening socket for the destination; the source connects with channels.
ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
ls.bind(("127.0.0.1", 0)); ls.listen(16)
port = ls.getsockname()[1]
run_pair([], ["--multifd-channels", "2", "--to", f"tcp:127.0.0.1:{port}"], ls.fileno(), None,
         "listening")
ls.close()
print("-- a listening socket, 2 channels: verified", file=sys.stderr)

# 3. Refusals, each before anything moves.
def refused(args, fds, pattern, name):
    p = subprocess.run([lm, "migrate", "--ram", "16M", "--workload", "idle", "--no-progress",
                        "--timeout", "3"] + args, pass_fds=fds, capture_output=True, timeout=60)
    out = (p.stdout + p.stderr).decode()
    if p.returncode == 0 or pattern not in out:
        sys.exit(f"FAIL: {name}: exit {p.returncode}, no '{pattern}' in:\n{out}")
    print(f"-- {name}: refused", file=sys.stderr)

a, b = socket.socketpair()
refused(["--to", f"fd:{a.fileno()}", "--multifd-channels", "2"], [a.fileno()],
        "is one connection: multifd channels", "channels over fd:")
refused(["--to", f"fd:{a.fileno()}", "--postcopy"], [a.fileno()],
        "postcopy's preempt connection", "preempt over fd:")
refused(["--to", "fd:987"], [], "not an open descriptor", "a closed descriptor")
with open(f"{tmp}/plain", "w") as f:
    refused(["--to", f"fd:{f.fileno()}"], [f.fileno()], "is not a socket", "a file")
ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
ls.bind(("127.0.0.1", 0)); ls.listen(1)
refused(["--to", f"fd:{ls.fileno()}"], [ls.fileno()], "not a connected socket",
        "a listening socket for the source")
PY
echo ok
