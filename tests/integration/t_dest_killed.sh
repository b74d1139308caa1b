#!/usr/bin/env bash
# The destination dies in the middle of precopy: the source reports a clear
# error and exits non-zero within seconds, and its guest kept running.
. "$(dirname "$0")/lib.sh"
start_incoming victim
timeout 60 "$LIVEMIG" migrate --ram 512M --workload stress:1x64M --to "$DEST_URI" \
    --max-bandwidth 40M --no-progress --stats-json "$TMP/src.json" \
    >"$TMP/src.out" 2>"$TMP/src.err" &
SRC=$!
PIDS+=("$SRC")
sleep 1.5
kill -0 "$SRC" || { cat "$TMP/src.err"; fail "source ended before the kill"; }
kill -9 "$DEST_PID"
killed_at=$(date +%s%N)
wait_pid "$SRC" 15
elapsed_ms=$(( ($(date +%s%N) - killed_at) / 1000000 ))
cat "$TMP/src.err" >&2
[ "$WAIT_RC" != 0 ] || fail "source exited 0 after losing the destination"
[ "$WAIT_RC" -lt 128 ] || fail "source died from a signal ($WAIT_RC)"
grep -qE 'connection to the destination lost|destination closed' "$TMP/src.err" || fail "no clear message"
# The guest ran on: progress after the failure is beyond progress before it.
line=$(grep 'keeps running on the source' "$TMP/src.err") || fail "no guest survival report"
before=$(echo "$line" | sed -n 's/.*progress \([0-9]*\) -> \([0-9]*\).*/\1/p')
after=$(echo "$line" | sed -n 's/.*progress \([0-9]*\) -> \([0-9]*\).*/\2/p')
[ "$after" -gt "$before" ] || fail "guest did not keep running ($before -> $after)"
expect_json "$TMP/src.json" 'j["status"] == "failed"'
note "source noticed in ${elapsed_ms} ms (bound: a few seconds)"
[ "$elapsed_ms" -lt 10000 ] || fail "source took ${elapsed_ms} ms to notice"
echo ok
