#!/usr/bin/env bash
# Precopy benchmark: runs `livemig demo` (source and destination as two processes
# on loopback) for each scenario and prints a markdown table of medians, with the
# throughput and the destination's page faults set against this machine's limits
# as measured by build/lm-limits in the same run.
#
#   ./bench/precopy.sh                      the full run: 2 GiB guest, fill:1G and
#                                           stress:4x100M, 1 warm-up + 3 runs each
#   RUNS=1 RAM=512M ./bench/precopy.sh      a quick check
#
# Environment:
#   RUNS=3          measured runs per scenario (the median is reported)
#   WARMUP=1        discarded warm-up runs per scenario
#   RAM=2G          guest RAM size
#   SCENARIOS=...   space-separated workload specs, each optionally prefixed by
#                   its own RAM size: "fill:1G stress:4x100M 4G/idle".
#                   Default: fill:<RAM/2> stress:4x<min(100M, RAM/8)>, which is
#                   fill:1G and stress:4x100M for RAM=2G.
#   EXTRA_ARGS=...  more options for `livemig demo` (e.g. --dirty-tracker uffd-sync)
#   PAUSE=0         seconds to sleep before each migration (lets the host reclaim
#                   memory freed by the previous run, i.e. colder memory)
#   NO_BUILD=1      do not run `make` first
#   LIMITS_JSON=f   reuse a limits report instead of running lm-limits
# Raw JSON reports and logs go to bench/results/<timestamp>/ (git-ignored).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

RUNS=${RUNS:-3}
WARMUP=${WARMUP:-1}
RAM=${RAM:-2G}
PAUSE=${PAUSE:-0}
EXTRA_ARGS=${EXTRA_ARGS:-}
LIVEMIG=${LIVEMIG:-$ROOT/build/livemig}
LIMITS=${LIMITS:-$ROOT/build/lm-limits}

die() { echo "precopy.sh: $*" >&2; exit 1; }
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer (got '$RUNS')"
[[ $WARMUP =~ ^[0-9]+$ ]] || die "WARMUP must be a non-negative integer (got '$WARMUP')"
command -v python3 >/dev/null || die "python3 is needed"

# Sizes as livemig parses them: K/M/G/T suffixes are powers of 1024.
size_bytes() {
    python3 - "$1" <<'EOF'
import re, sys
m = re.fullmatch(r'(\d+)([KkMmGgTt]?)[iI]?[bB]?', sys.argv[1])
if not m:
    sys.exit("bad size: " + sys.argv[1])
print(int(m.group(1)) << {'': 0, 'k': 10, 'm': 20, 'g': 30, 't': 40}[m.group(2).lower()])
EOF
}
size_str() {
    python3 - "$1" <<'EOF'
import sys
n = int(sys.argv[1])
for suf, sh in (('G', 30), ('M', 20), ('K', 10)):
    if n >= 1 << sh and n % (1 << sh) == 0:
        print(f"{n >> sh}{suf}"); break
else:
    print(n)
EOF
}

ram_bytes=$(size_bytes "$RAM") || die "bad RAM '$RAM'"
if [ -z "${SCENARIOS:-}" ]; then
    stress=$(( ram_bytes / 8 < 100 << 20 ? ram_bytes / 8 : 100 << 20 ))
    stress=$(( stress >> 20 << 20 ))   # whole MiB
    [ "$stress" -gt 0 ] || die "RAM '$RAM' is too small for the default scenarios"
    SCENARIOS="fill:$(size_str $((ram_bytes / 2))) stress:4x$(size_str "$stress")"
fi

# ---- build ----
if [ -z "${NO_BUILD:-}" ]; then
    mkdir -p bench/results
    if ! make >bench/results/.build.log 2>&1; then
        tail -n 30 bench/results/.build.log >&2
        die "make failed (full log: bench/results/.build.log)"
    fi
fi
[ -x "$LIVEMIG" ] || die "$LIVEMIG is missing: run make"

OUT=$ROOT/bench/results/$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"

# ---- machine ----
{
    echo "## Machine"
    echo
    echo "- CPU: $(nproc) online, $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "- Memory: $(grep -m1 '^MemTotal' /proc/meminfo | awk '{printf "%.1f GiB", $2/1048576}')"
    echo "- Kernel: $(uname -r)"
    echo "- THP: $(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null || echo unknown)"
    echo "- livemig: $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)"
    echo
} | tee "$OUT/summary.md"

# ---- limits ----
if [ -n "${LIMITS_JSON:-}" ]; then
    cp "$LIMITS_JSON" "$OUT/limits.json"
else
    [ -x "$LIMITS" ] || die "$LIMITS is missing: run make"
    echo "measuring machine limits (lm-limits)..." >&2
    "$LIMITS" >"$OUT/limits.json" 2>"$OUT/limits.txt" || { cat "$OUT/limits.txt" >&2; die "lm-limits failed"; }
    cat "$OUT/limits.txt" >&2
