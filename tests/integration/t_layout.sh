#!/usr/bin/env bash
# The destination owns its RAM layout (docs/SECURITY.md): with
# `incoming --ram SIZE` any other declared layout is refused, naming both;
# without it `--max-ram` (16T by default) caps the declared size; and a
# sparse guest far larger than this host still migrates.
. "$(dirname "$0")/lib.sh"
FAKE="$(dirname "$0")/fake_source.py"

# declare NAME PATTERN SPEC [incoming args...]: a hand-made HELLO with layout
# SPEC; the fake source's reply must match PATTERN.
declare_case() {
    local name=$1 pattern=$2 spec=$3
    shift 3
    start_incoming "$name" --timeout 3 "$@"
    timeout 20 python3 "$FAKE" "${DEST_URI#tcp:}" "declare:$spec" >"$TMP/$name.reply" 2>&1 || true
    wait_pid "$DEST_PID" 15
    grep -qE "$pattern" "$TMP/$name.reply" || {
        cat "$TMP/$name.reply" "$TMP/$name.err" >&2
        fail "$name: reply does not match /$pattern/"
    }
    note "$name: $(head -c 300 "$TMP/$name.reply")"
}

# --ram: the one layout taken; a different size, a second block, another
# name or id are refused with both layouts named, before any allocation.
declare_case ram-size 'ERROR: .*1 block: 0 "ram" 2 MiB.*takes only 1 block: 0 "ram" 1 MiB' \
    '0:2M:ram' --ram 1M
declare_case ram-blocks 'ERROR: .*2 blocks: 0 "ram" 1 MiB, 1 "vga" 64 KiB.*takes only 1 block' \
    '0:1M:ram,1:64K:vga' --ram 1M
declare_case ram-name 'ERROR: .*0 "rom" 1 MiB.*takes only 1 block: 0 "ram" 1 MiB' '0:1M:rom' --ram 1M
declare_case ram-id 'ERROR: .*3 "ram" 1 MiB.*takes only 1 block: 0 "ram" 1 MiB' '3:1M:ram' --ram 1M
declare_case ram-same 'accepted' '0:1M:ram' --ram 1M

# --max-ram: the declared total is capped (16T by default); the message
# says which option to raise. A sparse 1 TiB guest is taken (at a --max-ram
# of exactly 1T).
declare_case max-default 'ERROR: .*declares a guest of 20 TiB, more than .*--max-ram of 16 TiB: raise --max-ram' \
    '0:20T:ram'
declare_case max-option 'ERROR: .*64 GiB, more than .*--max-ram of 32 GiB' '0:32G:a,1:32G:b' --max-ram 32G
declare_case max-1t 'accepted' '0:1T:ram' --max-ram 1T

# A real migration refused by layout: the source's guest runs on.
start_incoming real.dst --ram 512M
rc=0
timeout 60 "$LIVEMIG" migrate --ram 1G --workload fill:16M --to "$DEST_URI" --no-progress \
    >"$TMP/real.src" 2>&1 || rc=$?
wait_pid "$DEST_PID" 15
[ "$rc" = 1 ] && [ "$WAIT_RC" = 1 ] || { cat "$TMP/real.src" "$TMP/real.dst.err" >&2; fail "layout: exits $rc/$WAIT_RC, expected 1/1"; }
grep -q '1 GiB.*takes only 1 block: 0 "ram" 512 MiB (its --ram)' "$TMP/real.dst.err" || fail "layout: destination message"
grep -q 'guest keeps running on the source' "$TMP/real.src" || fail "layout: the source did not keep its guest"

# The same --ram on both sides migrates; so does a sparse 256 GiB guest,
# ten times this host, without --ram (the destination maps it NORESERVE
# and commits only what arrives).
DEST_ARGS="--ram 64M" migrate_ok same 64M fill:16M
migrate_ok sparse 256G fill:32M
echo ok
