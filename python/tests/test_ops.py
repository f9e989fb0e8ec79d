"""Issue 11, as an operator meets kvstash inside vLLM: the library's lines in
Python's logging, kvstash's numbers through vLLM's connector stats interface
(merged over tensor-parallel workers the way vLLM merges them), KV events
for the blocks kvstash stored, and a loud refusal of a configuration that
names no store path.

vLLM is not installed here, so its side is played as its sources do it
(read at vLLM main 2026-08, base.py 6adad087; NixlKVConnectorStats is the
model of a stats class):

- each worker's get_kv_connector_stats() result is merged by
  KVOutputAggregator.aggregate: the first non-None object is the
  accumulator, each later one goes through accumulator.aggregate(other);
- the scheduler then adds its own connector's stats the same way
  (Scheduler._aggregate_kv_connector_stats), passes the merged object in
  KVConnectorOutput.kv_connector_stats to update_connector_output(), and
  ships `.data` to the front end in SchedulerStats;
- the front end's KVConnectorLogging rebuilds it with
  build_kv_connector_stats(data), aggregates it over the interval and logs
  reduce(); KVConnectorProm calls build_prom_metrics(vllm_config,
  {Gauge: G, Counter: C, Histogram: H}, labelnames, per_engine_labelvalues)
  once and observe(data, engine_idx) per step.
"""

import logging
import os
import subprocess
import sys
import types

import numpy as np
import pytest

import kvstash
from kvstash import _log, metrics, vllm_stats
from kvstash.vllm import KvstashConnector
from vllm_standins import MiniVllm

CHUNK = 16


@pytest.fixture
def env(store, monkeypatch):
    monkeypatch.setenv("LMCACHE_CHUNK_SIZE", str(CHUNK))
    monkeypatch.setenv("LMCACHE_LOCAL_CPU", "False")
    monkeypatch.setenv("LMCACHE_LOOKUP_TIMEOUT_MS", "30000")   # answers within the step
    return store


@pytest.fixture
def kvs_logger():
    """A fresh "kvstash" logger with a list handler; the bridge undone after."""
    log = logging.getLogger("kvstash")
    saved = (log.handlers[:], log.level, log.propagate)
    log.handlers = []
    lines = []

    class H(logging.Handler):
        def emit(self, record):
            lines.append((record.levelno, record.getMessage(), record.threadName))

    log.addHandler(H())
    yield lines
    _log.unbridge()
    log.handlers, log.level, log.propagate = saved


def prompt(n, seed=0):
    return [int(x) for x in np.random.default_rng(seed).integers(0, 50000, n)]


# ---- logs ---------------------------------------------------------------------------


def test_library_lines_go_to_the_kvstash_logger_at_the_configured_level(
        store, monkeypatch, kvs_logger):
    monkeypatch.setenv("LMCACHE_LOG_LEVEL", "DEBUG")
    monkeypatch.delenv("KVSTASH_LOG_LEVEL")
    cfg = kvstash.Config.load({"chunk_size": CHUNK, "local_cpu": False})
    assert cfg.get("log_level") == "debug"
    _log.bridge(cfg.get("log_level"))
    geo = dict(model="m", num_layers=2, num_kv_heads=1, head_dim=8, dtype="fp16")
    with kvstash.Engine(cfg, **geo) as eng:
        t = np.arange(2 * CHUNK, dtype=np.uint32)
        kv = np.random.default_rng(1).standard_normal((2, 2, 2 * CHUNK, 8)).astype(np.float16)
        eng.store(t, kv, wait=True)
        out = np.zeros_like(kv)
        assert eng.retrieve(t, out) == 2 * CHUNK
    msgs = [m for _, m, _ in kvs_logger]
    assert any(m.startswith("engine open: store ") for m in msgs)
    line = [x for x in kvs_logger if x[1].startswith("retrieved 32 of 32 tokens to load")]
    assert line and line[0][0] == logging.INFO
    assert logging.getLogger("kvstash").level == logging.DEBUG

    # warning: info lines are dropped (by the library, not formatted for nothing)
    kvs_logger.clear()
    _log.bridge("warning")
    with kvstash.Engine(cfg, **geo) as eng:
        assert eng.retrieve(t, out) == 2 * CHUNK
    assert not [m for _, m, _ in kvs_logger if m.startswith("retrieved")]


