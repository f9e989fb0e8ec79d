#!/usr/bin/env bash
# The CLI contract: store/retrieve with shared prefixes, --verify, exit
# statuses, and a corrupted file caught by --verify's guard (the library).
. "$(dirname "$0")/lib.sh"

expect_exit 0 "$KVSTASH" store --seed 1 --tokens 2048 $GEO && ok "store"
grep -q "stored 2048 tokens" "$WORK/out" || fail "store output: $(cat "$WORK/out")"

expect_exit 0 "$KVSTASH" retrieve --seed 1 --tokens 2048 $GEO --verify && ok "retrieve all"
grep -q "hit 2048 tokens of 2048" "$WORK/out" || fail "retrieve output: $(cat "$WORK/out")"
grep -q "verify: ok" "$WORK/out" || fail "no verify line"

# A prompt sharing the first 1000 tokens hits the 3 whole chunks inside them.
expect_exit 0 "$KVSTASH" retrieve --seed 2 --tokens 2048 --shared-prefix 1:1000 $GEO --verify
grep -q "hit 768 tokens" "$WORK/out" && ok "shared prefix hit" || fail "shared prefix: $(cat "$WORK/out")"

# Another geometry is another namespace: no hit.
expect_exit 0 "$KVSTASH" retrieve --seed 1 --tokens 2048 --layers 3 --kv-heads 8 --head-dim 64 --model it/model --verify
grep -q "hit 0 tokens" "$WORK/out" && ok "namespace isolation" || fail "isolation: $(cat "$WORK/out")"
expect_exit 0 "$KVSTASH" retrieve --seed 1 --tokens 2048 $GEO --salt tenant-b --verify
grep -q "hit 0 tokens" "$WORK/out" && ok "salt isolation" || fail "salt: $(cat "$WORK/out")"

# Flip one payload byte of every chunk file: the retrieve misses, never
# serves the bad bytes, and --verify still passes on what was loaded.
for f in $(find "$LMCACHE_WEKA_PATH" -type f -regextype posix-extended -regex '.*/[0-9a-f]{64}'); do
    printf '\x42' | dd of="$f" bs=1 seek=5000 conv=notrunc status=none
done
expect_exit 0 "$KVSTASH" retrieve --seed 1 --tokens 2048 $GEO --verify
grep -q "hit 0 tokens" "$WORK/out" && ok "corrupt files are misses" || fail "corrupt: $(cat "$WORK/out")"
grep -qE '"miss_checksum": [1-9]' "$WORK/err" || fail "checksum miss not counted: $(cat "$WORK/err")"

# Usage and configuration errors exit 2; I/O errors 3.
expect_exit 2 "$KVSTASH" store --tokens 10 $GEO && ok "missing --seed"
expect_exit 2 "$KVSTASH" retrieve --seed x --tokens 10 && ok "bad --seed"
expect_exit 2 "$KVSTASH" store --seed 1 --tokens 10 --dtype int4 && ok "bad dtype"
expect_exit 2 "$KVSTASH" frobnicate && ok "unknown command"
LMCACHE_CHUNK_SIZE=abc expect_exit 2 "$KVSTASH" store --seed 1 --tokens 10 $GEO && ok "bad config"
grep -q "LMCACHE_CHUNK_SIZE" "$WORK/err" || fail "bad config message: $(cat "$WORK/err")"
LMCACHE_WEKA_PATH="$WORK/nope" expect_exit 2 "$KVSTASH" store --seed 1 --tokens 10 $GEO && ok "missing weka_path"
grep -q "mkdir" "$WORK/err" || fail "missing path message: $(cat "$WORK/err")"
expect_exit 0 "$KVSTASH" doctor && ok "doctor"
grep -q "O_DIRECT" "$WORK/out" || fail "doctor output: $(cat "$WORK/out")"
finish
