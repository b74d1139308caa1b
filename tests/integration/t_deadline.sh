#!/usr/bin/env bash
# A read's deadline is per message and absolute: a peer that trickles one
# byte at a time cannot keep a wait alive past --timeout. (It used to
# restart on every byte: 1 byte every 2 s kept --timeout 3 alive forever.)
# The trickler sends a valid frame header and then a body, a byte every
# 0.4 s, to a destination with --timeout 2: the destination must cut it off
# within the first dozen bytes (about 5 at 0.4 s a byte), where the old
# rule would have taken all 60.
. "$(dirname "$0")/lib.sh"
start_incoming trickle --timeout 2 --accept-timeout 20 --stats-json "$TMP/trickle.json"
python3 - "${DEST_URI#tcp:}" >"$TMP/trickle.log" <<'PY'
import socket, struct, sys, time
host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)))
frame = struct.pack(">IHHII", 0x4C4D4947, 2, 1, 44, 0) + bytes(44)  # HELLO, 44-byte body
sent = 0
try:
    for b in frame:
        s.send(bytes([b]))
        sent += 1
        time.sleep(0.4)
        # Has the destination closed its end?
        s.setblocking(False)
        try:
            if s.recv(4096, socket.MSG_PEEK) == b"":
                break
        except BlockingIOError:
            pass
        s.setblocking(True)
except (BrokenPipeError, ConnectionResetError):
    pass
print(sent)
PY
sent=$(cat "$TMP/trickle.log")
note "the trickler got $sent of 60 bytes through"
wait_pid "$DEST_PID" 30
[ "$sent" -lt 12 ] || { cat "$TMP/trickle.err" >&2; fail "a trickling peer kept the wait alive for $sent bytes"; }
grep -q "took longer than 2000 ms for one message" "$TMP/trickle.err" ||
    { cat "$TMP/trickle.err" >&2; fail "no 'took longer than' message"; }
echo ok
