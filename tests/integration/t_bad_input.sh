#!/usr/bin/env bash
# Garbage, truncated and malformed streams sent to `livemig incoming`: each is
# rejected with a clear message and exit status 1, never a crash or a hang,
# and never a write outside guest RAM (offsets are checked before payload).
. "$(dirname "$0")/lib.sh"
FAKE="$(dirname "$0")/fake_source.py"

check_case() {
    local case=$1 pattern=$2
    shift 2
    start_incoming "$case" --timeout 3 --verify "$@"
    local addr=${DEST_URI#tcp:}
    timeout 20 python3 "$FAKE" "$addr" "$case" >"$TMP/$case.reply" 2>&1 || true
    wait_pid "$DEST_PID" 15
    if [ "$WAIT_RC" != 1 ]; then
        cat "$TMP/$case.err" "$TMP/$case.out" >&2
        fail "$case: incoming exited $WAIT_RC, expected 1"
    fi
    grep -qiE "$pattern" "$TMP/$case.err" || { cat "$TMP/$case.err" >&2; fail "$case: message does not match /$pattern/"; }
    note "$case: $(grep 'livemig incoming' "$TMP/$case.err" | head -n1)"
}

# Not a livemig peer: closed, and the destination waits on for its source
# (here until --accept-timeout), then says what it closed.
check_case garbage                  'no source connected .* the last: bad frame magic' --accept-timeout 2
check_case truncated                'closed the connection'
check_case wrong-version            'protocol version 7'
check_case not-hello-first          'must start with HELLO'
check_case bad-hello                'page size'
check_case offset-out-of-range      'outside the block'
check_case offset-unaligned         'not page aligned'
check_case zero-offset-out-of-range 'outside the block'
check_case unknown-block            'unknown RAM block 7'
check_case counts-over-alloc        'exceed pages_alloc'
check_case payload-mismatch         'packet payload'
check_case frame-length-mismatch    'its packet needs'
check_case truncated-payload        'closed the connection'
check_case verify-mismatch          'verification failed'
check_case complete-without-state   'COMPLETE is not allowed in state active \(expected .*DEVICE_STATE'
check_case error-before-channels    'the source failed: compression setup failed'
check_case channel-bad-magic        'channel 0\): bad packet magic'
check_case channel-offset-out-of-range 'channel 0\): page offset .* outside the block'
check_case channel-unknown-block    'channel 0\): packet names unknown RAM block 9'
check_case channel-compressed-not-negotiated 'no compression was negotiated'
check_case channel-counts-over-alloc 'exceed pages_alloc'
check_case corrupt-zstd             'zstd payload corrupt'
check_case corrupt-zlib             'zlib payload corrupt'
check_case corrupt-lz4              'lz4 payload corrupt'
check_case oversize-compressed      'compressed payload of'
# The wait for VERIFY grows with what arrived, not with the 512 GiB the
# source declared (that bought it 549 s on top of --timeout).
check_case verify-wait-declared     'no progress receiving from the source'
# A forged postcopy start: refused, never a guest run here on memory nobody
# sent (which then parked this side until a signal).
check_case postcopy-first           'POSTCOPY_SWITCH without the PING'
check_case postcopy-uncovered       'POSTCOPY_SWITCH leaves 128 of 256 pages neither received nor'
check_case postcopy-without-ping    'POSTCOPY_SWITCH without the PING' --recover-timeout 1
grep -q 'verified=2' "$TMP/verify-mismatch.reply" || fail "verify-mismatch: source was not told"
grep -q 'ERROR: .*outside the block' "$TMP/offset-out-of-range.reply" || fail "source was not told why"
echo ok