def test_vllm_format_applies_when_vllm_configured_logging(store, kvs_logger):
    """vLLM configures its "vllm" logger (handler, formatter, no
    propagation); kvstash's lines then take vLLM's handlers."""
    log = logging.getLogger("kvstash")
    log.handlers = []
    vllm_log = logging.getLogger("vllm")
    saved = (vllm_log.handlers[:], vllm_log.propagate)
    seen = []

    class Vh(logging.Handler):
        def emit(self, record):
            seen.append(self.format(record))

    h = Vh()
    h.setFormatter(logging.Formatter("VLLMFMT %(levelname)s [%(name)s] %(message)s"))
    vllm_log.handlers, vllm_log.propagate = [h], False
    root = logging.getLogger()
    root_handlers, root.handlers = root.handlers[:], []
    try:
        _log.bridge("info")
        with kvstash.Engine(kvstash.Config.load({"chunk_size": CHUNK, "log_level": "info"}),
                            model="m", num_layers=1, num_kv_heads=1, head_dim=8,
                            dtype="fp16"):
            pass
    finally:
        root.handlers = root_handlers
        vllm_log.handlers, vllm_log.propagate = saved
    assert any(s.startswith("VLLMFMT INFO [kvstash] engine open: ") for s in seen)


def test_logging_from_worker_threads_and_exit_with_stores_in_flight(store, tmp_path):
    """Lines come from the library's I/O threads, and the process exits
    cleanly (no hang, no crash) with the bridge on and stores still being
    written when the interpreter shuts down."""
    code = r"""
import logging, sys, threading, numpy as np, kvstash
names = set()
class H(logging.Handler):
    def emit(self, r):
        names.add(r.threadName)
log = kvstash.log_to_python(level="info")
log.addHandler(H())
cfg = kvstash.Config.load({"chunk_size": 16, "gds_io_threads": 4, "local_cpu": False})
eng = kvstash.Engine(cfg, model="m", num_layers=4, num_kv_heads=2, head_dim=64,
                     dtype="fp16")
kv = np.ones((4, 2, 16 * 64, 128), np.float16)
for i in range(4):
    eng.store(np.arange(16 * 64, dtype=np.uint32) + i * 100000, kv, wait=True)
# damaged files are found (and logged) by the I/O threads
import os
for d, _, files in os.walk(sys.argv[1]):
    for f in files:
        if ".kvstash" not in d and "." not in f:
            os.truncate(os.path.join(d, f), 4096)
out = np.zeros_like(kv)
eng.retrieve(np.arange(16 * 64, dtype=np.uint32), out)
print("threads", sorted(names))
# stores in flight at exit: the engine is never closed
for i in range(8):
    eng.store(np.arange(16 * 64, dtype=np.uint32) + (i + 10) * 100000, kv)
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run([sys.executable, "-c", code, str(store)], capture_output=True,
                       text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    threads = eval(r.stdout.split("threads", 1)[1])
    assert [t for t in threads if t.startswith("Dummy")], threads   # a C thread
    assert "Fatal Python error" not in r.stderr


def test_dropped_stores_are_logged_with_their_reason(store, kvs_logger):
    cfg = kvstash.Config.load({"chunk_size": CHUNK, "local_cpu": False})
    chunk_bytes = 2 * 2 * CHUNK * 8 * 2
    cfg.set("max_pending_store_size", "%.12g" % (chunk_bytes * 1.5 / 1e9))
    _log.bridge("info")
    with kvstash.Engine(cfg, model="m", num_layers=2, num_kv_heads=1, head_dim=8,
                        dtype="fp16") as eng:
        kv = np.ones((2, 2, 8 * CHUNK, 8), np.float16)
        r = eng.store(np.arange(8 * CHUNK, dtype=np.uint32), kv, wait=True)
        assert r.chunks_failed == 7
    warn = [m for lvl, m, _ in kvs_logger if lvl == logging.WARNING]
    assert any("store: 7 of 8 chunks not stored (7: store queue full" in m and
               "max_pending_store_size" in m for m in warn), warn


# ---- metrics, as vLLM collects them -------------------------------------------------


class _Child:
    def __init__(self, parent, values):
        self.parent, self.values = parent, tuple(values)

    def observe(self, v):
        self.parent.samples.setdefault(self.values, []).append(v)

    def inc(self, v=1):
        self.parent.samples[self.values] = self.parent.samples.get(self.values, 0) + v


class _Metric:
    registry = None    # names taken, as prometheus_client's registry checks them
    suffixes = ()

    def __init__(self, name, documentation, labelnames=(), buckets=None):
        self.name, self.labelnames, self.buckets = name, list(labelnames), buckets
        self.samples = {}
        base = name[:-6] if type(self).__name__ == "Counter" and name.endswith("_total") \
            else name
        taken = {base + s for s in self.suffixes}
        assert not (taken & self.registry), "duplicated timeseries %s" % (taken & self.registry)
        self.registry |= taken

    def labels(self, *values):
        assert len(values) == len(self.labelnames), (self.name, values, self.labelnames)
        return _Child(self, values)


def metric_types():
    reg = set()
    G = type("Gauge", (_Metric,), {"registry": reg, "suffixes": ("",)})
    C = type("Counter", (_Metric,), {"registry": reg, "suffixes": ("", "_total", "_created")})
    H = type("Histogram", (_Metric,), {"registry": reg,
                                       "suffixes": ("", "_bucket", "_sum", "_count",
                                                    "_created")})
    return {G: G, C: C, H: H}


class OpsVllm(MiniVllm):
    """MiniVllm plus vLLM's stats and events plumbing around each step."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.shipped = []          # the `data` dicts SchedulerStats would carry
        self.events = []
        self._agg = None
        orig = self.sched.update_connector_output

        def update(out):
            worker_stats = self._agg
            stats = worker_stats
            s = self.sched.get_kv_connector_stats()
            if s is not None and not s.is_empty():
                stats = stats.aggregate(s) if stats is not None else s
            orig(types.SimpleNamespace(invalid_block_ids=out.invalid_block_ids,
                                       kv_connector_stats=stats,
                                       finished_sending=None, finished_recving=None))
            if stats is not None:
                self.shipped.append(stats.data)
            self.events.extend(self.sched.take_events())
            self._agg = None
        self.sched.update_connector_output = update

    def _execute(self, *args, **kw):
        # every worker's stats after its step, merged as KVOutputAggregator does
        invalid = super()._execute(*args, **kw)
        for w in self.workers:
            s = w.get_kv_connector_stats()
            if s is not None:
                assert isinstance(s, vllm_stats.KvstashConnectorStats)
                self._agg = s if self._agg is None else self._agg.aggregate(s)
        return invalid


