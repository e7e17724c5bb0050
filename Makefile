# Two commands: `make run` and `make test`. Both install any missing Debian
# package listed in configs/debian-packages.txt, then build.
BUILD_DIR ?= build
BUILD_TYPE ?= Release
JOBS ?= $(shell nproc)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PACKAGES := $(shell grep -v '^\s*\#' configs/debian-packages.txt)
CTEST_ARGS ?=

.PHONY: all deps build run test bench clean

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

bench: build
	cmake --build $(BUILD_DIR) -j $(JOBS) --target jobs_bench lmdb_lines metrics_bench scrape_bench
	benchmarks/run.sh $(BUILD_DIR)

clean:
	rm -rf $(BUILD_DIR)
