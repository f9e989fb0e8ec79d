"""torch tensors, host and CUDA: the paths numpy cannot reach.  Skipped
where torch is missing; the CUDA tests are skipped only where torch sees no
GPU (on the GPU machine they run, and fail if the library cannot do CUDA)."""

import numpy as np
import pytest

import kvstash
from conftest import CHUNK

torch = pytest.importorskip("torch")
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")

L, H, D = 3, 2, 8
GEO = dict(model="test/torch", num_layers=L, num_kv_heads=H, head_dim=D, dtype="bf16")


@pytest.fixture
def eng(store):
    cfg = kvstash.Config.load({"chunk_size": CHUNK, "local_cpu": False,
                               "cufile_buffer_size": 64})
    with kvstash.Engine(cfg, **GEO) as e:
        yield e


def toks(n, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 1 << 17, n)
                            .astype(np.int64))


def kv(n, device="cpu", seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn((L, 2, n, H, D), generator=g).to(torch.bfloat16).to(device)


def test_host_tensors_bf16_and_pinned(eng):
    t = toks(3 * CHUNK)
    src = kv(t.numel())
    assert eng.store(t, src, wait=True).chunks_done == 3
    dst = torch.zeros_like(src).pin_memory() if torch.cuda.is_available() \
        else torch.zeros_like(src)
    assert eng.retrieve(t, dst) == t.numel()
    assert torch.equal(dst, src)
    with pytest.raises(ValueError, match="element"):
        eng.store(t, src.float())


@cuda
def test_cuda_contiguous_roundtrip(eng):
    t = toks(4 * CHUNK, 1)
    src = kv(t.numel(), "cuda", 1)
    res = eng.store(t, src, wait=True)
    assert res.ok and res.chunks_done == 4
    dst = torch.zeros_like(src)
    assert eng.retrieve(t, dst) == t.numel()
    torch.cuda.synchronize()
    assert torch.equal(dst, src)
    # Host and device memory share the files.
    host = torch.zeros_like(src, device="cpu")
    assert eng.retrieve(t, host) == t.numel()
    assert torch.equal(host, src.cpu())


@cuda
def test_cuda_store_captures_before_returning(eng):
    t = toks(2 * CHUNK, 2)
    src = kv(t.numel(), "cuda", 2)
    want = src.clone()
    op = eng.store(t, src)
    src.fill_(0)                       # the caller reuses its memory at once
    op.wait()
    op.free()
    dst = torch.zeros_like(src)
    assert eng.retrieve(t, dst) == t.numel()
    assert torch.equal(dst, want)


@cuda
@pytest.mark.parametrize("layout", ["flash_attn", "flashinfer"])
def test_cuda_paged_with_slot_mapping(eng, layout):
    bs, nb = 8, 32
    t = toks(4 * CHUNK, 3)
    src = kv(t.numel(), "cuda", 3)
    eng.store(t, src, wait=True)
    shape = (2, nb, bs, H, D) if layout == "flash_attn" else (nb, 2, bs, H, D)
    layers = [torch.zeros(shape, dtype=torch.bfloat16, device="cuda") for _ in range(L)]
    blocks = torch.randperm(nb)[:t.numel() // bs]
    slots = kvstash.slot_mapping_from_blocks(blocks.numpy(), bs, t.numel())
    paged = kvstash.KV.paged(layers)
    assert paged.is_cuda
    slots_dev = torch.from_numpy(slots).cuda()          # a device slot mapping works too
    assert eng.retrieve(t, paged, slot_mapping=slots_dev) == t.numel()
    torch.cuda.synchronize()
    b, o = slots_dev // bs, slots_dev % bs
    for l in range(L):
        got = (torch.stack([layers[l][0, b, o], layers[l][1, b, o]]) if layout == "flash_attn"
               else torch.stack([layers[l][b, 0, o], layers[l][b, 1, o]]))
        assert torch.equal(got, src[l])
    # And back out of the paged layout, under another prompt.
    t2 = toks(4 * CHUNK, 4)
    assert eng.store(t2, paged, slot_mapping=slots, wait=True).chunks_done == 4
    dst = torch.zeros_like(src)
    assert eng.retrieve(t2, dst) == t.numel()
    assert torch.equal(dst, src)


@cuda
def test_cuda_layer_by_layer_on_a_stream(eng):
    t = toks(6 * CHUNK, 5)
    src = kv(t.numel(), "cuda", 5)
    eng.store(t, src, wait=True)
    dst = torch.zeros_like(src)
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        with eng.retrieve_start(t, dst) as op:
            for l in range(L):
                assert op.wait_layer(l) == t.numel()
                assert torch.equal(dst[l], src[l])     # in place when wait_layer returns
            assert op.wait().tokens == t.numel()


@cuda
def test_cuda_corrupt_file_is_a_miss(eng):
    import os
    t = toks(3 * CHUNK, 6)
    src = kv(t.numel(), "cuda", 6)
    eng.store(t, src, wait=True)
    key = kvstash.chunk_keys(t, CHUNK)[1].hex()
    path = os.path.join(eng.namespace_path, key[:2], key[2:4], key)
    with open(path, "r+b") as f:
        f.seek(4096 + 5)
        b = f.read(1)[0]
        f.seek(4096 + 5)
        f.write(bytes([b ^ 0x10]))
    dst = torch.zeros_like(src)
    assert eng.retrieve(t, dst) == CHUNK
    torch.cuda.synchronize()
    assert torch.equal(dst[:, :, :CHUNK], src[:, :, :CHUNK])
    assert eng.stats()["miss_checksum"] == 1


@cuda
def test_connector_on_cuda_caches(store, monkeypatch):
    """The connector's worker side on real CUDA paged caches."""
    from vllm_standins import (CacheConfig, ForwardContext, KVCacheConfig, KVCacheGroupSpec,
                               KVConnectorRole, KVTransferConfig, ModelConfig, ParallelConfig,
                               VllmConfig, layer_name)
    from kvstash.vllm import KvstashConnector, KvstashConnectorMetadata, ReqMeta
    monkeypatch.setenv("LMCACHE_CHUNK_SIZE", str(CHUNK))
    monkeypatch.setenv("LMCACHE_LOCAL_CPU", "False")
    monkeypatch.setenv("LMCACHE_CUFILE_BUFFER_SIZE", "64")
    bs, nb = 4, 64
    names = [layer_name(l) for l in range(L)]
    cfg = VllmConfig(ModelConfig("test/cuda", "bfloat16", L, H, D), CacheConfig(bs),
                     ParallelConfig(), KVTransferConfig())
    kcc = KVCacheConfig(nb, [KVCacheGroupSpec(names)])
    n = 3 * CHUNK
    t = toks(n + 1, 7).numpy().astype(np.uint32)

    def worker():
        w = KvstashConnector(cfg, KVConnectorRole.WORKER, kcc)
        caches = {nm: torch.zeros((2, nb, bs, H, D), dtype=torch.bfloat16, device="cuda")
                  for nm in names}
        w.register_kv_caches(caches)
        return w, caches

    w1, c1 = worker()
    for nm in names:
        c1[nm].normal_()
    blocks1 = list(range(n // bs))
    w1.bind_connector_metadata(KvstashConnectorMetadata(
        [ReqMeta("a", t[:n], blocks1, store_start=0, store_end=n)]))
    w1.start_load_kv(ForwardContext())
    w1.wait_for_save()
    w1.shutdown()

    w2, c2 = worker()
    blocks2 = list(range(nb - 1, nb - 1 - n // bs, -1))
    w2.bind_connector_metadata(KvstashConnectorMetadata(
        [ReqMeta("b", t[:n], blocks2, load_start=0, load_end=n)]))
    w2.start_load_kv(ForwardContext())
    for nm in names:
        w2.wait_for_layer_load(nm)
    w2.wait_for_save()
    assert w2.get_block_ids_with_load_errors() == set()
    torch.cuda.synchronize()
    for nm in names:
        assert torch.equal(c2[nm][:, blocks2], c1[nm][:, blocks1])
    w2.shutdown()
