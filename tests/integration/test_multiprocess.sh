#!/usr/bin/env bash
# Four processes store and retrieve overlapping prompts in one folder at
# once; every hit is verified byte by byte, and none may be wrong.
. "$(dirname "$0")/lib.sh"

worker() {
    local id=$1 rc=0
    for round in 1 2 3 4 5 6; do
        # Prompts share prefixes across workers (seed 7's first 1024 tokens).
        local seed=$(( (id + round) % 3 ))
        "$KVSTASH" store --seed $seed --tokens 2048 --shared-prefix 7:1024 $GEO --quiet >/dev/null 2>>"$WORK/log.$id" || rc=1
        "$KVSTASH" retrieve --seed $(( (id + round + 1) % 3 )) --tokens 2048 --shared-prefix 7:1024 $GEO --verify --quiet >>"$WORK/out.$id" 2>>"$WORK/log.$id"
        [ $? -eq 0 ] || rc=1
    done
    return $rc
}

pids=()
for id in 1 2 3 4; do worker $id & pids+=($!); done
for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || fail "worker $((i + 1)) failed: $(tail -5 "$WORK/log.$((i + 1))")"
done
grep -h "verify: FAILED" "$WORK"/out.* && fail "a worker saw wrong bytes"
hits=$(grep -ho "hit [0-9]*" "$WORK"/out.* | awk '{s += $2} END {print s + 0}')
[ "$hits" -gt 0 ] && ok "4 processes, $hits tokens hit, all verified" || fail "no hits at all"
# After everything settled, every stored prompt is whole.
for seed in 0 1 2; do
    expect_exit 0 "$KVSTASH" retrieve --seed $seed --tokens 2048 --shared-prefix 7:1024 $GEO --verify --quiet
    grep -q "hit 2048 tokens" "$WORK/out" || fail "seed $seed incomplete: $(cat "$WORK/out")"
done
left=$(find "$LMCACHE_WEKA_PATH" -name '*.tmp' | wc -l)
[ "$left" -eq 0 ] && ok "no temporary files left" || fail "$left temporary files left"
finish
