#!/usr/bin/env bash
# bench/gpu_session.sh - everything GPU-side in one device call: the GPU
# tests and the benchmark table (bench/gpu_bench.sh untuned: tests, raw read
# paths, benchmark, baselines), then the end-to-end proof with transformers
# models (bench/e2e_gpu.sh full).  The device tool brings back at most 8
# files, so the logs of both go into $OUT/results.tar.gz, with the two
# summaries beside it as plain text.
#
#   device run: bench/gpu_session.sh      (carry .deps: the Debian -dev
#               packages the GPU machine lacks, from `apt-get download`)
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
FINAL=${OUT:-/tmp/kvs-gpu-session}
WORK=/tmp/kvs-gpu-session-work
rm -rf "$WORK"; mkdir -p "$WORK/gpu" "$WORK/e2e" "$FINAL"
date -u +%FT%TZ | tee "$WORK/when.txt"
start=$(date +%s)

OUT=$WORK/gpu timeout "${GPU_BENCH_S:-300}" "$ROOT/bench/gpu_bench.sh" "${GPU_BENCH_MODE:-untuned}" \
    >"$WORK/gpu.log" 2>&1
echo "gpu_bench.sh exit $? after $(( $(date +%s) - start )) s" | tee -a "$WORK/when.txt"
grep -E "^(==|PASS|ok|not ok)|FAIL|passed|failed" "$WORK/gpu.log" | head -60
cp "$WORK/gpu/summary.txt" "$FINAL/gpu-summary.txt" 2>/dev/null

KVSTASH_LIBRARY=${KVS_BUILD:-/tmp/kvs-build}/libkvstash.so OUT=$WORK/e2e timeout "${E2E_S:-290}" "$ROOT/bench/e2e_gpu.sh" "${E2E_MODE:-full}" \
    >"$WORK/e2e.log" 2>&1
echo "e2e_gpu.sh exit $? after $(( $(date +%s) - start )) s" | tee -a "$WORK/when.txt"
cp "$WORK/e2e/summary.txt" "$FINAL/e2e-summary.txt" 2>/dev/null
tail -40 "$WORK/e2e/summary.txt" 2>/dev/null

tar czf "$FINAL/results.tar.gz" -C "$WORK" .
cp "$WORK/when.txt" "$FINAL/"
