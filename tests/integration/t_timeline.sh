#!/usr/bin/env bash
# Issue 13: --timeline records the migration (a sample every 100 ms, a row
# at each round, the switchover and postcopy's start); livemig plot draws it
# as a valid PNG and SVG; the bash completion offers each command's options.
source "$(dirname "$0")/lib.sh"

"$LIVEMIG" demo --ram 256M --workload stress:1x64M --postcopy-after-rounds 2 --downtime-limit 1 \
    --max-bandwidth 200M --timeline "$TMP/tl.txt" --no-progress --stats-json "$TMP/s.json" \
    >"$TMP/demo.out" 2>"$TMP/demo.err" || { cat "$TMP/demo.err" >&2; fail "demo"; }
grep -q "timeline in $TMP/tl.txt" "$TMP/demo.err" || fail "the demo does not say where its timeline is"
python3 - "$TMP/tl.txt" "$TMP/s.json" <<'PY' || fail "timeline contents"
import json, sys
lines = open(sys.argv[1]).read().splitlines()
cols = lines[1][2:].split()
rows = [dict(zip(cols, l.split())) for l in lines[2:]]
assert all(len(l.split()) == len(cols) for l in lines[2:]), "ragged rows"
kinds = [r["kind"] for r in rows]
total_ms = json.load(open(sys.argv[2]))["total-time"]
samples = kinds.count("sample")
# A sample every 100 ms: a count, not a time (a busy host may delay some).
assert samples >= 0.5 * total_ms / 100, (samples, total_ms)
assert kinds.count("round") >= 2, kinds
assert "switchover" in kinds and "postcopy" in kinds, kinds
assert kinds.index("switchover") < kinds.index("postcopy")
t = [float(r["time-ms"]) for r in rows]
assert t == sorted(t), "time goes backwards"
sent = [int(r["transferred"]) for r in rows if r["kind"] == "sample"]
assert sent == sorted(sent) and sent[-1] > 0
assert any(float(r["mbps"]) > 0 for r in rows)
print(f"{samples} samples over {total_ms} ms, {kinds.count('round')} rounds")
PY

"$LIVEMIG" plot "$TMP/tl.txt" -o "$TMP/tl.png" >/dev/null || fail "plot png"
"$LIVEMIG" plot "$TMP/tl.txt" -o "$TMP/tl.svg" --title "a test's migration" >/dev/null || fail "plot svg"
python3 - "$TMP/tl.png" "$TMP/tl.svg" <<'PY' || fail "the images are not valid"
import struct, sys, zlib, xml.dom.minidom
png = open(sys.argv[1], "rb").read()
assert png[:8] == b"\x89PNG\r\n\x1a\n", "no PNG signature"
pos, chunks = 8, []
while pos < len(png):
    n, kind = struct.unpack(">I4s", png[pos:pos + 8])
    data = png[pos + 8:pos + 8 + n]
    crc = struct.unpack(">I", png[pos + 8 + n:pos + 12 + n])[0]
    assert zlib.crc32(kind + data) & 0xffffffff == crc, f"bad CRC in {kind}"
    chunks.append(kind)
    pos += 12 + n
w, h = struct.unpack(">II", png[16:24])
assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND" and b"IDAT" in chunks
assert w >= 800 and h >= 600, (w, h)
svg = xml.dom.minidom.parse(sys.argv[2])
assert svg.documentElement.tagName == "svg"
print(f"png {w}x{h}, {len(chunks)} chunks; svg ok")
PY
# Bad input is a usage error, not a picture.
"$LIVEMIG" plot "$TMP/s.json" -o "$TMP/x.png" 2>"$TMP/bad.err" && fail "plotted a non-timeline"
grep -q "not a livemig timeline" "$TMP/bad.err" || fail "no reason for a non-timeline"
set +e
"$LIVEMIG" plot "$TMP/tl.txt" -o "$TMP/x.jpg" 2>/dev/null; rc=$?
set -e
[ "$rc" = 2 ] || fail "-o x.jpg: exit $rc, not the usage code 2"

# The bash completion: options come from the command's own help.
opts=$(bash -c 'source "$1"; COMP_WORDS=("$2" migrate --qm); COMP_CWORD=2; _livemig; echo "${COMPREPLY[*]}"' \
    _ "$(dirname "$0")/../../contrib/livemig.bash" "$LIVEMIG")
[ "$opts" = "--qmp" ] || fail "completion of 'migrate --qm': '$opts'"
opts=$(bash -c 'source "$1"; COMP_WORDS=("$2" incoming --to); COMP_CWORD=2; _livemig; echo "${COMPREPLY[*]}"' \
    _ "$(dirname "$0")/../../contrib/livemig.bash" "$LIVEMIG")
[ -z "$opts" ] || fail "completion offers a source option to incoming: '$opts'"
echo "ok"
