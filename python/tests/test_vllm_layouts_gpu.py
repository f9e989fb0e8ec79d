"""The connector's worker side on KV caches allocated exactly as vLLM
allocates them (issue 9, item 8): one raw byte buffer per layer, viewed as
the dtype, shaped in the backend's physical (stride) order and permuted back
to its logical shape.  KV stored from one layout is loaded into another
through register_kv_caches / start_load_kv / wait_for_layer_load /
wait_for_save, into other blocks, and every byte is compared.

Two backends run the same code: numpy host memory (always) and torch CUDA
tensors (bfloat16, vLLM 0.33's shapes; skipped only where torch or a CUDA
GPU is missing, so on the GPU machine bench/e2e_gpu.sh runs them)."""

import numpy as np
import pytest

from kvstash.vllm import KvstashConnector, KvstashConnectorMetadata, ReqMeta
from vllm_standins import (CacheConfig, ForwardContext, KVCacheConfig, KVCacheGroupSpec,
                           KVConnectorRole, KVTransferConfig, ModelConfig, ParallelConfig,
                           VllmConfig, cache_shape, layer_name)

try:
    import torch
    HAVE_CUDA = torch.cuda.is_available()
except ImportError:
    torch = None
    HAVE_CUDA = False

CHUNK = 64
LAYERS, HEADS, DIM, BS, BLOCKS = 4, 8, 128, 16, 48
MLA_DIM = 576                     # DeepSeek's latent 512 + rope 64
TOKENS = 4 * CHUNK + 7

BACKENDS = ["numpy", pytest.param("cuda", marks=pytest.mark.skipif(
    not HAVE_CUDA, reason="torch with a CUDA GPU is needed for vLLM's CUDA caches"))]

# (source layout, destination layout): vLLM 0.33 packed NHD and HND (every
# non-MLA backend: FlashAttention, FlashInfer, Triton, Flex), FlashInfer's HND
# on Blackwell, and the per-plane layouts of vLLM <= 0.25 they share a store
# with.
PAIRS = [("packed_nhd", "packed_hnd"), ("packed_hnd", "packed_nhd"),
         ("packed_nhd", "flash_attn"), ("flash_attn", "packed_hnd"),
         ("flashinfer", "packed_nhd"), ("packed_hnd", "flashinfer_hnd"),
         ("flashinfer_hnd", "flash_attn_hnd")]
MLA_PAIRS = [("mla", "mla4"), ("mla4", "mla")]


def allocate(backend, layout, heads, dim, seed):
    """One layer's cache as vLLM's _reshape_kv_cache_tensors makes it."""
    shape, order = cache_shape(layout, BLOCKS, BS, heads, dim)
    phys = tuple(shape[i] for i in order)
    inv = tuple(order.index(i) for i in range(len(order)))
    n = int(np.prod(phys))
    if backend == "numpy":
        raw = np.random.default_rng(seed).integers(0, 1 << 16, n, dtype=np.uint16)
        return raw.view(np.float16).reshape(phys).transpose(inv)
    g = torch.Generator(device="cuda").manual_seed(seed)
    raw = torch.empty(n * 2, dtype=torch.int8, device="cuda")
    t = raw.view(torch.bfloat16).view(phys)
    t.copy_(torch.randn(phys, generator=g, device="cuda", dtype=torch.float32))
    return t.permute(*inv)


def rows(cache, layout, plane, slots, dim, backend):
    """(tokens, heads, dim) of one plane at the slots, as bit patterns."""
    b, o = slots // BS, slots % BS
    if backend == "cuda":
        b = torch.as_tensor(b, device="cuda")
        o = torch.as_tensor(o, device="cuda")
    if layout.startswith("flash_attn"):
        v = cache[plane][b, o]
    elif layout.startswith("flashinfer"):
        v = cache[:, plane][b, o]
    elif layout.startswith("packed"):
        perm = (0, 2, 1, 3)
        nhd = cache.transpose(perm) if backend == "numpy" else cache.permute(*perm)
        v = nhd[b, o][..., plane * dim:(plane + 1) * dim]
    elif layout == "mla":
        v = cache[b, o]
    else:
        v = cache[:, 0][b, o]
    if backend == "numpy":
        return np.ascontiguousarray(v).view(np.uint16)
    return v.contiguous().view(torch.int16).cpu().numpy()


