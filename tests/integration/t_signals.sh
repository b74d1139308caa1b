#!/usr/bin/env bash
# Signals where the guest's memory is split (docs/STATE-MACHINE.md, "Signals
# and cancel"): in postcopy a SIGINT to the destination does not end it; it
# says why, and the migration completes, verified. A second SIGINT within
# 5 s, or SIGQUIT, force-quits with exit status 3 (the source then pauses,
# and refuses a single SIGTERM too). Outside those states SIGINT still
# cancels: the source keeps its guest.
. "$(dirname "$0")/lib.sh"

FORCE_QUIT=3

# start_postcopy NAME [incoming args...]: a destination and a source whose
# postcopy lasts a few seconds (random writes dirty thousands of pages in
# the first pass; the bandwidth cap keeps that pass, and so the dirty set,
# from being too short); returns once the destination says it is in
# postcopy-active. Sets SRC.
start_postcopy() {
    local name=$1; shift
    start_incoming "$name.dst" --verify --stats-json "$TMP/$name.dst.json" "$@"
    "$LIVEMIG" migrate --ram 128M --workload random:5000 --to "$DEST_URI" --verify --postcopy \
        --postcopy-after-rounds 1 --downtime-limit 1 --max-bandwidth 6M --no-progress \
        --stats-json "$TMP/$name.src.json" >"$TMP/$name.src.out" 2>"$TMP/$name.src.err" &
    SRC=$!
    PIDS+=("$SRC")
    for _ in $(seq 1 600); do
        grep -q 'postcopy-active: the guest.s memory is split' "$TMP/$name.dst.err" && return 0
        kill -0 "$SRC" 2>/dev/null && kill -0 "$DEST_PID" 2>/dev/null || break
        sleep 0.05
    done
    cat "$TMP/$name.src.err" "$TMP/$name.dst.err" >&2
    fail "$name: the destination never said it entered postcopy-active"
}

# said NAME.SIDE TEXT: the side's stderr has the text, or the test fails.
said() {
    grep -q -- "$2" "$TMP/$1.err" || { cat "$TMP/$1.err" >&2; fail "$1: no '$2' on stderr"; }
}

# 1. One SIGINT in postcopy-active: refused; the destination is still there a
#    second later (--run-for keeps a completed one there too: without the
#    refusal it would have exited at once), and both complete, verified.
start_postcopy one --run-for 2
kill -INT "$DEST_PID"
sleep 1
kill -0 "$DEST_PID" 2>/dev/null || { cat "$TMP/one.dst.err" >&2; fail "SIGINT in postcopy ended the destination"; }
said one.dst 'SIGINT: not stopping in state postcopy-active: the guest.s memory is split between the two sides'
said one.dst 'again within 5 s, or SIGQUIT'
wait_pid "$SRC" 60
[ "$WAIT_RC" = 0 ] || { cat "$TMP/one.src.err" >&2; fail "source exited $WAIT_RC"; }
wait_pid "$DEST_PID" 60
[ "$WAIT_RC" = 0 ] || { cat "$TMP/one.dst.err" >&2; fail "destination exited $WAIT_RC"; }
for side in src dst; do
    expect_json "$TMP/one.$side.json" 'j["status"] == "completed" and j["verify"]["match"] is True'
done
expect_json "$TMP/one.src.json" 'j["postcopy"]["needed"] > 0'

# 2. Two SIGINTs: the destination force-quits with its own status and says
#    so; the source, its link gone, pauses (waiting to reconnect for the
#    recover timeout), refuses one SIGTERM and force-quits on a second.
start_postcopy two
kill -INT "$DEST_PID"
sleep 0.2
kill -INT "$DEST_PID"
wait_pid "$DEST_PID" 10
[ "$WAIT_RC" = $FORCE_QUIT ] || { cat "$TMP/two.dst.err" >&2; fail "destination exited $WAIT_RC after two SIGINTs, expected $FORCE_QUIT"; }
said two.dst 'SIGINT again within 5 s: force-quit in state postcopy-active'
for _ in $(seq 1 200); do
    grep -q 'postcopy-paused: the guest.s memory is split' "$TMP/two.src.err" && break
    kill -0 "$SRC" 2>/dev/null || break
    sleep 0.05
done
said two.src 'postcopy-paused: the guest.s memory is split'
kill -TERM "$SRC"
sleep 0.5
kill -0 "$SRC" 2>/dev/null || { cat "$TMP/two.src.err" >&2; fail "one SIGTERM ended the paused source"; }
said two.src 'SIGTERM: not stopping in state postcopy-paused'
kill -TERM "$SRC"
wait_pid "$SRC" 10
[ "$WAIT_RC" = $FORCE_QUIT ] || { cat "$TMP/two.src.err" >&2; fail "paused source exited $WAIT_RC, expected $FORCE_QUIT"; }

# 3. SIGQUIT force-quits at once.
start_postcopy quit
kill -QUIT "$DEST_PID"
wait_pid "$DEST_PID" 10
[ "$WAIT_RC" = $FORCE_QUIT ] || { cat "$TMP/quit.dst.err" >&2; fail "destination exited $WAIT_RC on SIGQUIT, expected $FORCE_QUIT"; }
said quit.dst 'SIGQUIT: force-quit in state postcopy-active'
kill -QUIT "$SRC"
wait_pid "$SRC" 10
[ "$WAIT_RC" = $FORCE_QUIT ] || fail "source exited $WAIT_RC on SIGQUIT, expected $FORCE_QUIT"

# 4. Precopy is as before: SIGINT cancels, the source's guest runs on.
start_incoming pre.dst
"$LIVEMIG" migrate --ram 128M --workload stress:1x32M --to "$DEST_URI" --max-bandwidth 4M \
    --no-progress --stats-json "$TMP/pre.src.json" >"$TMP/pre.src.out" 2>"$TMP/pre.src.err" &
SRC=$!
PIDS+=("$SRC")
sleep 1
kill -INT "$SRC"
wait_pid "$SRC" 20
[ "$WAIT_RC" = 1 ] || { cat "$TMP/pre.src.err" >&2; fail "cancelled source exited $WAIT_RC, expected 1"; }
said pre.src 'the guest keeps running on the source'
expect_json "$TMP/pre.src.json" 'j["status"] == "cancelled"'
wait_pid "$DEST_PID" 20
[ "$WAIT_RC" != 0 ] || fail "the destination of a cancelled migration exited 0"
echo ok
