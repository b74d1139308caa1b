#!/usr/bin/env bash
# Issue 13: a migration driven through QMP alone (qmp_session.py), and the
# JSON report's types against QEMU's schema (qmp_schema.py).
source "$(dirname "$0")/lib.sh"
DIR=$(dirname "$0")
python3 "$DIR/qmp_session.py" "$LIVEMIG" "$TMP" || fail "the QMP session"
echo "ok"