fi

# ---- migrations ----
: >"$OUT/scenarios.tsv"
for spec in $SCENARIOS; do
    ram=$RAM wl=$spec
    if [[ $spec == */* ]]; then ram=${spec%%/*}; wl=${spec#*/}; fi
    slug=$(printf '%s-%s' "$ram" "$wl" | tr -c 'A-Za-z0-9.\n-' '-')
    printf '%s\t%s\t%s\n' "$slug" "$ram" "$wl" >>"$OUT/scenarios.tsv"
    total=$((WARMUP + RUNS))
    for ((i = 1; i <= total; i++)); do
        if ((i <= WARMUP)); then name="$slug-warmup$i"; else name="$slug-run$((i - WARMUP))"; fi
        echo "[$i/$total] --ram $ram --workload $wl${EXTRA_ARGS:+ $EXTRA_ARGS} ($name)" >&2
        [ "$PAUSE" = 0 ] || sleep "$PAUSE"
        # shellcheck disable=SC2086  # EXTRA_ARGS is a list of options
        if ! "$LIVEMIG" demo --ram "$ram" --workload "$wl" --verify --no-progress \
                --stats-json "$OUT/$name.src.json" --dest-stats-json "$OUT/$name.dst.json" \
                $EXTRA_ARGS >"$OUT/$name.log" 2>&1; then
            tail -n 20 "$OUT/$name.log" >&2
            die "migration failed: --ram $ram --workload $wl (log: $OUT/$name.log)"
        fi
    done
done

# ---- table ----
python3 - "$OUT" "$RUNS" <<'EOF' | tee -a "$OUT/summary.md"
import json, os, statistics, sys

out, runs = sys.argv[1], int(sys.argv[2])
lim = json.load(open(os.path.join(out, "limits.json")))
tcp = lim["loopback_tcp_gbps"]
f_us = lim["fault_4k_us"]
f_cold = lim.get("fault_4k_cold_us", float("nan"))

print("## Limits (lm-limits, medians)")
print()
print(f"loopback TCP {tcp:.2f} GB/s, memcpy {lim['memcpy_gbps']:.2f} GB/s, "
      f"XXH3 {lim['xxh3_gbps']:.2f} GB/s, first touch 4 KiB {lim['fault_4k_gbps']:.2f} GB/s "
      f"({f_us:.2f} us/fault; cold first run {f_cold:.2f} us), "
      f"MADV_HUGEPAGE {lim['fault_thp_gbps']:.2f} GB/s")
print()

cols = ["scenario", "total ms", "downtime ms", "GB/s", "of TCP limit", "dirty syncs",
        "normal pages", "zero pages", "dest minor faults", "fault share"]
print(f"## Precopy, median of {runs} run(s)")
print()
print("| " + " | ".join(cols) + " |")
print("|" + "|".join(["---"] + ["---:"] * (len(cols) - 1)) + "|")

for line in open(os.path.join(out, "scenarios.tsv")):
    slug, ram, wl = line.rstrip("\n").split("\t")
    rows = []
    for i in range(1, runs + 1):
        src = json.load(open(os.path.join(out, f"{slug}-run{i}.src.json")))
        dst = json.load(open(os.path.join(out, f"{slug}-run{i}.dst.json")))
        for r in (src, dst):
            if r.get("status") != "completed" or not r.get("verify", {}).get("match"):
                sys.exit(f"{slug} run {i}: {r.get('role')} status {r.get('status')}, "
                         f"verify {r.get('verify')}")
        t = src["total-time"]
        gbps = src["ram"]["mbps"] / 8 / 1000
        faults = dst["dest-minor-faults"]
        rows.append({
            "total": t, "downtime": src["downtime-ms"], "gbps": gbps, "ratio": gbps / tcp,
            "syncs": src["ram"]["dirty-sync-count"], "normal": src["ram"]["normal"],
            "zero": src["ram"]["duplicate"], "faults": faults,
            "share": faults * f_us / 1000 / t if t else 0,
        })
    m = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    print(f"| {ram} {wl} | {m['total']:.0f} | {m["downtime-ms"]:.1f} | {m['gbps']:.2f} | "
          f"{m['ratio']:.0%} | {m['syncs']:g} | {m['normal']:.0f} | {m['zero']:.0f} | "
          f"{m['faults']:.0f} | {m['share']:.0%} |")

print()
print("GB/s: source ram.mbps / 8000; of TCP limit: that / loopback_tcp_gbps. Fault share: "
      "dest-minor-faults x fault_4k_us / total-time (a fault on memory the host has reclaimed "
      "costs more: see fault_4k_cold_us).")
print(f"Raw reports: {os.path.relpath(out)}")
EOF
