#!/usr/bin/env bash
# The operator's commands on a store that instances are using: ls, du,
# verify (with a progress bar on a terminal), gc by size and age with
# dry run, rm of a namespace.  Readers running all along never see an error
# or a wrong byte.
. "$(dirname "$0")/lib.sh"
export LMCACHE_LOCAL_CPU=false
export KVSTASH_MIN_FREE_SPACE=0
GEO_B="--layers 1 --kv-heads 8 --head-dim 64 --model it/other"
py() { /usr/bin/python3 -c "$@"; }
chunk_files() { find "$LMCACHE_WEKA_PATH" -type f -regextype posix-extended -regex '.*/[0-9a-f]{64}' "$@"; }

# Two namespaces on the store.
"$KVSTASH" store --seed 1,2,3,4 --tokens 2048 $GEO --quiet >/dev/null 2>&1 || fail "store A"
"$KVSTASH" store --seed 5,6 --tokens 1024 $GEO_B --quiet >/dev/null 2>&1 || fail "store B"

# Instances keep working while the operator acts: a writer and a reader that
# checks every byte it loads.
( for round in $(seq 1 40); do
      "$KVSTASH" store --seed $((100 + round)) --tokens 1024 $GEO --quiet >/dev/null 2>>"$WORK/writer.err" ||
          echo "writer failed in round $round" >>"$WORK/problems"
  done ) &
writer=$!
( for round in $(seq 1 40); do
      "$KVSTASH" retrieve --seed $((round % 4 + 1)) --tokens 2048 $GEO --verify --quiet \
          >>"$WORK/reader.out" 2>>"$WORK/reader.err" || echo "reader failed in round $round" >>"$WORK/problems"
  done ) &
reader=$!

# ls: both namespaces, counts and sizes that match the files, access times.
expect_exit 0 "$KVSTASH" ls --json && ok "ls --json"
cp "$WORK/out" "$WORK/ls.json"
py 'import json,sys
d = {n["id"]: n for n in json.load(open(sys.argv[1]))}
models = sorted(n["identity"]["model"] for n in d.values())
assert "it/model" in models and "it/other" in models, models
for n in d.values():
    assert n["chunks"] > 0 and n["bytes"] > 0 and n["oldest_access_ns"] > 0, n
    assert n["oldest_access_ns"] <= n["newest_access_ns"], n
other = [n for n in d.values() if n["identity"]["model"] == "it/other"][0]
assert other["chunks"] == 8 and other["identity"]["num_layers"] == 1, other
print(other["id"])' "$WORK/ls.json" >"$WORK/ns_b" && ok "ls shows both namespaces with counts, sizes, access times and geometry" ||
    fail "ls: $(cat "$WORK/ls.json")"
NS_B=$(cat "$WORK/ns_b")
expect_exit 0 "$KVSTASH" ls && grep -q "it/other bf16 mha 1x8x64 tp1/0 chunk 256" "$WORK/out" &&
    grep -q "namespaces, " "$WORK/out" && ok "ls table" || fail "ls table: $(cat "$WORK/out")"

# du: the measured total is the sum of the files.
expect_exit 0 "$KVSTASH" du --measure --json && cp "$WORK/out" "$WORK/du.json"
files_now=$(chunk_files -printf '%s\n' | awk '{s += $1} END {print s + 0}')
used=$(py 'import json,sys; print(json.load(open(sys.argv[1]))["used_bytes"])' "$WORK/du.json")
echo "du --measure: $used bytes; files on disk now: $files_now bytes (a writer is running)"
[ "$used" -gt 0 ] && [ "$used" -le "$((files_now + 20000000))" ] && [ "$used" -ge "$((files_now - 20000000))" ] &&
    ok "du measures what is on disk" || fail "du says $used, disk has $files_now"
expect_exit 0 "$KVSTASH" du && grep -q "^path $LMCACHE_WEKA_PATH: " "$WORK/out" && grep -q "collector lease" "$WORK/out" &&
    ok "du per path" || fail "du: $(cat "$WORK/out")"

# verify: clean, then a corrupted and a truncated file are found, reported
# with path and reason, and removed on request.
expect_exit 0 "$KVSTASH" verify && grep -q "0 bad, 0 unreadable" "$WORK/out" && ok "verify: all good" ||
    fail "verify: $(cat "$WORK/out")"
wait $writer
victims=($(chunk_files -path "*$NS_B*" | head -2))
printf '\x42' | dd of="${victims[0]}" bs=1 seek=6000 conv=notrunc status=none
truncate -s 5000 "${victims[1]}"
expect_exit 1 "$KVSTASH" verify --namespace "$NS_B" && ok "verify exits 1 on bad files"
grep -q "BAD ${victims[0]}: checksum mismatch" "$WORK/out" && grep -q "BAD ${victims[1]}: truncated" "$WORK/out" &&
    grep -q "2 bad" "$WORK/out" && ok "bad files reported with path and reason" || fail "verify report: $(cat "$WORK/out")"
