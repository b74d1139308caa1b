#!/usr/bin/env bash
# The fallback tracker (synchronous userfaultfd write-protect) migrates a
# writing guest just as correctly; also over a Unix socket.
. "$(dirname "$0")/lib.sh"
migrate_ok sync 256M stress:2x32M --dirty-tracker uffd-sync
expect_json "$TMP/sync.src.json" 'j["dirty-tracker"] == "uffd-sync"'
migrate_ok rnd 256M random:20000 --dirty-tracker uffd-async --downtime-limit 50
expect_json "$TMP/rnd.src.json" 'j["dirty-tracker"] == "uffd-async"'
echo ok
