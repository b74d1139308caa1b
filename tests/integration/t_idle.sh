#!/usr/bin/env bash
# An idle guest: almost everything is never-populated memory, sent as zero
# pages without being read, and the destination takes no fault for them.
. "$(dirname "$0")/lib.sh"
migrate_ok idle 256M idle
S=$TMP/idle.src.json D=$TMP/idle.dst.json
expect_json "$S" 'j["ram"]["duplicate"] >= 65000'
expect_json "$S" 'j["ram"]["normal"] < 1000'
expect_json "$D" 'j["dest-minor-faults"] < 2000'
expect_json "$S" 'j["ram"]["dirty-sync-count"] >= 2'
echo ok
