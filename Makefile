# Two commands: `make run` and `make test`. Both install any missing Debian
# package listed in configs/debian-packages.txt, then build.
# `make check` is what CI runs (.ci/run): formatting, the whole suite built with
# -Werror, the whole suite again under ASan + UBSan (clang, `make test-sanitize`),
# then every fuzz target briefly in that same sanitizer build.
BUILD_DIR ?= build
BUILD_TYPE ?= Release
JOBS ?= $(shell nproc)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PACKAGES := $(shell grep -v '^\s*\#' configs/debian-packages.txt)
CTEST_ARGS ?=
WERROR ?=
SANITIZE_DIR ?= build-sanitize
SANITIZE_CXX ?= clang++-14
CLANG_FORMAT ?= clang-format-14
FORMAT_FILES = $(shell git ls-files '*.cpp' '*.hpp')

.PHONY: all deps build run test check format format-check tidy sanitize-build test-sanitize bench fuzz fuzz-build fuzz-merge clean

all: build

deps:
	@missing=$$(for p in $(PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing missing Debian packages: $$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# Configures every time (cheap), then builds. WERROR=ON|OFF, when given, is kept
# in the build directory's cache (make check sets it).
build: deps
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(if $(WERROR),-DTROUPE_WERROR=$(WERROR)) >/dev/null
	cmake --build $(BUILD_DIR) -j $(JOBS)

run: build
	./$(BUILD_DIR)/troupe serve --config configs/troupe.yaml

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)

CHECK_FUZZ_SECONDS ?= 10
check: format-check
	$(MAKE) test WERROR=ON
	$(MAKE) test-sanitize WERROR=ON
	$(MAKE) fuzz FUZZ_SECONDS=$(CHECK_FUZZ_SECONDS) WERROR=ON

# The tree is formatted by .clang-format; `make format` fixes, `format-check` fails on a diff.
format:
	$(CLANG_FORMAT) -i $(FORMAT_FILES)

format-check: deps
	@$(CLANG_FORMAT) --dry-run --Werror $(FORMAT_FILES)

# clang-tidy with .clang-tidy (bugprone, performance) over troupe's own sources,
# using the compile commands of the build directory. Not part of `make check`
# (it parses every file again with clang: about as long as a full build).
TIDY_FILES = $(shell git ls-files 'actors/*.cpp' 'http/*.cpp' 'persistence/*.cpp' 'runtime/*.cpp')
tidy: build
	run-clang-tidy-14 -quiet -p $(BUILD_DIR) -j $(JOBS) $(TIDY_FILES)

# ASan + UBSan (clang) build of everything, the suite run in it. UBSan reports
# are fatal except CAF's own (tests/sanitizers/ubsan.supp); the e2e harness
# passes these options on to the daemons it starts.
export ASAN_OPTIONS ?= detect_leaks=1:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=0
export UBSAN_OPTIONS ?= halt_on_error=1:print_stacktrace=1:suppressions=$(CURDIR)/tests/sanitizers/ubsan.supp
sanitize-build: deps
	cmake -S . -B $(SANITIZE_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=$(SANITIZE_CXX) \
	  -DTROUPE_SANITIZE=ON $(if $(WERROR),-DTROUPE_WERROR=$(WERROR)) >/dev/null
	cmake --build $(SANITIZE_DIR) -j $(JOBS)

test-sanitize: sanitize-build
	cd $(SANITIZE_DIR) && ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)

bench: build
	cmake --build $(BUILD_DIR) -j $(JOBS) --target jobs_bench lmdb_lines metrics_bench scrape_bench
	benchmarks/run.sh $(BUILD_DIR)

# Fuzzing, in the sanitizer build: FUZZ_SECONDS per target (CI: 10), FUZZ_JOBS
# parallel workers per target, FUZZ_TARGETS to pick some. Fails if any target crashes.
FUZZ_SECONDS ?= 60
FUZZ_JOBS ?= 1
FUZZ_TARGETS ?=

fuzz-build: deps
	cmake -S . -B $(SANITIZE_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=$(SANITIZE_CXX) \
	  -DTROUPE_SANITIZE=ON $(if $(WERROR),-DTROUPE_WERROR=$(WERROR)) >/dev/null
	cmake --build $(SANITIZE_DIR) -j $(JOBS) --target fuzzers

fuzz: fuzz-build
	tests/fuzz/run.sh $(SANITIZE_DIR) $(FUZZ_SECONDS) $(FUZZ_JOBS) $(FUZZ_TARGETS)

# Adds the inputs `make fuzz` found that reach new coverage to tests/fuzz/corpus
# (many files after a long run: commit a few meaningful ones, keep the seeds small).
fuzz-merge: fuzz-build
	MERGE=1 tests/fuzz/run.sh $(SANITIZE_DIR) 0 1 $(FUZZ_TARGETS)

clean:
	rm -rf $(BUILD_DIR) $(SANITIZE_DIR)