# a terminal gets a progress bar; a pipe only the summary
script -qec "\"$KVSTASH\" verify --namespace $NS_B" /dev/null >"$WORK/tty" 2>&1
grep -q "verify \[" "$WORK/tty" && ok "progress bar on a terminal" || fail "no progress bar: $(cat -v "$WORK/tty" | head -3)"
grep -q "verify \[" "$WORK/out" && fail "progress bar in a pipe"
expect_exit 1 "$KVSTASH" verify --namespace "$NS_B" --remove-bad && grep -q "2 removed" "$WORK/out" &&
    ok "verify --remove-bad" || fail "remove-bad: $(cat "$WORK/out")"
[ -e "${victims[0]}" ] || [ -e "${victims[1]}" ] && fail "bad files still there"
expect_exit 0 "$KVSTASH" verify --namespace "$NS_B" && ok "clean after --remove-bad"

# gc: a dry run removes nothing and lists what would go, oldest first.
before=$(chunk_files | wc -l)
old=($(chunk_files -path "*$NS_B*" | head -3))
touch -a -m -d '3 days ago' "${old[@]}"
expect_exit 0 "$KVSTASH" gc --older-than 2d --dry-run
[ "$(chunk_files | wc -l)" -eq "$before" ] && ok "gc --dry-run removes nothing" || fail "dry run removed files"
listed=$(grep -c "last access" "$WORK/out")
[ "$listed" -eq 3 ] && grep -q "would remove 3 chunks" "$WORK/out" && ok "gc --dry-run shows the 3 chunks that would go" ||
    fail "dry run listing: $(cat "$WORK/out")"
expect_exit 0 "$KVSTASH" gc --older-than 2d && grep -q "removed 3 chunks" "$WORK/out" && ok "gc --older-than" ||
    fail "gc age: $(cat "$WORK/out")"
for f in "${old[@]}"; do [ -e "$f" ] && fail "$f survived gc --older-than"; done
# While the reader keeps reading its chunks, gc keeps a candidate that was
# read since the walk (it is in use); the rest goes, oldest first.
expect_exit 0 "$KVSTASH" gc --to-size 10MB && grep -qE "removed [1-9][0-9]* chunks" "$WORK/out" &&
    ok "gc --to-size while a reader runs: $(grep -o 'removed [0-9]* chunks' "$WORK/out")" ||
    fail "gc size: $(cat "$WORK/out")"
grep -q "purpose=kvstash gc" "$LMCACHE_WEKA_PATH/.kvstash/collector.log" && ok "gc ran under the collector lease (logged)" ||
    fail "no gc in the collector log"

# rm: a namespace vanishes while a writer uses it; the writer goes on.  A
# chunk being written at that moment is not stored (exit 3), or is stored
# into the folder being removed and goes with it, nothing worse.  The
# writer's first store that starts after rm has returned must stay.
( round=0
  while [ ! -e "$WORK/rm.done" ] && [ $round -lt 200 ]; do
      round=$((round + 1))
      "$KVSTASH" store --seed $((300 + round)) --tokens 1024 $GEO_B --quiet >/dev/null 2>>"$WORK/writer2.err"
      rc=$?
      [ $rc -eq 0 ] || [ $rc -eq 3 ] || echo "writer B failed in round $round: exit $rc" >>"$WORK/problems"
  done
  "$KVSTASH" store --seed 299 --tokens 1024 $GEO_B --quiet >/dev/null 2>>"$WORK/writer2.err" ||
      echo "writer B failed after rm: exit $?" >>"$WORK/problems" ) &
writer2=$!
sleep 0.3
expect_exit 0 "$KVSTASH" rm --namespace "$NS_B" && grep -q "removed namespace $NS_B" "$WORK/out" && ok "rm" ||
    fail "rm: $(cat "$WORK/out")"
touch "$WORK/rm.done"
wait $writer2
expect_exit 0 "$KVSTASH" retrieve --seed 299 --tokens 1024 $GEO_B --verify --quiet &&
    grep -q "hit 1024 tokens" "$WORK/out" && ok "the namespace's writer went on storing after rm" ||
    fail "after rm: $(cat "$WORK/out")"
expect_exit 3 "$KVSTASH" rm --namespace "nosuch-0123456789abcdef" && ok "rm of a missing namespace exits 3"
expect_exit 2 "$KVSTASH" rm --namespace "../etc" && ok "rm refuses a name that is not a namespace id"
expect_exit 2 "$KVSTASH" gc --to-size lots && ok "gc rejects a bad size"

wait $reader
expect_exit 0 "$KVSTASH" gc --to-size 10MB
left=$(chunk_files -printf '%s\n' | awk '{s += $1} END {print s + 0}')
[ "$left" -le 10000000 ] && ok "gc --to-size: the store holds $left bytes <= 10 MB" ||
    fail "store holds $left bytes: $(cat "$WORK/out")"
[ -s "$WORK/problems" ] && fail "instances had problems: $(cat "$WORK/problems")"
grep -q "verify: FAILED" "$WORK/reader.out" && fail "a reader saw wrong bytes"
hits=$(grep -c "verify: ok" "$WORK/reader.out")
[ "$hits" -eq 40 ] && ok "40 verified reads ran during ls, du, verify, gc and rm without an error" ||
    fail "reader: $hits of 40 ok"
finish
