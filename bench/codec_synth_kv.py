#!/usr/bin/python3
"""codec_synth_kv.py - synthetic KV-like dumps for kvs_codec_ratio.

Values drawn from a normal distribution per channel, 128 channels whose
scales spread over 7 octaves (2^-6 .. 2^1), as K and V rows roughly do;
written as raw little-endian arrays in bf16 (truncated float32), fp16,
fp32 and fp8 e4m3 (truncated, subnormals flushed to zero, saturating).
Not KV from a model: a repeatable stand-in for the CPU figures.

    codec_synth_kv.py OUT_PREFIX [--values N] [--seed S]
writes OUT_PREFIX.bf16, .fp16, .fp32, .fp8
"""
import argparse

import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("prefix")
ap.add_argument("--values", type=int, default=1 << 21)
ap.add_argument("--seed", type=int, default=1)
a = ap.parse_args()
rng = np.random.default_rng(a.seed)
scale = np.exp2(rng.uniform(-6, 1, 128)).astype(np.float32)
n = a.values - a.values % 128
x = (rng.standard_normal(n).astype(np.float32).reshape(-1, 128) * scale).ravel()
b = x.view(np.uint32)
np.ascontiguousarray((b >> 16).astype("<u2")).tofile(a.prefix + ".bf16")
x.astype("<f2").tofile(a.prefix + ".fp16")
x.astype("<f4").tofile(a.prefix + ".fp32")
e = ((b >> 23) & 0xFF).astype(np.int32) - 127 + 7
m = ((b >> 20) & 7).astype(np.uint32)
q = np.where(e <= 0, 0, (np.minimum(e, 15).astype(np.uint32) << 3) | m)
(((b >> 24) & 0x80) | q).astype(np.uint8).tofile(a.prefix + ".fp8")
