#!/usr/bin/env bash
# Issue 10's first goal, by hand: every tracker migrates a busy KVM guest,
# verified by digest and by the continuity check, with 1, 2 and 4 vCPUs,
# precopy and postcopy. One `livemig demo --guest kvm` per cell; prints a
# markdown table (downtime ms, or FAIL with the reason). Not run by the
# tests (t_kvm.sh covers a subset); about two minutes here.
set -uo pipefail
LIVEMIG=${LIVEMIG:-$(dirname "$0")/../build/livemig}
TMP=$(mktemp -d /tmp/lm-kvm-matrix.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
"$LIVEMIG" kvm-check >/dev/null 2>&1 || { echo "SKIP: livemig kvm-check: this host cannot run the KVM guest"; exit 77; }
fails=()
echo "| tracker | mode | 1 vCPU | 2 vCPUs | 4 vCPUs |"
echo "|---|---|---:|---:|---:|"
for tracker in uffd-async uffd-sync kvm-log kvm-ring; do
    for mode in precopy postcopy; do
        row="| $tracker | $mode |"
        for n in 1 2 4; do
            args=(--guest kvm --ram 512M --workload "stress:${n}x32M" --verify --no-progress
                  --dirty-tracker "$tracker" --multifd-channels 2
                  --stats-json "$TMP/s.json" --dest-stats-json "$TMP/d.json")
            [ "$mode" = postcopy ] && args+=(--postcopy --postcopy-after-rounds 1 --downtime-limit 0)
            if timeout 120 "$LIVEMIG" demo "${args[@]}" >"$TMP/out" 2>&1 &&
                python3 - "$TMP/s.json" "$TMP/d.json" "$mode" >>"$TMP/out" <<'PY'
import json, sys
s, d = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
why = [w for w, bad in (
    ("not completed", not s["status"] == d["status"] == "completed"),
    ("digest mismatch", not (s["verify"]["match"] and d["verify"]["match"])),
    ("continuity", not (d["guest"]["continuity"] is True and s["guest"]["continuity"] is True)),
    ("no postcopy", sys.argv[3] == "postcopy" and s.get("postcopy") is None)) if bad]
if why:
    print("check:", ", ".join(why))
sys.exit(1 if why else 0)
PY
            then
                row+=" $(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["downtime-ms"], 1))' "$TMP/s.json") |"
            else
                row+=" FAIL |"
                fails+=("$tracker $mode $n vCPUs: $(grep -iE 'error|fail|cannot|continuity|^check:' "$TMP/out" | grep -v 'continuity ok' | head -n 3 | tr '\n' ' ' | cut -c1-400)")
            fi
        done
        echo "$row"
    done
done
echo
for f in "${fails[@]}"; do echo "FAIL $f"; done
echo "Cells: the source's downtime in ms of a run that completed with both digests and both continuity checks good (stress:Nx32M, 512 MiB, 2 multifd channels; postcopy after round 1)."
