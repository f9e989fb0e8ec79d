"""Engine from Python on numpy memory: real files in a real folder, every
layout the KV description covers, layer-by-layer loading, corruption,
errors carrying the library's message, and a second process."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import kvstash
from conftest import CHUNK, GEO

L, H, D = GEO["num_layers"], GEO["num_kv_heads"], GEO["head_dim"]


def kv_data(tokens, seed=1):
    """[layer][2][token][H][D] fp16 filled with values unique per position."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((L, 2, tokens, H, D)).astype(np.float16)


def prompt(n, seed=0):
    return np.random.default_rng(seed).integers(0, 128000, n, dtype=np.uint32)


def test_contiguous_roundtrip_and_partial_chunk(engine):
    toks = prompt(5 * CHUNK + 7)
    src = kv_data(toks.size)
    res = engine.store(toks, src, wait=True)
    assert res.ok and res.tokens == 5 * CHUNK and res.chunks_done == 5
    assert engine.lookup(toks) == 5 * CHUNK
    assert engine.lookup(toks[:3 * CHUNK + 1]) == 3 * CHUNK
    dst = np.zeros_like(src)
    assert engine.retrieve(toks, dst) == 5 * CHUNK
    assert np.array_equal(dst[:, :, :5 * CHUNK], src[:, :, :5 * CHUNK])
    # A second store finds every chunk present and writes nothing.
    again = engine.store(toks, src, wait=True)
    assert again.chunks_done == 0 and again.chunks_present == 5
    s = engine.stats()
    assert s["chunks_stored"] == 5 and s["chunks_store_present"] == 5
    assert s["retrieve_hit_tokens"] == 5 * CHUNK
    assert s["bytes_written"] == 5 * engine.chunk_bytes
    assert engine.chunk_bytes == L * 2 * CHUNK * H * D * 2


def test_other_prompt_misses_and_shared_prefix_hits(engine):
    a = prompt(4 * CHUNK, seed=1)
    engine.store(a, kv_data(a.size), wait=True)
    b = a.copy()
    b[2 * CHUNK + 3] += 1                     # diverges inside chunk 2
    assert engine.lookup(b) == 2 * CHUNK
    assert engine.lookup(prompt(4 * CHUNK, seed=2)) == 0


def _paged(layout, num_blocks, block_size, planes=2):
    if layout == "flash_attn":
        shape = (2, num_blocks, block_size, H, D)
    elif layout == "flashinfer":
        shape = (num_blocks, 2, block_size, H, D)
    else:
        shape = (num_blocks, block_size, H * D)
    return [np.zeros(shape, np.float16) for _ in range(L)]


def _gather(layers, layout, slots, block_size):
    """[layer][plane][token][H][D] read from paged layers through slots."""
    out = []
    for t in layers:
        b, o = slots // block_size, slots % block_size
        if layout == "flash_attn":
            out.append(np.stack([t[0, b, o], t[1, b, o]]))
        elif layout == "flashinfer":
            out.append(np.stack([t[b, 0, o], t[b, 1, o]]))
        else:
            out.append(t[b, o].reshape(1, len(slots), H, D))
    return np.stack(out)


