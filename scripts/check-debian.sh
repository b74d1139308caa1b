#!/usr/bin/env bash
# The Debian packages, checked end to end on this (Debian 12) machine:
# builds livemig, liblivemig1 and liblivemig-dev with dpkg-buildpackage from a
# clean copy of the committed tree, runs lintian (no errors allowed), installs
# the packages with apt, builds examples/selfmigrate.c against them with
# pkg-config alone and migrates it between two processes, then removes the
# packages again (KEEP_DEBS=1 keeps them installed).
#
# Usage: scripts/check-debian.sh [OUTDIR]   (the .deb files are copied there)
# Needs root (apt); installs what the build needs first.
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-}
VERSION=$(sed -n '1s/^livemig (\([^)]*\)).*/\1/p' "$SRC/debian/changelog")
WORK=$(mktemp -d /tmp/livemig-deb.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
say() { echo "check-debian: $*" >&2; }

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
say "installing the build's dependencies"
$SUDO apt-get install -y -qq --no-install-recommends dpkg-dev debhelper lintian fakeroot gcc \
    >/dev/null || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends \
    dpkg-dev debhelper lintian fakeroot gcc >/dev/null; }
$SUDO apt-get build-dep -y -qq "$SRC" >/dev/null

say "building $VERSION from the committed tree ($(git -C "$SRC" rev-parse --short HEAD))"
mkdir -p "$WORK/livemig-$VERSION"
git -C "$SRC" archive HEAD | tar -x -C "$WORK/livemig-$VERSION"
(cd "$WORK/livemig-$VERSION" && dpkg-buildpackage -us -uc -b -j"$(nproc)") >"$WORK/build.log" 2>&1 ||
    { tail -n 60 "$WORK/build.log" >&2; say "dpkg-buildpackage failed"; exit 1; }
ls "$WORK"/*.deb >&2

say "lintian"
lintian --fail-on error --info "$WORK"/*.changes | tee "$WORK/lintian.log" >&2 ||
    { say "lintian found errors"; exit 1; }
say "lintian: $(grep -c '^E:' "$WORK/lintian.log" || true) errors, $(grep -c '^W:' "$WORK/lintian.log" || true) warnings"

say "installing the packages"
$SUDO apt-get install -y -qq "$WORK"/livemig_*.deb "$WORK"/liblivemig1_*.deb \
    "$WORK"/liblivemig-dev_*.deb >/dev/null
cleanup_pkgs() {
    [ -n "${KEEP_DEBS:-}" ] || $SUDO apt-get purge -y -qq livemig liblivemig1 liblivemig-dev >/dev/null
    rm -rf "$WORK"
}
trap cleanup_pkgs EXIT
[ "$(livemig --version | head -n1)" != "" ] || { say "livemig --version printed nothing"; exit 1; }
man -w livemig >/dev/null && man -w 3 lm_migrate >/dev/null || { say "man pages missing"; exit 1; }

say "the example against the installed packages"
# shellcheck disable=SC2046
cc -std=c11 -Wall -Wextra -Werror -o "$WORK/selfmigrate" "$SRC/examples/selfmigrate.c" \
    $(pkg-config --cflags --libs livemig)
ldd "$WORK/selfmigrate" >"$WORK/ldd"
grep -Eq 'liblivemig.so.1 => /(usr/)?lib/' "$WORK/ldd" ||
    { say "the example does not use the installed library"; exit 1; }
"$WORK/selfmigrate" incoming "unix:$WORK/vm.sock" >"$WORK/dst.out" 2>&1 &
DST=$!
for _ in $(seq 1 100); do grep -q listening "$WORK/dst.out" 2>/dev/null && break; sleep 0.05; done
"$WORK/selfmigrate" migrate "unix:$WORK/vm.sock" | tail -n1 >&2
wait "$DST" || { cat "$WORK/dst.out" >&2; say "the example's destination failed"; exit 1; }
tail -n1 "$WORK/dst.out" >&2

if [ -n "$OUT" ]; then
    mkdir -p "$OUT"
    cp "$WORK"/*.deb "$OUT"/
fi
say "PASS: $(cd "$WORK" && ls ./*.deb | xargs -n1 basename | tr '\n' ' ')"
