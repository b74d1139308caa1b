#!/usr/bin/env bash
# The connection is cut in the middle of postcopy (--x-postcopy-cut-ms, a
# testing aid that shuts every socket down on the source): the guest's
# memory is now in two places, so neither side may throw anything away or
# exit 0. Both report it, say they are paused, and keep running until
# force-quit.
. "$(dirname "$0")/lib.sh"
start_incoming cut.dst --stats-json "$TMP/dst.json"
"$LIVEMIG" migrate --ram 512M --workload stress:2x64M --to "$DEST_URI" --postcopy \
    --postcopy-after-rounds 1 --downtime-limit 1 --max-bandwidth 20M --x-postcopy-cut-ms 300 \
    --no-progress --stats-json "$TMP/src.json" >"$TMP/src.out" 2>"$TMP/src.err" &
SRC=$!
PIDS+=("$SRC")
for _ in $(seq 1 300); do
    grep -q 'postcopy is paused' "$TMP/src.err" 2>/dev/null &&
        grep -q 'postcopy is paused' "$TMP/cut.dst.err" 2>/dev/null && break
    kill -0 "$SRC" 2>/dev/null || break
    sleep 0.05
done
cat "$TMP/src.err" "$TMP/cut.dst.err" >&2
kill -0 "$SRC" || fail "the source exited instead of pausing"
kill -0 "$DEST_PID" || fail "the destination exited instead of pausing"
grep -q 'postcopy is paused' "$TMP/src.err" || fail "the source did not report the pause"
grep -q 'postcopy is paused' "$TMP/cut.dst.err" || fail "the destination did not report the pause"
expect_json "$TMP/src.json" 'j["status"] == "postcopy-paused"'
expect_json "$TMP/dst.json" 'j["status"] == "postcopy-paused"'
# Still there a moment later, and after one SIGTERM (refused: each side
# holds part of the guest); force-quit by a second (exit status 3).
sleep 0.5
kill -0 "$SRC" && kill -0 "$DEST_PID" || fail "a side went away while paused"
kill -TERM "$SRC" "$DEST_PID"
sleep 0.5
kill -0 "$SRC" && kill -0 "$DEST_PID" || fail "one SIGTERM ended a paused side"
grep -q 'SIGTERM: not stopping in state postcopy-paused' "$TMP/src.err" || fail "the source did not say why it goes on"
grep -q 'SIGTERM: not stopping in state postcopy-paused' "$TMP/cut.dst.err" || fail "the destination did not say why it goes on"
kill -TERM "$SRC" "$DEST_PID"
wait_pid "$SRC" 10
[ "$WAIT_RC" = 3 ] || fail "source exited $WAIT_RC, expected 3 (force-quit)"
wait_pid "$DEST_PID" 10
[ "$WAIT_RC" = 3 ] || fail "destination exited $WAIT_RC, expected 3 (force-quit)"
echo ok