def hashes_for(req, bs):
    n = len(req.prompt_token_ids) // bs
    req.block_hashes = [("h%d" % i).encode() for i in range(n)]


def test_stats_merged_over_tp_workers_and_on_vllm_metrics(env, caplog, monkeypatch):
    p = prompt(4 * CHUNK + 3, seed=5)
    a = OpsVllm(tp=2)
    a.add("a", p)
    hashes_for(a.reqs["a"].req, a.bs)
    a.run()
    monkeypatch.setenv("KVSTASH_LOG_LEVEL", "info")
    b = OpsVllm(tp=2)
    with caplog.at_level(logging.INFO):
        b.add("b", p)
        b.run()
    try:
        # the scheduler's line per request that hits, once
        hits = [r.getMessage() for r in caplog.records
                if "prompt tokens" in r.getMessage()]
        assert hits == ["kvstash: request b: %d prompt tokens, %d on the store, 0 in vLLM's "
                        "cache, %d to load" % (len(p), 4 * CHUNK, 4 * CHUNK)]
        ops_a = {k: v for d in a.shipped for k, v in d["ops"].items()}
        stores = [v for k, v in ops_a.items() if v[0] == "store"]
        assert len(stores) == 1
        st = stores[0]
        # one op, both ranks merged: their bytes added, the tokens of both
        assert st[vllm_stats.K_RANKS] == 2 and st[vllm_stats.K_NEED] == 2
        assert st[vllm_stats.K_TOKENS] == 4 * CHUNK
        per_rank = 3 * 2 * CHUNK * 8 * 2     # layers x planes x tokens x dim x fp16
        assert st[vllm_stats.K_BYTES] == 2 * 4 * per_rank

        ops_b = {k: v for d in b.shipped for k, v in d["ops"].items()}
        loads = [v for v in ops_b.values() if v[0] == "load"]
        lookups = [v for v in ops_b.values() if v[0] == "lookup"]
        assert len(loads) == 1 and loads[0][vllm_stats.K_RANKS] == 2
        assert loads[0][vllm_stats.K_TOKENS] == 4 * CHUNK
        assert loads[0][vllm_stats.K_BYTES] == 2 * 4 * per_rank
        assert lookups and lookups[0][vllm_stats.K_TOKENS] == 4 * CHUNK

        # counters: each rank's chunk files, summed over the workers
        counters = {}
        for d in b.shipped:
            for k, v in d["counters"].items():
                counters[k] = counters.get(k, 0) + v
        assert counters['kvstash_chunk_hits_total{tier="store"}'] == 2 * 4
        assert counters['kvstash_bytes_total{op="read"}'] == 2 * 4 * per_rank

        # the front end: rebuilt, accumulated over the interval, reduced
        acc = None
        for d in b.shipped:
            s = KvstashConnector.build_kv_connector_stats(d)
            acc = s if acc is None else acc.aggregate(s)
        red = acc.reduce()
        assert red["Loads"] == 1 and red["Load tokens"] == 4 * CHUNK
        assert red["Lookups"] >= 1

        # and Prometheus: one histogram sample per op, counters with vLLM's labels
        vcfg = types.SimpleNamespace(kv_transfer_config=None)
        prom = KvstashConnector.build_prom_metrics(
            vcfg, metric_types(), ["model_name", "engine"], {0: ["m", "0"]})
        for d in b.shipped:
            prom.observe(d, 0)
        h = prom._hist
        assert len(h["vllm:kvstash_request_load_seconds"].samples[("m", "0")]) == 1
        assert h["vllm:kvstash_request_bytes"].samples[("m", "0", "load")] == \
            [float(2 * 4 * per_rank)]
        assert len(h["vllm:kvstash_request_lookup_seconds"].samples[("m", "0")]) >= 1
        hits = prom._counters["kvstash_chunk_hits_total"]
        assert hits.name == "vllm:kvstash_chunk_hits"
        assert hits.labelnames == ["model_name", "engine", "tier"]
        assert hits.samples[("m", "0", "store")] == 8
        # every counter family of the table can sit beside the histograms
        for d in a.shipped:
            prom.observe(d, 0)
    finally:
        a.close()
        b.close()


