#!/usr/bin/env bash
# Dirty tracking armed in different chunks, on 4 KiB and on huge-page guest
# RAM: every variant migrates a guest writing all over its memory with
# matching digests, and the guest's stats cover the baseline window and the
# window where tracking starts. (Which window a stall lands in, and that a
# stall less its run-queue wait keeps what was not run-queue wait, is checked
# in tests/unit/test_guest.c with stalls made for it.)
. "$(dirname "$0")/lib.sh"
# A hot guest on 2 CPUs rarely converges at 100 ms: 8 rounds show the
# re-arming as well as 30 and keep make check short.
migrate_ok chunk2m 256M hot:2x256M --track-chunk 2M --ram-thp --downtime-limit 100 --max-rounds 8
migrate_ok whole 256M hot:2x256M --track-chunk all --ram-thp --downtime-limit 100 --max-rounds 8
migrate_ok small 256M hot:2x64M --track-chunk 16K --downtime-limit 100 --max-rounds 8
for n in chunk2m whole small; do
    S=$TMP/$n.src.json
    # Every write timed once (hot: one write a step), and the guest wrote in
    # both windows: the baseline before the migration, tracking-start as
    # tracking was armed.
    expect_json "$S" 'j["guest"]["write-latency-count"] == j["guest"]["progress-end"]'
    expect_json "$S" 'j["guest"]["baseline"]["write-latency-count"] > 0'
    expect_json "$S" 'j["guest"]["tracking-start"]["write-latency-count"] > 0'
    # The baseline ran beside as many busy threads as the migration (one stream: 1).
    expect_json "$S" 'j["guest"]["baseline"]["load-threads"] == 1'
done
migrate_ok loaded 256M hot:2x64M --multifd-channels 2 --baseline-load auto --max-rounds 8
expect_json "$TMP/loaded.src.json" 'j["guest"]["baseline"]["load-threads"] == 3'
echo ok
