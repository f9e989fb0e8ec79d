#!/usr/bin/env bash
# bench/gpu_session.sh - everything GPU-side in one device call: the GPU
# tests and the benchmark table (bench/gpu_bench.sh untuned: tests, raw read
# paths, benchmark, baselines), then the end-to-end proof with transformers
# models (bench/e2e_gpu.sh full), then the codec ratios on the KV of a
# model trained on the spot (bench/codec_ratios.sh, in the time left).
# The device tool brings back at most 8
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

# Codec ratios on a trained model's KV (issue 13; bench/codec_ratios.sh):
# last, in what is left of SESSION_S (the device call's 600 s less the
# transfers); training gets all but 90 s of it, at most CODEC_TRAIN_S.
left=$(( ${SESSION_S:-570} - ($(date +%s) - start) ))
if [ "$left" -ge 150 ]; then
    train_s=$(( left - 90 < ${CODEC_TRAIN_S:-150} ? left - 90 : ${CODEC_TRAIN_S:-150} ))
    OUT=$WORK/codec TRAIN_S=$train_s timeout "$(( left - 10 ))" "$ROOT/bench/codec_ratios.sh" \
        >"$WORK/codec.log" 2>&1
    echo "codec_ratios.sh exit $? (training $train_s s) after $(( $(date +%s) - start )) s" \
        | tee -a "$WORK/when.txt"
    cp "$WORK/codec/codec_ratio/codec_ratios.md" "$FINAL/codec-ratios.md" 2>/dev/null
    cat "$WORK/codec/codec_ratio/codec_ratios.md" 2>/dev/null
else
    echo "codec_ratios.sh skipped: $left s left of SESSION_S" | tee -a "$WORK/when.txt"
fi

tar czf "$FINAL/results.tar.gz" -C "$WORK" .
cp "$WORK/when.txt" "$FINAL/"
