#!/usr/bin/env bash
# bench/gpu_bench.sh - kvstash on a GPU machine, in one go: build, GPU tests
# (kernels, engine, cuFile with and without the udev entry it needs here),
# the CLI round trip with --verify, doctor, the GPU codec's test and its
# encode/decode GB/s ($OUT/codec.json), then the benchmark table:
# pinned copy ceilings, kvstash retrieve/store to and from a paged GPU cache
# (Llama-3.1-8B shape: 32 MiB chunks, 128 chunks = 4 GiB = 32k tokens) with
# files in /dev/shm, in the per-plane layout and again in vLLM 0.26+'s packed
# NHD layout (each run with its own ceilings), codec off vs on on synthetic
# bf16 KV (issue 13: retrieve in logical KV bytes beside the pinned
# host-to-device ceiling; store on vs off), the same from the disk with O_DIRECT beside dd, and
# PyTorch baselines (torch.save/torch.load per chunk; LMCache's POSIX
# fallback emulated: mmap then a copy from pageable memory, 4 threads).
#
# usage: bench/gpu_bench.sh [test|bench|shm|codec|sweep|all] (default all: the tests,
# the raw read-path ceilings (read_paths.c), the choice of pinned staging,
# the benchmark and its summary; sweep tries thread counts, piece and unit
# sizes on 2 GiB in /dev/shm; shm: the tests, the read paths and the /dev/shm
# benches only, for a call that also runs the end-to-end test; codec: the
# tests, the read paths and the codec off/on bench only, what
# bench/gpu_session.sh runs before the end-to-end test and the codec ratios)
# Writes logs to $OUT (or /tmp/kvs-gpu-bench), at most 8 files.  Debian
# packages the machine lacks are taken from .deps/ beside the sources (as
# bench/e2e_gpu.sh does; `apt-get download` them on a Debian machine).
set -u
MODE=${1:-all}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/kvs-gpu-bench}
BUILD=${KVS_BUILD:-/tmp/kvs-build}
SHM=/dev/shm/kvs-bench
DISK=${KVS_DISK_DIR:-/var/tmp/kvs-bench-disk}
CHUNKS=${KVS_BENCH_CHUNKS:-128}
THREADS=${KVS_BENCH_THREADS:-16}
mkdir -p "$OUT"
log() { echo "== $*"; }

