#!/usr/bin/env bash
# Fuzzing run: every libFuzzer target (tests/fuzz/, docs/FUZZING.md) under
# ASan and UBSan, one target at a time, each until FUZZ_SECONDS or FUZZ_RUNS
# executions; prints a markdown table (executions, exec/s, coverage, corpus)
# and fails on any crash, timeout or leak, or when all targets together ran
# fewer than FUZZ_MIN_TOTAL inputs.
#
#   ./bench/fuzz.sh                          the long run (>= 10 million executions)
#   ./bench/fuzz.sh dest_stream recv_chan    only these targets
#   FUZZ_SECONDS=60 FUZZ_RUNS=0 FUZZ_MIN_TOTAL=0 ./bench/fuzz.sh    what `make fuzz` runs
#
# Environment:
#   FUZZ_SECONDS=300        time limit per target
#   FUZZ_RUNS=2000000       execution limit per target (0: none); the fast
#                           decoders reach it in seconds, the slow targets
#                           (decompression, recv_chan, dest_stream) their time
#   FUZZ_MIN_TOTAL=10000000 fail below this many executions in all
#   FUZZ_BUILD=build-fuzz   the libFuzzer build (made here unless NO_BUILD=1)
#   NICE=10                 niceness: the machine is shared
# A target's corpus grows in $FUZZ_BUILD/tests/fuzz/work/<target>, kept from
# run to run (started from tests/fuzz/corpus/<target>); a crashing input is
# saved as $FUZZ_BUILD/tests/fuzz/crashes/<target>-crash-*; logs go to
# bench/results/fuzz-<timestamp>/ (git-ignored).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

FUZZ_SECONDS=${FUZZ_SECONDS:-300}
FUZZ_RUNS=${FUZZ_RUNS:-2000000}
FUZZ_MIN_TOTAL=${FUZZ_MIN_TOTAL:-10000000}
FUZZ_BUILD=${FUZZ_BUILD:-build-fuzz}
NICE=${NICE:-10}

die() { echo "fuzz.sh: $*" >&2; exit 1; }
for v in FUZZ_SECONDS FUZZ_RUNS FUZZ_MIN_TOTAL NICE; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
done

if [[ -z ${NO_BUILD:-} ]]; then
    command -v clang >/dev/null || die "clang is needed (scripts/install-deps.sh installs it)"
    if [[ ! -f $FUZZ_BUILD/CMakeCache.txt ]]; then
        CC=clang cmake -S . -B "$FUZZ_BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLM_FUZZ=ON >/dev/null
    fi
    nice -n "$NICE" cmake --build "$FUZZ_BUILD" -j "$(nproc)" >/dev/null
fi

BIN=$FUZZ_BUILD/tests/fuzz
[[ -d $BIN ]] || die "no fuzz targets in $BIN (build with -DLM_FUZZ=ON)"
if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    # Every target built (LM_FUZZ_TARGETS in tests/fuzz/CMakeLists.txt).
    mapfile -t targets < <(find "$BIN" -maxdepth 1 -type f -name 'fuzz_*' -perm -u+x |
        sed 's|.*/fuzz_||' | sort)
    [[ ${#targets[@]} -gt 0 ]] || die "no fuzz targets in $BIN"
fi

OUT=bench/results/fuzz-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT" "$BIN/crashes"
echo "fuzz.sh: ${#targets[@]} targets, each up to ${FUZZ_SECONDS}s or ${FUZZ_RUNS} runs (0: no limit); logs in $OUT" >&2

stat_of() { sed -n "s/^stat::$1: *//p" "$2" | tail -1; }

total=0
failed=0
{
    echo "| target | executions | exec/s | seconds | coverage (edges) | corpus | result |"
    echo "|---|---:|---:|---:|---:|---:|---|"
} | tee "$OUT/summary.md"
for t in "${targets[@]}"; do
    exe=$BIN/fuzz_$t
    [[ -x $exe ]] || die "no target fuzz_$t in $BIN"
    work=$BIN/work/$t
    mkdir -p "$work"
    args=(-max_total_time="$FUZZ_SECONDS" -print_final_stats=1 -timeout=25
          -artifact_prefix="$BIN/crashes/$t-")
    [[ $FUZZ_RUNS -gt 0 ]] && args+=(-runs="$FUZZ_RUNS")
    [[ -f tests/fuzz/dict/$t.dict ]] && args+=(-dict="tests/fuzz/dict/$t.dict")
    log=$OUT/$t.log
    start=$(date +%s)
    result=ok
    nice -n "$NICE" "$exe" "${args[@]}" "$work" "tests/fuzz/corpus/$t" >"$log" 2>&1 || result="FAILED (exit $?)"
    secs=$(( $(date +%s) - start ))
    runs=$(stat_of number_of_executed_units "$log")
    rate=$(stat_of average_exec_per_sec "$log")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    corp=$(find "$work" -type f | wc -l)
    if grep -q 'ERROR: \(AddressSanitizer\|LeakSanitizer\|libFuzzer\)\|runtime error:' "$log"; then
        result="FAILED (see $log)"
    fi
    [[ $result == ok ]] || failed=$((failed + 1))
    total=$((total + ${runs:-0}))
    echo "| $t | ${runs:-?} | ${rate:-?} | $secs | ${cov:-?} | $corp | $result |" | tee -a "$OUT/summary.md"
done
echo | tee -a "$OUT/summary.md"
echo "total: $total executions, $failed target(s) failed ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, $(clang --version | head -1))" |
    tee -a "$OUT/summary.md"
[[ $failed -eq 0 ]] || die "$failed target(s) failed: reproduce with $BIN/fuzz_<target> <the saved input>"
[[ $total -ge $FUZZ_MIN_TOTAL ]] || die "only $total executions, fewer than $FUZZ_MIN_TOTAL"
