"""KvstashConnector without vLLM: stand-ins shaped like vLLM's objects
(vllm_standins.py) drive real connectors over numpy paged caches and real
kvstash engines on real files.  Each MiniVllm is one vLLM instance; two on
one store folder are two servers sharing it."""

import os

import numpy as np
import pytest

import kvstash
from kvstash.vllm import KvstashConnector, ReqMeta
from vllm_standins import KVConnectorRole, MiniVllm, Request, layer_name

CHUNK = 16


@pytest.fixture
def env(store, monkeypatch):
    monkeypatch.setenv("LMCACHE_CHUNK_SIZE", str(CHUNK))
    monkeypatch.setenv("LMCACHE_LOCAL_CPU", "False")
    # Lookups answer in the step they are asked, however loaded the machine
    # (the deadline has tests of its own).
    monkeypatch.setenv("LMCACHE_LOOKUP_TIMEOUT_MS", "30000")
    return store


def prompt(n, seed=0):
    return [int(x) for x in np.random.default_rng(seed).integers(0, 50000, n)]


def stored_tokens(p, tp=1, rank=0, mla=False):
    """What a third party (a fresh engine) finds on the store for prompt p."""
    geo = dict(model="test/llama", num_layers=3, num_kv_heads=1 if mla else 2 // tp,
               head_dim=8, dtype="float16", layout="mla" if mla else "mha",
               world_size=tp, rank=rank)
    with kvstash.Engine(kvstash.Config.load({"local_cpu": False}), **geo) as eng:
        return eng.lookup(p)


def test_slot_mapping_from_block_ids():
    s = kvstash.slot_mapping_from_blocks([7, 2, 9], 4, 10)
    assert s.tolist() == [28, 29, 30, 31, 8, 9, 10, 11, 36, 37]
    s = kvstash.slot_mapping_from_blocks([7, 2, 9], 4, 10, first_token=6)
    assert s.tolist() == [-1] * 6 + [10, 11, 36, 37]
    with pytest.raises(ValueError, match="blocks"):
        kvstash.slot_mapping_from_blocks([1], 4, 5)


def test_store_then_another_instance_loads(env):
    p = prompt(3 * CHUNK + 5)
    a = MiniVllm()
    a.add("a", p)
    a.run()
    assert a.correct("a", 0, len(p))
    assert stored_tokens(p) == 3 * CHUNK          # whole chunks; the partial one is not
    a.close()

    b = MiniVllm()
    # A different block layout than in a: the slot mapping does the rest.
    b.free = b.free[::-1]
    b.add("b", p)
    meta = b.step()
    (m,) = meta.requests
    assert (m.load_start, m.load_end) == (0, 3 * CHUNK)
    assert not m.stores                           # nothing new to store: 3 chunks there
    assert b.load_errors == [set()]
    assert b.correct("b", 0, len(p))
    assert not b.poisoned
    s = b.workers[0]._engine.stats()
    assert s["retrieve_hit_tokens"] == 3 * CHUNK and s["chunks_stored"] == 0
    b.close()


def test_last_prompt_token_is_recomputed(env):
    p = prompt(3 * CHUNK, seed=1)                  # exactly 3 chunks
    a = MiniVllm()
    a.add("a", p)
    a.run()
    a.close()
    assert stored_tokens(p) == 3 * CHUNK
    b = MiniVllm()
    req = Request("x", p)
    n, is_async = b.sched.get_num_new_matched_tokens(req, 0)
    assert (n, is_async) == (2 * CHUNK, False)   # chunk 3 would hold the last token
    req2 = Request("y", p + [5])
    assert b.sched.get_num_new_matched_tokens(req2, 0) == (3 * CHUNK, False)
    b.close()


def test_vllm_prefix_cache_hit_is_not_loaded_again(env):
    p = prompt(4 * CHUNK + 3, seed=2)
    a = MiniVllm()
    a.add("a", p)
    a.run()
    a.close()
    b = MiniVllm()
    local = CHUNK + 8                               # block-aligned, not chunk-aligned
    b.add("b", p, local_hit=local)
    meta = b.step()
    (m,) = meta.requests
    assert (m.load_start, m.load_end) == (local, 4 * CHUNK)
    assert b.correct("b", 0, len(p)) and not b.poisoned
    # Loaded: tokens [local, 4 chunks); vLLM's own blocks were not rewritten
    # (the library skipped them), so the chunk straddling `local` came in part.
    assert b.workers[0]._engine.stats()["retrieve_hit_tokens"] == 4 * CHUNK
    b.close()


