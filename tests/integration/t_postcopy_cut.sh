#!/usr/bin/env bash
# Postcopy recovery between two processes. Every connection is cut in the
# middle of postcopy (--x-postcopy-cut-ms, a testing aid that shuts each
# socket down on the source): the guest's memory is in two places, so both
# sides pause, keep everything, and the source reconnects to the same
# address; the destination sends what it still lacks and its outstanding
# page requests again, and the migration completes verified.
# Then the destination is killed outright: the source cannot recover, says
# so after --recover-timeout (plus --timeout: the destination might have
# needed that long to notice), and keeps its pages until force-quit (3).
. "$(dirname "$0")/lib.sh"
start_incoming cut.dst --verify --stats-json "$TMP/dst.json"
"$LIVEMIG" migrate --ram 512M --workload stress:2x64M --to "$DEST_URI" --postcopy \
    --postcopy-after-rounds 1 --downtime-limit 1 --max-bandwidth 20M --x-postcopy-cut-ms 300 \
    --verify --no-progress --stats-json "$TMP/src.json" >"$TMP/src.out" 2>"$TMP/src.err" &
SRC=$!
PIDS+=("$SRC")
wait_pid "$SRC" 60
SRC_RC=$WAIT_RC
wait_pid "$DEST_PID" 30
cat "$TMP/src.err" "$TMP/cut.dst.err" >&2
[ "$SRC_RC" = 0 ] || fail "source exited $SRC_RC after the cut, expected 0 (recovered)"
[ "$WAIT_RC" = 0 ] || fail "destination exited $WAIT_RC after the cut, expected 0 (recovered)"
for side in src dst; do
    expect_json "$TMP/$side.json" 'j["status"] == "completed"'
    expect_json "$TMP/$side.json" 'j["recovery"]["reconnects"] == 1'
    expect_json "$TMP/$side.json" 'j["verify"]["match"] is True'
done
note "recovered: $(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["recovery"]; print("paused %.1f ms, resumed in %.1f ms" % (r["paused-time"], r["resume-time"]))' "$TMP/src.json")"

# The destination dies in postcopy: nothing to reconnect to.
start_incoming kill.dst
"$LIVEMIG" migrate --ram 256M --workload stress:2x32M --to "$DEST_URI" --postcopy \
    --postcopy-after-rounds 1 --downtime-limit 1 --max-bandwidth 20M --recover-timeout 1 --timeout 2 \
    --no-progress --stats-json "$TMP/src2.json" >"$TMP/src2.out" 2>"$TMP/src2.err" &
SRC=$!
PIDS+=("$SRC")
for _ in $(seq 1 1500); do
    grep -q 'postcopy-active' "$TMP/src2.err" 2>/dev/null && break
    sleep 0.01
done
kill -KILL "$DEST_PID"
for _ in $(seq 1 400); do
    grep -q 'postcopy is paused' "$TMP/src2.err" 2>/dev/null && break
    kill -0 "$SRC" 2>/dev/null || break
    sleep 0.05
done
cat "$TMP/src2.err" >&2
kill -0 "$SRC" || fail "the source exited instead of keeping its pages"
grep -q 'did not come back within 3000 ms' "$TMP/src2.err" || fail "the source did not say why it paused"
expect_json "$TMP/src2.json" 'j["status"] == "postcopy-paused"'
kill -TERM "$SRC"
sleep 0.3
kill -0 "$SRC" || fail "one SIGTERM ended a paused side"
kill -TERM "$SRC"
wait_pid "$SRC" 10
[ "$WAIT_RC" = 3 ] || fail "source exited $WAIT_RC, expected 3 (force-quit)"
echo ok
