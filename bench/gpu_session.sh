#!/usr/bin/env bash
# bench/gpu_session.sh - everything GPU-side in one device call, ending in
# issue 13's goals, each beside the ceiling of the same call:
#   1. bench/gpu_bench.sh codec: build, CPU and GPU tests (the codec's
#      encode/decode GB/s among them), the raw read paths, kvstash bench
#      with the codec off and on;
#   2. bench/e2e_gpu.sh full: pytest with torch, then the end-to-end proof
#      with transformers models (the 32k-token hit, its retrieve and its
#      answers), the hit again in chunk order (E2E_SWEEP), without the
#      stand-in layerwise benchmark (E2E_LAYERWISE=0);
#   3. bench/codec_ratios.sh: the ratios on the KV of a model trained on the
#      spot, in the time left;
#   4. bench/codec_goals.py: the goals table, $OUT/goals.md.
# GPU_BENCH_MODE=untuned (or shm, all) runs gpu_bench.sh's broader table in
# step 1 instead; the call then seldom has time left for step 3.
# The device tool brings back at most 8 files, so the logs go into
# $OUT/results.tar.gz, with the summaries and the goals beside it.
#
#   device run: bench/gpu_session.sh      (carry .deps: the Debian -dev
#               packages the GPU machine lacks, from `apt-get download`,
#               and the text and tools step 3 needs)
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
FINAL=${OUT:-/tmp/kvs-gpu-session}
WORK=/tmp/kvs-gpu-session-work
rm -rf "$WORK"; mkdir -p "$WORK/gpu" "$WORK/e2e" "$FINAL"
date -u +%FT%TZ | tee "$WORK/when.txt"
start=$(date +%s)

OUT=$WORK/gpu timeout "${GPU_BENCH_S:-240}" "$ROOT/bench/gpu_bench.sh" "${GPU_BENCH_MODE:-codec}" \
    >"$WORK/gpu.log" 2>&1
echo "gpu_bench.sh exit $? after $(( $(date +%s) - start )) s" | tee -a "$WORK/when.txt"
grep -E "^(==|PASS|ok|not ok)|FAIL|passed|failed" "$WORK/gpu.log" | head -60
cp "$WORK/gpu/summary.txt" "$FINAL/gpu-summary.txt" 2>/dev/null

export E2E_SWEEP=${E2E_SWEEP-'[{"retrieve_order": "chunk"}]'} E2E_LAYERWISE=${E2E_LAYERWISE:-0}
KVSTASH_LIBRARY=${KVS_BUILD:-/tmp/kvs-build}/libkvstash.so OUT=$WORK/e2e timeout "${E2E_S:-220}" "$ROOT/bench/e2e_gpu.sh" "${E2E_MODE:-full}" \
    >"$WORK/e2e.log" 2>&1
echo "e2e_gpu.sh exit $? after $(( $(date +%s) - start )) s" | tee -a "$WORK/when.txt"
cp "$WORK/e2e/summary.txt" "$FINAL/e2e-summary.txt" 2>/dev/null
tail -40 "$WORK/e2e/summary.txt" 2>/dev/null

# Codec ratios on a trained model's KV (issue 13; bench/codec_ratios.sh):
# last, in what is left of SESSION_S (the device call's 600 s less the
# transfers); training gets all but 90 s of it, at most CODEC_TRAIN_S.
left=$(( ${SESSION_S:-570} - ($(date +%s) - start) ))
if [ "$left" -ge 150 ]; then
    train_s=$(( left - 90 < ${CODEC_TRAIN_S:-120} ? left - 90 : ${CODEC_TRAIN_S:-120} ))
    OUT=$WORK/codec TRAIN_S=$train_s timeout "$(( left - 10 ))" "$ROOT/bench/codec_ratios.sh" \
        >"$WORK/codec.log" 2>&1
    echo "codec_ratios.sh exit $? (training $train_s s) after $(( $(date +%s) - start )) s" \
        | tee -a "$WORK/when.txt"
    cp "$WORK/codec/codec_ratio/codec_ratios.md" "$FINAL/codec-ratios.md" 2>/dev/null
    cat "$WORK/codec/codec_ratio/codec_ratios.md" 2>/dev/null
else
    echo "codec_ratios.sh skipped: $left s left of SESSION_S" | tee -a "$WORK/when.txt"
fi

/usr/bin/env python3 "$ROOT/bench/codec_goals.py" --gpu "$WORK/gpu" --e2e "$WORK/e2e" \
    --ratios "$WORK/codec/codec_ratio" --out "$FINAL/goals.md"
echo "codec_goals.py exit $? after $(( $(date +%s) - start )) s" | tee -a "$WORK/when.txt"
tar czf "$FINAL/results.tar.gz" -C "$WORK" .
cp "$WORK/when.txt" "$FINAL/"