def worker(backend, layout, mla, caches):
    heads = 1 if mla else HEADS
    mc = ModelConfig("test/vllm-0.33", "float16" if backend == "numpy" else "bfloat16",
                     LAYERS, heads, MLA_DIM if mla else DIM, use_mla=mla)
    cfg = VllmConfig(mc, CacheConfig(BS), ParallelConfig(), KVTransferConfig())
    names = [layer_name(l) for l in range(LAYERS)]
    kcc = KVCacheConfig(BLOCKS, kv_cache_groups=[KVCacheGroupSpec(names)])
    w = KvstashConnector(cfg, KVConnectorRole.WORKER, kcc)
    w.register_kv_caches(dict(zip(names, caches)))
    return w, names


def step(w, names, m):
    meta = KvstashConnectorMetadata(requests=[m])
    w.bind_connector_metadata(meta)
    w.start_load_kv(ForwardContext())
    for n in names:
        w.wait_for_layer_load(n)
    w.wait_for_save()
    w.get_finished(set())
    bad = w.get_block_ids_with_load_errors()
    w.clear_connector_metadata()
    return bad


def roundtrip(backend, src, dst, mla, seed):
    heads, dim = (1, MLA_DIM) if mla else (HEADS, DIM)
    toks = np.random.default_rng(seed).integers(0, 1 << 17, TOKENS).astype(np.uint32)
    nblk = -(-TOKENS // BS)
    rng = np.random.default_rng(seed + 1)
    blocks_a = [int(x) for x in rng.permutation(BLOCKS)[:nblk]]
    blocks_b = [int(x) for x in rng.permutation(BLOCKS)[:nblk]]
    stored = TOKENS // CHUNK * CHUNK

    a_caches = [allocate(backend, src, heads, dim, seed + 10 + l) for l in range(LAYERS)]
    a, names = worker(backend, src, mla, a_caches)
    assert step(a, names, ReqMeta("r", toks, blocks_a, store_start=0, store_end=stored)) \
        == set()
    a.shutdown()                                # waits for the writes

    b_caches = [allocate(backend, dst, heads, dim, seed + 90 + l) for l in range(LAYERS)]
    before = [rows(c, dst, 0, np.arange(BLOCKS * BS), dim, backend) for c in b_caches]
    b, names = worker(backend, dst, mla, b_caches)
    assert step(b, names, ReqMeta("r", toks, blocks_b, load_start=0, load_end=stored)) \
        == set()
    assert b._engine.stats()["retrieve_hit_tokens"] == stored
    if backend == "cuda":
        torch.cuda.synchronize()
    t = np.arange(stored)
    sa = np.asarray(blocks_a)[t // BS] * BS + t % BS
    sb = np.asarray(blocks_b)[t // BS] * BS + t % BS
    for l in range(LAYERS):
        for p in range(1 if mla else 2):
            want = rows(a_caches[l], src, p, sa, dim, backend)
            got = rows(b_caches[l], dst, p, sb, dim, backend)
            assert want.shape == got.shape
            assert np.array_equal(want, got), "layer %d plane %d differs" % (l, p)
        # Nothing outside the loaded slots was written.
        untouched = np.setdiff1d(np.arange(BLOCKS * BS), sb)
        now = rows(b_caches[l], dst, 0, untouched, dim, backend)
        assert np.array_equal(now, before[l][untouched])
    b.shutdown()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("src,dst", PAIRS)
def test_store_and_restore_across_vllm_layouts(store, monkeypatch, backend, src, dst):
    monkeypatch.setenv("LMCACHE_CHUNK_SIZE", str(CHUNK))
    monkeypatch.setenv("LMCACHE_LOCAL_CPU", "False")
    roundtrip(backend, src, dst, False, seed=PAIRS.index((src, dst)))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("src,dst", MLA_PAIRS)
def test_store_and_restore_mla(store, monkeypatch, backend, src, dst):
    monkeypatch.setenv("LMCACHE_CHUNK_SIZE", str(CHUNK))
    monkeypatch.setenv("LMCACHE_LOCAL_CPU", "False")
    roundtrip(backend, src, dst, True, seed=100 + MLA_PAIRS.index((src, dst)))
