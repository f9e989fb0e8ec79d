#!/usr/bin/env bash
# bench/gpu_compare.sh BEFORE_SRC - the GPU benchmark of two source trees in
# one device call, rounds interleaved, so a change that must not slow the
# GPU path (the architecture step, issue 12) is judged against the code
# before it on the same machine, at the same minute.  BEFORE_SRC is an
# unpacked `git archive` of the earlier commit (carried in an ignored folder);
# the tree this script sits in is "after".  Then the GPU tests of "after" and
# bench/layerwise_gpu.py.  Every `kvstash bench` row is printed beside the
# copy ceilings that the same run measured; the summary puts the two trees'
# ratios side by side.  Logs under $OUT (at most 8 files).
#
#   device run: bench/gpu_compare.sh .before      (carry .deps and .before)
set -u
AFTER=$(cd "$(dirname "$0")/.." && pwd)
BEFORE=$(cd "${1:?usage: $0 BEFORE_SRC}" && pwd)
OUT=${OUT:-/tmp/kvs-gpu-compare}
ROUNDS=${COMPARE_ROUNDS:-3}
CHUNKS=${KVS_BENCH_CHUNKS:-128}
SHM=/dev/shm/kvs-compare
mkdir -p "$OUT"
log() { echo "== $*" | tee -a "$OUT/summary.txt"; }
: >"$OUT/summary.txt"
date -u +%FT%TZ | tee -a "$OUT/summary.txt"
# The Debian -dev packages the machine lacks, as gpu_bench.sh unpacks them.
eval "$(sed -n '/^setup_deps() {/,/^}/p' "$AFTER/bench/gpu_bench.sh")"
ROOT=$AFTER setup_deps

build() { # build SRC DIR TESTS(ON|OFF)
    cmake -S "$1" -B "$2" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKVS_WITH_CUDA=ON \
          -DKVS_BUILD_TESTS="$3" -DCMAKE_CUDA_ARCHITECTURES="90-real;80-virtual" \
          ${CMAKE_PREFIX_PATH:+-DCMAKE_PREFIX_PATH=$CMAKE_PREFIX_PATH} \
          ${OPENSSL_ROOT_DIR:+-DOPENSSL_ROOT_DIR=$OPENSSL_ROOT_DIR} >"$OUT/build-$(basename "$2").log" 2>&1 &&
        cmake --build "$2" -j "$(nproc)" >>"$OUT/build-$(basename "$2").log" 2>&1
}
log "build before ($BEFORE) and after ($AFTER)"
build "$BEFORE" /tmp/kvs-before OFF || { tail -30 "$OUT/build-kvs-before.log"; exit 1; }
build "$AFTER" /tmp/kvs-after ON || { tail -30 "$OUT/build-kvs-after.log"; exit 1; }
rm -f "$OUT"/build-*.log

one() { # one TREE ROUND LAYOUT: a kvstash bench on /dev/shm into $OUT/bench.log
    rm -rf "$SHM"; mkdir -p "$SHM"
    echo "--- $1 round $2 layout $3" >>"$OUT/bench.log"
    LMCACHE_WEKA_PATH=$SHM KVSTASH_IO_PATH=posix KVSTASH_LOG_LEVEL=warning \
        timeout 120 "/tmp/kvs-$1/kvstash" bench --device cuda:0 --layout "$3" --chunks "$CHUNKS" \
        --threads 16 --rounds 3 >>"$OUT/bench.log" 2>&1
    echo "exit $?" >>"$OUT/bench.log"
    rm -rf "$SHM"
}
log "kvstash bench, /dev/shm, $CHUNKS chunks of 32 MiB, $ROUNDS rounds per tree, interleaved"
for r in $(seq 1 "$ROUNDS"); do
    for t in before after; do one "$t" "$r" planes; done
done
for t in before after; do one "$t" 1 packed-nhd; done
python3 - "$OUT/bench.log" <<'PY' | tee -a "$OUT/summary.txt"
import re, statistics, sys
runs, cur = {}, None
for line in open(sys.argv[1]):
    m = re.match(r"--- (\w+) round (\d+) layout (\S+)", line)
    if m:
        cur = runs.setdefault((m.group(1), m.group(3)), [])
        cur.append({})
        continue
    m = re.match(r"(retrieve files -> GPU|store GPU -> files, until published)\s+([\d.]+) GB/s\s+([\d.]+) GB/s\s+([\d.]+)", line)
    if m and cur is not None:
        cur[-1][m.group(1)] = (float(m.group(2)), float(m.group(3)), float(m.group(4)))
print("tree    layout      figure                                GB/s  ceiling  ratio  (median of runs; each run the median of 3 rounds)")
for (tree, layout), rs in sorted(runs.items(), key=lambda kv: (kv[0][1], kv[0][0] != "before")):
    for fig in ("retrieve files -> GPU", "store GPU -> files, until published"):
        vals = [r[fig] for r in rs if fig in r]
        if not vals:
            print("%-7s %-11s %-36s  missing" % (tree, layout, fig))
            continue
        g = statistics.median(v[0] for v in vals)
        c = statistics.median(v[1] for v in vals)
        q = statistics.median(v[2] for v in vals)
        print("%-7s %-11s %-36s %6.2f  %6.2f  %5.2f  (ratios %s)"
              % (tree, layout, fig, g, c, q, " ".join("%.2f" % v[2] for v in vals)))
PY

log "GPU tests of after"
for t in test_gpu_kernels test_gpu_sha256; do
    timeout 120 "/tmp/kvs-after/tests/$t" >"$OUT/$t.log" 2>&1
    echo "$t exit $?: $(tail -1 "$OUT/$t.log")" | tee -a "$OUT/summary.txt"
done
mkdir -p /var/tmp/kvs-compare-disk
GT_CUFILE_DIR=/var/tmp/kvs-compare-disk timeout 180 /tmp/kvs-after/tests/test_gpu_engine \
    >"$OUT/test_gpu_engine.log" 2>&1
echo "test_gpu_engine exit $?: $(tail -1 "$OUT/test_gpu_engine.log")" | tee -a "$OUT/summary.txt"
cat "$OUT"/test_gpu_kernels.log "$OUT"/test_gpu_sha256.log >>"$OUT/test_gpu_engine.log"
rm -f "$OUT"/test_gpu_kernels.log "$OUT"/test_gpu_sha256.log

log "layerwise_gpu.py (after's library)"
KVSTASH_LIBRARY=/tmp/kvs-after/libkvstash.so timeout 150 python3 "$AFTER/bench/layerwise_gpu.py" \
    --tokens 4096,8192 2>&1 | grep -v "^kvstash info" | tee -a "$OUT/summary.txt"
log "done"
