# kvstash - the two entry points of a fresh Debian machine:
#   make run    installs what is missing, builds, runs the demo
#   make test   installs what is missing, builds, runs every test (also
#               under AddressSanitizer + UBSan)
# Everything else is CMake (build/, build-asan/).

BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_ARGS ?=

# Debian packages the build and the tests need (scripts/deps.sh installs
# the missing ones with apt-get).
DEB_PACKAGES = build-essential cmake pkg-config libyaml-dev libssl-dev \
               libxxhash-dev libcmocka-dev clang python3 python3-pytest \
               python3-numpy python3-venv python3-pip libfuse3-dev fuse3 \
               glusterfs-server glusterfs-client libzstd-dev liblz4-dev \
               python3-pyflakes

.PHONY: all deps build build-asan build-fuzz build-tsan run test test-fast test-tsan bench bench-scale fuzz clean install wheel

all: build

deps:
	@scripts/deps.sh $(DEB_PACKAGES)

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_ARGS)
	cmake --build $(BUILD) -j $(JOBS)

build-asan: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug \
	      -DKVS_SANITIZE=address,undefined $(CMAKE_ARGS)
	cmake --build $(ASAN_BUILD) -j $(JOBS)

run: build
	scripts/demo.sh $(BUILD)/kvstash

test: build build-asan
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    ctest --output-on-failure -j $(JOBS)

# The multi-threaded tests under ThreadSanitizer (build-tsan/).
TSAN_BUILD ?= build-tsan
TSAN_TESTS  = test_engine|test_fault_io|test_security|test_crash|test_soak|test_fuse_hang|test_lease
build-tsan: deps
	cmake -S . -B $(TSAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DKVS_SANITIZE=thread $(CMAKE_ARGS)
	cmake --build $(TSAN_BUILD) -j $(JOBS)

test-tsan: build-tsan
	cd $(TSAN_BUILD) && TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
	    KVS_CRASH_ROUNDS=50 ctest --output-on-failure -j $(JOBS) -R '^($(TSAN_TESTS))$$'

# The tests of the optimized build only.
test-fast: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# libFuzzer targets (clang), instrumented library; FUZZ_SECONDS per target.
# Each runs on a scratch copy of its corpus, and what it found that covers
# something new is merged, minimized, back into tests/fuzz/corpus/<target>.
FUZZ_BUILD   ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_TARGETS  = header config_yaml extra_json env codec
build-fuzz: deps
	CC=clang cmake -S . -B $(FUZZ_BUILD) -DKVS_FUZZ=ON -DKVS_WITH_CUDA=OFF $(CMAKE_ARGS)
	cmake --build $(FUZZ_BUILD) -j $(JOBS) --target $(addprefix fuzz_,$(FUZZ_TARGETS))

fuzz: build-fuzz
	set -e; for t in $(FUZZ_TARGETS); do \
	    mkdir -p $(FUZZ_BUILD)/corpus/$$t; \
	    $(FUZZ_BUILD)/tests/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -max_len=8192 \
	        -print_final_stats=1 $(FUZZ_BUILD)/corpus/$$t tests/fuzz/corpus/$$t; \
	    $(FUZZ_BUILD)/tests/fuzz_$$t -merge=1 tests/fuzz/corpus/$$t $(FUZZ_BUILD)/corpus/$$t; \
	done

bench: build
	$(BUILD)/kvstash bench

# kvstash at fleet scale: 10k, 100k and 1M chunk files (~9 GB on SCALE_DIR).
SCALE_DIR ?= /var/tmp/kvstash-scale-bench
bench-scale: build
	$(BUILD)/kvstash_scale_bench --dir $(SCALE_DIR) --steps 10000,100000,1000000

install: build
	cmake --install $(BUILD)

# The Python package as a platform wheel with libkvstash inside, in
# $(BUILD)/dist (offline; the library is built in $(BUILD)/wheel-build).
# Install it with `venv/bin/python -m pip install $(BUILD)/dist/kvstash-*.whl`,
# or in one step `venv/bin/python -m pip install ./python` (README.md).
wheel: deps
	KVSTASH_BUILD_DIR=$(abspath $(BUILD))/wheel-build /usr/bin/python3 -m pip wheel \
	    --no-deps --no-index -w $(BUILD)/dist ./python

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(TSAN_BUILD) $(FUZZ_BUILD)
