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
# the standard library only: the GPU machine's python has no numpy
import array, random, struct, sys
rng = random.Random(7)
scale = [2.0 ** rng.uniform(-6, 1) for _ in range(128)]
out = array.array('H')
for i in range(1 << 20):
    x = rng.gauss(0.0, 1.0) * scale[i % 128]
    out.append(struct.unpack('<I', struct.pack('<f', x))[0] >> 16)  # bf16 = top half
if sys.byteorder != 'little':
    out.byteswap()
with open(sys.argv[1], 'wb') as f:
    out.tofile(f)
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
