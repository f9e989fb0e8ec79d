#!/usr/bin/env python3
"""gpu_baselines.py - the comparison paths of bench/gpu_bench.sh, in PyTorch,
on the same shape kvstash is measured with (Llama-3.1-8B: 32 layers, 8 KV
heads, head dim 128, bf16, 256-token chunks of 32 MiB, a paged cache of
16-token blocks in shuffled order):

  naive     torch.save / torch.load of each chunk (gathered on the GPU,
            moved through host memory) to files in --dir;
  lmcache   an emulation of LMCache's POSIX fallback data path: 4 threads,
            each writes a chunk's bytes from pageable host memory, and
            reads by mmap of the file followed by a copy from that
            pageable memory to the GPU, then the scatter into the cache.

Every retrieve is checked against the source cache.  --summary reads the
logs gpu_bench.sh wrote and prints the final table with ratios.
"""
import argparse
import concurrent.futures
import json
import mmap
import os
import re
import shutil
import time

L, H, D, T, BLOCK = 32, 8, 128, 256, 16


def run_baselines(args):
    import torch

    dev = torch.device("cuda:0")
    n = args.chunks
    ntok = n * T
    nblocks = ntok // BLOCK
    g = torch.Generator().manual_seed(7)
    table = torch.randperm(nblocks, generator=g)
    tok = torch.arange(ntok)
    slots = (table[tok // BLOCK] * BLOCK + tok % BLOCK).to(dev)
    src = [torch.randn(2, nblocks * BLOCK, H, D, device=dev, dtype=torch.bfloat16) for _ in range(L)]
    dst = [torch.empty_like(x) for x in src]
    chunk_bytes = L * 2 * T * H * D * 2
    total = chunk_bytes * n
    res = {"chunks": n, "chunk_bytes": chunk_bytes, "gpu": torch.cuda.get_device_name(0)}

    def gather(c):
        s = slots[c * T:(c + 1) * T]
        return torch.stack([x.index_select(1, s) for x in src])  # [L, 2, T, H, D]

    def scatter(c, t):
        s = slots[c * T:(c + 1) * T]
        for l in range(L):
            dst[l].index_copy_(1, s, t[l])

    def check():
        for a, b in zip(src, dst):
            if not torch.equal(a, b):
                raise SystemExit("baseline: retrieved bytes differ")

    def poison():
        for x in dst:
            x.fill_(-1.0)
        torch.cuda.synchronize()

    # pinned copy ceilings as PyTorch sees them (a cross-check)
    h = torch.empty(1 << 30, dtype=torch.uint8, pin_memory=True)
    d = torch.empty(1 << 30, dtype=torch.uint8, device=dev)
    d.copy_(h)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(3):
        d.copy_(h, non_blocking=True)
    torch.cuda.synchronize()
    res["torch_pinned_h2d"] = 3 * (1 << 30) / (time.perf_counter() - t0) / 1e9
    hp = torch.empty(1 << 30, dtype=torch.uint8)
    t0 = time.perf_counter()
    d.copy_(hp)
    torch.cuda.synchronize()
    res["torch_pageable_h2d"] = (1 << 30) / (time.perf_counter() - t0) / 1e9
    del h, d, hp

    os.makedirs(args.dir, exist_ok=True)
    # naive torch.save / torch.load
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for c in range(n):
        torch.save(gather(c).cpu(), os.path.join(args.dir, f"{c}.pt"))
    res["naive_store"] = total / (time.perf_counter() - t0) / 1e9
    poison()
    t0 = time.perf_counter()
    for c in range(n):
        scatter(c, torch.load(os.path.join(args.dir, f"{c}.pt")).to(dev))
    torch.cuda.synchronize()
    res["naive_retrieve"] = total / (time.perf_counter() - t0) / 1e9
    check()
    print(f"naive torch.save/torch.load: store {res['naive_store']:.2f} GB/s, "
          f"retrieve {res['naive_retrieve']:.2f} GB/s")
    for c in range(n):
        os.unlink(os.path.join(args.dir, f"{c}.pt"))

    # LMCache POSIX fallback emulation, 4 threads, as its GdsBackend does it
    # without GDS: write = ftruncate(nbytes + 4096), mmap(MAP_SHARED), a
    # cudaMemcpy device->host into the mapping; read = mmap(PROT_READ,
    # MAP_PRIVATE | MAP_POPULATE), a cudaMemcpy host->device from it.  Both
    # copies are from or to pageable memory on the default stream.
    hdr = 4096

    def write_one(c):
        t = gather(c).view(torch.uint8).flatten()
        path = os.path.join(args.dir, f"{c}.bin")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.ftruncate(fd, chunk_bytes + hdr)
            mm = mmap.mmap(fd, chunk_bytes + hdr, flags=mmap.MAP_SHARED,
                           prot=mmap.PROT_READ | mmap.PROT_WRITE)
            host = torch.frombuffer(mm, dtype=torch.uint8, offset=hdr, count=chunk_bytes)
            host.copy_(t)
            del host
            mm.close()
        finally:
            os.close(fd)

    def read_one(c):
        path = os.path.join(args.dir, f"{c}.bin")
        fd = os.open(path, os.O_RDONLY)
        try:
            mm = mmap.mmap(fd, 0, flags=mmap.MAP_PRIVATE | mmap.MAP_POPULATE, prot=mmap.PROT_READ)
            host = torch.frombuffer(mm, dtype=torch.uint8, offset=hdr, count=chunk_bytes)
            t = torch.empty(chunk_bytes, dtype=torch.uint8, device=dev)
            t.copy_(host)
            scatter(c, t.view(torch.bfloat16).view(L, 2, T, H, D))
            torch.cuda.current_stream().synchronize()
            del host
            mm.close()
        finally:
            os.close(fd)

    import warnings
    warnings.filterwarnings("ignore", message="The given buffer is not writable")
    torch.cuda.synchronize()
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        t0 = time.perf_counter()
        list(ex.map(write_one, range(n)))
        torch.cuda.synchronize()
        res["lmcache_store"] = total / (time.perf_counter() - t0) / 1e9
        poison()
        t0 = time.perf_counter()
        list(ex.map(read_one, range(n)))
        torch.cuda.synchronize()
        res["lmcache_retrieve"] = total / (time.perf_counter() - t0) / 1e9
    check()
    print(f"LMCache POSIX fallback emulation (4 threads): store {res['lmcache_store']:.2f} GB/s, "
          f"retrieve {res['lmcache_retrieve']:.2f} GB/s")
    print(f"torch pinned H2D {res['torch_pinned_h2d']:.1f} GB/s, pageable H2D "
          f"{res['torch_pageable_h2d']:.1f} GB/s")
    shutil.rmtree(args.dir, ignore_errors=True)
    with open(args.json, "w") as f:
        json.dump(res, f, indent=1)


ROW = re.compile(r"^(?P<name>.+?)\s+(?P<v>[\d.]+) GB/s(?:\s+(?P<c>[\d.]+) GB/s\s+(?P<r>[\d.]+))?\s*$")


def rows_of(path):
    rows = {}
    try:
        with open(path) as f:
            for line in f:
                m = ROW.match(line.rstrip("\n"))
                if m:
                    rows[m.group("name").strip()] = float(m.group("v"))
    except OSError:
        pass
    return rows


def summary(args):
    out = args.out
    shm = rows_of(os.path.join(out, "bench_shm.log"))
    disk = rows_of(os.path.join(out, "bench_disk.log"))
    cuf = rows_of(os.path.join(out, "bench_cufile.log"))
    try:
        base = json.load(open(os.path.join(out, "baselines.json")))
    except OSError:
        base = {}
    dd = None
    try:
        m = re.search(r"([\d.]+) ([GM])B/s", open(os.path.join(out, "dd.log")).read())
        if m:
            dd = float(m.group(1)) / (1000.0 if m.group(2) == "M" else 1.0)
    except OSError:
        pass
    reads = {}
    try:
        fs = None
        for line in open(os.path.join(out, "paths.log")):
            m = re.match(r"-- \S+ \((\w+)", line)
            if m:
                fs = m.group(1)
            m = re.match(r"(pread pageable|pread registered\+H2D|pread registered) +.* 16 thr +([\d.]+) GB/s", line)
            if m and fs:
                reads[(fs, m.group(1))] = float(m.group(2))
    except OSError:
        pass
    h2d = shm.get("pinned host-to-device copy ceiling")
    d2h = shm.get("pinned device-to-host copy ceiling")
    r_kvs = shm.get("retrieve files -> GPU")
    s_kvs = shm.get("store GPU -> files, until published")

    def fmt(v):
        return f"{v:8.2f}" if v else "       -"

    def ratio(a, b):
        return f"{a / b:6.2f}" if a and b else "     -"

    print(f"GPU: {base.get('gpu', '?')}; Llama-3.1-8B shape, {base.get('chunks', '?')} chunks "
          f"of 32 MiB (4 GiB = 32k tokens when 128), paged GPU cache")
    print(f"{'path':58s} {'retrieve':>8s} {'/H2D':>6s} {'store':>8s} {'/D2H':>6s}   (GB/s)")
    print(f"{'pinned copy ceilings (H2D, D2H), same run':58s} {fmt(h2d)} {ratio(h2d, h2d)} "
          f"{fmt(d2h)} {ratio(d2h, d2h)}")
    lines = [
        ("kvstash, files in /dev/shm (POSIX path, pinned staging)", r_kvs, s_kvs),
        ("kvstash, /dev/shm, authenticated chunks (auth_key_file)",
         shm.get("retrieve files -> GPU, authenticated"),
         shm.get("store GPU -> files, until published, authenticated")),
        ("kvstash, cuFile compatibility mode, ext4 page cache",
         cuf.get("retrieve files -> GPU"), cuf.get("store GPU -> files, until published")),
        ("kvstash, disk with O_DIRECT", disk.get("retrieve files -> GPU, O_DIRECT"),
         disk.get("store GPU -> files, until published, O_DIRECT")),
        ("torch.save / torch.load per chunk, /dev/shm", base.get("naive_retrieve"),
         base.get("naive_store")),
        ("LMCache POSIX fallback emulation (mmap, 4 threads)", base.get("lmcache_retrieve"),
         base.get("lmcache_store")),
    ]
    for name, r, s in lines:
        print(f"{name:58s} {fmt(r)} {ratio(r, h2d)} {fmt(s)} {ratio(s, d2h)}")
    packed = rows_of(os.path.join(out, "bench_shm_packed.log"))
    if packed:  # vLLM 0.26+'s packed NHD cache, beside the ceilings of its own run
        p_h2d = packed.get("pinned host-to-device copy ceiling")
        p_d2h = packed.get("pinned device-to-host copy ceiling")
        p_r = packed.get("retrieve files -> GPU")
        p_s = packed.get("store GPU -> files, until published")
        print(f"{'pinned copy ceilings of the packed-layout run':58s} {fmt(p_h2d)} "
              f"{ratio(p_h2d, p_h2d)} {fmt(p_d2h)} {ratio(p_d2h, p_d2h)}")
        print(f"{'kvstash, /dev/shm, packed NHD cache (vLLM 0.26+)':58s} {fmt(p_r)} "
              f"{ratio(p_r, p_h2d)} {fmt(p_s)} {ratio(p_s, p_d2h)}")
    for (fs, what), v in sorted(reads.items()):
        print(f"{'raw ' + what + ', 16 threads, ' + fs + ' (read_paths.c)':58s} {fmt(v)} {ratio(v, h2d)}")
    shm_read = reads.get(("tmpfs", "pread pageable"))
    if shm_read and r_kvs:
        print(f"kvstash retrieve / raw pread of /dev/shm files into memory (16 threads): "
              f"{ratio(r_kvs, shm_read).strip()}")
    if dd:
        print(f"{'dd iflag=direct read of the same disk (ceiling for O_DIRECT)':58s} {fmt(dd)}")
        rd = disk.get("retrieve files -> GPU, O_DIRECT")
        print(f"kvstash O_DIRECT retrieve / dd O_DIRECT read: {ratio(rd, dd).strip()}")
    ra = shm.get("retrieve files -> GPU, authenticated")
    sa = shm.get("store GPU -> files, until published, authenticated")
    if ra or sa:
        print(f"authenticated / plain, same run: retrieve {ratio(ra, r_kvs).strip()}x, "
              f"store {ratio(sa, s_kvs).strip()}x")
    lm_r, lm_s = base.get("lmcache_retrieve"), base.get("lmcache_store")
    nv_r, nv_s = base.get("naive_retrieve"), base.get("naive_store")
    print(f"kvstash / LMCache emulation: retrieve {ratio(r_kvs, lm_r).strip()}x, store "
          f"{ratio(s_kvs, lm_s).strip()}x; kvstash / torch.save+load: retrieve "
          f"{ratio(r_kvs, nv_r).strip()}x, store {ratio(s_kvs, nv_s).strip()}x")
    goals = [
        ("retrieve >= 0.90 of H2D", r_kvs and h2d and r_kvs / h2d >= 0.90),
        ("store >= 0.80 of D2H", s_kvs and d2h and s_kvs / d2h >= 0.80),
        ("retrieve >= 20x the LMCache emulation", r_kvs and lm_r and r_kvs / lm_r >= 20),
    ]
    for name, ok in goals:
        print(f"goal: {name}: {'met' if ok else 'NOT met'}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--chunks", type=int, default=128)
    ap.add_argument("--dir", default="/dev/shm/kvs-torch")
    ap.add_argument("--json", default="baselines.json")
    ap.add_argument("--summary", action="store_true")
    ap.add_argument("--out", default=".")
    args = ap.parse_args()
    if args.summary:
        summary(args)
    else:
        run_baselines(args)


if __name__ == "__main__":
    main()
