#!/usr/bin/env bash
# make install, staged (DESTDIR): what it installs, that the shared library
# exports exactly the public API, that the example builds with pkg-config
# against the staged files alone and migrates itself between two processes,
# and that a program built against this header runs against a library that
# appended fields to lm_params and lm_stats (as a later 1.x would).
. "$(dirname "$0")/lib.sh"
SRC=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$(cd "$(dirname "$LIVEMIG")" && pwd)
PREFIX=/usr/local
STAGE=$TMP/stage
CC=${CC:-cc}

DESTDIR=$STAGE cmake --install "$BUILD" --prefix "$PREFIX" >"$TMP/install.log" ||
    { cat "$TMP/install.log" >&2; fail "cmake --install failed"; }
ROOT=$STAGE$PREFIX
LIBDIR=$(dirname "$(find "$ROOT" -name liblivemig.so.1 | head -n1)")
[ -d "$LIBDIR" ] || fail "no liblivemig.so.1 installed"
for f in bin/livemig include/livemig.h share/man/man1/livemig.1 share/man/man3/livemig.3 \
    share/man/man3/lm_migrate.3 share/man/man3/lm_params_init.3; do
    [ -e "$ROOT/$f" ] || fail "make install did not install $f"
done
for f in liblivemig.so.1.0.0 liblivemig.so liblivemig.a pkgconfig/livemig.pc; do
    [ -e "$LIBDIR/$f" ] || fail "make install did not install $LIBDIR/$f"
done
[ ! -e "$ROOT/include/livemig_testing.h" ] || fail "the testing header was installed"
readelf -d "$LIBDIR/liblivemig.so.1.0.0" >"$TMP/dynamic"
grep -q 'SONAME.*\[liblivemig\.so\.1\]' "$TMP/dynamic" || fail "the soname is not liblivemig.so.1"
[ "$(readlink "$LIBDIR/liblivemig.so")" = liblivemig.so.1 ] || fail "liblivemig.so -> liblivemig.so.1"

# Exported symbols = the functions the installed header declares = the
# version script, and each is versioned LIVEMIG_1.0.
nm -D --defined-only "$LIBDIR/liblivemig.so.1" >"$TMP/nm"
awk '$2 == "T" { sub(/@.*/, "", $3); print $3 }' "$TMP/nm" | sort >"$TMP/exported"
awk '$2 != "T" && $2 != "A"' "$TMP/nm" >"$TMP/other"
[ ! -s "$TMP/other" ] || { cat "$TMP/other" >&2; fail "the library exports data symbols"; }
# (Declarations start a line with their type; the static inline helpers
# are compiled into the program, not exported.)
grep '^[a-z]' "$ROOT/include/livemig.h" | grep -v '^static inline' | grep -o 'lm_[a-z_0-9]*(' |
    tr -d '(' | sort -u >"$TMP/declared"
grep -o '^ *lm_[a-z_0-9]*;' "$SRC/abi/livemig.map" | tr -d ' ;' | sort >"$TMP/mapped"
diff "$TMP/declared" "$TMP/exported" >&2 || fail "exported symbols differ from the header's functions"
diff "$TMP/declared" "$TMP/mapped" >&2 || fail "abi/livemig.map differs from the header's functions"
grep -c . "$TMP/exported" >"$TMP/count"
grep -q '@@LIVEMIG_1.0' "$TMP/nm" || fail "symbols are not versioned LIVEMIG_1.0"
note "exported: $(cat "$TMP/count") functions, the header's"

# A build under the sanitizers needs them in programs that link it too.
SAN=()
if grep -q 'libasan' "$TMP/dynamic"; then SAN=(-fsanitize=address,undefined); fi

# The example, with pkg-config over the staged files alone. The .pc file
# finds its prefix from where it lies, so no sysroot is needed.
export PKG_CONFIG_PATH=$LIBDIR/pkgconfig PKG_CONFIG_LIBDIR=$LIBDIR/pkgconfig:/usr/lib/x86_64-linux-gnu/pkgconfig:/usr/lib/pkgconfig:/usr/share/pkgconfig
read -r -a PC <<<"$(pkg-config --cflags --libs livemig)" || fail "pkg-config does not find livemig"
[ "$(pkg-config --modversion livemig)" = "$(sed -n 's/^#define LM_VERSION_STRING "\(.*\)"/\1/p' "$ROOT/include/livemig.h")" ] ||
    fail "livemig.pc's version is not the header's"
"$CC" -std=c11 -Wall -Wextra -Werror "${SAN[@]}" -o "$TMP/selfmigrate" "$SRC/examples/selfmigrate.c" \
    "${PC[@]}" 2>"$TMP/cc.err" || { cat "$TMP/cc.err" >&2; fail "the example does not build"; }
export LD_LIBRARY_PATH=$LIBDIR
ldd "$TMP/selfmigrate" >"$TMP/ldd"
grep -q "liblivemig.so.1 => $LIBDIR/liblivemig.so.1" "$TMP/ldd" || { cat "$TMP/ldd" >&2; fail "the example does not use the staged library"; }

"$TMP/selfmigrate" incoming "unix:$TMP/vm.sock" >"$TMP/dst.out" 2>"$TMP/dst.err" &
DST=$!
PIDS+=("$DST")
for _ in $(seq 1 100); do grep -q listening "$TMP/dst.out" 2>/dev/null && break; sleep 0.05; done
"$TMP/selfmigrate" migrate "unix:$TMP/vm.sock" >"$TMP/src.out" 2>"$TMP/src.err" ||
    { cat "$TMP/src.out" "$TMP/src.err" "$TMP/dst.err" >&2; fail "the example's source failed"; }
wait_pid "$DST" 60
[ "$WAIT_RC" = 0 ] || { cat "$TMP/dst.out" "$TMP/dst.err" >&2; fail "the example's destination failed"; }
grep -q "source status completed" "$TMP/src.out" || fail "the example's event loop missed completed"
grep -q ", 0 torn" "$TMP/dst.out" || fail "the example's guest came through torn"
note "$(tail -n1 "$TMP/src.out")"
note "$(tail -n1 "$TMP/dst.out")"

# The ABI: built against this header, run against this library and against
# one that appended fields (build/abi-next, same soname).
"$CC" -std=c11 -Wall -Wextra -Werror "${SAN[@]}" -o "$TMP/abi_client" "$SRC/tests/abi/abi_client.c" \
    "${PC[@]}" 2>"$TMP/cc.err" || { cat "$TMP/cc.err" >&2; fail "abi_client does not build"; }
"$TMP/abi_client" >&2 || fail "abi_client against the library it was built with"
[ -e "$BUILD/abi-next/liblivemig.so.1" ] || fail "no $BUILD/abi-next/liblivemig.so.1 (cmake --build)"
LD_LIBRARY_PATH=$BUILD/abi-next "$TMP/abi_client" >&2 ||
    fail "a program built against 1.0 does not run against a library with appended fields"
echo "PASS: install, $(cat "$TMP/count") exported functions, the example, the ABI"
