"""Estimates for bench/train_kv_model.py, numpy only: the stored size the
exp-huff codec gives a raw KV dump (docs/codec.md's frame layout, without the
chunk's 8 KiB header and frame table), the entropy bound of the scheme, and
what the zstd and lz4 command-line tools make of the same bytes, plain and
after the codec's byte transposition.  kvs_codec_ratio (bench/codec_ratio.c)
is the reference; these cross-check it and stand in when it is missing."""
import heapq
import os
import shutil
import subprocess

import numpy as np

FRAME = 65536        # codec frame = checksum segment, bytes of logical payload


def huff_lengths(hist):
    """Code lengths of a 256-bin histogram, limited to 12 bits by halving
    (the rule of CODEC.md; tie order may differ, the total size does not)."""
    h = [int(c) for c in hist]
    while True:
        live = [(c, s) for s, c in enumerate(h) if c]
        ln = [0] * 256
        if len(live) == 1:
            ln[live[0][1]] = 1
            return ln
        heap = [(c, i, [s]) for i, (c, s) in enumerate(live)]
        heapq.heapify(heap)
        k = len(heap)
        while len(heap) > 1:
            c1, _, a1 = heapq.heappop(heap)
            c2, _, a2 = heapq.heappop(heap)
            for s in a1 + a2:
                ln[s] += 1
            heapq.heappush(heap, (c1 + c2, k, a1 + a2))
            k += 1
        if max(ln) <= 12:
            return ln
        h = [(c + 1) // 2 if c else 0 for c in h]


def _up(x, m):
    return -(-x // m) * m


def py_ratios(path, elem, layers=0, plane_bytes=0, frame=FRAME):
    """Independent estimate of the exp-huff stored size (frame layout of
    CODEC.md, without the 8 KiB chunk header and table) and the entropy bound
    (per-frame symbol entropy + raw bytes); also the estimate per layer and
    K/V plane (a frame lies in one plane when a plane of a chunk is a whole
    number of frames, as in both models here)."""
    raw = np.fromfile(path, np.uint8)
    total = raw.size
    nfr = -(-total // frame)
    stored = ent = 0.0
    per = np.zeros((max(layers, 1), 2, 2))  # [layer][K/V][logical, stored]
    for i in range(nfr):
        b = raw[i * frame:(i + 1) * frame]
        if elem == 1:
            sym = b
        else:
            v = b.view(np.uint16)
            sym = ((v >> 7) & 0xFF).astype(np.uint8)
        n = sym.size
        hist = np.bincount(sym, minlength=256)
        p = hist[hist > 0] / n
        ent += n * float(-(p * np.log2(p)).sum()) / 8 + (elem - 1) * n
        ln = np.array(huff_lengths(hist), np.int64)
        bits = ln[sym]
        nsub = -(-n // 256)
        sb = np.add.reduceat(bits, np.arange(0, n, 256))
        words = int((-(-sb // 32)).sum())
        huff = _up(max(8 + 128 + (elem - 1) * _up(n, 4) + _up(nsub, 4) + 4 * words, 256), 16)
        rawm = _up(max(8 + b.size, 256), 16)
        stored += min(huff, rawm)
        if layers and plane_bytes % frame == 0:
            l, kv = divmod((i * frame % (plane_bytes * 2 * layers)) // plane_bytes, 2)
            per[l, kv] += (b.size, min(huff, rawm))
    out = dict(bytes=int(total), frames=nfr, py_ratio=total / stored,
               py_entropy_bound=total / ent)
    if layers and per[:, :, 1].all():
        out["py_ratio_by_layer_K"] = [round(x, 3) for x in per[:, 0, 0] / per[:, 0, 1]]
        out["py_ratio_by_layer_V"] = [round(x, 3) for x in per[:, 1, 0] / per[:, 1, 1]]
    return out


def transpose_file(src, dst, elem, frame=FRAME):
    """Per frame: the symbol bytes of every element, then each raw plane (the
    codec's split), so general compressors see the same byte planes."""
    raw = np.fromfile(src, np.uint8)
    with open(dst, "wb") as f:
        for i in range(0, raw.size, frame):
            b = raw[i:i + frame]
            if elem == 2:
                v = b.view(np.uint16)
                f.write(((v >> 7) & 0xFF).astype(np.uint8).tobytes())
                f.write((((v >> 8) & 0x80) | (v & 0x7F)).astype(np.uint8).tobytes())
            else:
                f.write(b.tobytes())


def cli_ratios(path, tmp, elem):
    """zstd -1 (whole file, one frame: a little better than per 64 KiB frame)
    and lz4 -1 (independent 64 KiB blocks) on the plain and transposed bytes,
    with the CLI tools when they exist.  A fallback for when kvs_codec_ratio
    is missing; the tool's figures are the ones to report."""
    out = {}
    tp = os.path.join(tmp, "transposed.bin")
    transpose_file(path, tp, elem)
    size = os.path.getsize(path)
    for label, f in (("plain", path), ("transposed", tp)):
        for tool, cmd in (("zstd1", ["zstd", "-1", "-q", "-c", "--single-thread", f]),
                          ("lz4", ["lz4", "-1", "-B4", "-BI", "-q", "-c", f])):
            if shutil.which(cmd[0]) is None:
                continue
            p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            if p.returncode == 0:
                out["cli_%s_%s" % (tool, label)] = size / max(len(p.stdout), 1)
    os.unlink(tp)
    return out
