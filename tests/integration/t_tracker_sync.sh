#!/usr/bin/env bash
# The fallback tracker (synchronous userfaultfd write-protect) migrates a
# writing guest just as correctly; also over a Unix socket.
. "$(dirname "$0")/lib.sh"
migrate_ok sync 256M stress:2x32M --dirty-tracker uffd-sync
expect_json "$TMP/sync.src.json" 'j["dirty-tracker"] == "uffd-sync"'
migrate_ok rnd 256M random:20000 --dirty-tracker uffd-async --downtime-limit 50
expect_json "$TMP/rnd.src.json" 'j["dirty-tracker"] == "uffd-async"'
# Over a Unix socket: the main connection and both multifd channels connect
# to the one path the destination listens on.
LISTEN=unix:$TMP/mig.sock migrate_ok unixsock 256M stress:2x32M --dirty-tracker uffd-sync \
    --multifd-channels 2
[ "$DEST_URI" = "unix:$TMP/mig.sock" ] || fail "the Unix socket run went to $DEST_URI"
expect_json "$TMP/unixsock.src.json" 'j["dirty-tracker"] == "uffd-sync"'
expect_json "$TMP/unixsock.src.json" 'j["ram"]["multifd-bytes"] > 0'
echo ok
