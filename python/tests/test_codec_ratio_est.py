"""bench/kv_ratio_est.py: the numpy estimate of the exp-huff stored size that
bench/train_kv_model.py reports beside kvs_codec_ratio, checked on dumps whose
stored size follows from the frame layout by hand."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))
import kv_ratio_est as est  # noqa: E402


def _dump(tmp_path, arr):
    p = str(tmp_path / "kv.bin")
    arr.tofile(p)
    return p


def test_one_exponent_frame_is_one_bit_per_symbol(tmp_path):
    # 32768 copies of bf16 1.0 (0x3F80): one symbol, code length 1, so each
    # 256-symbol sub-block is 8 words.  Frame: 8 + 128 lengths + 32768 raw
    # bytes + 128 word counts + 128 * 8 * 4 bitstream = 37128, 16-aligned 37136.
    p = _dump(tmp_path, np.full(32768, 0x3F80, np.uint16))
    r = est.py_ratios(p, 2)
    assert r["frames"] == 1
    assert abs(r["py_ratio"] - 65536 / 37136) < 1e-12
    assert abs(r["py_entropy_bound"] - 2.0) < 1e-12


def test_random_bytes_fall_back_to_raw_frames(tmp_path):
    p = _dump(tmp_path, np.random.default_rng(5).integers(0, 256, 3 * 65536, dtype=np.uint8))
    r = est.py_ratios(p, 2)
    assert r["frames"] == 3
    assert abs(r["py_ratio"] - 65536 / 65552) < 1e-12     # 8-byte header, 16-aligned
    assert r["py_entropy_bound"] < 1.0 + 1e-3


def test_per_layer_split_follows_the_chunk_layout(tmp_path):
    # 2 layers, planes of one frame each: layer 0 K/V constant, layer 1 K/V random.
    rng = np.random.default_rng(6)
    const = np.full(32768, 0x3F80, np.uint16)
    noise = rng.integers(0, 65536, 32768).astype(np.uint16)
    p = _dump(tmp_path, np.concatenate([const, const, noise, noise]))
    r = est.py_ratios(p, 2, layers=2, plane_bytes=65536)
    assert r["py_ratio_by_layer_K"][0] == round(65536 / 37136, 3)
    assert r["py_ratio_by_layer_V"][1] == round(65536 / 65552, 3)


def test_lengths_respect_the_12_bit_limit_and_kraft():
    # Fibonacci counts give a Huffman tree 40 deep before the limit.
    fib = [1, 1]
    while len(fib) < 40:
        fib.append(fib[-1] + fib[-2])
    hist = np.zeros(256, np.int64)
    hist[:40] = fib
    ln = est.huff_lengths(hist)
    assert max(ln) <= 12 and all(ln[s] > 0 for s in range(40)) and not any(ln[40:])
    assert sum(2.0 ** -x for x in ln if x) <= 1.0


def test_transposition_is_the_codec_split(tmp_path):
    # -1.0 in bf16 is 0xBF80: symbol (v >> 7) & 0xFF = 0x7F, raw0 = sign | low 7 bits = 0x80.
    p = _dump(tmp_path, np.array([0xBF80, 0x0001], np.uint16))
    q = str(tmp_path / "t.bin")
    est.transpose_file(p, q, 2)
    assert open(q, "rb").read() == bytes([0x7F, 0x00, 0x80, 0x01])
