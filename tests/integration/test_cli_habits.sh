#!/usr/bin/env bash
# The CLI's habits: --help on every command of the table, the man page made
# from the same table (build/kvstash.1), every listed option accepted,
# --version with the commit and the optional parts, --json that parses on
# doctor/store/retrieve/verify/gc/rm, rm --dry-run, the size and age grammar
# shared with the configuration, and the exit statuses (0 ok, 1 verification
# failed, 2 usage or configuration, 3 I/O or environment).
. "$(dirname "$0")/lib.sh"
export LMCACHE_LOCAL_CPU=false
export KVSTASH_MIN_FREE_SPACE=0
py() { /usr/bin/python3 -c "$@"; }

# ---- the table: help, man page, options ---------------------------------------
expect_exit 0 "$KVSTASH" --help && cp "$WORK/out" "$WORK/usage"
cmds=$(awk '/^commands:/ {on = 1; next} on && /^  [a-z]/ {print $1} on && /^$/ {exit}' "$WORK/usage")
[ "$(echo $cmds | wc -w)" -ge 12 ] && ok "kvstash --help lists $(echo $cmds | wc -w) commands" ||
    fail "commands in --help: $cmds"
expect_exit 0 "$KVSTASH" help --man && cp "$WORK/out" "$WORK/man"
MAN="$(dirname "$KVSTASH")/kvstash.1"
cmp -s "$WORK/man" "$MAN" && ok "build/kvstash.1 is what kvstash help --man prints" ||
    fail "$MAN differs from kvstash help --man (or is missing)"
grep -q '^\.TH KVSTASH 1 ' "$WORK/man" && grep -q '^\.SH EXIT STATUS' "$WORK/man" &&
    ok "man page has a title and an EXIT STATUS section" || fail "man page sections"
if command -v groff >/dev/null; then
    groff -man -Tutf8 -ww -z "$WORK/man" 2>"$WORK/groff.err" && [ ! -s "$WORK/groff.err" ] &&
        ok "groff reads the man page without warnings" || fail "groff: $(cat "$WORK/groff.err")"
fi
for c in $cmds; do
    if ! expect_exit 0 "$KVSTASH" "$c" --help; then continue; fi
    cp "$WORK/out" "$WORK/help-$c"
    head -1 "$WORK/help-$c" | grep -q "^usage: kvstash $c " || fail "$c --help: $(head -1 "$WORK/help-$c")"
    grep -q "^Exit status: 0 ok; 1 verification failed" "$WORK/help-$c" || fail "$c --help has no exit statuses"
    expect_exit 0 "$KVSTASH" help "$c" && cmp -s "$WORK/out" "$WORK/help-$c" || fail "kvstash help $c differs from $c --help"
    grep -q "^\.SS \"$c\"" "$WORK/man" || fail "man page lacks command $c"
    # every option of the help is in the man page and accepted by the parser
    # (a stray argument after it stops the command before it does anything)
    for opt in $(grep -oE '^  --[a-z-]+( [A-Z])?' "$WORK/help-$c" | sed 's/^  //' | tr ' ' '='); do
        name=${opt%%=*}
        [ "$name" = --help ] && continue
        roff=$(printf '%s' "$name" | sed 's/-/\\-/g')
        grep -qF "\\fB$roff\\fR" "$WORK/man" || fail "man page lacks $c $name"
        if [ "$opt" != "${opt%=*}" ]; then set -- "$name" 1 STRAY; else set -- "$name" STRAY; fi
        "$KVSTASH" "$c" "$@" >"$WORK/out" 2>"$WORK/err"; rc=$?
        [ $rc = 2 ] && ! grep -q "unknown option" "$WORK/err" ||
            fail "$c $*: exit $rc, $(cat "$WORK/err")"
    done
    expect_exit 2 "$KVSTASH" "$c" --no-such-option &&
        grep -q "unknown option \"--no-such-option\" (see kvstash $c --help)" "$WORK/err" ||
        fail "$c: unknown option message: $(cat "$WORK/err")"
done
ok "every command: --help, help COMMAND, man page entry, its options accepted"
expect_exit 2 "$KVSTASH" frobnicate && grep -q 'unknown command "frobnicate"' "$WORK/err" &&
    ok "unknown command: exit 2" || fail "unknown command"
expect_exit 2 "$KVSTASH" && ok "no command: exit 2" || true
expect_exit 2 "$KVSTASH" gc --to-size && grep -q "option --to-size needs a value" "$WORK/err" &&
    ok "missing value named" || fail "missing value: $(cat "$WORK/err")"

