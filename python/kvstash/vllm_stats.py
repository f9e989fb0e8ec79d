"""kvstash's numbers and events in vLLM's own channels.

vLLM collects a connector's statistics in three hops, and kvstash fills each
(read from vLLM's sources: kv_connector/v1/metrics.py, base.py,
kv_connector/utils.py KVOutputAggregator, v1/core/sched/scheduler.py and
v1/metrics/loggers.py, 2025-10 to 2026-08 trees; NixlKVConnectorStats is the
model):

1. Every step each worker's connector answers get_kv_connector_stats() with a
   KVConnectorStats (a dataclass holding one dict, `data`) or None.  The
   executor merges the workers' objects with aggregate(); the scheduler adds
   its own connector's (lookups happen there) the same way.  kvstash's data:

     data["ops"]      {op key: [kind, seconds, bytes, tokens, start, ranks,
                       need]}: one entry per lookup, load or store a request
                       made.  The key names the op the same way on every
                       tensor-parallel rank ("store:<req>:<start>:<end>"),
                       so merging the ranks of one op keeps the slowest
                       rank's time, adds the ranks' bytes (each rank moves
                       its own heads) and keeps the tokens every rank has
                       (the minimum); `ranks` counts the ranks merged, `need`
                       how many will report it.
     data["counters"] {series: increase}: what each engine's counters
                       (kvs_engine_metrics, counter families only) grew by
                       since the last report, without the namespace label,
                       summed over engines: chunk files are per rank, so
                       their counts add up.

2. The scheduler ships `data` to the front end inside SchedulerStats; there
   KVConnectorLogging rebuilds the object (build_kv_connector_stats),
   accumulates it over the log interval with aggregate() and prints
   reduce() ("KV Transfer metrics: ...").

3. KVConnectorProm asks the connector class for build_prom_metrics() once and
   then calls observe(data, engine_idx) per step: kvstash puts the counters
   on vLLM's /metrics as vllm:kvstash_<family> with vLLM's labels (model
   name, engine) plus the family's own, and one histogram observation per
   op: vllm:kvstash_request_{lookup,load,store}_seconds and
   vllm:kvstash_request_bytes{op}.

Events: stores that completed on every rank become vLLM KV events
(BlockStored, medium "kvstash" unless kvstash.event_medium says otherwise)
for the request's vLLM blocks, handed out by the scheduler connector's
take_events(), so KV-aware routers see the shared tier as they see vLLM's
own CPU offloading tier (whose medium is "CPU").

Without vLLM installed the base classes below are stand-ins with the same
shape, so the tests exercise the same code.
"""

import copy
import itertools
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

try:  # vLLM >= 0.11: the dataclass form with `data`
    from vllm.distributed.kv_transfer.kv_connector.v1.metrics import (  # type: ignore
        KVConnectorStats)
    HAVE_VLLM_METRICS = True
except Exception:  # no vLLM (tests, the CLI) or a vLLM without connector stats
    HAVE_VLLM_METRICS = False

    @dataclass
    class KVConnectorStats:
        """Stand-in for vLLM's KVConnectorStats (same fields and methods)."""
        data: dict = field(default_factory=dict)

        def reset(self):
            raise NotImplementedError

        def aggregate(self, other):
            raise NotImplementedError

        def reduce(self):
            raise NotImplementedError

        def is_empty(self):
            raise NotImplementedError

try:  # build_prom_metrics came a little later (PR #26811)
    from vllm.distributed.kv_transfer.kv_connector.v1.metrics import (  # type: ignore
        KVConnectorPromMetrics)
except Exception:
    class KVConnectorPromMetrics:
        """Stand-in for vLLM's KVConnectorPromMetrics: metric_types maps
        vLLM's Gauge/Counter/Histogram classes to the ones to create."""

        def __init__(self, vllm_config, metric_types, labelnames, per_engine_labelvalues):
            by_name = {getattr(k, "__name__", str(k)): v for k, v in metric_types.items()}
            self._kv_transfer_config = getattr(vllm_config, "kv_transfer_config", None)
            self._gauge_cls = by_name.get("Gauge")
            self._counter_cls = by_name.get("Counter")
            self._histogram_cls = by_name.get("Histogram")
            self._labelnames = labelnames
            self.per_engine_labelvalues = per_engine_labelvalues

        def observe(self, transfer_stats_data, engine_idx=0):
            raise NotImplementedError

