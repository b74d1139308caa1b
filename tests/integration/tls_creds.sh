#!/usr/bin/env bash
# Makes TLS credentials for the tests with Debian's openssl, in QEMU's file
# names: make_tls_creds DIR creates
#   DIR/ok        ca-cert.pem, server-*.pem, client-*.pem (one CA, both roles)
#   DIR/rogue     the same names, from another CA nobody trusts
#   DIR/noclient  the good CA and server, no client certificate
#   DIR/badclient the good CA, a client certificate from the rogue CA
#   DIR/keys.psk  identities "qemu" and "other"; DIR/wrong.psk a wrong key for "qemu"
set -euo pipefail

tls_cert() { # CA_DIR OUT_PREFIX CN SAN EKU
    local ca=$1 out=$2 cn=$3 san=$4 eku=$5
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$out-key.pem" \
        -out "$out.csr" -subj "/CN=$cn" 2>/dev/null
    printf 'subjectAltName=%s\nextendedKeyUsage=%s\nbasicConstraints=CA:FALSE\n' "$san" "$eku" \
        >"$out.ext"
    openssl x509 -req -in "$out.csr" -CA "$ca/ca-cert.pem" -CAkey "$ca/ca-key.pem" \
        -CAcreateserial -out "$out-cert.pem" -days 2 -extfile "$out.ext" 2>/dev/null
    rm -f "$out.csr" "$out.ext"
}

tls_ca_dir() { # DIR CN
    mkdir -p "$1"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$1/ca-key.pem" -out "$1/ca-cert.pem" -days 2 -subj "/CN=$2" 2>/dev/null
    tls_cert "$1" "$1/server" localhost "IP:127.0.0.1,DNS:localhost" serverAuth
    tls_cert "$1" "$1/client" "livemig source" "DNS:source.test" clientAuth
}

make_tls_creds() {
    local dir=$1
    tls_ca_dir "$dir/ok" "livemig test CA"
    tls_ca_dir "$dir/rogue" "someone else's CA"
    mkdir -p "$dir/noclient"
    cp "$dir/ok/ca-cert.pem" "$dir/ok/server-cert.pem" "$dir/ok/server-key.pem" "$dir/noclient/"
    mkdir -p "$dir/badclient"
    cp "$dir/ok/ca-cert.pem" "$dir/rogue/client-cert.pem" "$dir/rogue/client-key.pem" \
        "$dir/badclient/"
    printf 'qemu:%s\nother:%s\n' "$(openssl rand -hex 32)" "$(openssl rand -hex 32)" \
        >"$dir/keys.psk"
    printf 'qemu:%s\n' "$(openssl rand -hex 32)" >"$dir/wrong.psk"
}