def test_chunked_prefill_stores_at_chunk_boundaries(env):
    p = prompt(3 * CHUNK + 9, seed=3)
    a = MiniVllm(budget=CHUNK + 5)                  # steps end mid-chunk
    a.add("a", p, decode=3)
    a.run()
    stores = [(m.store_start, m.store_end) for meta in a.metas for m in meta.requests
              if m.stores]
    assert stores == [(0, CHUNK), (CHUNK, 2 * CHUNK), (2 * CHUNK, 3 * CHUNK)]
    assert all(m.store_end <= len(p) for meta in a.metas for m in meta.requests)
    assert stored_tokens(p) == 3 * CHUNK
    assert a.correct("a", 0, len(p))
    a.close()


def test_block_size_not_dividing_chunk(env):
    # 16-token chunks, 6-token blocks: hits are multiples of 48 (both).
    p = prompt(5 * CHUNK + 2, seed=4)
    a = MiniVllm(block_size=6)
    a.add("a", p)
    a.run()
    a.close()
    b = MiniVllm(block_size=6)
    n, _ = b.sched.get_num_new_matched_tokens(Request("q", p), 0)
    assert n == 48
    b.add("b", p)
    b.run()
    assert b.correct("b", 0, len(p))
    (m,) = b.metas[0].requests
    assert m.load_end == 48 and not m.stores         # chunks 3-4 are stored already
    b.close()


def test_preempted_request_loads_into_its_new_blocks(env, monkeypatch):
    # The scheduler looked these chunks up (absent) a moment ago; without the
    # short-lived miss cache it sees them as soon as they are stored.
    monkeypatch.setenv("KVSTASH_NEGATIVE_CACHE_MS", "0")
    p = prompt(4 * CHUNK + 1, seed=5)
    a = MiniVllm(budget=2 * CHUNK)
    a.add("a", p)
    a.step()                                          # 2 chunks computed and stored
    assert stored_tokens(p) == 2 * CHUNK
    old = list(a.reqs["a"].blocks)
    a.preempt("a")
    a.free = a.free[::-1]                             # other blocks this time
    meta = a.step()
    (m,) = meta.requests
    assert a.outputs[-1].scheduled_cached_reqs.resumed_req_ids == {"a"}
    assert (m.load_start, m.load_end) == (0, 2 * CHUNK)
    assert m.block_ids[:2] != old[:2]
    a.run()
    assert a.correct("a", 0, len(p)) and stored_tokens(p) == 4 * CHUNK
    a.close()


def _chunk_file(engine, p, i):
    key = kvstash.chunk_keys(p, CHUNK)[i].hex()
    return os.path.join(engine.namespace_path, key[:2], key[2:4], key)


def test_corrupt_chunk_reports_its_blocks_and_is_recomputed(env):
    p = prompt(5 * CHUNK + 3, seed=6)
    a = MiniVllm()
    a.add("a", p[:4 * CHUNK + 3])                     # stores chunks 0-3
    a.run()
    path = _chunk_file(a.workers[0]._engine, p, 2)
    a.close()
    with open(path, "r+b") as f:                      # flip one payload bit
        f.seek(4096 + 77)
        b0 = f.read(1)[0]
        f.seek(4096 + 77)
        f.write(bytes([b0 ^ 1]))
    b = MiniVllm()
    b.add("b", p)
    meta = b.step()
    (m,) = meta.requests
    assert (m.load_start, m.load_end) == (0, 4 * CHUNK)
    assert (m.store_start, m.store_end) == (4 * CHUNK, 5 * CHUNK)
    blocks = b.reqs["b"].blocks
    per_chunk = CHUNK // b.bs
    # Chunks 2 and 3 did not load (3 comes after the bad one): their blocks,
    # and only theirs, are reported.
    assert b.load_errors[0] == set(blocks[2 * per_chunk:4 * per_chunk])
    s = b.workers[0]._engine.stats()
    assert s["miss_checksum"] == 1 and s["retrieve_hit_tokens"] == 2 * CHUNK
    # Chunk 4 was computed on the missing KV this step: it was not stored.
    assert s["stores"] == 0 and stored_tokens(p) == 2 * CHUNK
    b.run()                                           # vLLM recomputes from chunk 2
    assert b.correct("b", 0, len(p))
    # The recomputed chunks and chunk 4 were stored (the bad file was set
    # aside), so a third instance loads all five, every byte right.
    assert stored_tokens(p) == 5 * CHUNK
    c = MiniVllm()
    c.add("c", p)
    c.run()
    assert c.metas[0].requests[0].load_end == 5 * CHUNK
    assert c.load_errors[0] == set() and c.correct("c", 0, len(p)) and not c.poisoned
    b.close()
    c.close()