try:
    from vllm.distributed.kv_events import BlockStored  # type: ignore
except Exception:
    @dataclass
    class BlockStored:
        """Stand-in for vLLM's BlockStored KV event (vllm/distributed/kv_events.py)."""
        block_hashes: list
        parent_block_hash: object
        token_ids: list
        block_size: int
        lora_id: object
        medium: object
        lora_name: object = None

try:
    from vllm.v1.core.kv_cache_utils import maybe_convert_block_hash  # type: ignore
except Exception:
    def maybe_convert_block_hash(h):
        return h

MEDIUM = "kvstash"

# Histogram buckets: latencies from 0.5 ms to a minute, bytes 1 MiB..64 GiB.
LOOKUP_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                  5.0]
XFER_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0]
BYTE_BUCKETS = [float(1 << (20 + 2 * i)) for i in range(9)]

# The histograms kvstash adds to vLLM's /metrics: (name, help, label added).
# Their names must not collide with a counter family's (kvstash_<x>_total).
HISTOGRAMS = (
    ("vllm:kvstash_request_lookup_seconds",
     "Time of each kvstash lookup of a request's prompt (scheduler).", None),
    ("vllm:kvstash_request_load_seconds",
     "Time of each kvstash load of a request's tokens, slowest rank.", None),
    ("vllm:kvstash_request_store_seconds",
     "Time of each kvstash store of a request's chunks, slowest rank, to the last "
     "chunk's end.", None),
    ("vllm:kvstash_request_bytes",
     "Bytes each kvstash load or store of a request moved, all ranks.", "op"),
)

_KINDS = ("lookup", "load", "store")
K_KIND, K_SECONDS, K_BYTES, K_TOKENS, K_START, K_RANKS, K_NEED = range(7)


def _empty_data():
    return {"ops": {}, "counters": {}}


@dataclass
class KvstashConnectorStats(KVConnectorStats):
    """kvstash's KVConnectorStats; `data` as the module docstring says."""

    def __post_init__(self):
        if not self.data:
            self.reset()
        else:
            self.data.setdefault("ops", {})
            self.data.setdefault("counters", {})

    def reset(self):
        self.data = _empty_data()

    def is_empty(self):
        return not self.data.get("ops") and not any(self.data.get("counters", {}).values())

    def aggregate(self, other):
        if other is None or other is self or other.is_empty():
            return self
        ops = self.data.setdefault("ops", {})
        for key, rec in other.data.get("ops", {}).items():
            cur = ops.get(key)
            if cur is None:
                ops[key] = list(rec)
                continue
            cur[K_SECONDS] = max(cur[K_SECONDS], rec[K_SECONDS])
            cur[K_BYTES] += rec[K_BYTES]
            cur[K_TOKENS] = min(cur[K_TOKENS], rec[K_TOKENS])
            cur[K_RANKS] += rec[K_RANKS]
        counters = self.data.setdefault("counters", {})
        for series, inc in other.data.get("counters", {}).items():
            counters[series] = counters.get(series, 0) + inc
        return self

    def reduce(self):
        ops = self.data.get("ops", {}).values()
        out = {}
        for kind in _KINDS:
            recs = [r for r in ops if r[K_KIND] == kind]
            if not recs:
                continue
            secs = sorted(r[K_SECONDS] for r in recs)
            name = kind.capitalize() + "s"
            out[name] = len(recs)
            out["%s tokens" % name.rstrip("s")] = sum(r[K_TOKENS] for r in recs)
            out["Avg %s (ms)" % kind] = round(1e3 * sum(secs) / len(secs), 3)
            out["P90 %s (ms)" % kind] = round(1e3 * secs[min(len(secs) - 1,
                                                            int(0.9 * len(secs)))], 3)
            if kind != "lookup":
                nbytes = sum(r[K_BYTES] for r in recs)
                out["%s MB" % name.rstrip("s")] = round(nbytes / 1e6, 3)
        c = self.data.get("counters", {})
        misses = sum(v for k, v in c.items() if k.startswith("kvstash_chunk_misses_total"))
        failed = sum(v for k, v in c.items() if k.startswith("kvstash_store_failures_total"))
        if misses:
            out["Chunk misses"] = misses
        if failed:
            out["Chunks not stored"] = failed
        return out


