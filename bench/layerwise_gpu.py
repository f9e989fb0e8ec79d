"""layerwise_gpu.py - what layer-pipelined loading buys on one load step, on
vLLM 0.33's packed KV layout (docs/vllm.md, "CUDA graphs and layer-pipelined
loading").

A Llama-3.1-8B-shaped cache (32 layers, 8 KV heads of 128, bf16, blocks of
16, packed (B, H, N, 2D) in NHD memory order, as vLLM >= 0.26 allocates it)
holds a stored prefix; a step then loads it and runs a stand-in forward
(per layer, a bf16 matmul sized to a chosen time).  Two ways, each timed over
several rounds with the store in the page cache:

  whole      the load completes, then the forward runs (what kvstash does on
             a step vLLM may replay as a FULL CUDA graph, or with
             kvstash.layerwise=false);
  layerwise  the forward waits for each layer just before using it
             (kvs_op_wait_layer), so reads of later layers overlap compute.

Layer by layer is timed in both retrieve orders (docs/design.md,
"Retrieve order"): chunk, and layer, which the vLLM connector asks for when
layerwise is on.  Prints one line per prefix length: the times in ms and
the savings.  It does not measure the other side of the trade (full vs
piecewise CUDA graphs on decode steps), which needs vLLM itself.  Exits 0 with a "skip" line
without torch or a GPU.

    python3 bench/layerwise_gpu.py [--tokens 4096,8192] [--layer-ms 0.5]
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", default="4096,8192")
    ap.add_argument("--layer-ms", type=float, default=0.5,
                    help="stand-in compute per layer (a prefill of a few hundred tokens)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--store", default=os.environ.get("E2E_STORE"))
    a = ap.parse_args()
    try:
        import torch
    except ImportError:
        print("layerwise: skip (no torch)")
        return 0
    if not torch.cuda.is_available():
        print("layerwise: skip (no CUDA GPU)")
        return 0
    import kvstash

    L, H, D, BS, CHUNK = 32, 8, 128, 16, 256
    tmp = None
    store = a.store
    if not store:
        store = tmp = tempfile.mkdtemp(prefix="kvs-layerwise-")
    else:
        store = os.path.join(store, "layerwise")
        shutil.rmtree(store, ignore_errors=True)
        os.makedirs(store)
    cfg = kvstash.Config.load({"weka_path": store, "chunk_size": CHUNK, "local_cpu": False,
                               "cufile_buffer_size": 4096, "max_pending_store_size": 8})
    dev = torch.device("cuda")
    # A matmul of about layer_ms on this GPU.
    m = torch.randn(4096, 4096, device=dev, dtype=torch.bfloat16)
    n = 64
    while True:
        x = torch.randn(4096, n, device=dev, dtype=torch.bfloat16)
        m @ x                    # warm up first: cuBLAS's first call of a shape
        torch.cuda.synchronize()  # took 11 ms on an H100 and ended the search
        t0 = time.perf_counter()
        for _ in range(10):
            m @ x
        torch.cuda.synchronize()
        per = (time.perf_counter() - t0) / 10 * 1e3
        if per >= a.layer_ms or n >= 1 << 16:
            break
        n *= 2

    def compute():
        return m @ x

    for ntok in [int(t) for t in a.tokens.split(",")]:
        nblk = -(-ntok // BS) + 8
        phys = (nblk, BS, H, 2 * D)                 # NHD memory order
        layers = [torch.randn(phys, device=dev, dtype=torch.bfloat16).permute(0, 2, 1, 3)
                  for _ in range(L)]
        kv = kvstash.KV.paged(layers, num_planes=2)
        toks = np.random.default_rng(ntok).integers(0, 1 << 17, ntok).astype(np.uint32)
        slots = kvstash.slot_mapping_from_blocks(list(range(nblk)), BS, ntok)
        dst = [torch.zeros(phys, device=dev, dtype=torch.bfloat16).permute(0, 2, 1, 3)
               for _ in range(L)]
        kvd = kvstash.KV.paged(dst, num_planes=2)
        ways = (("whole", "chunk"), ("layerwise", "chunk"), ("layerwise", "layer"))
        times = {w: [] for w in ways}
        engines = {}
        for order in ("chunk", "layer"):
            c = cfg.copy()
            c.set("retrieve_order", order)
            engines[order] = kvstash.Engine(c, model="bench/layerwise-8b", num_layers=L,
                                            num_kv_heads=H, head_dim=D, dtype="bf16")
        try:
            engines["chunk"].store(toks, kv, slot_mapping=slots, wait=True)
            for r in range(a.rounds + 1):
                for how, order in ways:
                    eng = engines[order]
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    with eng.retrieve_start(toks, kvd, slot_mapping=slots) as op:
                        if how == "whole":
                            got = op.wait().tokens
                            for _ in range(L):
                                compute()
                        else:
                            got = ntok
                            for layer in range(L):
                                got = min(got, op.wait_layer(layer))
                                compute()
                            got = min(got, op.wait().tokens)
                    torch.cuda.synchronize()
                    if r:                                   # round 0 warms up
                        times[(how, order)].append((time.perf_counter() - t0) * 1e3)
                    assert got == ntok, "%s %s: loaded %d of %d tokens" % (how, order, got, ntok)
        finally:
            for e in engines.values():
                e.close()
        w = np.median(times[ways[0]])
        lc, ll = np.median(times[ways[1]]), np.median(times[ways[2]])
        gib = L * 2 * H * D * 2 * ntok / 2 ** 30
        print("layerwise: %d tokens (%.2f GiB packed NHD), %d layers x %.2f ms compute: "
              "whole %.1f ms; layer by layer, chunk order %.1f ms (saving %.0f%%), layer "
              "order %.1f ms (saving %.0f%%)"
              % (ntok, gib, L, per, w, lc, 100.0 * (w - lc) / w if w else 0.0, ll,
                 100.0 * (w - ll) / w if w else 0.0))
        del layers, dst, kv, kvd
        torch.cuda.empty_cache()
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