setup_deps() {
    if ls "$ROOT"/.deps/*.deb >/dev/null 2>&1; then
        mkdir -p /tmp/deps
        for f in "$ROOT"/.deps/*.deb; do dpkg -x "$f" /tmp/deps; done
        local pc=/tmp/deps/usr/lib/x86_64-linux-gnu/pkgconfig
        sed -i 's#^prefix=.*#prefix=/tmp/deps/usr#' "$pc"/*.pc /tmp/deps/usr/share/pkgconfig/*.pc 2>/dev/null
        export PKG_CONFIG_PATH=$pc:/tmp/deps/usr/share/pkgconfig
        export LD_LIBRARY_PATH=/tmp/deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
        export CMAKE_PREFIX_PATH=/tmp/deps/usr
        export OPENSSL_ROOT_DIR=/tmp/deps/usr
        if ! command -v pkg-config >/dev/null; then
            mkdir -p /tmp/deps/bin
            ln -sf /tmp/deps/usr/bin/pkgconf /tmp/deps/bin/pkg-config
            export PATH=/tmp/deps/bin:$PATH
        fi
    fi
}

build() {
    log "build"
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKVS_WITH_CUDA=ON \
          -DCMAKE_CUDA_ARCHITECTURES="90-real;80-virtual" >/tmp/kvs-cmake.log 2>&1 &&
        cmake --build "$BUILD" -j "$(nproc)" >/tmp/kvs-build.log 2>&1
    local rc=$?
    tail -3 /tmp/kvs-build.log
    return $rc
}

root_dev() {
    # the block device of / as major:minor (what cuFile asks udev about)
    mountpoint -d / 2>/dev/null || stat -c '%Hd:%Ld' / 2>/dev/null
}

udev_on() {
    local mm; mm=$(root_dev)
    mkdir -p /run/udev/data
    printf 'E:ID_FS_TYPE=ext4\nE:ID_FS_USAGE=filesystem\n' >"/run/udev/data/b$mm"
    echo "udev entry /run/udev/data/b$mm written"
}

udev_off() {
    local mm; mm=$(root_dev)
    rm -f "/run/udev/data/b$mm"
}

tests() {
    log "inventory"
    nvidia-smi -L; nproc; free -g | head -2; findmnt -no SOURCE,FSTYPE / ; findmnt -no FSTYPE /dev/shm
    ls /usr/local/cuda/lib64/libcufile* 2>/dev/null | head -3
    log "CPU tests (ctest, not the GPU ones)"
    (cd "$BUILD" && ctest -j "$(nproc)" -LE gpu --timeout 300 --output-on-failure 2>&1 |
        grep -v "^ *Start\|Passed" | tail -60)
    log "test_gpu_kernels"
    timeout 120 "$BUILD/tests/test_gpu_kernels" 2>&1 | tail -30
    log "test_gpu_sha256 (the auth digests kernel against OpenSSL; its GB/s)"
    timeout 120 "$BUILD/tests/test_gpu_sha256" 2>&1 | tail -8
    log "test_gpu_codec (GPU codec frames == CPU codec frames; corrupted frames counted bad)"
    timeout 120 "$BUILD/tests/test_gpu_codec" 2>&1 | tail -25
    log "codec bench: GPU encode/decode GB/s of logical bytes beside cudaMemcpy D2D (2 GiB per dtype)"
    rm -f "$OUT/codec.json"
    timeout 90 "$BUILD/tests/test_gpu_codec" bench "$OUT/codec.json" 2>&1 | tail -6
    log "test_gpu_engine (no udev entry: cuFile must fall back cleanly)"
    udev_off
    mkdir -p "$DISK"
    GT_EXPECT_CUFILE=0 GT_CUFILE_DIR="$DISK" timeout 180 "$BUILD/tests/test_gpu_engine" 2>&1 |
        grep -v "^kvstash info" | tail -45
    log "test_gpu_engine cufile, with the udev entry (cuFile compatibility mode on ext4)"
    udev_on
    GT_EXPECT_CUFILE=1 GT_CUFILE_DIR="$DISK" timeout 120 "$BUILD/tests/test_gpu_engine" cufile 2>&1 |
        tail -12
    log "doctor (udev entry present), store path on ext4"
    LMCACHE_WEKA_PATH=$DISK "$BUILD/kvstash" doctor | tail -9
    udev_off
    log "CLI round trip on cuda:0 with --verify"
    rm -rf "$SHM-cli"; mkdir -p "$SHM-cli"
    export LMCACHE_WEKA_PATH=$SHM-cli LMCACHE_LOCAL_CPU=false
    "$BUILD/kvstash" store --seed 11,12 --tokens 2000 --device cuda:0 --quiet 2>&1 | grep -v "^kvstash info"
    "$BUILD/kvstash" retrieve --seed 11,12 --tokens 2000 --device cuda:0 --verify --quiet 2>&1 | grep -v "^kvstash info"
    "$BUILD/kvstash" retrieve --seed 13 --tokens 600 --shared-prefix 11:512 --device cuda:0 --verify --quiet 2>&1 | grep -v "^kvstash info"
    log "CLI across layouts: store from packed NHD, retrieve into packed HND and per-plane, --verify"
    "$BUILD/kvstash" store --seed 21,22 --tokens 2000 --device cuda:0 --layout packed-nhd --quiet 2>&1 | grep -v "^kvstash info"
    "$BUILD/kvstash" retrieve --seed 21,22 --tokens 2000 --device cuda:0 --layout packed-hnd --verify --quiet 2>&1 | grep -v "^kvstash info"
    "$BUILD/kvstash" retrieve --seed 21,22 --tokens 2000 --device cuda:0 --layout planes --verify --quiet 2>&1 | grep -v "^kvstash info"
    unset LMCACHE_WEKA_PATH LMCACHE_LOCAL_CPU
    rm -rf "$SHM-cli"
}

# kvstash bench --data bf16 in /dev/shm: UNIT (dev_unit_kb, empty: the
# default), LOG (under $OUT), the lines to show.
codec_run() {
    local unit=$1 log=$2 show=$3
    rm -rf "$SHM"; mkdir -p "$SHM"
    env ${unit:+KVSTASH_DEV_UNIT_KB=$unit} LMCACHE_WEKA_PATH="$SHM" KVSTASH_IO_PATH=posix \
        KVSTASH_LOG_LEVEL=info timeout 150 "$BUILD/kvstash" bench --device cuda:0 \
        --chunks "$CHUNKS" --threads "$THREADS" --rounds 3 --data bf16 2>&1 |
        grep -v "engine open" | tee "$OUT/$log" | grep -E "$show"
    rm -rf "$SHM"
}

bench_codec() {
    log "kvstash bench, codec off vs on (issue 13), files in /dev/shm, synthetic bf16 KV, $CHUNKS chunks"
    codec_run "" bench_codec.log "^(retrieve|store|pinned)|codec|goal|data:|GPU data path"
    # KVS_BENCH_ALT_UNIT_KB: the same again with another dev_unit_kb, beside
    # the default in the same call.
    [ -n "${KVS_BENCH_ALT_UNIT_KB:-}" ] || return 0
    log "the same with dev_unit_kb $KVS_BENCH_ALT_UNIT_KB"
    codec_run "$KVS_BENCH_ALT_UNIT_KB" bench_codec_unit.log "^(retrieve|store|pinned)|GPU data path"
}

bench_shm() {
    log "kvstash bench, files in /dev/shm (io_path posix; unit ${KVSTASH_DEV_UNIT_KB:-default} KiB, ring ${KVSTASH_DEV_RING:-default}, pinned ${KVSTASH_DEV_PINNED:-default})"
    rm -rf "$SHM"; mkdir -p "$SHM"
    LMCACHE_WEKA_PATH=$SHM KVSTASH_IO_PATH=posix KVSTASH_LOG_LEVEL=info \
        timeout 240 "$BUILD/kvstash" bench --device cuda:0 --chunks "$CHUNKS" --threads "$THREADS" \
        --rounds 3 --auth 2>&1 | grep -v "engine open" | tee "$OUT/bench_shm.log" | tail -22
    rm -rf "$SHM"
    bench_codec
    log "kvstash bench, files in /dev/shm, packed NHD GPU cache (vLLM 0.26+: heads strided)"
    rm -rf "$SHM"; mkdir -p "$SHM"
    LMCACHE_WEKA_PATH=$SHM KVSTASH_IO_PATH=posix KVSTASH_LOG_LEVEL=info \
        timeout 150 "$BUILD/kvstash" bench --device cuda:0 --layout packed-nhd --chunks "$CHUNKS" \
        --threads "$THREADS" --rounds 3 2>&1 | grep -v "engine open" |
        tee "$OUT/bench_shm_packed.log" | tail -10
    rm -rf "$SHM"
}

bench_more() {
    log "kvstash bench, files on the disk ($DISK), O_DIRECT"
    rm -rf "$DISK/kvs"; mkdir -p "$DISK/kvs"
    LMCACHE_WEKA_PATH=$DISK/kvs KVSTASH_IO_PATH=posix KVSTASH_LOG_LEVEL=warning \
        timeout 150 "$BUILD/kvstash" bench --device cuda:0 --chunks 32 --threads "$THREADS" \
        --rounds 2 --direct-io 2>&1 | tee "$OUT/bench_disk.log" | tail -12
    rm -rf "$DISK/kvs"
    log "dd O_DIRECT on the same disk (1 GiB, 16 MiB blocks)"
    dd if=/dev/urandom of="$DISK/dd.bin" bs=16M count=64 oflag=direct status=none
    sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null
    dd if="$DISK/dd.bin" of=/dev/null bs=16M iflag=direct 2>&1 | tail -1 | tee "$OUT/dd.log"
    rm -f "$DISK/dd.bin"
    log "cuFile compatibility mode (udev entry), ext4 page cache, io_path auto"
    udev_on
    rm -rf "$DISK/kvs"; mkdir -p "$DISK/kvs"
    LMCACHE_WEKA_PATH=$DISK/kvs KVSTASH_IO_PATH=auto KVSTASH_LOG_LEVEL=warning \
        timeout 200 "$BUILD/kvstash" bench --device cuda:0 --chunks 32 --threads "$THREADS" \
        --rounds 2 2>&1 | tee "$OUT/bench_cufile.log" | tail -8
    rm -rf "$DISK/kvs"
    udev_off
    log "PyTorch baselines"
    PYTHONUNBUFFERED=1 timeout 150 python3 "$ROOT/bench/gpu_baselines.py" --chunks "$CHUNKS" \
        --dir /dev/shm/kvs-torch --json "$OUT/baselines.json" 2>&1 | tail -12
    log "summary"
    python3 "$ROOT/bench/gpu_baselines.py" --summary --out "$OUT" | tee "$OUT/summary.txt"
}

bench() { bench_shm; bench_more; }

sweep() {
    log "sweep: 64 chunks (2 GiB) in /dev/shm; threads x retrieve piece x transfer unit"
    rm -rf "$SHM"; mkdir -p "$SHM"
    for t in 16 32; do for p in 4 8 16; do for u in 1024 2048; do
        printf 'threads %2d piece %2d MiB unit %4d KiB: ' "$t" "$p" "$u"
        KVSTASH_DEV_PIECE_MB=$p KVSTASH_DEV_UNIT_KB=$u LMCACHE_WEKA_PATH=$SHM KVSTASH_IO_PATH=posix \
            KVSTASH_LOG_LEVEL=warning timeout 60 "$BUILD/kvstash" bench --device cuda:0 --chunks 64 \
            --threads "$t" --rounds 2 2>&1 |
            awk '/^retrieve files -> GPU /{r=$5" ("$9")"} /^store GPU -> files, until/{s=$7" ("$11")"}
                 END{print "retrieve " r " GB/s, store " s " GB/s"}'
    done; done; done
    rm -rf "$SHM"
}

paths() {
    log "read paths: raw ceilings from a file to memory and to VRAM (64 files of 32 MiB)"
    nvcc -O2 -o /tmp/read_paths "$ROOT/bench/read_paths.c" -lpthread || return
    for d in /dev/shm/kvs-paths "$DISK/paths"; do
        mkdir -p "$d"; echo "-- $d ($(findmnt -no FSTYPE --target "$d" | head -1))"
        READ_PATHS_MODES=${READ_PATHS_MODES:-01256} timeout 120 /tmp/read_paths "$d" 64 32 16
        rm -rf "$d"
    done 2>&1 | tee "$OUT/paths.log"
}

# The engine with several transfer units and ring depths (and pinned staging
# kinds), 64 chunks in /dev/shm; exports the fastest (retrieve + store) for
# the benchmark that follows, and prints where the worker time went.
tune() {
    log "tune: transfer unit x ring depth x pinned staging, 64 chunks in /dev/shm"
    rm -rf "$SHM"; mkdir -p "$SHM"
    local best=0 bu=1024 br=4 bp=register
    for c in 256:4:register 512:4:register 1024:4:register 1024:8:register 2048:2:register \
             512:4:alloc; do
        local u=${c%%:*} rest=${c#*:}; local r=${rest%%:*} pk=${rest#*:}
        local out line
        out=$(KVSTASH_DEV_UNIT_KB=$u KVSTASH_DEV_RING=$r KVSTASH_DEV_PINNED=$pk \
            LMCACHE_WEKA_PATH=$SHM KVSTASH_IO_PATH=posix KVSTASH_LOG_LEVEL=info timeout 60 \
            "$BUILD/kvstash" bench --device cuda:0 --chunks 64 --threads "$THREADS" --rounds 2 2>&1)
        line=$(echo "$out" | awk '/^retrieve files -> GPU /{r=$5} /^store GPU -> files, until/{s=$7}
                                  END{print r+0, s+0}')
        printf 'unit %4s KiB ring %s %-8s retrieve/store GB/s: %s\n' "$u" "$r" "$pk" "$line"
        echo "$out" | grep -o "pieces read:.*" | tail -1 | sed 's/^/    /'
        local sum; sum=$(echo "$line" | awk '{print int(($1+$2)*100)}')
        if [ "$sum" -gt "$best" ]; then best=$sum; bu=$u; br=$r; bp=$pk; fi
    done
    rm -rf "$SHM"
    export KVSTASH_DEV_UNIT_KB=$bu KVSTASH_DEV_RING=$br KVSTASH_DEV_PINNED=$bp
    echo "for the benchmark: KVSTASH_DEV_UNIT_KB=$bu KVSTASH_DEV_RING=$br KVSTASH_DEV_PINNED=$bp"
}

setup_deps
build || { echo "build failed"; tail -40 /tmp/kvs-build.log /tmp/kvs-cmake.log; exit 1; }
case "$MODE" in
test) tests ;;
bench) bench ;;
sweep) sweep ;;
test+sweep) tests; sweep ;;
test+paths) tests; paths ;;
untuned) tests; paths; bench ;;   # all but tune: the defaults tune chose before
shm) tests; paths; bench_shm ;;   # the /dev/shm benches only: what changes with the data path
codec) tests; paths; bench_codec ;;   # issue 13's share of a bench/gpu_session.sh call
*) tests; paths; tune; bench ;;
esac
