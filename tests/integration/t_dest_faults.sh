#!/usr/bin/env bash
# Seed 000: with the receivedmap, a zero page that was never received needs
# no work on the destination, so an idle guest with a small filled part costs
# about one page fault per data page. Without it (--no-receivedmap) the
# destination reads every zero page to check it, and faults each one in.
. "$(dirname "$0")/lib.sh"
DEST_ARGS="--dest-thp off" migrate_ok rmap 256M fill:8M --multifd-channels 2
start_incoming norm.dst --verify --stats-json "$TMP/norm.dst.json" --run-for 0.2 --no-receivedmap --dest-thp off
"$LIVEMIG" migrate --ram 256M --workload fill:8M --to "$DEST_URI" --verify --no-progress \
    --multifd-channels 2 --stats-json "$TMP/norm.src.json" >/dev/null 2>&1 || fail "no-receivedmap run failed"
wait_pid "$DEST_PID" 60
[ "$WAIT_RC" = 0 ] || fail "incoming --no-receivedmap exit $WAIT_RC"
with=$(json "$TMP/rmap.dst.json" 'j["dest-minor-faults"]')
without=$(json "$TMP/norm.dst.json" 'j["dest-minor-faults"]')
note "destination faults: $with with receivedmap, $without without"
# 2048 data pages; 65536 pages in all.
expect_json "$TMP/rmap.dst.json" 'j["dest-minor-faults"] < 2048 * 1.1 + 300'
expect_json "$TMP/norm.dst.json" "j['dest-minor-faults'] > 10 * $with"

# --dest-prealloc: RAM populated before the source connects, so receiving
# the same guest takes almost no fault at all (4 KiB pages, to count them;
# a few hundred under ASan, whose shadow memory faults too).
DEST_ARGS="--dest-thp off --dest-prealloc --ram 256M" migrate_ok pre 256M fill:8M --multifd-channels 2
pre=$(json "$TMP/pre.dst.json" 'j["dest-minor-faults"]')
note "destination faults with --dest-prealloc: $pre"
expect_json "$TMP/pre.dst.json" "j['dest-minor-faults'] * 4 < $with"

# A preallocated RAM size that is not the source's is refused by name, and
# the source's guest keeps running.
start_incoming small.dst --dest-prealloc --ram 128M
rc=0
timeout 120 "$LIVEMIG" migrate --ram 256M --workload stress:1x8M --to "$DEST_URI" --no-progress \
    >"$TMP/small.src.out" 2>&1 || rc=$?
wait_pid "$DEST_PID" 60
[ "$rc" != 0 ] && [ "$WAIT_RC" != 0 ] || fail "a RAM size mismatch was accepted ($rc, $WAIT_RC)"
grep -q "RAM layout of 1 block: 0 \"ram\" 256 MiB, but this destination takes only 1 block: 0 \"ram\" 128 MiB" "$TMP/small.src.out" "$TMP/small.dst.err" ||
    fail "the size mismatch was not named: $(cat "$TMP/small.src.out" "$TMP/small.dst.err")"
grep -q "keeps running on the source" "$TMP/small.src.out" || fail "source guest not reported running"
echo ok
