#!/usr/bin/env bash
# The short fault campaign (bench/faults.py): 8 seeded migrations through a
# proxy, each with one fault (a side killed, the proxy killed or restarted,
# RST, FIN, half-close, black hole) at a random time, byte count or frame
# offset. Whatever the fault, the guest must never run on both sides, no
# process may outlive the fault by more than --timeout + 5 s unless it is
# paused waiting, and a completed migration must verify.
. "$(dirname "$0")/lib.sh"
BENCH="$(cd "$(dirname "$0")/../.." && pwd)/bench/faults.py"
MODES=precopy,multifd-zstd,postcopy
start=$(date +%s)
rc=0
python3 "$BENCH" --livemig "$LIVEMIG" --runs "${FAULT_RUNS:-8}" --seed "${FAULT_SEED:-11}" \
    --modes "$MODES" --timeout 2 --recover-timeout 2 --paused-grace 1 --quiet \
    --out "$TMP/faults.jsonl" --check --fail-on TWO-COPIES,HANG,DIGEST-MISMATCH,SETUP-ERROR \
    || rc=$?
note "$(( $(date +%s) - start )) s"
[ "$rc" = 0 ] || fail "fault campaign: see the runs above (replay lines reproduce each)"
echo ok
