#!/usr/bin/env bash
# fill:256M in a 512 MiB guest: the filled half travels as data, the rest as
# zero pages; the destination faults once per data page, not per guest page.
. "$(dirname "$0")/lib.sh"
migrate_ok fill 512M fill:256M
S=$TMP/fill.src.json D=$TMP/fill.dst.json
expect_json "$S" 'j["ram"]["normal"] >= 65536'
expect_json "$S" 'j["ram"]["duplicate"] >= 60000'
expect_json "$D" 'j["dest-minor-faults"] < 1.2 * 65536 + 2000'
expect_json "$D" 'j["dest-minor-faults"] >= 65536'
echo ok
