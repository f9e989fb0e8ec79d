"""KvstashConnector against the vLLM of v0.11.1 to v0.33 (issue 9): every
cache layout, vLLM's failure policy, its call orders (speculative decoding,
async scheduling, idle steps, FULL CUDA-graph replay, shared bad blocks,
preemption), parallelism refusals, and a scheduler that a slow or hung
store never stalls.  MiniVllm (vllm_standins.py) drives real connectors on
real files; "poison" is what attention over missing KV computes, and no
test lets poison reach the store: a later instance must load every stored
chunk, every byte as the model computes it."""

import os
import shutil
import subprocess
import tempfile
import threading
import time

import numpy as np
import pytest

import kvstash
from kvstash.vllm import KvstashConnector
from vllm_standins import (CacheConfig, KVCacheConfig, KVCacheGroupSpec, KVConnectorRole,
                           KVTransferConfig, MiniVllm, ModelConfig, ParallelConfig, Request,
                           VllmConfig, layer_name)

CHUNK = 16


@pytest.fixture
def env(store, monkeypatch):
    monkeypatch.setenv("LMCACHE_CHUNK_SIZE", str(CHUNK))
    monkeypatch.setenv("LMCACHE_LOCAL_CPU", "False")
    # Lookups answer in the step they are asked, however loaded the machine
    # (the deadline has tests of its own).
    monkeypatch.setenv("LMCACHE_LOOKUP_TIMEOUT_MS", "30000")
    # Scheduler lookups see stores as soon as they land.
    monkeypatch.setenv("KVSTASH_NEGATIVE_CACHE_MS", "0")
    return store


def prompt(n, seed=0):
    return [int(x) for x in np.random.default_rng(seed).integers(0, 50000, n)]


def stored_tokens(p):
    geo = dict(model="test/llama", num_layers=3, num_kv_heads=2, head_dim=8,
               dtype="float16", layout="mha", world_size=1, rank=0)
    with kvstash.Engine(kvstash.Config.load({"local_cpu": False}), **geo) as eng:
        return eng.lookup(p)


def chunk_path(p, i):
    geo = dict(model="test/llama", num_layers=3, num_kv_heads=2, head_dim=8,
               dtype="float16", layout="mha", world_size=1, rank=0)
    with kvstash.Engine(kvstash.Config.load({"local_cpu": False}), **geo) as eng:
        key = kvstash.chunk_keys(p, CHUNK)[i].hex()
        return os.path.join(eng.namespace_path, key[:2], key[2:4], key)


def corrupt(path):
    with open(path, "r+b") as f:
        f.seek(4096 + 77)
        b0 = f.read(1)[0]
        f.seek(4096 + 77)
        f.write(bytes([b0 ^ 1]))


def seed_store(p, n_chunks, **kw):
    a = MiniVllm(**kw)
    a.add("seed", p[:n_chunks * CHUNK + 1])
    a.run()
    a.close()
    assert stored_tokens(p) == n_chunks * CHUNK


def check_store_clean(p, **kw):
    """A fresh instance loads whatever is stored for p: it must all be the
    model's KV (a poisoned chunk would poison the instance)."""
    c = MiniVllm(**kw)
    c.add("check", p)
    c.run()
    ok = c.correct("check", 0, len(p)) and not c.poisoned and not any(c.load_errors)
    loaded = c.metas[0].requests[0].load_end if c.metas[0].requests else 0
    c.close()
    return ok, loaded


# ---- layouts -------------------------------------------------------------------

LAYOUTS = ["flash_attn", "flash_attn_hnd", "flashinfer", "flashinfer_hnd", "packed_nhd",
           "packed_hnd"]


@pytest.mark.parametrize("src,dst", [("flash_attn", "packed_nhd"), ("packed_nhd", "packed_hnd"),
                                     ("packed_hnd", "flashinfer"),
                                     ("flashinfer_hnd", "flash_attn_hnd"),
                                     ("flash_attn_hnd", "packed_nhd")])