def test_events_announce_the_blocks_stored_on_every_rank(env):
    p = prompt(3 * CHUNK + 5, seed=6)
    a = OpsVllm(tp=2, extra={"kvstash.event_medium": "WEKA"})
    a.add("a", p)
    hashes_for(a.reqs["a"].req, a.bs)
    a.run()
    try:
        assert len(a.events) == 1
        ev = a.events[0]
        n = 3 * CHUNK // a.bs
        assert ev.block_hashes == [("h%d" % i).encode() for i in range(n)]
        assert ev.parent_block_hash is None
        assert ev.token_ids == p[:3 * CHUNK]
        assert ev.block_size == a.bs and ev.medium == "WEKA"
    finally:
        a.close()


def test_a_store_only_one_rank_finished_is_not_announced():
    obs = vllm_stats.Observer(tp=2, stores_per_op=2, block_size=4)
    req = types.SimpleNamespace(request_id="r", block_hashes=[b"a", b"b", b"c", b"d"],
                                all_token_ids=list(range(16)))
    obs.note_request(req)
    rank0 = vllm_stats.KvstashConnectorStats()
    rank0.data["ops"]["store:r:0:16"] = ["store", 0.1, 100, 16, 0, 1, 2]
    obs.on_connector_output(types.SimpleNamespace(kv_connector_stats=rank0))
    assert obs.take_events() == []
    obs.forget_request("r")                  # finished before rank 1 reported
    rank1 = vllm_stats.KvstashConnectorStats()
    rank1.data["ops"]["store:r:0:16"] = ["store", 0.2, 100, 8, 0, 1, 2]
    obs.on_connector_output(types.SimpleNamespace(kv_connector_stats=rank1))
    ev = obs.take_events()
    assert len(ev) == 1 and ev[0].block_hashes == [b"a", b"b"]   # what both ranks have
    assert ev[0].token_ids == list(range(8))


