#!/usr/bin/env bash
# fill:256M in a 512 MiB guest: the filled half travels as data, the rest as
# zero pages. With 4 KiB destination pages the destination faults once per
# data page, not per guest page; with huge pages (the default) once per
# 2 MiB of data.
. "$(dirname "$0")/lib.sh"
migrate_ok fill 512M fill:256M
S=$TMP/fill.src.json D=$TMP/fill.dst.json
expect_json "$S" 'j["ram"]["normal"] >= 65536'
expect_json "$S" 'j["ram"]["duplicate"] >= 60000'
# Far fewer than one per data page (the bound leaves room for the faults a
# sanitizer build takes on its own shadow memory).
expect_json "$D" 'j["dest-minor-faults"] < 65536 / 4'
start_incoming small.dst --verify --stats-json "$TMP/small.dst.json" --run-for 0.2 --dest-thp off
"$LIVEMIG" migrate --ram 512M --workload fill:256M --to "$DEST_URI" --verify --no-progress \
    --stats-json "$TMP/small.src.json" >/dev/null 2>&1 || fail "4 KiB destination run failed"
wait_pid "$DEST_PID" 60
[ "$WAIT_RC" = 0 ] || fail "incoming --dest-thp off exit $WAIT_RC"
expect_json "$TMP/small.dst.json" 'j["dest-minor-faults"] >= 65536'
# One fault per data page, not per guest page (131072); the slack covers a
# sanitizer build's faults on its own shadow memory.
expect_json "$TMP/small.dst.json" 'j["dest-minor-faults"] < 1.25 * 65536'
echo ok
