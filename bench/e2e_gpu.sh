#!/usr/bin/env bash
# e2e_gpu.sh [quick|full] - on a GPU machine: build libkvstash, run the
# Python tests with torch (CUDA included), then the end-to-end test with a
# transformers model in two processes (bench/e2e_transformers.py).
#
#   quick   the small model, 2048-token prefix
#   full    quick, then the Llama-3.1-8B-shaped model at 8192 and 32768
#           prefix tokens (about 16 GB of weights, random, on the GPU)
#
# Writes under $OUT (default ./e2e-out), at most 8 files: summary.txt,
# pytest.log, e2e.log, the JSON of each process and model (build.log only
# when the build fails).  Debian -dev packages
# the machine lacks (libyaml, OpenSSL headers, xxhash) are taken from
# .deps/*.deb when present (apt-get download them on a machine with apt).
# Environment: E2E_STORE (store folder, default /root/kvs-e2e-store: ext4 on
# the machine's disk, read back from the page cache, the fastest of the
# places bench/RESULTS.md measured there), E2E_EXTRA (LMCACHE_EXTRA_CONFIG
# JSON), E2E_IO_PATH (default posix; cuFile's compatibility mode is slower
# there), E2E_CODEC (codec of process A's store, default auto: compressed on
# the GPU; the 8B restore also times the hit on plain files, codec off, in
# the same process: --compare-plain), KVSTASH_LIBRARY (a libkvstash.so built
# with CUDA: no build here), E2E_SWEEP (a JSON list of config dicts: the 8B
# restore also times the hit in engines so configured; empty: none),
# E2E_LAYERWISE (0: skip bench/layerwise_gpu.py, the last step).
set -uo pipefail
MODE=${1:-quick}
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$REPO/e2e-out}
mkdir -p "$OUT"
cd "$REPO"
log() { echo "== $*" | tee -a "$OUT/summary.txt"; }
: >"$OUT/summary.txt"