def test_every_layout_reads_what_any_other_stored(env, src, dst):
    # An instance on vLLM 0.20 (per-plane caches) and one on 0.33 (packed,
    # NHD or HND) share one store.
    p = prompt(3 * CHUNK + 5, seed=1)
    a = MiniVllm(layout=src, block_size=16)
    a.add("a", p)
    a.run()
    assert a.correct("a", 0, len(p))
    a.close()
    b = MiniVllm(layout=dst, block_size=16)
    b.free = b.free[::-1]
    b.add("b", p)
    b.run()
    assert b.metas[0].requests[0].load_end == 3 * CHUNK
    assert b.correct("b", 0, len(p)) and not b.poisoned and not any(b.load_errors)
    b.close()


def test_mla_layouts_share(env):
    p = prompt(2 * CHUNK + 3, seed=2)
    a = MiniVllm(mla=True, head_dim=12, layout="mla4", tp=2)
    a.add("a", p)
    a.run()
    a.close()
    b = MiniVllm(mla=True, head_dim=12, layout="mla", tp=2)
    b.add("b", p)
    b.run()
    assert b.correct("b", 0, len(p)) and not any(b.load_errors)
    assert all(w._engine.stats()["retrieve_hit_tokens"] == 2 * CHUNK for w in b.workers)
    b.close()


def test_kv_paged_reads_real_strides():
    # Padded blocks: each block has room for more than its slots.
    big = np.zeros((6, 2, 20, 2, 8), np.float16)
    kv = kvstash.KV.paged([big[:, :, :16]])
    assert (kv.layout, kv.block_size, kv.num_slots) == ("flashinfer", 16, 96)
    assert kv.block_stride == 2 * 20 * 2 * 8 * 2 and kv.head_stride == 0
    # Packed NHD as vLLM 0.26+ allocates it: physical (B, N, H, 2D).
    phys = np.zeros((5, 16, 4, 2 * 64), np.float16)
    kv = kvstash.KV.paged([phys.transpose(0, 2, 1, 3)], num_planes=2)
    assert (kv.layout, kv.num_heads, kv.head_elems) == ("packed", 4, 64)
    assert (kv.plane_stride, kv.head_stride, kv.slot_stride) == (128, 256, 1024)
    # A packed cache of one head and an MLA [B, 1, N, D] look alike: the
    # namespace's plane count decides.
    one = np.zeros((5, 1, 16, 32), np.float16)
    assert kvstash.KV.paged([one], num_planes=2).layout == "packed"
    assert kvstash.KV.paged([one], num_planes=1).layout == "mla"
    assert kvstash.KV.paged([one]).layout == "mla"


# ---- vLLM's failure policy -------------------------------------------------------


def test_policy_fail_is_turned_to_recompute(env, caplog):
    p = prompt(4 * CHUNK + 3, seed=3)
    seed_store(p, 4)
    corrupt(chunk_path(p, 2))
    b = MiniVllm()                        # KVTransferConfig defaults to "fail"
    assert b.policy == "recompute"
    assert "set it to \"recompute\"" in caplog.text
    b.add("b", p)
    b.run()
    assert b.reqs["b"].state == "done" and b.correct("b", 0, len(p))
    b.close()


def test_policy_fail_kept_when_asked_and_said_loudly(env, caplog):
    p = prompt(4 * CHUNK + 3, seed=4)
    seed_store(p, 4)
    corrupt(chunk_path(p, 2))
    b = MiniVllm(extra={"lmcache.load_failure_policy": "vllm"})
    assert b.policy == "fail"
    assert "ENDS WITH AN ERROR" in caplog.text
    b.add("b", p)
    b.run()
    # vLLM ends the request: the report was exact (chunk 2 and after).
    assert b.reqs["b"].state == "error"
    per_chunk = CHUNK // b.bs
    assert b.load_errors[0] == set(b.reqs["b"].blocks[2 * per_chunk:4 * per_chunk])
    b.close()


