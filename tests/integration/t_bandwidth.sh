#!/usr/bin/env bash
# --max-bandwidth holds for small rates too: the source paces each batch by
# its own cost in wire time, so the average over the run stays at or under
# the limit (a window that let one batch through per 100 ms moved 16 MiB at
# 1.3 MB/s with --max-bandwidth 1K). Only an upper bound is asserted: a busy
# machine can make a migration slower, never faster than its pacing.
. "$(dirname "$0")/lib.sh"
start_incoming bw.dst --verify
"$LIVEMIG" migrate --ram 16M --workload fill:2M --to "$DEST_URI" --verify --no-progress \
    --max-bandwidth 512K --stats-json "$TMP/src.json" >"$TMP/src.out" 2>"$TMP/src.err" ||
    { cat "$TMP/src.err" >&2; fail "the paced migration failed"; }
wait_pid "$DEST_PID" 30
expect_json "$TMP/src.json" 'j["status"] == "completed"'
# 2 MiB of data plus headers and zero-page offsets, 512 KiB/s at most.
expect_json "$TMP/src.json" 'j["ram"]["transferred"] / (j["total-time"] / 1000.0) <= 1.15 * 512 * 1024'
expect_json "$TMP/src.json" 'j["ram"]["transferred"] > 2 * 1024 * 1024'
note "$(python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print("%.0f KiB/s for a 512 KiB/s limit" % (j["ram"]["transferred"] / j["total-time"] * 1000 / 1024))' "$TMP/src.json")"
echo ok
