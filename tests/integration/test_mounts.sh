#!/usr/bin/env bash
# Several store paths (weka_path "a,b"): chunks spread over both by key;
# another process listing them in the other order, or under another name
# (a symlink, as another host might mount them), finds every chunk; adding
# a third path moves only the third path's share; ls, du, verify, gc and
# doctor cover every path.
. "$(dirname "$0")/lib.sh"
export LMCACHE_LOCAL_CPU=false
export KVSTASH_MIN_FREE_SPACE=0
A="$WORK/mnt-a"; B="$WORK/mnt-b"; C="$WORK/mnt-c"
mkdir -p "$A" "$B" "$C"
# Fixed store ids (as kvstash writes them on first use, normally at random),
# so which path each key maps to is the same in every run: the spread
# checked below is then a fact about these ids and keys, not a draw that
# fails once in a thousand runs.  kvs__store_pick's distribution over many
# keys and ids is tested in test_collector.
for d in "$A:5a1e7c0ffee01234" "$B:b0a7d15c0de5678a" "$C:c3d2e1f0a9b8c7d6"; do
    mkdir -p "${d%%:*}/.kvstash" && echo "${d#*:}" >"${d%%:*}/.kvstash/store-id"
done
ln -s "$A" "$WORK/other-name-for-a"
chunks_in() { find "$1" -type f -regextype posix-extended -regex '.*/[0-9a-f]{64}' | wc -l; }

LMCACHE_WEKA_PATH="$A,$B" expect_exit 0 "$KVSTASH" store --seed 1,2,3,4 --tokens 4096 $GEO --quiet &&
    ok "stored 64 chunks on a,b"
na=$(chunks_in "$A"); nb=$(chunks_in "$B")
echo "chunks: $na on a, $nb on b"
[ $((na + nb)) -eq 64 ] && [ "$na" -ge 16 ] && [ "$nb" -ge 16 ] && ok "spread over both paths" ||
    fail "spread: $na + $nb"

for list in "$B,$A" "$WORK/other-name-for-a,$B" "$B,$WORK/other-name-for-a"; do
    LMCACHE_WEKA_PATH="$list" expect_exit 0 "$KVSTASH" retrieve --seed 1,2,3,4 --tokens 4096 $GEO --verify --quiet
    grep -q "total: 4 prompts, hit 16384 tokens" "$WORK/out" && grep -q "verify: ok" "$WORK/out" &&
        ok "another process with weka_path=${list//$WORK\//} finds every chunk" ||
        fail "$list: $(cat "$WORK/out")"
done

# doctor, ls, du and verify see every path
LMCACHE_WEKA_PATH="$A,$B" expect_exit 0 "$KVSTASH" doctor
[ "$(grep -c '  store id: [0-9a-f]\{16\}' "$WORK/out")" -eq 2 ] && grep -q "store path 2: $B" "$WORK/out" &&
    ok "doctor reports each path with its store id" || fail "doctor: $(cat "$WORK/out")"
LMCACHE_WEKA_PATH="$A,$B" expect_exit 0 "$KVSTASH" ls
grep -qE "^it_model-[0-9a-f]{16} +64 " "$WORK/out" && ok "ls counts the chunks of both paths" || fail "ls: $(cat "$WORK/out")"
LMCACHE_WEKA_PATH="$B,$A" expect_exit 0 "$KVSTASH" du --measure
grep -q "^path $B: .* in $nb chunks" "$WORK/out" && grep -q "^path $A: .* in $na chunks" "$WORK/out" &&
    grep -q "in 64 chunks" "$WORK/out" && ok "du per path" || fail "du: $(cat "$WORK/out")"
LMCACHE_WEKA_PATH="$B,$A" expect_exit 0 "$KVSTASH" verify
grep -q "64 files.*64 ok.*0 misplaced" "$WORK/out" && ok "verify covers both paths" || fail "verify: $(cat "$WORK/out")"

# A third path takes its share; nothing moves between a and b.
LMCACHE_WEKA_PATH="$A,$B,$C" expect_exit 0 "$KVSTASH" store --seed 99 --tokens 256 $GEO --quiet
LMCACHE_WEKA_PATH="$A,$B,$C" expect_exit 0 "$KVSTASH" verify
moved=$(grep -c "misplaced (its key maps to store path $C)" "$WORK/out")
between=$(grep "^BAD .*misplaced" "$WORK/out" | grep -vc "maps to store path $C")
echo "with a third path: $moved of 64 chunks now map to it, $between moved between a and b"
[ "$between" -eq 0 ] && [ "$moved" -ge 10 ] && [ "$moved" -le 35 ] &&
    ok "adding a path moves only its own share ($moved of 64)" || fail "moved $moved, between $between"

# gc over both paths
LMCACHE_WEKA_PATH="$B,$A" expect_exit 0 "$KVSTASH" gc --to-size 20MB
left=$(( $(chunks_in "$A") + $(chunks_in "$B") ))
[ "$left" -le 20 ] && [ "$left" -ge 15 ] && ok "gc evicted across both paths ($left chunks left)" ||
    fail "gc left $left chunks: $(cat "$WORK/out")"

# a folder listed twice (or a copy of a path) is refused
cp -a "$A" "$WORK/copy-of-a"
LMCACHE_WEKA_PATH="$A,$WORK/copy-of-a" expect_exit 2 "$KVSTASH" store --seed 5 --tokens 256 $GEO --quiet &&
    grep -q "same store id" "$WORK/err" && ok "a copied path is refused" || fail "copy: $(cat "$WORK/err")"
finish