def test_policy_on_a_vllm_without_the_setting(env):
    class OldKVTransferConfig(KVTransferConfig):
        def __getattribute__(self, name):
            if name == "kv_load_failure_policy":
                raise AttributeError(name)
            return super().__getattribute__(name)

    b = MiniVllm(kvtc=OldKVTransferConfig)
    assert b.sched._policy.startswith("recompute")
    b.close()
    with pytest.raises(ValueError, match="load_failure_policy"):
        MiniVllm(extra={"kvstash.load_failure_policy": "ignore"})


# ---- call orders ------------------------------------------------------------------


def test_spec_decode_order_never_stores_on_missing_kv(env):
    # vLLM >= 0.17 with a drafter: get_block_ids_with_load_errors before
    # wait_for_save.  Chunk 4 computed on the missing chunk 2 must not be
    # stored.
    p = prompt(5 * CHUNK + 3, seed=5)
    seed_store(p, 4)
    corrupt(chunk_path(p, 2))
    b = MiniVllm(spec_tokens=2)
    b.add("b", p, decode=3)
    b.step()
    i_err = b.calls.index("get_block_ids_with_load_errors")
    assert i_err < b.calls.index("wait_for_save")
    assert b.load_errors[0] and b.workers[0]._engine.stats()["stores"] == 0
    b.run()
    assert b.correct("b", 0, len(p))
    b.close()
    ok, loaded = check_store_clean(p)
    assert ok and loaded == 5 * CHUNK


@pytest.mark.parametrize("spec", [0, 2])
def test_async_scheduling_never_stores_on_missing_kv(env, spec):
    # Step 2 is planned before step 1's load error is known, and computes
    # chunk 5 on top of the missing chunk 2.
    p = prompt(6 * CHUNK + 3, seed=6)
    seed_store(p, 4)
    corrupt(chunk_path(p, 2))
    b = MiniVllm(async_sched=True, budget=CHUNK, spec_tokens=spec)
    b.add("b", p, decode=2)
    b.run()
    assert b.reqs["b"].state == "done" and b.correct("b", 0, len(p))
    assert b.load_errors[0]
    b.close()
    ok, loaded = check_store_clean(p)
    assert ok and loaded == 6 * CHUNK        # recomputed chunks stored again: nothing lost


def test_shared_bad_block_first_holder_recomputes_others_never_store(env):
    # vLLM lets only the first request holding a bad block recompute it; a
    # request sharing it through the prefix cache keeps it as computed.
    p = prompt(4 * CHUNK + 3, seed=7)
    q = p[:3 * CHUNK] + prompt(2 * CHUNK + 1, seed=70)
    seed_store(p, 4)
    corrupt(chunk_path(p, 2))
    for async_sched in (False, True):
        b = MiniVllm(async_sched=async_sched)
        b.add("a", p)
        b.add("b", q, local_hit=3 * CHUNK, share_from="a")
        b.run()
        assert b.reqs["a"].state == "done" and b.correct("a", 0, len(p))
        b.close()
        ok, loaded = check_store_clean(q)
        assert ok, "poison stored for the request that shared the bad block"
        ok, loaded = check_store_clean(p)
        assert ok and loaded == 4 * CHUNK


def test_full_graph_replay_loads_before_the_forward(env):
    # 2 chunks + 1 token: 32 loaded, 1 computed - a uniform decode batch,
    # which vLLM replays as a FULL CUDA graph: no per-layer hooks.
    p = prompt(2 * CHUNK + 1, seed=8)
    seed_store(p, 2)
    for mode in ("FULL_AND_PIECEWISE", "FULL_DECODE_ONLY", "FULL"):
        b = MiniVllm(cudagraph=mode)
        b.add("b", p)
        b.step()
        assert b.full_graph_steps == [0]
        assert "wait_for_layer_load" not in b.calls
        assert b.metas[0].load_now and b.load_errors[0] == set()
        assert b.correct("b", 0, len(p)) and not b.poisoned
        b.close()
    # Piecewise: the layerwise path, with its waits.
    b = MiniVllm(cudagraph="PIECEWISE")
    b.add("b", p)
    b.step()
    assert not b.metas[0].load_now and "wait_for_layer_load" in b.calls
    assert b.load_errors[0] == set() and b.correct("b", 0, len(p))
    b.close()