def test_missing_layer_waits_report_every_loaded_block(env):
    p = prompt(2 * CHUNK + 1, seed=7)
    a = MiniVllm()
    a.add("a", p)
    a.run()
    a.close()
    b = MiniVllm(wait_layers=False)                   # as if attention never waited
    b.add("b", p)
    b.step()
    assert b.load_errors[0] == set(b.reqs["b"].blocks[:2 * CHUNK // b.bs])
    b.run()
    assert b.correct("b", 0, len(p))
    b.close()
    # layerwise=false: the load completes in start_load_kv, no waits needed.
    c = MiniVllm(wait_layers=False, extra={"kvstash.layerwise": False})
    c.add("c", p)
    c.step()
    assert c.load_errors[0] == set() and c.correct("c", 0, len(p))
    c.close()


def test_tensor_parallel_ranks_have_their_own_namespaces(env):
    p = prompt(3 * CHUNK + 2, seed=8)
    a = MiniVllm(tp=2)
    a.add("a", p)
    a.run()
    ns = {w._engine.namespace_id for w in a.workers}
    assert len(ns) == 2
    assert stored_tokens(p, tp=2, rank=0) == stored_tokens(p, tp=2, rank=1) == 3 * CHUNK
    assert stored_tokens(p) == 0                      # tp=1 is another namespace
    # The scheduler counts a chunk only when every rank has it.
    os.remove(_chunk_file(a.workers[1]._engine, p, 1))
    a.close()
    b = MiniVllm(tp=2)
    assert b.sched.get_num_new_matched_tokens(Request("q", p), 0) == (CHUNK, False)
    b.add("b", p)
    b.run()
    assert b.correct("b", 0, len(p))
    b.close()


def test_mla_is_stored_once_and_read_by_every_rank(env):
    p = prompt(2 * CHUNK + 3, seed=9)
    a = MiniVllm(tp=2, mla=True, head_dim=12)
    a.add("a", p)
    a.run()
    e0, e1 = (w._engine for w in a.workers)
    assert e0.namespace_id == e1.namespace_id
    assert e0.stats()["chunks_stored"] == 2 and e1.stats()["stores"] == 0
    a.close()
    b = MiniVllm(tp=2, mla=True, head_dim=12)
    b.add("b", p)
    b.run()
    assert b.correct("b", 0, len(p)) and b.load_errors[0] == set()
    assert all(w._engine.stats()["retrieve_hit_tokens"] == 2 * CHUNK for w in b.workers)
    b.close()


def test_flashinfer_layout(env):
    p = prompt(2 * CHUNK + 3, seed=10)
    a = MiniVllm(layout="flashinfer")
    a.add("a", p)
    a.run()
    a.close()
    b = MiniVllm()                                   # read back into flash-attn layout
    b.add("b", p)
    b.run()
    assert b.correct("b", 0, len(p)) and b.load_errors[0] == set()
    b.close()


def test_roles(env):
    p = prompt(2 * CHUNK + 1, seed=11)
    c = MiniVllm(kv_role="kv_consumer")
    c.add("c", p)
    c.run()
    assert stored_tokens(p) == 0
    c.close()
    prod = MiniVllm(kv_role="kv_producer")
    prod.add("p", p)
    prod.run()
    assert stored_tokens(p) == 2 * CHUNK
    prod.add("p2", p)
    prod.run()
    assert all(not m.loads for meta in prod.metas for m in meta.requests)
    prod.close()


def test_requests_not_determined_by_tokens_are_left_alone(env):
    p = prompt(2 * CHUNK + 1, seed=12)
    a = MiniVllm()
    a.add("plain", p)
    a.run()
    for rid, kw in (("mm", dict(mm_features=["image"])), ("lora", dict(lora_request="x")),
                    ("salt", dict(cache_salt="tenant"))):
        a.add(rid, p, **kw)
        assert a.sched.get_num_new_matched_tokens(a.reqs[rid].req, 0) == (0, False)
        a.run()
        assert all(m.req_id != rid for meta in a.metas for m in meta.requests)
    a.close()


def test_unsupported_layout_is_refused(env):
    from vllm_standins import (CacheConfig, KVCacheConfig, KVCacheGroupSpec,
                               KVTransferConfig, ModelConfig, ParallelConfig, VllmConfig)
    cfg = VllmConfig(ModelConfig("m", "float16", 2, 2, 8), CacheConfig(4), ParallelConfig(),
                     KVTransferConfig())
    w = KvstashConnector(cfg, KVConnectorRole.WORKER,
                         KVCacheConfig(8, kv_cache_groups=[
                             KVCacheGroupSpec([layer_name(0), layer_name(1)])]))
    # head_dim not contiguous: every message names shape, strides, what is accepted
    bad = np.zeros((2, 8, 4, 2, 16), np.float16)[..., ::2]
    with pytest.raises(ValueError, match=r"shape \(2, 8, 4, 2, 8\), strides .*accepted"):
        w.register_kv_caches({layer_name(0): bad, layer_name(1): bad})
    # overlapping strides (a broadcast view)
    over = np.broadcast_to(np.zeros((1, 4, 2, 8), np.float16), (2, 8, 4, 2, 8))
    with pytest.raises(ValueError, match="overlap"):
        w.register_kv_caches({layer_name(0): over, layer_name(1): over})
    # the model's heads, not another split of the same row
    other = np.zeros((8, 4, 4, 8), np.float16)          # packed, 4 heads of 4
    with pytest.raises(ValueError, match="heads"):
        w.register_kv_caches({layer_name(0): other, layer_name(1): other})
    with pytest.raises(ValueError, match="layers"):
        w.register_kv_caches({layer_name(0): np.zeros((2, 8, 4, 2, 8), np.float16)})
    with pytest.raises(ValueError, match="cannot tell the layout"):
        kvstash.KV.paged([np.zeros((3, 8, 4, 2, 8), np.float16)])
    assert KvstashConnector.get_required_kvcache_layout(cfg) == "NHD"
    w.shutdown()


def test_metadata_survives_pickling(env):
    import pickle
    m = ReqMeta("r", np.arange(5, dtype=np.uint32), [1, 2], 0, 4, 4, 4)
    m2 = pickle.loads(pickle.dumps(m))
    assert m2.req_id == "r" and m2.token_ids.tolist() == [0, 1, 2, 3, 4] and m2.loads


def test_metrics_port(env, monkeypatch):
    import socket
    import urllib.request
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("KVSTASH_METRICS_PORT", str(port))
    a = MiniVllm()
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
            body = r.read().decode()
        assert "kvstash_lookups_total" in body
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % (port + 1),
                                    timeout=10) as r:
            assert a.workers[0]._engine.namespace_id in r.read().decode()
    finally:
        a.close()


def test_layerwise_loads_in_layer_order(env):
    """With kvstash.layerwise (the default) the connector's engines read a
    retrieve's chunks layer first (retrieve_order layer), so the forward's
    per-layer waits get early layers early; a retrieve_order the user set,
    or layerwise off, leaves chunk order.  Loads are right either way."""
    p = prompt(3 * CHUNK + 2, seed=21)
    a = MiniVllm()
    a.add("a", p)
    a.run()
    a.close()
    for extra, want in (({}, "layer"), ({"kvstash.layerwise": False}, "chunk"),
                        ({"kvstash.retrieve_order": "chunk"}, "chunk")):
        b = MiniVllm(extra=extra)
        assert b.workers[0]._config.get("retrieve_order") == want, extra
        b.add("b", p)
        b.run()
        assert b.correct("b", 0, len(p)) and not b.poisoned, extra
        b.close()
