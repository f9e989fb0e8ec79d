#!/usr/bin/env bash
# Compressed chunks (codec: on, docs/codec.md) through the CLI on real files:
# KV-like content stored compressed, read back byte for byte by a reader with
# codec off; ls, du and verify show stored and logical bytes; a damaged frame
# is found by verify and is a miss for a reader, never wrong bytes.
. "$(dirname "$0")/lib.sh"
export LMCACHE_LOCAL_CPU=false
export KVSTASH_MIN_FREE_SPACE=0
py() { /usr/bin/python3 -c "$@"; }
# 2 layers x 2 x 8 x 64 x bf16 x 256 tokens: 1 MiB chunks, 16 frames each
KV="$GEO --content kv"

KVSTASH_CODEC=on expect_exit 0 "$KVSTASH" store --seed 1 --tokens 1024 $KV --json &&
    py 'import json, sys
s = json.load(open(sys.argv[1]))["stats"]
assert s["chunks_stored"] == 4 and s["chunks_stored_compressed"] == 4, s
assert s["bytes_written"] == 4 << 20, s
assert s["stored_bytes_written"] < s["bytes_written"] * 0.75, s' "$WORK/out" &&
    ok "store with codec on: 4 chunks compressed" || fail "store: $(cat "$WORK/out")"

KVSTASH_CODEC=off expect_exit 0 "$KVSTASH" retrieve --seed 1 --tokens 1024 $KV --verify --quiet &&
    grep -q "verify: ok" "$WORK/out" && ok "a reader with codec off restores every byte" ||
    fail "retrieve: $(cat "$WORK/out")"

expect_exit 0 "$KVSTASH" ls && grep -q "4 chunks (4 compressed)" "$WORK/out" &&
    grep -qE "ratio 1\.[3-9][0-9]x" "$WORK/out" && ok "ls: stored, logical, ratio" ||
    fail "ls: $(cat "$WORK/out")"
expect_exit 0 "$KVSTASH" ls --json && py 'import json, sys
d = json.load(open(sys.argv[1]))[0]
assert d["logical_bytes"] == 4 << 20 and d["compressed_chunks"] == 4, d
assert d["bytes"] < d["logical_bytes"], d' "$WORK/out" && ok "ls --json" ||
    fail "ls --json: $(cat "$WORK/out")"
stored=$(find "$LMCACHE_WEKA_PATH" -type f -regextype posix-extended -regex '.*/[0-9a-f]{64}' \
         -printf '%s\n' | awk '{s += $1} END {print s}')
expect_exit 0 "$KVSTASH" du --measure --json && py 'import json, sys
d = json.load(open(sys.argv[1]))
assert d["used_bytes"] == int(sys.argv[2]), (d, sys.argv[2])
assert d["logical_bytes"] == 4 << 20 and d["compressed_chunks"] == 4, d' "$WORK/out" "$stored" &&
    ok "du --measure: used is the files ($stored bytes), logical the KV" ||
    fail "du --measure --json: $(cat "$WORK/out")"
# du without --measure: logical bytes when it walked, else a pointer to --measure
expect_exit 0 "$KVSTASH" du && grep -qE "^logical: (4.19 MB of KV in those chunks \(4 compressed\); logical/stored ratio 1\.[3-9][0-9]x|not in the collector's record)" "$WORK/out" &&
    ok "du: logical bytes or where to get them" || fail "du: $(cat "$WORK/out")"

expect_exit 0 "$KVSTASH" verify && grep -q "4 ok, 0 bad" "$WORK/out" && ok "verify: 4 ok" ||
    fail "verify: $(cat "$WORK/out") $(cat "$WORK/err")"

# Damage one byte in the middle of the frame area of the first chunk file.
f=$(find "$LMCACHE_WEKA_PATH" -type f -regextype posix-extended -regex '.*/[0-9a-f]{64}' | sort | head -1)
printf '\x55' | dd of="$f" bs=1 seek=20000 conv=notrunc status=none
expect_exit 1 "$KVSTASH" verify && grep -qE "checksum mismatch \(frame [0-9]+ at stored byte [0-9]+\)" "$WORK/out" &&
    ok "verify finds the damaged frame" || fail "verify after damage: $(cat "$WORK/out")"
# The reader's prefix stops at the damaged chunk; what it loaded verifies.
KVSTASH_CODEC=off expect_exit 0 "$KVSTASH" retrieve --seed 1 --tokens 1024 $KV --verify --json &&
    py 'import json, sys
d = json.load(open(sys.argv[1]))
assert d["verify"]["ok"] is True, d
s = d["stats"]
assert s["miss_checksum"] == 1 and d["total"]["tokens"] < 1024, d' "$WORK/out" &&
    ok "a damaged compressed chunk is a miss, never wrong bytes" ||
    fail "retrieve after damage: $(cat "$WORK/out")"
finish
