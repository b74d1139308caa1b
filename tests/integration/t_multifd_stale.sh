#!/usr/bin/env bash
# A page resent in a later round must never be overwritten by an older copy
# that arrives late on another channel. Channel 0 of the destination is
# slowed down (--x-slow-channel-us) so its packets of each round land long
# after the other channels have moved on; a guest rewriting the same pages
# every round makes every late packet a stale copy. Only the round barrier
# (SYNC on every channel before ROUND_END is processed) keeps the digests
# equal: without it this test fails with a digest mismatch. A downtime
# limit of 0 keeps precopy going to the round limit (a short round on a
# busy machine can otherwise find so few dirty pages that it converges).
. "$(dirname "$0")/lib.sh"
# Each run is a verified migration (a mismatch fails at once); it counts
# toward the two only when it had rounds to go stale in (on a starved
# machine a round can find nothing dirty and converge even at limit 0).
good=0
for run in 1 2 3 4 5 6; do
    start_incoming "stale$run.dst" --verify --stats-json "$TMP/stale$run.dst.json" --run-for 0.2 \
        --x-slow-channel-us 3000
    timeout 120 "$LIVEMIG" migrate --ram 128M --workload stress:2x8M --to "$DEST_URI" --verify \
        --multifd-channels 4 --downtime-limit 0 --max-rounds 6 --no-progress \
        --stats-json "$TMP/stale$run.src.json" >"$TMP/stale$run.src.out" 2>&1 || {
        cat "$TMP/stale$run.src.out" "$TMP/stale$run.dst.err" >&2; fail "run $run: migrate failed"; }
    wait_pid "$DEST_PID" 60
    [ "$WAIT_RC" = 0 ] || { cat "$TMP/stale$run.dst.err" >&2; fail "run $run: incoming exit $WAIT_RC"; }
    expect_json "$TMP/stale$run.src.json" 'j["verify"]["match"] is True'
    expect_json "$TMP/stale$run.src.json" 'j["ram"]["multifd-bytes"] > 0'
    if [ "$(json "$TMP/stale$run.src.json" 'j["ram"]["dirty-sync-count"] >= 4')" = True ]; then
        good=$((good + 1))
        [ "$good" = 2 ] && break
    else
        note "run $run converged early ($(json "$TMP/stale$run.src.json" 'j["ram"]["dirty-sync-count"]') syncs): not counted"
    fi
done
[ "$good" = 2 ] || fail "only $good of the runs had 4 or more rounds"
echo ok
