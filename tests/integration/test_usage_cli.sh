#!/usr/bin/env bash
# The store's usage as short-lived processes (the CLI) see it and keep it:
# `du` and `doctor` never show a measurement the store has outgrown (on main
# they said "0 B in 0 chunks" after gigabytes were stored), `du --measure`
# is what later calls show, and a `kvstash store` on a filesystem below
# min_free_space evicts before it exits, or says why it cannot.
. "$(dirname "$0")/lib.sh"
export LMCACHE_LOCAL_CPU=false
export KVSTASH_MIN_FREE_SPACE=0
# A filesystem of its own where we can (root), so no other tenant's writes
# or deletions move the figures this test reads.
if [ "$(id -u)" -eq 0 ] && mount -t tmpfs -o size=256m,mode=0755 tmpfs "$LMCACHE_WEKA_PATH"; then
    trap 'umount -l "$WORK/store" "$WORK/small" 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
fi

# 1. A measurement of the empty store (gc records one), then three writers
#    of 16 MiB each that exit before any collector measures again.
expect_exit 0 "$KVSTASH" gc
for s in 1 2 3; do
    expect_exit 0 "$KVSTASH" store --seed $s --tokens 4096 $GEO --quiet
done
# Within what a record may lag (an eighth, at least 16 MiB: an engine's
# collector may measure between two of the writers, under load): never the
# empty store of before.
expect_exit 0 "$KVSTASH" doctor
gb=$(grep -m1 'store usage' "$WORK/out" | grep -oE '(about )?[0-9]+\.[0-9]+ GB' | head -1 | grep -oE '[0-9]+\.[0-9]+')
if awk -v g="${gb:-0}" 'BEGIN { exit !(g >= 0.032) }'; then
    ok "doctor: $(grep 'store usage' "$WORK/out" | head -1 | cut -c1-100)"
else
    fail "doctor: $(grep 'store usage' "$WORK/out")"
fi

expect_exit 0 "$KVSTASH" du --json
used=$(grep -o '"used_bytes": [0-9]*' "$WORK/out" | head -1 | grep -o '[0-9]*$')
chunks=$(grep -o '"chunks": [0-9]*' "$WORK/out" | head -1 | grep -o '[0-9]*$')
if [ "${chunks:-0}" -ge 32 ] && [ "${used:-0}" -gt 33554432 ]; then
    ok "du after three short-lived writers: $used bytes in $chunks chunks"
else
    fail "du shows $used bytes in $chunks chunks for 48 chunks of 1 MiB"
    sed 's/^/  | /' "$WORK/out" >&2
fi

# 2. du --measure is recorded: what a later call (and every engine) reads.
expect_exit 0 "$KVSTASH" store --seed 4 --tokens 4096 $GEO --quiet
expect_exit 0 "$KVSTASH" du --measure --json
rec="$LMCACHE_WEKA_PATH/.kvstash/usage.json"
if grep -q '"chunks": 64' "$rec"; then
    ok "du --measure recorded 64 chunks in usage.json"
else
    fail "usage.json after du --measure: $(cat "$rec")"
fi

# 3. A short-lived writer on a filesystem below the floor (root: a tmpfs).
if [ "$(id -u)" -ne 0 ]; then
    echo "part 3 skipped: mounting a tmpfs needs root"
    finish
fi
small="$WORK/small"
mkdir -p "$small"
mount -t tmpfs -o size=64m,mode=0755 tmpfs "$small" || { fail "mount tmpfs"; finish; }
trap 'umount -l "$WORK/store" "$small" 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
export LMCACHE_WEKA_PATH="$small"
for s in 11 12; do
    expect_exit 0 "$KVSTASH" store --seed $s --tokens 4096 $GEO --quiet
done
export KVSTASH_MIN_FREE_SPACE=0.016      # 16 MB of the 64 MB
head -c $((20 * 1024 * 1024)) /dev/zero >"$small/other-tenant"
free_kb() { df -k --output=avail "$small" | tail -1 | tr -d ' '; }
before=$(free_kb)
"$KVSTASH" store --seed 13 --tokens 256 $GEO --quiet >"$WORK/out" 2>"$WORK/err"
after=$(free_kb)
if [ "$before" -lt 15625 ] && [ "$after" -ge 15625 ]; then
    ok "a short-lived store below the floor evicted before exiting: ${before} KiB free -> ${after} KiB"
else
    fail "free space ${before} KiB -> ${after} KiB (floor 15625 KiB)"
    sed 's/^/  | /' "$WORK/err" >&2
fi
grep -q 'collector' "$WORK/err" && ok "it said so: $(grep collector "$WORK/err" | tail -1 | cut -c1-160)" ||
    fail "nothing said about the collection: $(cat "$WORK/err")"
# Nothing left to evict (only the tenants' files): it says why it cannot.
"$KVSTASH" gc --to-size 0 >/dev/null 2>&1
head -c $((30 * 1024 * 1024)) /dev/zero >"$small/other-tenant-2"
"$KVSTASH" store --seed 14 --tokens 256 $GEO --quiet >"$WORK/out" 2>"$WORK/err"
if grep -q 'closing while.*nothing collected.*min_free_space' "$WORK/err"; then
    ok "with nothing to evict it says why: $(grep -m1 'closing while' "$WORK/err" | cut -c1-200)"
else
    fail "with nothing to evict: $(cat "$WORK/err")"
fi
[ -f "$small/other-tenant" ] || fail "the tenant's file was removed"
umount -l "$small"
finish