def _parse_series(series):
    """("family", {"label": "value"}) of 'family{a="x",b="y"}'."""
    if "{" not in series:
        return series, {}
    fam, rest = series.split("{", 1)
    labels = {}
    for part in _split_labels(rest.rstrip("}")):
        k, v = part.split("=", 1)
        labels[k] = v[1:-1].replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
    return fam, labels


def _split_labels(text):
    out, cur, quoted, esc = [], [], False, False
    for ch in text:
        if esc:
            cur.append(ch)
            esc = False
        elif ch == "\\":
            cur.append(ch)
            esc = True
        elif ch == '"':
            cur.append(ch)
            quoted = not quoted
        elif ch == "," and not quoted:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if cur:
        out.append("".join(cur))
    return [p for p in out if p]


def counter_samples(text):
    """{series without namespace: value} of the counter families of one
    engine's Prometheus text."""
    out, counters = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            parts = line.split()
            if len(parts) >= 4 and parts[3] == "counter":
                counters.add(parts[2])
            continue
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        fam, labels = _parse_series(series)
        if fam not in counters:
            continue
        labels.pop("namespace", None)
        key = fam + ("{" + ",".join('%s="%s"' % (k, labels[k]) for k in sorted(labels)) + "}"
                     if labels else "")
        out[key] = out.get(key, 0.0) + float(value)
    return out


class KvstashPromMetrics(KVConnectorPromMetrics):
    """kvstash's metrics on vLLM's /metrics (see the module docstring)."""

    def __init__(self, vllm_config, metric_types, labelnames, per_engine_labelvalues):
        super().__init__(vllm_config, metric_types, labelnames, per_engine_labelvalues)
        self._names = list(labelnames)
        self._values = {int(k): list(v) for k, v in per_engine_labelvalues.items()}
        buckets = {"vllm:kvstash_request_lookup_seconds": LOOKUP_BUCKETS,
                   "vllm:kvstash_request_bytes": BYTE_BUCKETS}
        self._hist = {}
        for name, doc, extra in HISTOGRAMS:
            self._hist[name] = self._histogram_cls(
                name=name, documentation=doc, buckets=buckets.get(name, XFER_BUCKETS),
                labelnames=self._names + ([extra] if extra else []))
        self._counters = {}
        self._lock = threading.Lock()

    def _counter(self, family, keys):
        c = self._counters.get(family)
        if c is None:
            base = family[:-len("_total")] if family.endswith("_total") else family
            c = self._counter_cls(name="vllm:" + base,
                                  documentation="kvstash %s (see docs/metrics.md)" % family,
                                  labelnames=self._names + list(keys))
            self._counters[family] = c
        return c

    def observe(self, transfer_stats_data, engine_idx=0):
        vals = self._values.get(int(engine_idx), [])
        data = transfer_stats_data or {}
        with self._lock:
            for rec in data.get("ops", {}).values():
                kind = rec[K_KIND]
                h = self._hist.get("vllm:kvstash_request_%s_seconds" % kind)
                if h is None:
                    continue
                h.labels(*vals).observe(float(rec[K_SECONDS]))
                if kind != "lookup":
                    self._hist["vllm:kvstash_request_bytes"].labels(*vals, kind).observe(
                        float(rec[K_BYTES]))
            for series, inc in data.get("counters", {}).items():
                if inc <= 0:
                    continue
                fam, labels = _parse_series(series)
                keys = sorted(labels)
                self._counter(fam, keys).labels(*vals, *[labels[k] for k in keys]).inc(inc)


class _Snapshot:
    """What events need of a request after vLLM let go of it."""
    __slots__ = ("block_hashes", "token_ids")

    def __init__(self, request):
        self.block_hashes = list(getattr(request, "block_hashes", None) or [])
        self.token_ids = list(getattr(request, "all_token_ids", None) or
                              getattr(request, "prompt_token_ids", None) or [])


