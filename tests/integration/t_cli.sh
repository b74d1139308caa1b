#!/usr/bin/env bash
# The command line: usage errors exit 2 with a message that names what is
# wrong (a missing value never swallows the next option; an option of
# another subcommand is refused by name), help is generated per subcommand
# and lists only what it accepts, and the contract's common options are
# accepted by every subcommand.
. "$(dirname "$0")/lib.sh"

# usage_error EXPECTED_MESSAGE ARGS...: exit status 2 and the message on stderr.
usage_error() {
    local want=$1; shift
    local rc=0
    "$LIVEMIG" "$@" >"$TMP/out" 2>"$TMP/err" || rc=$?
    [ "$rc" = 2 ] || { cat "$TMP/out" "$TMP/err" >&2; fail "'$*' exited $rc, expected 2"; }
    grep -qF -- "$want" "$TMP/err" || { cat "$TMP/err" >&2; fail "'$*': no '$want' on stderr"; }
}

# help_of CMD: its --help on stdout, exit 0.
help_of() {
    local rc=0
    "$LIVEMIG" "$@" --help >"$TMP/help" 2>"$TMP/err" || rc=$?
    [ "$rc" = 0 ] || { cat "$TMP/err" >&2; fail "'$* --help' exited $rc"; }
}
lists() { grep -qE -- "^  $1( |$)" "$TMP/help" || { cat "$TMP/help" >&2; fail "$2 --help does not list $1"; }; }
omits() { ! grep -qE -- "^  $1( |$)" "$TMP/help" || fail "$2 --help lists $1"; }

# A missing value: the next option is not taken for it.
usage_error 'option --multifd-channels needs a value' \
    migrate --ram 64M --workload idle --to tcp:127.0.0.1:1 --multifd-channels --no-progress
! grep -q "bad --multifd-channels" "$TMP/err" || fail "the next option was read as the value"
usage_error 'option --stats-json needs a value' incoming --listen tcp:127.0.0.1:0 --stats-json --verify
usage_error 'option --ram needs a value' migrate --ram
# Other usage errors.
usage_error "bad --multifd-channels '65'" migrate --multifd-channels 65
usage_error "bad --compress 'gzip'" demo --compress gzip
usage_error "unknown option '--no-such-option'" demo --no-such-option
usage_error 'option --verify takes no value' demo --verify=yes
usage_error "unknown command 'migrat'" migrat --help
usage_error 'migrate needs --ram SIZE --workload SPEC --to' migrate --ram 64M
usage_error 'incoming needs --listen' incoming
usage_error 'usage:'

# An option of another subcommand: refused, naming both.
usage_error 'incoming does not take --to' incoming --listen tcp:127.0.0.1:0 --to tcp:127.0.0.1:1
usage_error 'incoming does not take --workload' incoming --listen tcp:127.0.0.1:0 --workload idle
usage_error 'migrate does not take --dest-prealloc' migrate --ram 64M --workload idle \
    --to tcp:127.0.0.1:1 --dest-prealloc
usage_error 'migrate does not take --listen' migrate --listen tcp:127.0.0.1:0
usage_error 'demo does not take --to' demo --to tcp:127.0.0.1:1

# Help: the overview, then each subcommand's own options.
help_of
for cmd in incoming migrate demo; do
    grep -q "livemig $cmd " "$TMP/help" || fail "--help does not show $cmd"
done
lists --multifd-channels livemig
help_of migrate
grep -q '^usage: livemig migrate ' "$TMP/help" || fail "migrate --help: no usage line"
for o in --ram --workload --to --multifd-channels --compress --postcopy --verify --stats-json \
    --auto-converge --no-progress; do lists "$o" migrate; done
for o in --listen --run-for --accept-timeout --dest-prealloc --dest-stats-json \
    --x-postcopy-cut-ms; do omits "$o" migrate; done
help_of incoming
for o in --listen --run-for --accept-timeout --no-receivedmap --dest-thp --dest-prealloc \
    --multifd-channels --verify --stats-json; do lists "$o" incoming; done
for o in --to --workload --seed --auto-converge --dest-stats-json --x-slow-channel-us; do
    omits "$o" incoming
done
help_of demo
for o in --ram --workload --listen --run-for --dest-prealloc --dest-stats-json --verify; do
    lists "$o" demo