# ---- --version -------------------------------------------------------------------
expect_exit 0 "$KVSTASH" --version && cp "$WORK/out" "$WORK/version"
grep -qE '^kvstash [0-9]+\.[0-9]+\.[0-9]+$' "$WORK/version" &&
    grep -qE '^commit: ([0-9a-f]{12}(-dirty)?|unknown)$' "$WORK/version" &&
    grep -qE '^cuda: (built in|not built in)' "$WORK/version" &&
    grep -qE '^cufile: (built in|not built in)' "$WORK/version" &&
    ok "--version: $(tr '\n' ' ' <"$WORK/version")" || fail "--version: $(cat "$WORK/version")"
SRC=$(cd "$(dirname "$0")/../.." && pwd)
expect_exit 0 "$KVSTASH" version --json && py 'import json,sys,subprocess
v = json.load(open(sys.argv[1]))
assert set(v) == {"version", "commit", "cuda", "cufile"}, v
assert isinstance(v["cuda"], bool) and v["cufile"] == v["cuda"], v
r = subprocess.run(["git", "-C", sys.argv[2], "rev-parse", "HEAD"], capture_output=True, text=True)
if r.returncode == 0:   # built from this checkout: the commit is one of its
    c = v["commit"].split("-")[0]
    assert subprocess.run(["git", "-C", sys.argv[2], "cat-file", "-e", c + "^{commit}"]).returncode == 0, v
' "$WORK/out" "$SRC" && ok "version --json: the commit is a commit of this checkout" ||
    fail "version --json: $(cat "$WORK/out")"

# ---- --json -----------------------------------------------------------------------
expect_exit 0 "$KVSTASH" doctor --json && py 'import json,sys
def unique(pairs):
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), keys
    return dict(pairs)
d = json.load(open(sys.argv[1]), object_pairs_hook=unique)
assert d["store_path_count"] == "1", d
assert d["healthy"] is True and d["kvstash"], d
assert len(d["store_paths"]) == 1 and d["store_paths"][0]["path"] == sys.argv[2], d
assert "filesystem" in d["store_paths"][0] and "data_path" in d, d' "$WORK/out" "$LMCACHE_WEKA_PATH" &&
    ok "doctor --json" || fail "doctor --json: $(cat "$WORK/out")"
expect_exit 0 "$KVSTASH" store --seed 1,2 --tokens 2048 $GEO --json && py 'import json,sys
d = json.load(open(sys.argv[1]))
assert d["command"] == "store" and d["exit_status"] == 0, d
assert [p["seed"] for p in d["prompts"]] == [1, 2], d
for p in d["prompts"]:
    assert p["chunks_written"] == 8 and p["chunks_failed"] == 0 and p["stored_tokens"] == 2048, p
assert d["total"]["bytes"] == 2 * 2048 * 4096, d
assert d["stats"]["stores"] >= 2 or d["stats"], d' "$WORK/out" && ok "store --json" ||
    fail "store --json: $(cat "$WORK/out")"
expect_exit 0 "$KVSTASH" retrieve --seed 1 --tokens 2048 $GEO --verify --json && py 'import json,sys
d = json.load(open(sys.argv[1]))
assert d["exit_status"] == 0 and d["verify"] == {"checked_tokens": 2048, "ok": True}, d
assert d["prompts"][0]["hit_tokens"] == 2048 and d["prompts"][0]["chunks_differing"] == 0, d' "$WORK/out" &&
    ok "retrieve --verify --json" || fail "retrieve --json: $(cat "$WORK/out")"
expect_exit 0 "$KVSTASH" verify --json && py 'import json,sys
d = json.load(open(sys.argv[1]))
assert d["files"] == 16 and d["ok"] == 16 and d["bad"] == 0 and d["bad_files"] == [], d' "$WORK/out" &&
    ok "verify --json, clean" || fail "verify --json: $(cat "$WORK/out")"
victim=$(find "$LMCACHE_WEKA_PATH" -type f -regextype posix-extended -regex '.*/[0-9a-f]{64}' | head -1)
printf 'XXXX' | dd of="$victim" bs=1 seek=5000 conv=notrunc status=none
expect_exit 1 "$KVSTASH" verify --json --quiet && py 'import json,sys
d = json.load(open(sys.argv[1]))
assert d["exit_status"] == 1 and d["bad"] == 1, d
assert [b["path"] for b in d["bad_files"]] == [sys.argv[2]] and d["bad_files"][0]["reason"], d' \
    "$WORK/out" "$victim" && ok "verify --json names the bad file, exit 1" ||
    fail "verify --json on a bad file: $(cat "$WORK/out")"
