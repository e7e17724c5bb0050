# Two commands: `make run` and `make test`. Both install any missing Debian
# package listed in configs/debian-packages.txt, then build. `make fuzz` builds
# the libFuzzer targets with clang and runs each (tests/fuzz/CMakeLists.txt).
# `make check` is what CI runs (.ci/run): the whole suite, then every fuzz
# target briefly.
BUILD_DIR ?= build
BUILD_TYPE ?= Release
JOBS ?= $(shell nproc)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PACKAGES := $(shell grep -v '^\s*\#' configs/debian-packages.txt)
CTEST_ARGS ?=

.PHONY: all deps build run test check bench fuzz fuzz-build fuzz-merge clean

all: build

deps:
	@missing=$$(for p in $(PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing missing Debian packages: $$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# Configure once; afterwards the build re-runs CMake by itself when a
# CMakeLists.txt changes.
build: deps
	@[ -f $(BUILD_DIR)/CMakeCache.txt ] || cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)
	cmake --build $(BUILD_DIR) -j $(JOBS)

run: build
	./$(BUILD_DIR)/troupe serve --config configs/troupe.yaml

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)

CHECK_FUZZ_SECONDS ?= 10
check: test
	$(MAKE) fuzz FUZZ_SECONDS=$(CHECK_FUZZ_SECONDS)

bench: build
	cmake --build $(BUILD_DIR) -j $(JOBS) --target jobs_bench lmdb_lines metrics_bench scrape_bench
	benchmarks/run.sh $(BUILD_DIR)

# Fuzzing: FUZZ_SECONDS per target (CI: 10), FUZZ_JOBS parallel workers per
# target, FUZZ_TARGETS to pick some. Fails if any target crashes.
FUZZ_DIR ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_JOBS ?= 1
FUZZ_TARGETS ?=
FUZZ_CXX ?= clang++-14

fuzz-build: deps
	@[ -f $(FUZZ_DIR)/CMakeCache.txt ] || cmake -S . -B $(FUZZ_DIR) -DTROUPE_FUZZ=ON \
	  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=$(FUZZ_CXX)
	cmake --build $(FUZZ_DIR) -j $(JOBS) --target fuzzers

fuzz: fuzz-build
	tests/fuzz/run.sh $(FUZZ_DIR) $(FUZZ_SECONDS) $(FUZZ_JOBS) $(FUZZ_TARGETS)

# Adds the inputs `make fuzz` found that reach new coverage to tests/fuzz/corpus
# (many files after a long run: commit a few meaningful ones, keep the seeds small).
fuzz-merge: fuzz-build
	MERGE=1 tests/fuzz/run.sh $(FUZZ_DIR) 0 1 $(FUZZ_TARGETS)

clean:
	rm -rf $(BUILD_DIR) $(FUZZ_DIR)
