#!/usr/bin/env bash
# The KVM guest (--guest kvm, docs/KVM-GUEST.md): real vCPUs running the
# guest program, migrated precopy (one stream and multifd) and postcopy
# (with and without the preempt connection), with the default tracker and
# KVM's dirty log and dirty ring. Each run verifies the RAM
# digest and the continuity check on both sides: every page of a stress
# region one step between two passes, the pass counters going on from the
# source's. A destination that lost a page fails the migration, and the
# source keeps running. Skips (77) where /dev/kvm cannot run the guest.
. "$(dirname "$0")/lib.sh"

rc=0
why=$("$LIVEMIG" kvm-check 2>&1) || rc=$?
if [ "$rc" = 77 ]; then
    echo "SKIP: ${why#kvm-check: }"
    exit 77
fi
[ "$rc" = 0 ] || fail "livemig kvm-check exited $rc: $why"

# kvm_ok NAME RAM WORKLOAD [migrate args...]: migrate_ok with the KVM guest
# on both sides, then the KVM guest's own checks.
kvm_ok() {
    local name=$1
    DEST_ARGS="--guest kvm ${DEST_ARGS:-}" migrate_ok "$@" --guest kvm
    local s=$TMP/$name.src.json d=$TMP/$name.dst.json
    for f in "$s" "$d"; do
        expect_json "$f" 'j["guest"]["kind"] == "kvm"'
        expect_json "$f" 'j["guest"]["continuity"] is True'
        expect_json "$f" 'j["guest"]["vcpu-exits"] > 0'
    done
    # Every vCPU went on from its own pass counter.
    local src_passes
    src_passes=$(json "$s" 'j["guest"]["vcpu-passes"]')
    expect_json "$d" "all(b > a for a, b in zip($src_passes, j['guest']['vcpu-passes']))"
    note "$name: downtime $(json "$s" 'j["downtime"]') ms (load check $(json "$d" 'j["guest"]["load-check-ms"]') ms), exits/s on the destination" \
        "$(json "$d" 'round(j["guest"].get("vcpu-exits-per-second", 0))'), passes" \
        "$src_passes -> $(json "$d" 'j["guest"]["vcpu-passes"]')"
}

# 1. Precopy: one vCPU, one stream; two vCPUs over multifd channels.
kvm_ok one 256M stress:1x32M
expect_json "$TMP/one.src.json" 'j["guest"]["vcpus"] == 1'
kvm_ok two 512M stress:2x64M --multifd-channels 2
expect_json "$TMP/two.src.json" 'j["ram"]["dirty-sync-count"] >= 2 and j["guest"]["vcpus"] == 2'

# KVM's own dirty log as the tracker (the guest hands its VM and slots to
# the library): several rounds, each re-armed chunk by chunk.
kvm_ok log 512M stress:2x64M --dirty-tracker kvm-log --multifd-channels 2 --downtime-limit 0 \
    --max-rounds 5 --track-chunk 16M
expect_json "$TMP/log.src.json" 'j["dirty-tracker"] == "kvm-log"'
expect_json "$TMP/log.src.json" 'j["ram"]["dirty-sync-count"] >= 4'
# The second round sees the guest's writes since the first (a later round
# can last ~1 ms, and on two shared cores the vCPUs may not run in it).
expect_json "$TMP/log.src.json" 'j["rounds"][1]["dirty-pages"] > 0'

# KVM's dirty ring (enabled on the VM before its vCPUs, harvested by the
# migration thread); then a ring small enough to fill, whose vCPUs wait for
# the harvests (the bandwidth cap spaces them out): nothing may be lost
# either way.
kvm_ok ring 512M stress:2x64M --dirty-tracker kvm-ring --multifd-channels 2 --downtime-limit 0 \
    --max-rounds 5 --track-chunk 16M
expect_json "$TMP/ring.src.json" 'j["dirty-tracker"] == "kvm-ring"'
expect_json "$TMP/ring.src.json" 'j["ram"]["dirty-sync-count"] >= 4'
expect_json "$TMP/ring.src.json" 'j["guest"]["dirty-ring-entries"] == 16384'
expect_json "$TMP/ring.src.json" 'j["rounds"][1]["dirty-pages"] > 0'
kvm_ok ringfull 256M stress:2x32M --dirty-tracker kvm-ring --dirty-ring 1024 --downtime-limit 1 \
    --max-rounds 4 --track-chunk 4M --max-bandwidth 40M