rm -f "$victim"
expect_exit 0 "$KVSTASH" gc --to-size 0.01GB --dry-run --json && py 'import json,sys
d = json.load(open(sys.argv[1]))
assert d["dry_run"] is True and d["files_removed"] > 0 and len(d["files"]) == d["files_removed"], d
assert all(f["bytes"] > 0 and f["last_access_ns"] > 0 for f in d["files"]), d' "$WORK/out" &&
    ok "gc --dry-run --json lists what would go" || fail "gc --json: $(cat "$WORK/out")"
[ "$(find "$LMCACHE_WEKA_PATH" -type f -regextype posix-extended -regex '.*/[0-9a-f]{64}' | wc -l)" = 15 ] &&
    ok "gc --dry-run removed nothing" || fail "gc --dry-run removed files"

# ---- rm --dry-run -------------------------------------------------------------------
ns=$(ls "$LMCACHE_WEKA_PATH" | grep '^it' | head -1)
before=$(find "$LMCACHE_WEKA_PATH" -type f | wc -l)
expect_exit 0 "$KVSTASH" rm --namespace "$ns" --dry-run --json && py 'import json,sys
d = json.load(open(sys.argv[1]))
assert d["dry_run"] is True and d["namespace"] == sys.argv[2] and d["chunks"] == 15, d' "$WORK/out" "$ns" &&
    [ "$(find "$LMCACHE_WEKA_PATH" -type f | wc -l)" = "$before" ] &&
    ok "rm --dry-run --json: 15 chunks would go, nothing removed" || fail "rm --dry-run: $(cat "$WORK/out")"
expect_exit 0 "$KVSTASH" rm --namespace "$ns" --dry-run && grep -q "would remove namespace $ns: 15 chunk files" "$WORK/out" &&
    ok "rm --dry-run text" || fail "rm --dry-run text: $(cat "$WORK/out")"
expect_exit 3 "$KVSTASH" rm --namespace it-0000000000000000 --dry-run && grep -q "no store path has namespace" "$WORK/err" &&
    ok "rm --dry-run of an unknown namespace: exit 3, as rm" || fail "rm --dry-run unknown"
expect_exit 3 "$KVSTASH" rm --namespace it-0000000000000000 && ok "rm of an unknown namespace: exit 3" || true
expect_exit 0 "$KVSTASH" rm --namespace "$ns" --json && py 'import json,sys
d = json.load(open(sys.argv[1])); assert d["dry_run"] is False and d["files"] >= 15, d' "$WORK/out" &&
    ok "rm --json" || fail "rm --json: $(cat "$WORK/out")"

# ---- one size and age grammar ---------------------------------------------------------
expect_exit 0 "$KVSTASH" gc --to-size 1.5TiB --older-than 7d --dry-run --json && ok "gc takes 1.5TiB and 7d" || true
expect_exit 2 "$KVSTASH" gc --to-size 5parsec && grep -q '"5parsec" is not a size' "$WORK/err" &&
    grep -q "1.5TiB" "$WORK/err" && ok "gc --to-size: a bad size is named with the grammar" || fail "bad size: $(cat "$WORK/err")"
expect_exit 2 "$KVSTASH" gc --older-than 1.5s && grep -q "not a whole number of seconds" "$WORK/err" &&
    ok "gc --older-than 1.5s rejected" || fail "bad age: $(cat "$WORK/err")"
KVSTASH_MAX_STORE_SIZE=2TiB KVSTASH_COLLECT_INTERVAL_S=5m expect_exit 0 "$KVSTASH" config --json && py 'import json,sys
d = json.load(open(sys.argv[1])); s = json.dumps(d)
assert "2199.023255552" in s and "300" in s, s' "$WORK/out" &&
    ok "the configuration takes 2TiB and 5m" || fail "config sizes: $(cat "$WORK/out")"
KVSTASH_MAX_STORE_SIZE=5parsec expect_exit 2 "$KVSTASH" du && grep -q 'max_store_size: "5parsec" from KVSTASH_MAX_STORE_SIZE is not a size' "$WORK/err" &&
    ok "a bad size in the configuration: exit 2" || fail "config bad size: $(cat "$WORK/err")"

# ---- exit 3: environment ---------------------------------------------------------------
LMCACHE_WEKA_PATH=/proc/kvstash-cannot-exist expect_exit 3 "$KVSTASH" doctor --json && py 'import json,sys
d = json.load(open(sys.argv[1])); assert d["healthy"] is False, d' "$WORK/out" &&
    ok "doctor on an unusable path: exit 3, healthy false" || fail "doctor exit: $(cat "$WORK/out" "$WORK/err")"
finish