def test_aggregate_keeps_empty_and_identity_safe():
    s = vllm_stats.KvstashConnectorStats()
    assert s.is_empty() and s.aggregate(vllm_stats.KvstashConnectorStats()) is s
    t = vllm_stats.KvstashConnectorStats(data={"ops": {"load:x:0:16": ["load", 1.0, 5, 16,
                                                                        0, 1, 1]},
                                               "counters": {"kvstash_lookups_total": 2.0}})
    s.aggregate(t).aggregate(t)
    assert s.data["ops"]["load:x:0:16"][vllm_stats.K_RANKS] == 2
    assert s.data["counters"]["kvstash_lookups_total"] == 4.0
    assert t.data["ops"]["load:x:0:16"][vllm_stats.K_RANKS] == 1   # other is not changed


# ---- the separate port and store-wide values -----------------------------------------


def test_store_wide_gauge_is_one_series_and_port_binds_loopback(store):
    cfg = kvstash.Config.load({"chunk_size": CHUNK})
    geo = dict(model="m", num_layers=1, num_kv_heads=1, head_dim=8, dtype="fp16")
    with kvstash.Engine(cfg, rank=0, world_size=2, **geo) as e0, \
            kvstash.Engine(cfg, rank=1, world_size=2, **geo) as e1:
        text = metrics.collect([e0, e1])
        used = [l for l in text.splitlines() if l.startswith("kvstash_store_used_bytes")]
        assert len(used) == 1 and 'store="%s"' % store in used[0]
        assert len([l for l in text.splitlines()
                    if l.startswith("kvstash_lookups_total{")]) == 2
    srv = metrics.serve(0)
    try:
        assert srv.server_address[0] == "127.0.0.1"
    finally:
        srv.shutdown()
        srv.server_close()


# ---- misconfiguration ------------------------------------------------------------------


def test_connector_refuses_a_misspelt_store_path(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("LMCACHE_CHUNK_SIZE", str(CHUNK))
    monkeypatch.setenv("LMCACHE_WEKA_PAHT", "/mnt/weka/kv")
    with pytest.raises(kvstash.ConfigError) as e:
        MiniVllm()
    msg = str(e.value)
    assert "no store path is configured" in msg
    assert 'LMCACHE_WEKA_PAHT (did you mean "LMCACHE_WEKA_PATH"?)' in msg
    assert str(tmp_path / ".cache" / "kvstash") in msg
    assert not (tmp_path / ".cache" / "kvstash").exists()   # nothing written there

    # the CLI and plain engines keep the local default for demos
    monkeypatch.delenv("LMCACHE_WEKA_PAHT")
    monkeypatch.delenv("LMCACHE_CHUNK_SIZE")
    a = MiniVllm()     # nothing configured at all: the local folder, as before
    a.close()


def test_strict_turns_unknown_settings_into_errors(env, monkeypatch):
    monkeypatch.setenv("KVSTASH_GDS_IO_THREAD", "8")
    a = MiniVllm()     # a warning only
    a.close()
    with pytest.raises(kvstash.ConfigError, match='KVSTASH_GDS_IO_THREAD .did you mean '
                                                  '"KVSTASH_GDS_IO_THREADS"'):
        MiniVllm(extra={"kvstash.strict": True})


def test_cli_and_library_keep_the_local_default_and_say_so(monkeypatch, tmp_path, kvs_logger):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    _log.bridge("info")
    cfg = kvstash.Config.load({"chunk_size": CHUNK, "log_level": "info"})
    with kvstash.Engine(cfg, model="m", num_layers=1, num_kv_heads=1, head_dim=8,
                        dtype="fp16"):
        pass
    line = [m for _, m, _ in kvs_logger if m.startswith("engine open: ")]
    assert line and ("store %s (weka_path unset: the local default folder, shared with no "
                     "other machine)" % (tmp_path / ".cache" / "kvstash")) in line[0]
