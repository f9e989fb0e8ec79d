#!/usr/bin/env bash
# The configuration contract from the seed document: its environment example
# and its YAML examples give the same effective configuration; the printed
# YAML (lost indentation under extra_config) works with a warning; bad values
# exit 2 with a message naming key, variable, source, value and what is
# accepted; docs/config.md is what `kvstash config --markdown` prints.
. "$(dirname "$0")/lib.sh"
SEED="$(dirname "$0")/../data/seed-weka-backend.md"
DOCS="$(dirname "$0")/../../docs/config.md"
unset LMCACHE_WEKA_PATH

values() { /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); print(json.dumps({k: v["value"] for k, v in d.items()}, sort_keys=True))'; }

# The seed's environment block, exactly as printed (export lines).
env_block=$(awk '/^ *export LMCACHE_/' "$SEED")
env_json=$(bash -c "$env_block"$'\n'"\"$KVSTASH\" config --json" | values) || fail "env example"
# Its two YAML blocks, exactly as printed.
awk '/^``yaml/{n++; on=1; next} /^``/{on=0} on && n==1' "$SEED" >"$WORK/config.yaml"
awk '/^``yaml/{n++; on=1; next} /^``/{on=0} on && n==2' "$SEED" >"$WORK/weka-offload.yaml"
for f in config.yaml weka-offload.yaml; do
    out=$(LMCACHE_USE_EXPERIMENTAL=True LMCACHE_CONFIG_FILE="$WORK/$f" "$KVSTASH" config --json 2>"$WORK/err") || fail "$f rejected: $(cat "$WORK/err")"
    [ "$(echo "$out" | values)" = "$env_json" ] && ok "$f == environment example" || fail "$f differs from the env example"
    grep -q "gds_io_threads" "$WORK/err" || fail "$f: no warning about gds_io_threads at the top level"
done
echo "$env_json" | grep -q '"gds_io_threads": 32' || fail "gds_io_threads not 32: $env_json"
echo "$env_json" | grep -q '"weka_path": "/mnt/weka/cache"' || fail "weka_path: $env_json"
echo "$env_json" | grep -q '"cufile_buffer_size": 8192' || fail "cufile_buffer_size: $env_json"
echo "$env_json" | grep -q '"local_cpu": false' || fail "local_cpu: $env_json"
src=$(LMCACHE_CONFIG_FILE="$WORK/config.yaml" LMCACHE_CHUNK_SIZE=512 "$KVSTASH" config --json 2>/dev/null |
      /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["chunk_size"]["source"], d["weka_path"]["source"], d["io_path"]["source"], d["chunk_size"]["value"])')
[ "$src" = "env file default 512" ] && ok "sources and precedence" || fail "sources: $src"

# Rejections: exit 2, and the message names what, where and what is accepted.
check_reject() {  # name, expected words..., -- command env
    local name=$1; shift
    local words=()
    while [ "$1" != "--" ]; do words+=("$1"); shift; done; shift
    env "$@" "$KVSTASH" config >/dev/null 2>"$WORK/err"
    local rc=$?
    [ $rc -eq 2 ] || { fail "$name: exit $rc"; return; }
    for w in "${words[@]}"; do
        grep -qF -- "$w" "$WORK/err" || { fail "$name: message lacks \"$w\": $(cat "$WORK/err")"; return; }
    done
    ok "$name rejected"
}
check_reject "non-numeric chunk size" chunk_size LMCACHE_CHUNK_SIZE abc -- LMCACHE_CHUNK_SIZE=abc
check_reject "zero chunk size" chunk_size LMCACHE_CHUNK_SIZE -- LMCACHE_CHUNK_SIZE=0
check_reject "negative buffer" cufile_buffer_size -5 -- LMCACHE_CUFILE_BUFFER_SIZE=-5
check_reject "false experimental" LMCACHE_USE_EXPERIMENTAL -- LMCACHE_USE_EXPERIMENTAL=False
check_reject "bad JSON" LMCACHE_EXTRA_CONFIG -- 'LMCACHE_EXTRA_CONFIG={"gds_io_threads": 32'
check_reject "wrong type in extra_config" gds_io_threads many -- 'LMCACHE_EXTRA_CONFIG={"gds_io_threads": "many"}'
check_reject "missing file" LMCACHE_CONFIG_FILE /no/such.yaml -- LMCACHE_CONFIG_FILE=/no/such.yaml
printf 'chunk_size: [1, 2\n' >"$WORK/bad.yaml"
check_reject "malformed YAML" bad.yaml -- LMCACHE_CONFIG_FILE="$WORK/bad.yaml"
printf 'chunk_sise: 256\n' >"$WORK/typo.yaml"
LMCACHE_CONFIG_FILE="$WORK/typo.yaml" "$KVSTASH" config >/dev/null 2>"$WORK/err" && grep -q 'chunk_size' "$WORK/err" &&
    ok "unknown key warned with the nearest key" || fail "typo warning: $(cat "$WORK/err")"

# --strict (issue 11): the same typo is an error naming it and the nearest key
LMCACHE_CONFIG_FILE="$WORK/typo.yaml" "$KVSTASH" --strict config >/dev/null 2>"$WORK/err"
rc=$?
[ $rc -eq 2 ] && grep -q 'key "chunk_sise" in .*typo.yaml.*(did you mean "chunk_size"?).*strict is on' "$WORK/err" &&
    ok "--strict: unknown key is an error" || fail "--strict: rc $rc, $(cat "$WORK/err")"
LMCACHE_WEKA_PAHT=/mnt/weka "$KVSTASH" --strict config >/dev/null 2>"$WORK/err"
rc=$?
[ $rc -eq 2 ] && grep -q 'LMCACHE_WEKA_PAHT (did you mean "LMCACHE_WEKA_PATH"?)' "$WORK/err" &&
    ok "--strict: misspelt variable is an error" || fail "--strict var: rc $rc, $(cat "$WORK/err")"
"$KVSTASH" --strict config >/dev/null 2>"$WORK/err" && ok "--strict: a clean environment loads" ||
    fail "--strict clean: $(cat "$WORK/err")"

# doctor says when the store is on a filesystem only this machine sees
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
    d=$(mktemp -d /dev/shm/kvs-doctor-XXXXXX)
    LMCACHE_WEKA_PATH="$d" "$KVSTASH" doctor >"$WORK/doc" 2>&1
    grep -q 'warning: tmpfs is a local filesystem, not a shared one' "$WORK/doc" &&
        ok "doctor warns about a local filesystem" || fail "doctor: $(cat "$WORK/doc")"
    rm -rf "$d"
fi

if "$KVSTASH" config --markdown | cmp -s - "$DOCS"; then ok "docs/config.md is current"
else fail "docs/config.md differs from kvstash config --markdown"; fi
finish
