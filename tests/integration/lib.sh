# Shared helpers for the integration tests. Each test is one process tree
# with its own temporary directory; every wait is bounded.
set -euo pipefail

LIVEMIG=${1:?usage: $0 path/to/livemig}
TMP=$(mktemp -d /tmp/livemig-test.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
[ -n "${KEEP_TMP:-}" ] || trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
note() { echo "-- $*" >&2; }

# start_incoming NAME [args...]: starts a destination on a free port (or on
# $LISTEN, e.g. unix:PATH); sets DEST_PID and DEST_URI, the address it says
# it listens on. Its stdout/stderr go to $TMP/NAME.out/.err.
start_incoming() {
    local name=$1; shift
    "$LIVEMIG" incoming --listen "${LISTEN:-tcp:127.0.0.1:0}" --accept-timeout 60 "$@" \
        >"$TMP/$name.out" 2>"$TMP/$name.err" &
    DEST_PID=$!
    PIDS+=("$DEST_PID")
    for _ in $(seq 1 100); do
        # (The background shell may not have created the .err file yet.)
        DEST_URI=$(sed -n 's/.*waiting for a migration on \(\(tcp\|unix\):[^ ]*\).*/\1/p' \
            "$TMP/$name.err" 2>/dev/null | head -n1 || true)
        [ -n "$DEST_URI" ] && return 0
        kill -0 "$DEST_PID" 2>/dev/null || break
        sleep 0.05
    done
    cat "$TMP/$name.err" >&2
    fail "destination did not start listening"
}

# wait_pid PID SECONDS: waits for PID (a child of this shell) to exit and
# sets WAIT_RC to its status. Fails the test if it runs past SECONDS.
wait_pid() {
    local pid=$1 limit=$2 i
    for i in $(seq 1 $((limit * 20))); do
        if ! kill -0 "$pid" 2>/dev/null; then
            WAIT_RC=0
            wait "$pid" || WAIT_RC=$?
            return 0
        fi
        sleep 0.05
    done
    fail "process $pid still running after ${limit}s"
}

# json FILE EXPR: evaluates a Python expression over the parsed JSON (j).
json() {
    python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}

# expect_json FILE EXPR: the expression must be true.
expect_json() {
    [ "$(json "$1" "$2")" = "True" ] || { cat "$1" >&2; fail "$1: expected $2"; }
}

# migrate_ok NAME RAM WORKLOAD [migrate args...]: a full verified migration
# between two processes; leaves $TMP/NAME.src.json and $TMP/NAME.dst.json.
# DEST_ARGS adds options to the destination; LISTEN is where it listens.
migrate_ok() {
    local name=$1 ram=$2 wl=$3; shift 3
    # shellcheck disable=SC2086
    start_incoming "$name.dst" --verify --stats-json "$TMP/$name.dst.json" --run-for 0.2 ${DEST_ARGS:-}
    local rc=0
    timeout 120 "$LIVEMIG" migrate --ram "$ram" --workload "$wl" --to "$DEST_URI" --verify \
        --no-progress --stats-json "$TMP/$name.src.json" "$@" >"$TMP/$name.src.out" 2>&1 || rc=$?
    wait_pid "$DEST_PID" 60
    local drc=$WAIT_RC
    if [ "$rc" != 0 ] || [ "$drc" != 0 ]; then
        cat "$TMP/$name.src.out" "$TMP/$name.dst.out" "$TMP/$name.dst.err" >&2
        fail "$name: migrate exit $rc, incoming exit $drc"
    fi
    # One interpreter for every check (each start costs most of a second
    # on a loaded machine): s is the source's report, d the destination's.
    python3 - "$TMP/$name.src.json" "$TMP/$name.dst.json" <<'PY' || fail "$name: report check"
import json, sys
s, d = (json.load(open(f)) for f in sys.argv[1:3])
checks = [
    's["status"] == "completed"',
    'd["status"] == "completed"',
    's["verify"]["match"] is True',
    'd["verify"]["match"] is True',
    'd["verify"]["digest"] == s["verify"]["digest"]',
    # The guest continues on the destination from the source's counters.
    'd["guest"]["progress-start"] == s["guest"]["progress-end"]',
    'd["guest"]["progress-end"] > d["guest"]["progress-start"]',
    # Every page arrives, as data or as a zero page.
    's["ram"]["normal"] + s["ram"]["duplicate"] >= s["ram"]["total"] // 4096',
]
for c in checks:
    if not eval(c):
        print(json.dumps(s), json.dumps(d), sep="\n", file=sys.stderr)
        sys.exit(f"expected {c}")
PY
}
