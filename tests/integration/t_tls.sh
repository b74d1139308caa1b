#!/usr/bin/env bash
# TLS 1.3 on every connection (docs/SECURITY.md), with credentials this test
# makes itself with Debian's openssl in QEMU's file names:
#  - X.509, both sides verified: multifd channels, verified digest, the JSON
#    "tls" object; a unix: socket with --tls-hostname;
#  - PSK (keys.psk) with postcopy, so the preempt connection and the return
#    path run over TLS too;
#  - every refusal: a plaintext peer on either side, a client certificate
#    from an unknown CA, no client certificate at all, a server certificate
#    for another name, a wrong key, an unknown identity, mixed kinds. Each
#    must fail on both sides with a message naming what was lacking, and the
#    destination must have accepted 0 pages.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/tls_creds.sh"
command -v openssl >/dev/null || { echo "skip: openssl is not installed"; exit 77; }
C=$TMP/creds
make_tls_creds "$C"

tls_json_ok() { # FILE MODE
    expect_json "$1" "j['tls']['enabled'] and j['tls']['mode'] == '$2'"
    expect_json "$1" "j['tls']['cipher'].startswith('TLS1.3/AES-')"
    # This machine's kernel has no CONFIG_TLS; either way the reason is given.
    expect_json "$1" "j['tls']['ktls'] == False and len(j['tls']['ktls-reason']) > 20"
}

note "X.509, 2 channels"
DEST_ARGS="--tls-creds $C/ok" migrate_ok x509 256M fill:64M --multifd-channels 2 \
    --tls-creds "$C/ok"
tls_json_ok "$TMP/x509.src.json" x509
tls_json_ok "$TMP/x509.dst.json" x509
expect_json "$TMP/x509.dst.json" 'j["ram"]["normal"] >= 16384'

note "X.509 over a unix socket, the name given"
LISTEN="unix:$TMP/tls.sock" DEST_ARGS="--tls-creds $C/ok" migrate_ok unix 64M fill:8M \
    --tls-creds "$C/ok" --tls-hostname localhost

note "PSK, postcopy with the preempt connection"
DEST_ARGS="--tls-psk $C/keys.psk" migrate_ok psk 256M stress:1x32M --multifd-channels 2 \
    --tls-psk "$C/keys.psk" --tls-psk-identity other --postcopy-after-rounds 1 --downtime-limit 1
tls_json_ok "$TMP/psk.src.json" psk
expect_json "$TMP/psk.src.json" 'j["switchover-reason"] == "postcopy"'

# refuse NAME "DEST ARGS" "SOURCE ARGS" DEST_PATTERN SOURCE_PATTERN
refuse() {
    local name=$1 dargs=$2 sargs=$3 dpat=$4 spat=$5 rc=0
    # shellcheck disable=SC2086
    start_incoming "$name" --accept-timeout 4 --timeout 3 --stats-json "$TMP/$name.json" $dargs
    # shellcheck disable=SC2086
    timeout 60 "$LIVEMIG" migrate --ram 32M --workload fill:8M --to "$DEST_URI" --timeout 3 \
        --no-progress $sargs >"$TMP/$name.src" 2>&1 || rc=$?
    wait_pid "$DEST_PID" 30
    [ "$rc" != 0 ] || fail "$name: the source reported success"
    [ "$WAIT_RC" != 0 ] || fail "$name: the destination reported success"
    grep -Eq "$spat" "$TMP/$name.src" || { cat "$TMP/$name.src" >&2; fail "$name: source: no /$spat/"; }
    grep -Eq "$dpat" "$TMP/$name.err" || { cat "$TMP/$name.err" >&2; fail "$name: destination: no /$dpat/"; }
    # Nothing from an unauthenticated peer touched guest memory.
    expect_json "$TMP/$name.json" 'j["ram"]["normal"] == 0 and j["ram"]["duplicate"] == 0'
    note "$name: refused on both sides"
}

refuse plain-to-tls "--tls-creds $C/ok" "" \
    "source speaks plaintext" "destination failed: this destination requires TLS"
refuse tls-to-plain "" "--tls-creds $C/ok" \
    "speaks TLS and this destination was started without it" "destination speaks plaintext"
refuse unknown-client-ca "--tls-creds $C/ok" "--tls-creds $C/badclient" \
    "source's certificate is not trusted" "destination refused the TLS handshake"
refuse unknown-server-ca "--tls-creds $C/rogue" "--tls-creds $C/ok" \
    "source refused the TLS handshake .*does not trust" "destination's certificate is not trusted"
refuse wrong-name "--tls-creds $C/ok" "--tls-creds $C/ok --tls-hostname other.example" \
    "source refused the TLS handshake" "name in the certificate does not match.*other.example"
refuse wrong-key "--tls-psk $C/keys.psk" "--tls-psk $C/wrong.psk" \
    "same key" "destination refused the TLS handshake"
refuse unknown-identity "--tls-psk $C/wrong.psk" "--tls-psk $C/keys.psk --tls-psk-identity other" \
    "has no key for the source's identity 'other'" "destination refused the TLS handshake"
refuse psk-vs-x509 "--tls-psk $C/keys.psk" "--tls-creds $C/ok" \
    "offered no pre-shared key" "destination refused the TLS handshake"

note "a client with no certificate at all (openssl s_client)"
start_incoming nocert --accept-timeout 4 --timeout 3 --stats-json "$TMP/nocert.json" \
    --tls-creds "$C/ok"
timeout 10 openssl s_client -connect "${DEST_URI#tcp:}" -tls1_3 -CAfile "$C/ok/ca-cert.pem" \
    </dev/null >"$TMP/s_client.out" 2>&1 || true
wait_pid "$DEST_PID" 30
[ "$WAIT_RC" != 0 ] || fail "nocert: the destination reported success"
grep -q "source presented no certificate" "$TMP/nocert.err" ||
    { cat "$TMP/nocert.err" >&2; fail "nocert: no 'presented no certificate'"; }
expect_json "$TMP/nocert.json" 'j["ram"]["normal"] == 0 and j["ram"]["duplicate"] == 0'

note "credentials that cannot be used are the first error"
rc=0
"$LIVEMIG" migrate --ram 16M --workload idle --to tcp:127.0.0.1:9 --tls-creds "$C/noclient" \
    --no-progress >"$TMP/missing.out" 2>&1 || rc=$?
[ "$rc" != 0 ] && grep -q "client-cert.pem" "$TMP/missing.out" ||
    { cat "$TMP/missing.out" >&2; fail "a missing client certificate was not named"; }
rc=0
"$LIVEMIG" migrate --ram 16M --workload idle --to tcp:127.0.0.1:9 --tls-creds "$C/ok" \
    --tls-psk "$C/keys.psk" --no-progress >"$TMP/both.out" 2>&1 || rc=$?
[ "$rc" != 0 ] && grep -q "not both" "$TMP/both.out" ||
    { cat "$TMP/both.out" >&2; fail "--tls-creds with --tls-psk was not refused"; }
echo ok
