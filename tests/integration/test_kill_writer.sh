#!/usr/bin/env bash
# A writer killed with SIGKILL in the middle of a store leaves nothing a
# reader would serve: every hit afterwards verifies.
. "$(dirname "$0")/lib.sh"

BIG="--layers 8 --kv-heads 8 --head-dim 128 --model it/big"   # 8 MiB chunks
for round in 1 2 3 4 5; do
    "$KVSTASH" store --seed $round --tokens 16384 $BIG --quiet >/dev/null 2>&1 &
    pid=$!
    sleep 0.$((RANDOM % 4 + 1))
    kill -9 $pid 2>/dev/null
    wait $pid 2>/dev/null
    expect_exit 0 "$KVSTASH" retrieve --seed $round --tokens 16384 $BIG --verify --quiet ||
        fail "round $round: a reader failed after the kill"
    grep -q "verify: ok" "$WORK/out" || fail "round $round: $(cat "$WORK/out")"
    echo "round $round: $(head -1 "$WORK/out")"
done
tmps=$(find "$LMCACHE_WEKA_PATH" -name '*.tmp' | wc -l)
echo "temporary files left by killed writers: $tmps (removed by the collector after tmp_grace_s)"
ok "killed writers never produced a served partial file"
finish
