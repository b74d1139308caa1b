#!/usr/bin/env bash
# Every compression method x every zero-page detection mode x channels
# {0, 1, 4}: a writing (stress) guest migrates with matching digests, and the
# counters say where the pages went.
. "$(dirname "$0")/lib.sh"
for m in none zlib zstd lz4; do
    for z in none legacy multifd; do
        for c in 0 1 4; do
            name="m$m-z$z-c$c"
            migrate_ok "$name" 64M stress:2x4M --multifd-channels $c --zero-page-detection $z \
                --compress $m --downtime-limit 100
            S=$TMP/$name.src.json
            if [ "$c" = 0 ]; then
                expect_json "$S" 'j["ram"]["multifd-bytes"] == 0'
            else
                expect_json "$S" 'j["ram"]["multifd-bytes"] > 0'
            fi
            if [ "$m" != none ]; then # compressed: fewer bytes than the data they carry
                expect_json "$S" 'j["ram"]["transferred"] < j["ram"]["normal-bytes"]'
            fi
            rm -f "$TMP/$name".*
        done
    done
done
echo ok
