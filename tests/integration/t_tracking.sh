#!/usr/bin/env bash
# Dirty tracking armed in different chunks, on 4 KiB and on huge-page guest
# RAM: every variant migrates a guest writing all over its memory with
# matching digests, and the guest's stats cover the baseline window and the
# window where tracking starts.
. "$(dirname "$0")/lib.sh"
migrate_ok chunk2m 256M hot:2x256M --track-chunk 2M --ram-thp --downtime-limit 100
migrate_ok whole 256M hot:2x256M --track-chunk all --ram-thp --downtime-limit 100
migrate_ok small 256M hot:2x64M --track-chunk 16K --downtime-limit 100
for n in chunk2m whole small; do
    S=$TMP/$n.src.json
    expect_json "$S" 'j["guest"]["baseline"]["write-latency-p50-us"] <= j["guest"]["baseline"]["write-latency-p99-us"] <= j["guest"]["baseline"]["write-latency-max-us"]'
    expect_json "$S" 'j["guest"]["tracking-start"]["write-latency-p50-us"] <= j["guest"]["tracking-start"]["write-latency-p99-us"] <= j["guest"]["tracking-start"]["write-latency-max-us"]'
    expect_json "$S" 'j["guest"]["tracking-start"]["max-stall-ms"] <= j["guest"]["max-stall-ms"]'
    # A stall less its run-queue wait is never longer than the stall.
    for w in '' '["baseline"]' '["tracking-start"]'; do
        expect_json "$S" "0 <= j[\"guest\"]$w[\"max-stall-excl-runqueue-ms\"] <= j[\"guest\"]$w[\"max-stall-ms\"]"
    done
    # The baseline ran beside as many busy threads as the migration (one stream: 1).
    expect_json "$S" 'j["guest"]["baseline"]["load-threads"] == 1'
done
migrate_ok loaded 256M hot:2x64M --multifd-channels 2 --baseline-load auto
expect_json "$TMP/loaded.src.json" 'j["guest"]["baseline"]["load-threads"] == 3'
echo ok
