#!/usr/bin/env bash
# bench/codec_ratios.sh - issue 13 item 2 on the GPU machine, in one go:
# train a small byte-level Llama (transformers LlamaForCausalLM) on English
# text from Debian packages for TRAIN_S seconds, dump its KV and the random
# Llama-3.1-8B-shaped model's KV (bf16, fp16, fp8 e4m3) in the chunk payload
# layout, and measure each dump with kvs_codec_ratio (our codec, its entropy
# bound, zstd -1 and lz4 after the same byte transposition) beside this
# script's own estimates (bench/train_kv_model.py).
#
#   device run: bench/codec_ratios.sh     (carry .deps: .deps/text/*.deb is
#               the text, .deps/tools/*.deb the zstd and lz4 CLIs)
#
# Writes $OUT/codec_ratio/ (default /tmp/kvs-codec-ratio/codec_ratio):
# codec_ratios.md (the table), codec_ratios.json, train.log.  The trained
# model stays in $KVS_TRAINED_DIR (default /tmp/kvstash_trained: model.pt,
# config.json, dumps/) for later steps of the same device call.
# Environment: TRAIN_S (default 150 s of training), KVS_BUILD (a build tree
# that has or can build kvs_codec_ratio; default /tmp/kvs-build, the one
# bench/gpu_bench.sh makes), KVS_CODEC_RATIO (the binary, to skip the
# search), TRAIN_ARGS (more arguments for train_kv_model.py).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/kvs-codec-ratio}
DEST=$OUT/codec_ratio
WORKDIR=${KVS_TRAINED_DIR:-/tmp/kvstash_trained}
BUILD=${KVS_BUILD:-/tmp/kvs-build}
mkdir -p "$DEST" "$WORKDIR"
LOG=$DEST/train.log
: >"$LOG"
log() { echo "== $*" | tee -a "$LOG"; }
start=$(date +%s)

# zstd and lz4 command-line tools (the script's fallback figures), unpacked
# from .deps/tools when the machine has none.
if ls "$ROOT"/.deps/tools/*.deb >/dev/null 2>&1; then
    T=/tmp/kvs-tools
    mkdir -p $T
    for f in "$ROOT"/.deps/tools/*.deb; do dpkg-deb -x "$f" $T; done
    command -v zstd >/dev/null || export PATH=$PATH:$T/usr/bin
    command -v lz4 >/dev/null || export PATH=$PATH:$T/usr/bin
    export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$T/usr/lib/x86_64-linux-gnu
fi

# kvs_codec_ratio: the build tree's, else build that target (the -dev
# packages from .deps/*.deb as bench/gpu_bench.sh unpacks them).
TOOL=${KVS_CODEC_RATIO:-}
find_tool() { find "$1" -maxdepth 3 -name kvs_codec_ratio -type f -perm -u+x 2>/dev/null | head -1; }
[ -z "$TOOL" ] && [ -d "$BUILD" ] && TOOL=$(find_tool "$BUILD")
if [ -z "$TOOL" ] && grep -q kvs_codec_ratio "$ROOT/CMakeLists.txt" 2>/dev/null; then
    if ls "$ROOT"/.deps/*.deb >/dev/null 2>&1 && ! { [ -e /usr/include/xxhash.h ] &&
            [ -e /usr/include/zstd.h ] && [ -e /usr/include/lz4.h ] && [ -e /usr/include/yaml.h ]; }; then
        D=/tmp/deps
        mkdir -p $D
        for f in "$ROOT"/.deps/*.deb; do dpkg -x "$f" $D; done
        pc=$D/usr/lib/x86_64-linux-gnu/pkgconfig
        sed -i "s#^prefix=.*#prefix=$D/usr#" "$pc"/*.pc $D/usr/share/pkgconfig/*.pc 2>/dev/null
        export PKG_CONFIG_PATH=$pc:$D/usr/share/pkgconfig
        export LD_LIBRARY_PATH=$D/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
        export CMAKE_PREFIX_PATH=$D/usr OPENSSL_ROOT_DIR=$D/usr
        if ! command -v pkg-config >/dev/null; then
            mkdir -p $D/bin; ln -sf $D/usr/bin/pkgconf $D/bin/pkg-config; export PATH=$D/bin:$PATH
        fi
    fi
    B=$BUILD
    [ -f "$B/CMakeCache.txt" ] || B=/tmp/kvs-ratio-build
    log "building kvs_codec_ratio in $B"
    { [ -f "$B/CMakeCache.txt" ] || cmake -S "$ROOT" -B "$B" -DCMAKE_BUILD_TYPE=Release -DKVS_WITH_CUDA=OFF -DKVS_BUILD_TESTS=OFF; } \
        >>"$LOG" 2>&1 && cmake --build "$B" -j "$(nproc)" --target kvs_codec_ratio >>"$LOG" 2>&1
    TOOL=$(find_tool "$B")
fi
# the libraries bench/gpu_bench.sh's build linked, when it took them from .deps
[ -d /tmp/deps/usr/lib/x86_64-linux-gnu ] &&
    export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/tmp/deps/usr/lib/x86_64-linux-gnu
if [ -n "$TOOL" ]; then log "ratio tool: $TOOL"; else log "no kvs_codec_ratio: the script's own estimates only"; fi

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | tee -a "$LOG"
log "train and dump (TRAIN_S=${TRAIN_S:-150})"
# shellcheck disable=SC2086
PYTHONUNBUFFERED=1 python3 "$ROOT/bench/train_kv_model.py" --debs "$ROOT/.deps/text" \
    --work "$WORKDIR" --out "$DEST" --train-s "${TRAIN_S:-150}" --ratio-tool "$TOOL" \
    ${TRAIN_ARGS:-} 2>&1 | tee -a "$LOG"
rc=${PIPESTATUS[0]}
log "train_kv_model.py exit $rc after $(( $(date +%s) - start )) s"
du -ah "$WORKDIR" 2>/dev/null | tee -a "$LOG" >/dev/null
exit "$rc"