expect_json "$TMP/ringfull.src.json" 'j["guest"]["dirty-ring-full-exits"] > 0'
note "ring: rounds $(json "$TMP/ring.src.json" '[r["dirty-pages"] for r in j["rounds"]]');" \
    "ringfull: $(json "$TMP/ringfull.src.json" 'j["guest"]["dirty-ring-full-exits"]') ring-full exits"

# 2. The other workloads of the guest program.
kvm_ok hot 128M hot:2x8M
kvm_ok random 128M random:3000
kvm_ok fill 64M fill:16M

# 3. Postcopy: the destination's vCPUs fault on missing pages through
#    userfaultfd inside KVM_RUN; with the preempt connection and without.
kvm_ok pc 256M stress:2x32M --postcopy --postcopy-after-rounds 1 --downtime-limit 1 \
    --max-bandwidth 200M
expect_json "$TMP/pc.src.json" 'j["postcopy"]["needed"] > 0'
expect_json "$TMP/pc.dst.json" 'j["postcopy"]["faults"] > 0 and j["ram"]["postcopy-requests"] > 0'
note "pc: $(json "$TMP/pc.dst.json" 'j["postcopy"]["faults"]') faults, request latency p50" \
    "$(json "$TMP/pc.dst.json" 'j["postcopy"]["request-latency-p50-us"]') us"
kvm_ok pcnp 256M stress:2x32M --postcopy --postcopy-after-rounds 1 --downtime-limit 1 \
    --max-bandwidth 200M --no-postcopy-preempt --multifd-channels 2
note "pcnp: $(json "$TMP/pcnp.dst.json" 'j["postcopy"]["faults"]') faults, $(json "$TMP/pcnp.dst.json" 'j["ram"]["postcopy-requests"]') requests"

# 4. A destination that lost a page (the testing aid sets one back a pass)
#    fails its continuity check before its vCPUs run; the migration fails
#    and the source keeps its guest.
start_incoming lost --guest kvm --verify --stats-json "$TMP/lost.dst.json" --x-kvm-damage-page 100
rc=0
timeout 60 "$LIVEMIG" migrate --guest kvm --ram 256M --workload stress:1x32M --to "$DEST_URI" \
    --verify --no-progress --stats-json "$TMP/lost.src.json" >"$TMP/lost.src.out" 2>&1 || rc=$?
wait_pid "$DEST_PID" 60
[ "$rc" != 0 ] && [ "$WAIT_RC" != 0 ] || fail "a lost page went unnoticed (migrate $rc, incoming $WAIT_RC)"
grep -q "continuity check failed: vCPU 0: page 99 " "$TMP/lost.err" ||
    { cat "$TMP/lost.err" >&2; fail "the destination did not say which page broke continuity"; }
grep -q "keeps running on the source" "$TMP/lost.src.out" || fail "the source did not keep its guest"
expect_json "$TMP/lost.dst.json" 'j["guest"]["continuity"] is False'
expect_json "$TMP/lost.src.json" 'j["guest"]["continuity"] is True'

# 5. Mismatched guests are refused by name; workloads the program does not
#    run are refused up front.
start_incoming mismatch --stats-json "$TMP/mismatch.dst.json"
rc=0
timeout 60 "$LIVEMIG" migrate --guest kvm --ram 64M --workload idle --to "$DEST_URI" \
    --no-progress >"$TMP/mismatch.src.out" 2>&1 || rc=$?
wait_pid "$DEST_PID" 60
[ "$rc" != 0 ] && [ "$WAIT_RC" != 0 ] || fail "a KVM guest went into a thread-guest destination"
grep -q "start incoming with --guest kvm" "$TMP/mismatch.err" ||
    { cat "$TMP/mismatch.err" >&2; fail "the mismatch was not named"; }
rc=0
"$LIVEMIG" migrate --guest kvm --ram 64M --workload text:1M --to tcp:127.0.0.1:1 \
    >"$TMP/text.out" 2>&1 || rc=$?
[ "$rc" = 2 ] && grep -q "needs --guest thread" "$TMP/text.out" ||
    { cat "$TMP/text.out" >&2; fail "text: on the KVM guest: exit $rc"; }
echo ok
