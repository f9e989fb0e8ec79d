# lib.sh - helpers for the integration tests (sourced).  Each test gets the
# kvstash binary as $1 and a fresh store folder; it exits 0 pass, 1 fail,
# 77 skip.
set -u
KVSTASH=${1:?usage: $0 path/to/kvstash}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/kvs-it-XXXXXX")
trap '[ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
unset $(env | grep -oE '^(LMCACHE|KVSTASH)_[A-Z_]+' ) 2>/dev/null || true
export LMCACHE_WEKA_PATH="$WORK/store"
mkdir -p "$LMCACHE_WEKA_PATH"
# Small geometry so tests stay fast: 2 layers x 2 x 8 x 64 x bf16 = 4 KiB/token.
GEO="--layers 2 --kv-heads 8 --head-dim 64 --model it/model"
FAILS=0

fail() { echo "FAIL: $*" >&2; FAILS=$((FAILS + 1)); }
ok() { echo "ok: $*"; }

# expect_exit CODE cmd... : runs cmd, checks its exit status.
expect_exit() {
    local want=$1; shift
    "$@" >"$WORK/out" 2>"$WORK/err"
    local got=$?
    if [ "$got" != "$want" ]; then
        fail "exit $got (wanted $want): $*"; sed 's/^/  | /' "$WORK/out" "$WORK/err" >&2
        return 1
    fi
    return 0
}

finish() {
    if [ "$FAILS" -gt 0 ]; then echo "$FAILS failures"; exit 1; fi
    echo "all passed"; exit 0
}
