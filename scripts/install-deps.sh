#!/usr/bin/env bash
# Installs the Debian packages livemig needs to build and test, only when missing,
# so that `make demo` and `make check` work on a fresh machine. With the
# argument "fuzz" (make fuzz, bench/fuzz.sh) also clang with libFuzzer's
# runtime and llvm-symbolizer for readable sanitizer reports.
set -euo pipefail
pkgs=(gcc make cmake pkg-config libxxhash-dev zlib1g-dev libzstd-dev liblz4-dev libgnutls28-dev libjansson-dev gnuplot-nox openssl iproute2 python3)
[ "${1:-}" = fuzz ] && pkgs+=(clang libclang-rt-dev llvm)
need=()
for pkg in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need+=("$pkg")
done
[ ${#need[@]} -eq 0 ] && exit 0
echo "livemig: installing missing packages: ${need[*]}" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || true
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
