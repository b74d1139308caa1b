#!/usr/bin/env bash
# stress:2x64M: two vCPUs rewrite their regions continuously; several rounds,
# the last pages move while the guest is stopped, and the digests match.
. "$(dirname "$0")/lib.sh"
migrate_ok stress 512M stress:2x64M
S=$TMP/stress.src.json
expect_json "$S" 'j["ram"]["dirty-sync-count"] >= 2'
expect_json "$S" 'j["ram"]["downtime-bytes"] > 0'
expect_json "$S" 'j["guest"]["vcpus"] == 2'
expect_json "$S" 'j["guest"]["write-latency-p50-us"] <= j["guest"]["write-latency-p99-us"] <= j["guest"]["write-latency-max-us"]'
echo ok
