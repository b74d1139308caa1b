#!/usr/bin/env bash
# What the destination commits (docs/SECURITY.md): bounded by what it
# received, and checked against what the host can give before it is
# committed.
#  1. A scattered stream (one 4 KiB page in every 2 MiB) used to commit a
#     whole transparent huge page per page: 256 pages (1 MiB of data, 6.8 KB
#     compressed) grew the destination by 512 MiB. Now its growth stays
#     within the budget's bound (32 MiB allowance + 2 x the page data).
#  2. A host that cannot take the guest (--x-host-available, a testing aid
#     that pretends the host has that much) fails the migration with a
#     message, not an OOM kill, and the source keeps its guest running; the
#     same at a postcopy switch, before the commit.
. "$(dirname "$0")/lib.sh"
FAKE="$(dirname "$0")/fake_source.py"

# scatter NAME METHOD [incoming args...]: growth of the destination's
# resident anonymous memory for 256 scattered pages.
scatter() {
    local name=$1 method=$2
    shift 2
    start_incoming "$name" --timeout 5 "$@"
    FAKE_DEST_PID=$DEST_PID timeout 30 python3 "$FAKE" "${DEST_URI#tcp:}" "scatter:256:$method" \
        >"$TMP/$name.json" 2>"$TMP/$name.fake" || { cat "$TMP/$name.fake" "$TMP/$name.err" >&2; fail "$name: fake source"; }
    wait_pid "$DEST_PID" 15
    local bound=$(( (32 << 20) + 2 * 256 * 4096 + (4 << 20) ))
    expect_json "$TMP/$name.json" "j['rss_growth'] <= $bound"
    note "$name: $(json "$TMP/$name.json" '"RSS +%.2f MiB for %d wire bytes (%.0fx), %d page bytes (%.2fx)" % (j["rss_growth"] / 2**20, j["wire_bytes"], j["rss_growth"] / j["wire_bytes"], j["page_bytes"], j["rss_growth"] / j["page_bytes"])')"
}
scatter thp-raw none
scatter thp-zlib zlib
scatter nothp-zlib zlib --dest-thp off

# 2. The host has 256 MiB to give; the source sends 512 MiB of data.
start_incoming host.dst --x-host-available 256M
rc=0
timeout 60 "$LIVEMIG" migrate --ram 1G --workload fill:512M --multifd-channels 2 --to "$DEST_URI" \
    --no-progress >"$TMP/host.src" 2>&1 || rc=$?
wait_pid "$DEST_PID" 20
cat "$TMP/host.dst.err" "$TMP/host.src" >&2
[ "$rc" = 1 ] && [ "$WAIT_RC" = 1 ] || fail "host: exits $rc/$WAIT_RC, expected 1/1 (not an OOM kill)"
grep -q 'incoming: this host has .* available (x-host-available) .* the source has sent .* so far for a guest of 1.00 GiB: raise' \
    "$TMP/host.dst.err" || fail "host: the destination's message"
grep -q 'the destination failed: this host has' "$TMP/host.src" || fail "host: the source was not told why"
grep -q 'guest keeps running on the source' "$TMP/host.src" || fail "host: the source did not keep its guest"

# The postcopy switch: what postcopy will place (and, verifying, a hash a
# page of a 64 GiB guest) must fit before the commit, or the source runs on.
start_incoming pc.dst --verify --x-host-available 150M
rc=0
timeout 60 "$LIVEMIG" migrate --ram 64G --workload stress:1x16M --downtime-limit 1 --postcopy \
    --postcopy-after-rounds 1 --verify --to "$DEST_URI" --no-progress >"$TMP/pc.src" 2>&1 || rc=$?
wait_pid "$DEST_PID" 20
cat "$TMP/pc.dst.err" "$TMP/pc.src" >&2
[ "$rc" = 1 ] && [ "$WAIT_RC" = 1 ] || fail "postcopy: exits $rc/$WAIT_RC, expected 1/1"
grep -q 'postcopy needs .* more here, but this host has' "$TMP/pc.dst.err" || fail "postcopy: message"
grep -q 'guest keeps running on the source' "$TMP/pc.src" || fail "postcopy: the source did not keep its guest"
echo ok