def test_missing_layer_waits_are_reported_exactly(env):
    # Should a step run without hooks that the scheduler did not foresee,
    # nothing unwaited counts as loaded.
    p = prompt(2 * CHUNK + 5, seed=9)
    seed_store(p, 2)
    b = MiniVllm(wait_layers=False)
    b.add("b", p)
    b.step()
    assert not b.metas[0].load_now
    assert b.load_errors[0] == set(b.reqs["b"].blocks[:2 * CHUNK // b.bs])
    b.run()
    assert b.correct("b", 0, len(p))
    b.close()


def test_idle_steps_and_none_block_ids(env):
    p = prompt(2 * CHUNK + 3, seed=10)
    a = MiniVllm()
    a.step()                                  # nothing to do: kv_connector_no_forward
    assert a.calls == ["handle_preemptions", "bind_connector_metadata", "start_load_kv",
                       "get_finished", "get_block_ids_with_load_errors",
                       "clear_connector_metadata"]
    a.add("a", p, decode=4)
    a.run()
    assert any(b is None for so in a.outputs for b in so.scheduled_cached_reqs.new_block_ids)
    assert a.correct("a", 0, len(p))
    a.close()


def test_preemption_and_resumption_under_async_scheduling(env):
    p = prompt(5 * CHUNK + 1, seed=11)
    seed_store(p, 2)
    corrupt(chunk_path(p, 1))
    a = MiniVllm(async_sched=True, budget=2 * CHUNK)
    a.add("a", p)
    a.step()
    a.step()
    a.preempt("a")                            # its failed load is behind it now
    a.free = a.free[::-1]
    a.run()
    assert a.correct("a", 0, len(p))
    a.close()
    ok, loaded = check_store_clean(p)
    assert ok and loaded == 5 * CHUNK


# ---- the scheduler never waits for the filesystem ------------------------------


def _stall(sched, gate):
    real = sched._lookup_pool._fn

    def slow(tokens):
        gate.wait()
        return real(tokens)
    sched._lookup_pool._fn = slow


def test_lookup_never_blocks_the_scheduler(env, monkeypatch):
    monkeypatch.setenv("LMCACHE_LOOKUP_TIMEOUT_MS", "5")
    p = prompt(3 * CHUNK + 1, seed=12)
    seed_store(p, 3)
    b = MiniVllm()
    gate = threading.Event()
    _stall(b.sched, gate)
    b.add("b", p)
    t0 = time.monotonic()
    b.step()                                  # asked: not known yet
    took = time.monotonic() - t0
    assert b.reqs["b"].parked == 1 and b.reqs["b"].state == "waiting"
    assert took < 0.5, "the scheduler waited %.3f s" % took
    gate.set()
    b.run()
    assert b.metas[-1] is not None and b.correct("b", 0, len(p))
    assert any(m.load_end == 3 * CHUNK for meta in b.metas for m in meta.requests)
    b.close()


def test_lookup_on_a_vllm_without_none_answers_a_miss(env, monkeypatch):
    import kvstash.vllm as kv_vllm
    monkeypatch.setattr(kv_vllm, "_vllm_accepts_none", lambda: False)
    monkeypatch.setenv("LMCACHE_LOOKUP_TIMEOUT_MS", "5")
    p = prompt(2 * CHUNK + 1, seed=13)
    seed_store(p, 2)
    b = MiniVllm()
    gate = threading.Event()
    _stall(b.sched, gate)
    t0 = time.monotonic()
    assert b.sched.get_num_new_matched_tokens(Request("x", p), 0) == (0, False)
    assert time.monotonic() - t0 < 0.5
    gate.set()
    b.close()


def test_shutdown_with_a_stuck_lookup_returns_by_its_deadline(env, monkeypatch):
    monkeypatch.setenv("KVSTASH_IO_TIMEOUT_MS", "300")
    monkeypatch.setenv("LMCACHE_LOOKUP_TIMEOUT_MS", "5")
    b = MiniVllm()
    gate = threading.Event()
    _stall(b.sched, gate)
    assert b.sched.get_num_new_matched_tokens(Request("x", prompt(40)), 0) == (None, False)
    t0 = time.monotonic()
    b.close()
    assert time.monotonic() - t0 < 0.3 + 1.0 + 0.5
    gate.set()


def _fuse_ok():
    lib = os.environ.get("KVSTASH_LIBRARY", "")
    slowfs = os.path.join(os.path.dirname(lib), "tests", "slowfs")
    if not (os.path.exists("/dev/fuse") and os.geteuid() == 0 and os.path.exists(slowfs)):
        return None
    return slowfs


@pytest.mark.skipif(_fuse_ok() is None, reason="FUSE cannot run here (needs /dev/fuse, root "
                    "and the build's tests/slowfs)")
def test_hung_mount_never_stalls_the_scheduler(monkeypatch):
    """The store on the project's FUSE slowfs, hung: lookups answer "not
    known yet" within lookup_timeout_ms, then a miss once io_timeout_ms
    has passed; closing the connector returns by its deadline."""
    base = tempfile.mkdtemp(prefix="kvstash-slowfs-")
    backing, mnt, ctl = (os.path.join(base, x) for x in ("backing", "mnt", "ctl"))
    os.mkdir(backing)
    os.mkdir(mnt)
    os.mkfifo(ctl)
    log = open(os.path.join(base, "slowfs.log"), "w")
    daemon = subprocess.Popen([_fuse_ok(), backing, mnt, ctl], stdout=log, stderr=log)

    def control(cmd):
        ack = ctl + ".ack"
        before = open(ack).read().count("\n") if os.path.exists(ack) else 0
        with open(ctl, "w") as f:
            f.write(cmd + "\n")
        until = time.monotonic() + 5
        while time.monotonic() < until:
            if os.path.exists(ack) and open(ack).read().count("\n") > before:
                return
            time.sleep(0.002)
        raise AssertionError("slowfs did not acknowledge %r" % cmd)

    try:
        until = time.monotonic() + 10
        while not os.path.ismount(mnt) and time.monotonic() < until:
            time.sleep(0.01)
        assert os.path.ismount(mnt), open(os.path.join(base, "slowfs.log")).read()
        for k in list(os.environ):
            if k.startswith("LMCACHE_") or (k.startswith("KVSTASH_") and
                                           k != "KVSTASH_LIBRARY"):
                monkeypatch.delenv(k)
        monkeypatch.setenv("LMCACHE_WEKA_PATH", mnt)
        monkeypatch.setenv("LMCACHE_CHUNK_SIZE", str(CHUNK))
        monkeypatch.setenv("LMCACHE_LOCAL_CPU", "False")
        monkeypatch.setenv("KVSTASH_NEGATIVE_CACHE_MS", "0")
        monkeypatch.setenv("KVSTASH_IO_TIMEOUT_MS", "300")
        monkeypatch.setenv("LMCACHE_LOOKUP_TIMEOUT_MS", "5")
        p = prompt(3 * CHUNK + 1, seed=14)
        a = MiniVllm()
        a.add("a", p)
        a.run()
        control("block meta")
        worst = 0.0
        answers = []
        for i in range(40):
            t0 = time.monotonic()
            answers.append(a.sched.get_num_new_matched_tokens(Request("h", p), 0)[0])
            worst = max(worst, time.monotonic() - t0)
            if answers[-1] is not None:
                break
            time.sleep(0.02)
        assert answers[0] is None and answers[-1] == 0, answers
        assert worst < 0.25, "a lookup held the scheduler %.3f s" % worst
        t0 = time.monotonic()
        a.sched.shutdown()
        assert time.monotonic() - t0 < 0.3 + 1.0 + 0.5
        control("pass")
        for w in a.workers:
            w.shutdown()
    finally:
        try:
            with open(ctl, "w") as f:
                f.write("pass\n")
        except OSError:
            pass
        subprocess.run(["umount", "-l", mnt], check=False)
        try:
            daemon.wait(timeout=5)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        log.close()
        shutil.rmtree(base, ignore_errors=True)


# ---- parallelism and settings ---------------------------------------------------


@pytest.mark.parametrize("attr", ["pipeline_parallel_size", "decode_context_parallel_size",
                                  "prefill_context_parallel_size"])
def test_parallelism_the_store_cannot_serve_is_refused(env, attr):
    pc = ParallelConfig(tensor_parallel_size=2)
    setattr(pc, attr, 2)
    cfg = VllmConfig(ModelConfig("m", "float16", 2, 2, 8), CacheConfig(16), pc,
                     KVTransferConfig())
    kcc = KVCacheConfig(8, kv_cache_groups=[KVCacheGroupSpec([layer_name(0), layer_name(1)])])
    for role in KVConnectorRole:
        with pytest.raises(ValueError, match=r"%s=2\) is not supported" % attr):
            KvstashConnector(cfg, role, kcc)


def test_both_spellings_mean_the_same(env):
    req = KvstashConnector.requires_piecewise_for_cudagraph
    assert req({}) is False                          # full decode graphs stay on
    for a in ("kvstash.", "lmcache."):
        for b in ("kvstash.", "lmcache."):
            assert req({a + "piecewise_cudagraph": True}) is True
            assert req({a + "piecewise_cudagraph": True, b + "layerwise": False}) is False
    for prefix in ("kvstash.", "lmcache."):
        b = MiniVllm(extra={prefix + "layerwise": False, prefix + "chunk_size": 32})
        assert b.workers[0]._layerwise is False and b.sched._chunk == 32
        assert b.workers[0].requires_kv_delivery is False
        b.close()
    b = MiniVllm(extra={"lmcache.layerwise": True, "kvstash.layerwise": False})
    assert b.workers[0]._layerwise is False          # kvstash.<key> wins
    b.close()


@pytest.mark.parametrize("async_sched", [False, True])
def test_tensor_parallel_load_failure_on_one_rank_poisons_none(env, async_sched):
    # A chunk that fails on rank 1 only: rank 0's own load succeeds, but what
    # the step computes after attention's all-reduce is poison on rank 0 too,
    # and rank 0 cannot know that in the step itself.
    p = prompt(5 * CHUNK + 3, seed=15)
    a = MiniVllm(tp=2)
    a.add("seed", p[:4 * CHUNK + 1])
    a.run()
    path = _chunk_file_of(a.workers[1]._engine, p, 2)
    a.close()
    corrupt(path)
    b = MiniVllm(tp=2, async_sched=async_sched)
    b.add("b", p, decode=3)
    b.run()
    assert b.load_errors[0] and b.correct("b", 0, len(p))
    b.close()
    c = MiniVllm(tp=2)
    c.add("c", p)
    c.run()
    assert c.correct("c", 0, len(p)) and not c.poisoned and not any(c.load_errors)
    assert c.metas[0].requests[0].load_end == 5 * CHUNK       # nothing lost either
    c.close()


def _chunk_file_of(engine, p, i):
    key = kvstash.chunk_keys(p, CHUNK)[i].hex()
    return os.path.join(engine.namespace_path, key[:2], key[2:4], key)


def test_strided_heads_need_a_library_that_reads_head_stride(monkeypatch):
    # A library older than kvs_kv.head_stride would ignore the field and
    # address the heads as one row: refused, naming the version.
    from kvstash import _lib
    monkeypatch.setattr(_lib, "HEAD_STRIDE_VERSION", 10 ** 9)
    packed = np.zeros((4, 2, 16, 16), np.float16)
    with pytest.raises(kvstash.UnsupportedError, match="head_stride"):
        kvstash.KV.paged([packed], num_planes=2)
    # Contiguous heads never need it.
    assert kvstash.KV.paged([np.zeros((2, 4, 16, 2, 8), np.float16)]).head_stride == 0
