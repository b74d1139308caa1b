#!/usr/bin/env bash
# stress:2x64M: two vCPUs rewrite their regions continuously; several rounds,
# the last pages move while the guest is stopped, and the digests match.
. "$(dirname "$0")/lib.sh"
migrate_ok stress 512M stress:2x64M
S=$TMP/stress.src.json
expect_json "$S" 'j["ram"]["dirty-sync-count"] >= 2'
expect_json "$S" 'j["ram"]["downtime-bytes"] > 0'
expect_json "$S" 'j["guest"]["vcpus"] == 2'
# One latency sample per write, and a stress vCPU writes once a step: the
# samples count the steps, all of them on the source (its counters start at
# 0), those since the resume on the destination. (The quantiles themselves
# are checked against known samples in tests/unit/test_histogram.c.)
expect_json "$S" 'j["guest"]["write-latency-count"] == j["guest"]["progress-end"]'
expect_json "$TMP/stress.dst.json" \
    'j["guest"]["write-latency-count"] == j["guest"]["progress-end"] - j["guest"]["progress-start"] > 0'
echo ok
