#!/usr/bin/env bash
# A 1 TiB guest holding 64 MiB on this 24 GiB host, verified (issue 15):
# its empty memory travels as zero ranges, so the wire carries the data and
# little else, every empty page still counts as a zero page on both sides,
# and the destination neither faults in nor commits the empty terabyte.
. "$(dirname "$0")/lib.sh"
migrate_ok huge 1T fill:64M --multifd-channels 2
DATA=$((64 << 20))
PAGES=$(((1 << 40) / 4096))
for side in src dst; do
    expect_json "$TMP/huge.$side.json" "j['ram']['duplicate'] == $PAGES - $DATA // 4096"
    expect_json "$TMP/huge.$side.json" "j['ram']['normal-bytes'] == $DATA"
done
# Data pages cost their 8-byte offset and packet headers; the empty
# terabyte a few ranges. Without ranges it was 2 GiB of offsets.
expect_json "$TMP/huge.src.json" "j['ram']['transferred'] <= $DATA * 1.02"
# The receivedmap (32 MiB: 8192 faults of 4 KiB) and the data (16384
# faults even without huge pages): never one fault per guest page (268
# million).
expect_json "$TMP/huge.dst.json" "j['dest-minor-faults'] < 40000"
echo ok
