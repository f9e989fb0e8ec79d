#!/bin/sh
# test_layers.sh - the tree follows the layer table of docs/architecture.md
# (tests/check_layers.sh), and the checker does catch a broken rule: in a
# copy of src/ an upward include, a forbidden edge, a file missing from the
# table and a CLI include of an internal header must each fail it.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
check=$root/tests/check_layers.sh
sh "$check" "$root" || { echo "FAIL: the tree breaks docs/architecture.md's layer table"; exit 1; }

t=$(mktemp -d) || exit 1
trap 'rm -rf "$t"' EXIT
fresh() {
    rm -rf "$t/src" "$t/tools" "$t/docs"
    mkdir -p "$t/docs" && cp -R "$root/src" "$root/tools" "$t/" && cp "$root/docs/architecture.md" "$t/docs/"
}
expect_fail() { # what, then the expected words of the message
    out=$(sh "$check" "$t" 2>&1) && { echo "FAIL: $1 passed the checker"; exit 1; }
    echo "$out" | grep -q "$2" || { echo "FAIL: $1: message lacks '$2': $out"; exit 1; }
    echo "ok: $1"
}
fresh; echo '#include "collector.h"' >> "$t/src/store.c"
expect_fail "store.c including collector.h (upward)" "runs down the layers only"
fresh; echo '#include "engine.h"' >> "$t/src/admin.c"
expect_fail "admin.c including engine.h (forbidden)" "must not depend on engine"
fresh; echo '#include "collector.h"' >> "$t/src/xfer_host.c"
expect_fail "xfer_host.c including collector.h (forbidden)" "must not depend on collector"
fresh; : > "$t/src/newroom.c"
expect_fail "a src/ file in no module" "not in the layer table"
fresh; echo '#include "store.h"' >> "$t/tools/cli_util.c"
expect_fail "the CLI including store.h" "public API only"
echo "PASS"
