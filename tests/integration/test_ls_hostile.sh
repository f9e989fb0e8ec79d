#!/usr/bin/env bash
# kvstash ls on a store where someone wrote a hostile NAMESPACE.json and a
# folder name with an escape sequence: --json stays valid JSON whatever the
# file holds, and the table shows control characters as \xNN instead of
# sending them to the operator's terminal.
. "$(dirname "$0")/lib.sh"
export LMCACHE_LOCAL_CPU=false
export KVSTASH_MIN_FREE_SPACE=0
py() { /usr/bin/python3 -c "$@"; }

"$KVSTASH" store --seed 1 --tokens 512 $GEO --quiet >/dev/null 2>&1 || fail "store"
ns=$(find "$LMCACHE_WEKA_PATH" -name NAMESPACE.json | head -1)
[ -n "$ns" ] || fail "no NAMESPACE.json"

# A model name that closes the string and adds members, raw ESC and BEL
# bytes (a terminal title change), a JSON-escaped ESC, a number that is not
# one, and bytes that are not UTF-8.
printf '{"format":1,"model":"x\033]0;pwned\007\\u001b[2J\\"},{\\"id\\":\\"fake","dtype":"bf16","layout":"mha","num_layers":2]}},"num_kv_heads":8,"head_dim":64,"world_size":1,"rank":0,"chunk_size":256,"variant":"\377\376","salt_sha256":""}' >"$ns"

expect_exit 0 "$KVSTASH" ls --json && cp "$WORK/out" "$WORK/ls.json"
py 'import json, sys
raw = open(sys.argv[1], "rb").read()
assert not any(b < 0x20 and b not in b"\n" for b in raw), raw
d = json.loads(raw.decode("utf-8"))
assert len(d) == 1, d
i = d[0]["identity"]
assert i["model"] == "x\x1b]0;pwned\x07\x1b[2J\"},{\"id\":\"fake", i
assert i["num_layers"] is None and i["num_kv_heads"] == 8, i
assert i["variant"] == "\ufffd\ufffd", i
assert d[0]["chunks"] == 2, d' "$WORK/ls.json" &&
    ok "ls --json escapes a hostile NAMESPACE.json" || fail "ls --json: $(cat -v "$WORK/ls.json")"

expect_exit 0 "$KVSTASH" ls
if LC_ALL=C grep -q "$(printf '[\001-\011\013-\037\177]')" "$WORK/out"; then
    fail "ls passes control bytes to the terminal: $(cat -v "$WORK/out")"
else
    grep -qF 'x\x1b]0;pwned\x07\x1b[2J' "$WORK/out" && ok "ls shows control characters as \\xNN" ||
        fail "ls table: $(cat -v "$WORK/out")"
fi

# A namespace folder whose name carries an escape sequence.
dir=$(dirname "$ns")
mv "$dir" "$LMCACHE_WEKA_PATH/$(printf 'evil\033[31m-0123456789abcdef')"
expect_exit 0 "$KVSTASH" ls --json && py 'import json, sys
d = json.load(open(sys.argv[1]))
assert d[0]["id"] == "evil\x1b[31m-0123456789abcdef", d' "$WORK/out" && ok "ls --json escapes a folder name" ||
    fail "ls --json folder: $(cat -v "$WORK/out")"
expect_exit 0 "$KVSTASH" ls
if LC_ALL=C grep -q "$(printf '\033')" "$WORK/out"; then
    fail "ls passes a folder name's ESC to the terminal: $(cat -v "$WORK/out")"
else
    ok "ls shows a folder name's ESC as \\x1b"
fi
finish