class Observer:
    """One connector's bookkeeping for stats and events (either role)."""

    MAX_REQUESTS = 4096
    COUNTER_INTERVAL_S = 1.0

    def __init__(self, tp=1, stores_per_op=1, block_size=16, medium=MEDIUM, clock=None,
                 log=None):
        self._need = int(stores_per_op)      # ranks that report each store
        self._tp = int(tp)
        self._bs = int(block_size)
        self._medium = medium
        self._clock = clock or time.monotonic
        self._log = log or logging.getLogger("kvstash.vllm")
        self._hit_logged = OrderedDict()     # req_id -> hit tokens last logged
        self._lock = threading.Lock()
        self._stats = KvstashConnectorStats()
        self._started = {}                   # id(op) -> (key, kind, t0, start)
        self._seq = itertools.count()
        self._last = {}                      # engine id -> {series: value}
        self._next_counters = 0.0
        # scheduler side: events
        self._requests = OrderedDict()       # req_id -> Request or _Snapshot
        self._emitted = {}                   # req_id -> tokens covered by events
        self._partial = {}                   # op key -> [ranks, tokens, start]
        self._events = []

    # ---- ops ------------------------------------------------------------------

    def _record(self, key, kind, seconds, nbytes, tokens, start, need):
        with self._lock:
            self._stats.data["ops"][key] = [kind, float(seconds), int(nbytes), int(tokens),
                                            int(start), 1, int(need)]

    def lookup(self, req_id, seconds, hit_tokens):
        self._record("lookup:%s:%d" % (req_id, next(self._seq)), "lookup", seconds, 0,
                     hit_tokens, 0, 1)

    def hit_line(self, req_id, prompt_tokens, hit, computed, to_load):
        """The scheduler's line per request that hits, as LMCache prints it:
        once per request and hit (vLLM may ask again in later steps)."""
        if hit <= 0 or self._hit_logged.get(req_id) == hit:
            return
        self._hit_logged[req_id] = hit
        self._hit_logged.move_to_end(req_id)
        while len(self._hit_logged) > self.MAX_REQUESTS:
            self._hit_logged.popitem(last=False)
        self._log.info("kvstash: request %s: %d prompt tokens, %d on the store, %d in "
                       "vLLM's cache, %d to load", req_id, prompt_tokens, hit, computed,
                       to_load)

    def started(self, op, kind, req_id, start, end):
        """A load or store op of tokens [start, end) began."""
        key = "%s:%s:%d:%d" % (kind, req_id, start, end)
        with self._lock:
            self._started[id(op)] = (key, kind, self._clock(), int(start))

    def finished(self, op, result=None, tokens=None):
        """The op ended with result (an OpResult; None: failed).  tokens:
        what the caller counts as done if not result.tokens - start."""
        with self._lock:
            entry = self._started.pop(id(op), None)
        if entry is None:
            return
        key, kind, t0, start = entry
        nbytes = int(getattr(result, "bytes", 0) or 0) if result is not None else 0
        if tokens is None and result is None:
            tokens = 0
        elif tokens is None and kind == "store":
            # a store's tokens are those of its own chunks now on the store;
            # with any chunk missing, none count (no events for a hole)
            tokens = 0 if int(getattr(result, "chunks_failed", 0) or 0) else \
                int(getattr(result, "tokens", 0) or 0)
        elif tokens is None:
            tokens = max(0, int(getattr(result, "tokens", 0) or 0) - start)
        need = self._need if kind == "store" else self._tp
        self._record(key, kind, self._clock() - t0, nbytes, tokens, start, need)

    # ---- stats ------------------------------------------------------------------

    def _counters(self, engines):
        out = {}
        for eng in engines:
            if eng is None or getattr(eng, "closed", False):
                continue
            try:
                cur = counter_samples(eng.metrics())
            except Exception:
                continue
            last = self._last.get(id(eng), {})
            for series, v in cur.items():
                inc = v - last.get(series, 0.0)
                if inc > 0:
                    out[series] = out.get(series, 0.0) + inc
            self._last[id(eng)] = cur
        return out

    def take_stats(self, engines=()):
        """get_kv_connector_stats(): what happened since the last call, or
        None when nothing did."""
        now = self._clock()
        counters = {}
        if now >= self._next_counters:
            self._next_counters = now + self.COUNTER_INTERVAL_S
            counters = self._counters(engines)
        with self._lock:
            stats, self._stats = self._stats, KvstashConnectorStats()
        for k, v in counters.items():
            stats.data["counters"][k] = stats.data["counters"].get(k, 0) + v
        return None if stats.is_empty() else stats

    # ---- events (scheduler) ----------------------------------------------------------

    def note_request(self, request):
        rid = getattr(request, "request_id", None)
        if rid is None:
            return
        with self._lock:
            self._requests[rid] = request
            self._requests.move_to_end(rid)
            while len(self._requests) > self.MAX_REQUESTS:
                old, _ = self._requests.popitem(last=False)
                self._emitted.pop(old, None)

    def forget_request(self, req_id):
        """vLLM is done with the request: keep what late events need."""
        with self._lock:
            r = self._requests.get(req_id)
            if r is not None and not isinstance(r, _Snapshot):
                self._requests[req_id] = _Snapshot(r)

    def on_connector_output(self, connector_output):
        """update_connector_output(): stores every rank finished become events."""
        stats = getattr(connector_output, "kv_connector_stats", None)
        if not isinstance(stats, KvstashConnectorStats):
            return
        for key, rec in list(stats.data.get("ops", {}).items()):
            if rec[K_KIND] != "store":
                continue
            with self._lock:
                p = self._partial.get(key)
                if p is None:
                    p = self._partial[key] = [0, rec[K_TOKENS], rec[K_START]]
                p[0] += rec[K_RANKS]
                p[1] = min(p[1], rec[K_TOKENS])
                if p[0] < rec[K_NEED]:
                    continue
                del self._partial[key]
            req_id = key.split(":", 1)[1].rsplit(":", 2)[0]
            self._emit(req_id, p[2], p[2] + p[1])
        if len(self._partial) > self.MAX_REQUESTS:  # ranks that never reported
            with self._lock:
                for k in list(self._partial)[:len(self._partial) - self.MAX_REQUESTS]:
                    del self._partial[k]

    def _emit(self, req_id, start, end):
        with self._lock:
            r = self._requests.get(req_id)
            done = self._emitted.get(req_id, 0)
        if r is None or end <= done:
            return   # unknown request, or nothing new
        hashes = list(getattr(r, "block_hashes", None) or [])
        tokens = (r.token_ids if isinstance(r, _Snapshot) else
                  list(getattr(r, "all_token_ids", None) or
                       getattr(r, "prompt_token_ids", None) or []))
        # whole vLLM blocks of the stored range not announced yet (a block
        # straddling start holds tokens of an earlier store or of a chunk the
        # lookup found present: both on the store too)
        b0 = max(done // self._bs, start // self._bs)
        b1 = min(end // self._bs, len(hashes))
        if b1 <= b0:
            return
        ev = _block_stored(
            block_hashes=[maybe_convert_block_hash(h) for h in hashes[b0:b1]],
            parent_block_hash=maybe_convert_block_hash(hashes[b0 - 1]) if b0 else None,
            token_ids=[int(t) for t in tokens[b0 * self._bs:b1 * self._bs]],
            block_size=self._bs, lora_id=None, medium=self._medium, lora_name=None)
        with self._lock:
            self._emitted[req_id] = b1 * self._bs
            self._events.append(ev)

    def take_events(self):
        with self._lock:
            ev, self._events = self._events, []
        return ev


def _block_stored(**kw):
    """BlockStored with the fields this vLLM's class has (older ones lack
    lora_name, and medium before the CPU offloading events)."""
    names = getattr(BlockStored, "__struct_fields__", None)
    if names is None:
        names = getattr(BlockStored, "__dataclass_fields__", kw).keys()
    return BlockStored(**{k: v for k, v in kw.items() if k in names})


def build_kv_connector_stats(data=None):
    """The connector class's build_kv_connector_stats(data)."""
    return KvstashConnectorStats(data=copy.deepcopy(data) if data else {})


def build_prom_metrics(vllm_config, metric_types, labelnames, per_engine_labelvalues):
    """The connector class's build_prom_metrics(...)."""
    return KvstashPromMetrics(vllm_config, metric_types, labelnames, per_engine_labelvalues)


__all__ = ["KvstashConnectorStats", "KvstashPromMetrics", "Observer", "HISTOGRAMS",
           "MEDIUM", "build_kv_connector_stats", "build_prom_metrics", "counter_samples"]
