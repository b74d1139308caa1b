# Thin wrapper around CMake so that the two commands a user types are
# `make demo` and `make check`. Each installs missing Debian packages first.
BUILD   ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60
JOBS    ?= $(shell nproc)
CMAKE_FLAGS ?=
PREFIX  ?= /usr/local
DESTDIR ?=

.PHONY: all deps configure demo check check-asan fuzz bench format clean install deb

all: deps configure
	cmake --build $(BUILD) -j $(JOBS)

deps:
	@./scripts/install-deps.sh

configure:
	@test -f $(BUILD)/CMakeCache.txt || cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

demo: all
	./$(BUILD)/livemig demo --ram 1G --workload stress:2x64M --verify

check: all
	cd $(BUILD) && ctest --output-on-failure --timeout 300 -j 1

# The same suite built with AddressSanitizer and UBSan.
check-asan: deps
	@test -f $(ASAN_BUILD)/CMakeCache.txt || cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DLM_SANITIZE=ON
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ctest --output-on-failure --timeout 600 -j 1

# The libFuzzer targets (clang, ASan, UBSan; docs/FUZZING.md), each for
# FUZZ_SECONDS. The long run is bench/fuzz.sh.
fuzz:
	@./scripts/install-deps.sh fuzz
	@test -f $(FUZZ_BUILD)/CMakeCache.txt || CC=clang cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLM_FUZZ=ON
	cmake --build $(FUZZ_BUILD) -j $(JOBS)
	NO_BUILD=1 FUZZ_BUILD=$(FUZZ_BUILD) FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_RUNS=0 FUZZ_MIN_TOTAL=0 ./bench/fuzz.sh

# Installs livemig, liblivemig.so.1 and .a, livemig.h, livemig.pc and the
# man pages under $(DESTDIR)$(PREFIX) (docs/API.md, "Installing").
install: all
	DESTDIR=$(DESTDIR) cmake --install $(BUILD) --prefix $(PREFIX)

# The Debian packages (livemig, liblivemig1, liblivemig-dev) in ../, built
# and checked by scripts/check-debian.sh (docs/API.md, "Debian packages").
deb:
	./scripts/check-debian.sh

bench: all
	./bench/precopy.sh

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