@pytest.mark.parametrize("layout", ["flash_attn", "flashinfer"])
def test_paged_layouts_with_slot_mapping(engine, layout):
    bs, nblocks = 8, 40
    toks = prompt(4 * CHUNK, seed=3)
    src = kv_data(toks.size, seed=3)
    engine.store(toks, src, wait=True)
    layers = _paged(layout, nblocks, bs)
    kv = kvstash.KV.paged(layers)                 # layout detected from the shape
    assert kv.block_size == bs and kv.num_slots == nblocks * bs
    block_ids = np.random.default_rng(4).permutation(nblocks)[:toks.size // bs]
    slots = kvstash.slot_mapping_from_blocks(block_ids, bs, toks.size)
    assert engine.retrieve(toks, kv, slot_mapping=slots) == toks.size
    assert np.array_equal(_gather(layers, layout, slots, bs), src)
    # Back out of the paged layout under another prompt: same bytes.
    toks2 = prompt(4 * CHUNK, seed=5)
    assert engine.store(toks2, kv, slot_mapping=slots, wait=True).chunks_done == 4
    dst = np.zeros_like(src)
    assert engine.retrieve(toks2, dst) == toks.size
    assert np.array_equal(dst, src)


def test_mla_paged_and_contiguous(store):
    cfg = kvstash.Config.load({"chunk_size": CHUNK})
    geo = dict(GEO, layout="mla", num_kv_heads=1, head_dim=24, world_size=4, rank=3)
    with kvstash.Engine(cfg, **geo) as eng:
        toks = prompt(3 * CHUNK, seed=6)
        src = np.random.default_rng(6).standard_normal((L, toks.size, 24)).astype(np.float16)
        assert eng.store(toks, src, wait=True).chunks_done == 3
        bs = 4
        layers = [np.zeros((30, bs, 24), np.float16) for _ in range(L)]
        blocks = np.arange(toks.size // bs)[::-1] + 2
        slots = kvstash.slot_mapping_from_blocks(blocks, bs, toks.size)
        assert eng.retrieve(toks, kvstash.KV.paged(layers), slot_mapping=slots) == toks.size
        for l in range(L):
            assert np.array_equal(layers[l][slots // bs, slots % bs], src[l])
    # MLA namespaces leave out the tensor-parallel rank: rank 0 reads it.
    with kvstash.Engine(cfg, **dict(geo, rank=0)) as eng0:
        assert eng0.lookup(toks) == 3 * CHUNK


def test_negative_slots_skip_and_keep(engine):
    toks = prompt(3 * CHUNK, seed=7)
    src = kv_data(toks.size, seed=7)
    slots = np.arange(toks.size, dtype=np.int64)
    slots[CHUNK + 2] = -1                          # chunk 1 has a token without a place
    res = engine.store(toks, src, slot_mapping=slots, wait=True)
    assert res.chunks_done == 2                    # chunks 0 and 2; 1 is skipped
    assert engine.lookup(toks) == CHUNK            # so the prefix stops at chunk 1
    engine.store(toks, src, wait=True)
    assert engine.lookup(toks) == toks.size
    dst = np.full_like(src, 7)
    keep = np.arange(toks.size, dtype=np.int64)
    keep[:CHUNK] = -1                              # chunk 0 is already in place
    assert engine.retrieve(toks, dst, slot_mapping=keep) == toks.size
    assert (dst[:, :, :CHUNK] == 7).all()          # untouched
    assert np.array_equal(dst[:, :, CHUNK:], src[:, :, CHUNK:])


def test_layer_by_layer_retrieve(engine):
    toks = prompt(6 * CHUNK, seed=8)
    src = kv_data(toks.size, seed=8)
    engine.store(toks, src, wait=True)
    dst = np.zeros_like(src)
    with engine.retrieve_start(toks, dst) as op:
        for layer in range(L):
            assert op.wait_layer(layer) == toks.size
            assert np.array_equal(dst[layer], src[layer])
        res = op.wait()
    assert res.ok and res.tokens == toks.size and res.chunks_done == 6
    assert op.result is res


def test_corrupt_file_loads_the_prefix_before_it(engine):
    toks = prompt(4 * CHUNK, seed=9)
    src = kv_data(toks.size, seed=9)
    engine.store(toks, src, wait=True)
    keys = kvstash.chunk_keys(toks, CHUNK)
    path = os.path.join(engine.namespace_path, keys[2].hex()[:2], keys[2].hex()[2:4],
                        keys[2].hex())
    with open(path, "r+b") as f:
        f.seek(4096 + 100)
        byte = f.read(1)
        f.seek(4096 + 100)
        f.write(bytes([byte[0] ^ 0x40]))
    dst = np.zeros_like(src)
    assert engine.retrieve(toks, dst) == 2 * CHUNK
    assert np.array_equal(dst[:, :, :2 * CHUNK], src[:, :, :2 * CHUNK])
    assert engine.stats()["miss_checksum"] == 1


def test_chunk_keys_chain():
    a = prompt(3 * CHUNK, seed=10)
    ka = kvstash.chunk_keys(a, CHUNK)
    assert len(ka) == 3 and all(len(k) == 32 for k in ka)
    assert kvstash.chunk_keys(a[:2 * CHUNK + 5], CHUNK) == ka[:2]
    b = a.copy()
    b[0] += 1
    assert all(x != y for x, y in zip(kvstash.chunk_keys(b, CHUNK), ka))


def test_python_side_checks(engine):
    toks = prompt(2 * CHUNK)
    with pytest.raises(ValueError, match="layers"):
        engine.store(toks, np.zeros((L + 1, 2, toks.size, H, D), np.float16))
    with pytest.raises(ValueError, match="2-byte|element"):
        engine.store(toks, np.zeros((L, 2, toks.size, H, D), np.float32))
    with pytest.raises(ValueError, match="slot mapping"):
        engine.retrieve(toks, np.zeros((L, 2, toks.size, H, D), np.float16),
                        slot_mapping=np.arange(5))
    ro = np.zeros((L, 2, toks.size, H, D), np.float16)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        engine.retrieve(toks, ro)
    hnd = np.zeros((L, 2, H, toks.size, D), np.float16).transpose(0, 1, 3, 2, 4)
    with pytest.raises(ValueError, match="contiguous"):
        engine.retrieve(toks, hnd)


def test_library_errors_carry_its_message(store, tmp_path):
    cfg = kvstash.Config.load({"chunk_size": CHUNK})
    with pytest.raises(kvstash.InvalidArgumentError) as e:
        kvstash.Engine(cfg, **dict(GEO, num_layers=0))
    assert "num_layers" in e.value.message and e.value.status == 1
    missing = tmp_path / "no-such-dir"
    cfg.set("weka_path", str(missing))
    with pytest.raises(kvstash.KvstashError) as e:
        kvstash.Engine(cfg, **GEO)
    assert str(missing) in e.value.message
    # Slots past the memory's end: the library refuses, nothing is written.
    with kvstash.Engine(kvstash.Config.load({"chunk_size": CHUNK}), **GEO) as eng:
        toks = prompt(CHUNK)
        buf = np.zeros((L, 2, CHUNK, H, D), np.float16)
        with pytest.raises(kvstash.InvalidArgumentError) as e:
            eng.retrieve(toks, buf, slot_mapping=np.arange(CHUNK) + 100)
        assert e.value.message


def test_close_and_context_manager(store):
    cfg = kvstash.Config.load({"chunk_size": CHUNK})
    eng = kvstash.Engine(cfg, **GEO)
    toks = prompt(2 * CHUNK)
    src = kv_data(toks.size)
    op = eng.store(toks, src)
    eng.close()                     # frees the op, waits for the store
    eng.close()
    assert eng.closed
    with pytest.raises(ValueError, match="closed"):
        eng.lookup(toks)
    assert op.result is not None and op.result.tokens == 2 * CHUNK   # close waited
    with pytest.raises(ValueError, match="freed"):
        op.wait_layer(0)
    with kvstash.Engine(cfg, **GEO) as eng2:
        assert eng2.lookup(toks) == 2 * CHUNK
    assert eng2.closed


def test_metrics_text_matches_stats(engine):
    toks = prompt(2 * CHUNK)
    engine.store(toks, kv_data(toks.size), wait=True)
    engine.lookup(toks)
    text = engine.metrics()
    s = engine.stats()
    ns = engine.namespace_id
    assert 'kvstash_chunks_stored_total{namespace="%s"} %d' % (ns, s["chunks_stored"]) in text
    assert 'kvstash_lookup_hit_tokens_total{namespace="%s"} %d' % (ns, 2 * CHUNK) in text
    assert 'kvstash_chunk_misses_total{namespace="%s",reason="checksum"} 0' % ns in text


def test_second_process_reads_what_this_one_stored(engine, store):
    toks = prompt(3 * CHUNK, seed=11)
    src = kv_data(toks.size, seed=11)
    engine.store(toks, src, wait=True)
    code = textwrap.dedent("""
        import sys, numpy as np, kvstash
        sys.path.insert(0, %r)
        from conftest import GEO, CHUNK
        toks = np.random.default_rng(11).integers(0, 128000, 3 * CHUNK, dtype=np.uint32)
        src = np.random.default_rng(11).standard_normal(
            (GEO["num_layers"], 2, toks.size, GEO["num_kv_heads"], GEO["head_dim"])
        ).astype(np.float16)
        cfg = kvstash.Config.load({"chunk_size": CHUNK})
        with kvstash.Engine(cfg, **GEO) as eng:
            dst = np.zeros_like(src)
            n = eng.retrieve(toks, dst)
            assert n == toks.size and np.array_equal(dst, src), n
        print("ok", n)
    """ % os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "ok %d" % toks.size in out.stdout


def test_close_while_other_threads_call(store):
    """close() racing lookups, stores, retrieves and stats in other threads:
    each call finishes or raises EngineClosedError, nothing is freed under a
    call in flight.  Run in a child process with a deadline, so a hang or a
    crash (SIGFPE, SIGSEGV) fails the test instead of the test run."""
    code = textwrap.dedent("""
        import sys, threading, numpy as np, kvstash
        sys.path.insert(0, %r)
        from conftest import GEO, CHUNK
        L, H, D = GEO["num_layers"], GEO["num_kv_heads"], GEO["head_dim"]
        cfg = kvstash.Config.load({"chunk_size": CHUNK, "gds_io_threads": 2,
                                   "local_cpu": True})
        toks = np.arange(4 * CHUNK, dtype=np.uint32)
        src = np.ones((L, 2, toks.size, H, D), np.float16)
        calls = [0]
        def hammer(eng, kind, stop):
            dst = np.zeros_like(src)
            while not stop.is_set():
                try:
                    if kind == 0:
                        eng.lookup(toks)
                    elif kind == 1:
                        eng.store(toks, src, wait=True)
                    elif kind == 2:
                        eng.stats(); eng.metrics()
                    else:
                        eng.retrieve(toks, dst)
                    calls[0] += 1
                except kvstash.EngineClosedError:
                    return
        for it in range(60):
            eng = kvstash.Engine(cfg, **GEO)
            stop = threading.Event()
            ts = [threading.Thread(target=hammer, args=(eng, k %% 4, stop)) for k in range(8)]
            for t in ts:
                t.start()
            eng.close()
            stop.set()
            for t in ts:
                t.join()
            assert eng.closed
            try:
                eng.lookup(toks)
                raise SystemExit("a lookup after close() did not raise")
            except kvstash.EngineClosedError as e:
                assert "closed" in str(e)
        print("ok", calls[0])
    """ % os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    try:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, timeout=120)
    except subprocess.TimeoutExpired as e:
        pytest.fail("close() racing calls in other threads hung: %s" % (e.stderr,))
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
    assert out.stdout.startswith("ok ")


@pytest.mark.parametrize("field", ["model", "variant", "salt"])
def test_nul_bytes_in_namespace_strings_are_refused(store, field):
    """A NUL byte would cut the C string there: salts "a\\0x" and "a\\0y"
    would be one tenant.  Refused with the field named."""
    cfg = kvstash.Config.load({"chunk_size": CHUNK})
    geo = dict(GEO)
    geo[field] = "tenant\0a"
    with pytest.raises(ValueError, match="%s contains a NUL byte" % field):
        kvstash.Engine(cfg, **geo)
    geo[field] = "tenant"
    with kvstash.Engine(cfg, **geo) as eng:
        assert eng.lookup(prompt(CHUNK)) == 0


def test_nul_bytes_in_config_values_are_refused(store):
    """Config.set hands C strings to the library: namespace_salt "a\\0b"
    would become "a".  Refused, the key named."""
    with pytest.raises(kvstash.ConfigError, match="namespace_salt.*NUL"):
        kvstash.Config.load({"chunk_size": CHUNK, "namespace_salt": "tenant\0a"})
    with pytest.raises(kvstash.ConfigError, match="NUL"):
        kvstash.Config.load({"namespace_salt\0x": "tenant"})


def test_check_kv_refuses_before_any_request(engine):
    """check_kv runs the library's own judgement of a description (the one
    the connector applies in register_kv_caches) without a request: a
    vLLM-shaped packed cache passes; a description whose V plane starts
    inside the K head row is refused naming the strides."""
    blocks, bs = 4, CHUNK
    good = [np.zeros((blocks, H, bs, 2 * D), np.float16) for _ in range(L)]
    engine.check_kv(kvstash.KV.paged(good, num_planes=2))
    bufs = [np.zeros(blocks * bs * H * 2 * D, np.float16) for _ in range(L)]
    row = 2 * D * 2                                  # bytes of one head's K|V
    bad = kvstash.KV([b.ctypes.data for b in bufs], num_slots=blocks * bs, row_elems=H * D,
                     itemsize=2, num_planes=2, slot_stride=H * row, plane_stride=D,
                     block_size=bs, block_stride=bs * H * row, head_stride=row,
                     num_heads=H, arrays=bufs, dtype="float16", layout="packed")
    with pytest.raises(kvstash.KvstashError, match="stride"):
        engine.check_kv(bad)