done
for o in --to --accept-timeout; do omits "$o" demo; done
"$LIVEMIG" migrate -h >"$TMP/help" 2>&1 || fail "migrate -h failed"
grep -q '^usage: livemig migrate ' "$TMP/help" || fail "migrate -h: not migrate's help"

# Ports: a number within 1-65535 (0 to listen on any free one); getaddrinfo
# alone would take 99999 modulo 65536 or a service name. A mistyped address
# is a usage error, found before the guest starts: no report, exit 2 (the
# source used to start its guest, print an all-zero "failed" report and exit
# 1, or try to resolve '//127.0.0.1').
bad_address() {
    local want=$1; shift
    usage_error "$want" "$@"
    ! grep -q 'Migration status' "$TMP/out" "$TMP/err" ||
        fail "$*: a report was printed for an address that was never used"
}
bad_address "bad port '99999'" incoming --listen tcp:127.0.0.1:99999 --accept-timeout 1
bad_address "bad port '65536'" incoming --listen tcp:127.0.0.1:65536 --accept-timeout 1
bad_address "bad port 'http'" incoming --listen tcp:127.0.0.1:http --accept-timeout 1
bad_address "bad port '0' in '127.0.0.1:0': expected a number from 1" \
    migrate --ram 16M --workload idle --to tcp:127.0.0.1:0 --no-progress
bad_address "address '127.0.0.1:4445' has no scheme: write tcp:127.0.0.1:4445" \
    migrate --ram 16M --workload idle --to 127.0.0.1:4445 --no-progress
bad_address "livemig addresses have no '//': write tcp:127.0.0.1:4445" \
    migrate --ram 16M --workload idle --to tcp://127.0.0.1:4445 --no-progress
bad_address "bad address 'fd:x'" migrate --ram 16M --workload idle --to fd:x --no-progress
bad_address "has no scheme" incoming --listen 127.0.0.1:0

# defer and --qmp (issue 13): usage errors before anything starts.
bad_address "--to defer waits for a QMP command: add --qmp unix:PATH" \
    migrate --ram 16M --workload idle --to defer --no-progress
bad_address "--listen defer waits for a QMP command: add --qmp unix:PATH" incoming --listen defer
bad_address "--qmp: address '127.0.0.1:4446' has no scheme" \
    migrate --ram 16M --workload idle --to defer --qmp 127.0.0.1:4446 --no-progress
bad_address "--qmp takes unix:PATH or tcp:HOST:PORT" \
    incoming --listen defer --qmp fd:3
# QMP has no authentication: tcp only on loopback (exit 1: not a typo).
rc=0
"$LIVEMIG" incoming --listen defer --qmp tcp:0.0.0.0:0 >"$TMP/out" 2>"$TMP/err" || rc=$?
[ "$rc" = 1 ] && grep -q "only on a loopback address" "$TMP/err" ||
    fail "--qmp tcp:0.0.0.0: exit $rc, $(cat "$TMP/err")"
"$LIVEMIG" migrate --help >"$TMP/mhelp"
"$LIVEMIG" incoming --help >"$TMP/ihelp"
grep -q -- "--qmp URI" "$TMP/mhelp" || fail "migrate --help lacks --qmp"
grep -q -- "--timeline FILE" "$TMP/mhelp" || fail "migrate --help lacks --timeline"
! grep -q -- "--timeline" "$TMP/ihelp" || fail "incoming --help lists --timeline"

# --version: the release, exit 0.
"$LIVEMIG" --version >"$TMP/version" || fail "--version exited non-zero"
grep -Eq '^livemig [0-9]+\.[0-9]+\.[0-9]+$' "$TMP/version" || fail "--version: $(cat "$TMP/version")"

# The contract's common options are accepted by the destination too (which
# follows the source): here it only times out waiting for one.
rc=0
"$LIVEMIG" incoming --listen tcp:127.0.0.1:0 --accept-timeout 0.2 --multifd-channels 2 \
    --zero-page-detection legacy --compress zstd --downtime-limit 100 --max-bandwidth 1G \
    --postcopy --verify --stats-json "$TMP/in.json" >"$TMP/in.out" 2>"$TMP/in.err" || rc=$?
[ "$rc" = 1 ] || { cat "$TMP/in.err" >&2; fail "incoming with the common options exited $rc"; }
expect_json "$TMP/in.json" 'j["status"] == "failed"'
echo ok
