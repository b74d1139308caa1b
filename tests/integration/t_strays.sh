#!/usr/bin/env bash
# Stray and idle connections on the destination's listener never end
# `incoming` or a migration (docs/SECURITY.md): each waits in a
# bounded lobby, has a few seconds to present a livemig frame, and what is
# not the peer wanted is closed while the destination waits on for the
# real one.
. "$(dirname "$0")/lib.sh"
FAKE="$(dirname "$0")/fake_source.py"

# holders NAME N: N silent connections to DEST_URI, held until killed.
holders() {
    python3 "$FAKE" "${DEST_URI#tcp:}" "hold:$2" >"$TMP/$1.hold" 2>&1 &
    HOLD_PID=$!
    PIDS+=("$HOLD_PID")
    for _ in $(seq 1 100); do
        grep -q holding "$TMP/$1.hold" 2>/dev/null && return 0
        sleep 0.05
    done
    cat "$TMP/$1.hold" >&2
    fail "$1: the idle connections did not connect"
}

fd_count() { ls "/proc/$1/fd" | wc -l; }

# One idle connection first, then the source: it used to be taken as the
# main connection and end `incoming` with a timeout.
start_incoming idle.dst --timeout 3 --verify --run-for 0.2
holders idle 1
sleep 0.5
timeout 60 "$LIVEMIG" migrate --ram 64M --workload fill:16M --to "$DEST_URI" --verify \
    --no-progress >"$TMP/idle.src" 2>&1 || { cat "$TMP/idle.src" "$TMP/idle.dst.err" >&2; fail "idle: migrate failed"; }
wait_pid "$DEST_PID" 30
[ "$WAIT_RC" = 0 ] || { cat "$TMP/idle.dst.err" >&2; fail "idle: incoming exited $WAIT_RC"; }
kill "$HOLD_PID" 2>/dev/null || true
note "idle: one silent connection, then a verified migration"

# A flood of 40 silent connections: the destination holds at most 16 of
# them (its descriptors stay bounded) and the source still gets in.
start_incoming flood.dst --timeout 3 --verify --run-for 0.2
fds0=$(fd_count "$DEST_PID")
holders flood 40
sleep 1
fds=$(fd_count "$DEST_PID")
[ $((fds - fds0)) -le 16 ] || fail "flood: the destination holds $((fds - fds0)) more descriptors, at most 16 expected"
timeout 60 "$LIVEMIG" migrate --ram 64M --workload fill:16M --to "$DEST_URI" --verify \
    --no-progress >"$TMP/flood.src" 2>&1 || { cat "$TMP/flood.src" "$TMP/flood.dst.err" >&2; fail "flood: migrate failed"; }
wait_pid "$DEST_PID" 30
[ "$WAIT_RC" = 0 ] || { cat "$TMP/flood.dst.err" >&2; fail "flood: incoming exited $WAIT_RC"; }
kill "$HOLD_PID" 2>/dev/null || true
note "flood: 40 silent connections held $((fds - fds0)) descriptors; the migration completed"

# 20 stray channel hellos (another uuid, an id out of range, garbage,
# silence) while the destination waits for its one channel: it takes the
# real one (which then reports the bad packet it sends).
start_incoming chans.dst --timeout 5
timeout 30 python3 "$FAKE" "${DEST_URI#tcp:}" stray-channels >"$TMP/chans.reply" 2>&1 || true
wait_pid "$DEST_PID" 20
grep -q 'channel 0): page offset .* outside the block' "$TMP/chans.dst.err" || {
    cat "$TMP/chans.dst.err" "$TMP/chans.reply" >&2
    fail "stray channels: the real channel was not taken"
}
note "stray channels: $(grep 'livemig incoming' "$TMP/chans.dst.err" | head -n1)"

# The recovery listener: precopy breaks (--recover-timeout), 24 strays and
# silent connections come before the source reconnects; it is taken back.
start_incoming rec.dst --timeout 3 --recover-timeout 10
timeout 40 python3 "$FAKE" "${DEST_URI#tcp:}" recover-strays >"$TMP/rec.reply" 2>&1 || true
grep -q 'taken back' "$TMP/rec.reply" || {
    cat "$TMP/rec.reply" "$TMP/rec.dst.err" >&2
    fail "recovery: the source was not taken back past the strays"
}
kill "$DEST_PID" 2>/dev/null || true
note "recovery: the source was taken back past 24 strays"
echo ok
