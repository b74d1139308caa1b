#!/usr/bin/env bash
# Zero-page detection: a guest whose RAM holds text with cleared (zero but
# populated) pages in it. 'none' sends those pages with their data; 'legacy'
# and 'multifd' find the same zero pages and send them without payload, so
# the same data needs fewer normal pages and fewer bytes.
. "$(dirname "$0")/lib.sh"
for z in none legacy multifd; do
    migrate_ok "z$z" 64M text:16M --zero-page-detection $z --multifd-channels 2
done
N=$(json "$TMP/znone.src.json" 'j["ram"]["normal"]')
for z in legacy multifd; do
    expect_json "$TMP/z$z.src.json" "j['ram']['normal'] < $N - 500"
    expect_json "$TMP/z$z.src.json" "j['ram']['duplicate'] + j['ram']['normal'] == $N + $(json "$TMP/znone.src.json" 'j["ram"]["duplicate"]')"
done
expect_json "$TMP/zlegacy.src.json" "j['ram']['normal'] == $(json "$TMP/zmultifd.src.json" 'j["ram"]["normal"]')"
echo ok
