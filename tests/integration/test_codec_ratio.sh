#!/bin/sh
# test_codec_ratio.sh - the codec ratio bench on generated bf16-like KV (a
# normal distribution per channel, scales spanning several octaves, as real
# K and V rows do): it prints one line of JSON, every frame decodes back,
# the data compresses (ratio > 1), and the ratio stays at or under the
# scheme's entropy bound.  That last one is the inequality that must hold:
# a per-frame prefix code spends at least the frame's empirical entropy on
# its symbols (Gibbs' inequality), and headers, code tables and padding
# only add bytes, so stored >= payload bits / 8 >= entropy bound.
# Usage: test_codec_ratio.sh PATH/TO/kvs_codec_ratio
set -eu
tool=$1
py=/usr/bin/python3
dir=$(mktemp -d "${TMPDIR:-/tmp}/kvs-codec-ratio.XXXXXX")
trap 'rm -rf "$dir"' EXIT
"$py" - "$dir/kv.bf16" <<'PY'
import sys
import numpy as np
rng = np.random.default_rng(7)
scale = np.exp2(rng.uniform(-6, 1, 128)).astype(np.float32)
x = (rng.standard_normal(1 << 20).astype(np.float32).reshape(-1, 128) * scale).ravel()
# bf16 = the top half of the float32 (truncation)
np.ascontiguousarray((x.view(np.uint32) >> 16).astype('<u2')).tofile(sys.argv[1])
PY
# odd frame size on purpose: a short last frame
"$tool" "$dir/kv.bf16" --dtype bf16 --frame 65536 > "$dir/out.json"
"$tool" "$dir/kv.bf16" --dtype bf16 --frame 40000 >> "$dir/out.json"
cat "$dir/out.json"
"$py" - "$dir/out.json" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    assert r["decode_ok"] is True, r
    assert r["logical_bytes"] == 2 << 20, r
    assert r["ratio"] > 1.0, r
    assert r["stored_bytes"] >= r["payload_bytes"] >= r["entropy_bound_bytes"], r
    assert r["ratio"] <= r["bound_ratio"], r
    for k in ("zstd1_transposed_ratio", "lz4_transposed_ratio", "zstd1_plain_ratio",
              "lz4_plain_ratio", "encode_mb_s", "decode_mb_s"):
        assert r[k] > 0, (k, r)
print("codec ratio checks passed")
PY
# bad arguments: a clear error and exit status 2
if "$tool" "$dir/kv.bf16" --dtype int8 2> "$dir/err"; then exit 1; fi
grep -q "dtype takes" "$dir/err"
if "$tool" "$dir/missing" --dtype bf16 2> "$dir/err"; then exit 1; fi
grep -q "cannot open" "$dir/err"