# ---- build ---------------------------------------------------------------------
CMAKE_EXTRA=()
if ls .deps/*.deb >/dev/null 2>&1 && ! { [ -e /usr/include/yaml.h ] &&
        [ -e /usr/include/xxhash.h ] && [ -e /usr/include/openssl/sha.h ] &&
        command -v pkg-config >/dev/null; }; then
    D=/tmp/kvs-deps
    mkdir -p $D
    for f in .deps/*.deb; do dpkg -x "$f" $D; done
    ML=$D/usr/lib/x86_64-linux-gnu
    # The .pc files name /usr: point them at the unpacked tree.
    sed -i "s#^prefix=.*#prefix=$D/usr#" $ML/pkgconfig/*.pc $D/usr/share/pkgconfig/*.pc \
        2>/dev/null
    export PKG_CONFIG_PATH=$ML/pkgconfig:$D/usr/share/pkgconfig
    export LD_LIBRARY_PATH=$ML${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    if ! command -v pkg-config >/dev/null; then
        mkdir -p $D/bin
        ln -sf $D/usr/bin/pkgconf $D/bin/pkg-config
        export PATH=$D/bin:$PATH
    fi
    CMAKE_EXTRA=(-DCMAKE_PREFIX_PATH=$D/usr -DOPENSSL_ROOT_DIR=$D/usr
                 -DXXHASH_INCLUDE_DIR=$D/usr/include)
    log "deps unpacked from .deps into $D"
fi
if [ -n "${KVSTASH_LIBRARY:-}" ] && [ -e "$KVSTASH_LIBRARY" ]; then
    log "using the library built before: $KVSTASH_LIBRARY"
else
log "build"
if ! { cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DKVS_BUILD_TESTS=OFF \
         -DKVS_WITH_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="90-real;80-virtual" \
         "${CMAKE_EXTRA[@]}" && cmake --build build-gpu -j "$(nproc)" --target kvstash; } \
        >/tmp/kvs-e2e-build.log 2>&1; then
    cp /tmp/kvs-e2e-build.log "$OUT/build.log"
    tail -30 "$OUT/build.log"
    log "BUILD FAILED"
    exit 1
fi
grep -E "CUDA kernels" /tmp/kvs-e2e-build.log | tee -a "$OUT/summary.txt"
export KVSTASH_LIBRARY=$REPO/build-gpu/libkvstash.so
fi
export PYTHONPATH=$REPO/python
export PYTHONUNBUFFERED=1

# cuFile asks udev about the file's block device; this VM has no udev
# (docs/DESIGN section 7): say what udev would for the root device.
if [ -d /sys/dev/block ] && [ ! -e /run/udev/data ]; then
    devno=$(mountpoint -d / 2>/dev/null || true)
    if [ -n "$devno" ]; then
        mkdir -p /run/udev/data
        printf 'E:ID_FS_TYPE=ext4\nE:ID_FS_USAGE=filesystem\n' >"/run/udev/data/b$devno"
    fi
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
    | tee -a "$OUT/summary.txt"
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' \
    | tee -a "$OUT/summary.txt"

# ---- Python tests, torch and CUDA ---------------------------------------------
log "pytest"
python3 -m pytest -q -rs -p no:cacheprovider python/tests >"$OUT/pytest.log" 2>&1
echo "pytest exit $?" | tee -a "$OUT/summary.txt"
tail -5 "$OUT/pytest.log" | tee -a "$OUT/summary.txt"

# ---- end to end ------------------------------------------------------------------
export LMCACHE_USE_EXPERIMENTAL=True
export LMCACHE_CHUNK_SIZE=256
export LMCACHE_LOCAL_CPU=False
# The seed's 8192 MiB: a 32k-token store of this model is 4 GiB of KV, all
# captured into staging before kvs_store returns.
export LMCACHE_CUFILE_BUFFER_SIZE=${E2E_CUFILE_MIB:-8192}
export CUBLAS_WORKSPACE_CONFIG=:4096:8
# max_pending_store_size: a 32k-token store is 4.3 GB of KV in flight at once.
export LMCACHE_EXTRA_CONFIG=${E2E_EXTRA:-'{"gds_io_threads": 16, "use_direct_io": false, "max_pending_store_size": 8}'}
export KVSTASH_IO_PATH=${E2E_IO_PATH:-posix}
export KVSTASH_CODEC=${E2E_CODEC:-auto}
STORE=${E2E_STORE:-/root/kvs-e2e-store}
# The 8B restore's hit again in engines configured otherwise (E2E_SWEEP).
SWEEP='[{"retrieve_order": "chunk"}, {"dev_piece_mb": 4}, {"gds_io_threads": 12}]'
STATUS=0

e2e() {  # e2e NAME MODEL PREFIXES [restore options]
    local name=$1 model=$2 prefixes=$3
    shift 3
    rm -rf "$STORE"
    mkdir -p "$STORE"
    export LMCACHE_WEKA_PATH=$STORE
    log "e2e $name: process A stores ($model, prefixes $prefixes, codec $KVSTASH_CODEC)"
    python3 bench/e2e_transformers.py store --model "$model" --prefix "$prefixes" \
        --out "$OUT/$name-a.json" 2>&1 | tee -a "$OUT/e2e.log" | grep -v "^kvstash info" \
        | tee -a "$OUT/summary.txt"
    local variant
    variant=$(python3 -c "import json; print(json.load(open('$OUT/$name-a.json'))['variant'])")
    log "e2e $name: process B restores"
    python3 bench/e2e_transformers.py restore --model "$model" --prefix "$prefixes" \
        --expect-variant "$variant" --out "$OUT/$name-b.json" "$@" 2>&1 | tee -a "$OUT/e2e.log" \
        | grep -v "^kvstash info" | tee -a "$OUT/summary.txt"
    [ "${PIPESTATUS[0]}" -eq 0 ] || STATUS=1
}

e2e small small 2048
if [ "$MODE" = full ] && [ "$STATUS" -ne 0 ] && [ -z "${E2E_FORCE:-}" ]; then
    log "the small model failed: not running the 8B one (E2E_FORCE=1 runs it anyway)"
elif [ "$MODE" = full ]; then
    e2e llama8b 8b 8192,32768 --compare-plain --sweep "${E2E_SWEEP-$SWEEP}"
fi
# Layer-pipelined loading on vLLM 0.33's packed layout (docs/vllm.md): last,
# so it never takes time from the end-to-end runs.
if [ "${E2E_LAYERWISE:-1}" = 1 ]; then
    log "layerwise"
    python3 bench/layerwise_gpu.py --rounds 3 --store "$STORE" 2>&1 | grep -v "^kvstash info" \
        | tee -a "$OUT/summary.txt"
fi
du -sh "$STORE" 2>/dev/null | tee -a "$OUT/summary.txt"
log "done (status $STATUS)"
exit $STATUS
