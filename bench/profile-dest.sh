#!/usr/bin/env bash
# Where the destination's time goes: perf profile of `livemig incoming`
# receiving a guest (default: 2 GiB with fill:1G) from a source on loopback.
#   RAM=2G WORKLOAD=fill:1G EXTRA_ARGS="" DEST_ARGS="" ./bench/profile-dest.sh
# EXTRA_ARGS go to both sides (options every command takes, such as
# --multifd-channels N); DEST_ARGS to the destination only (--dest-thp off).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LIVEMIG=$ROOT/build/livemig
RAM=${RAM:-2G}
WORKLOAD=${WORKLOAD:-fill:1G}
EXTRA_ARGS=${EXTRA_ARGS:-}
DEST_ARGS=${DEST_ARGS:-}
command -v perf >/dev/null || { echo "profile-dest.sh: needs perf (apt install linux-perf)" >&2; exit 1; }
OUT=$(mktemp -d /tmp/livemig-profile.XXXXXX)
PORT=$((40000 + RANDOM % 20000))
# shellcheck disable=SC2086
perf record -q -g -o "$OUT/perf.data" "$LIVEMIG" incoming --listen tcp:127.0.0.1:$PORT \
    --run-for 0.1 --stats-json "$OUT/dst.json" $EXTRA_ARGS $DEST_ARGS >/dev/null 2>"$OUT/dst.err" &
PERF=$!
for _ in $(seq 1 100); do grep -q 'waiting for a migration' "$OUT/dst.err" 2>/dev/null && break; sleep 0.05; done
# shellcheck disable=SC2086
"$LIVEMIG" migrate --ram "$RAM" --workload "$WORKLOAD" --to tcp:127.0.0.1:$PORT --no-progress \
    --stats-json "$OUT/src.json" $EXTRA_ARGS >/dev/null
wait "$PERF"
python3 - "$OUT/src.json" "$OUT/dst.json" <<'PY'
import json, sys
s, d = (json.load(open(f)) for f in sys.argv[1:3])
print("total %.0f ms, downtime %.1f ms, dest faults %d" % (s["total-time"], s["downtime-ms"], d["dest-minor-faults"]))
PY
perf report -i "$OUT/perf.data" --no-children --sort sym --stdio 2>/dev/null | grep -E '^ +[0-9.]+%' | head -12
echo "perf data: $OUT/perf.data"
