"""kvstash.vllm - a KV connector for vLLM (KVConnectorBase_V1).

    vllm serve MODEL --kv-transfer-config \\
      '{"kv_connector":"KvstashConnector","kv_connector_module_path":"kvstash.vllm","kv_role":"kv_both"}'

configured like LMCache's Weka backend (LMCACHE_CONFIG_FILE, LMCACHE_*); see
docs/vllm.md.  vLLM builds one connector in the scheduler process
(role SCHEDULER) and one in each worker (role WORKER):

Scheduler side.  get_num_new_matched_tokens() looks the prompt up (whole
chunks present for every tensor-parallel rank, never the last prompt token,
rounded to vLLM's block size); update_state_after_alloc() turns the answer
into a load; build_connector_meta() tells the workers, per request, which
tokens to load (those past vLLM's own prefix-cache hit) and which whole
chunks became computable this step and should be stored, with the
request's block ids.  It remembers per request how far the prompt is
stored, across chunked prefill and preemption (a resumed request gets its
new block list).  Requests whose KV is not determined by their token ids
(multimodal inputs, prompt embeddings, LoRA adapters, a cache salt) are
neither loaded nor stored.

Worker side.  register_kv_caches() reads the per-layer paged tensors into a
kvstash.KV (pointers and strides, no copy) and opens the rank's engine:
namespace per tensor-parallel rank; MLA in one namespace every rank reads,
stored by rank 0 only.  start_load_kv() starts one layer-pipelined retrieve
per request (kvs_retrieve_start); wait_for_layer_load(layer) waits for that
layer only (kvs_op_wait_layer), so attention on layer i overlaps the reads
of later layers.  wait_for_save() stores the chunks computed this step (the
files are layer-major, so one store after the last layer captures every
layer at once; save_kv_layer() has nothing to do).  Blocks whose KV did not
arrive (missing, corrupt, late) are reported through
get_block_ids_with_load_errors() and vLLM recomputes them.

What vLLM does around those calls, and how the connector stays right in
each case (docs/vllm.md has the details):

- A failed load must never fail a request: kvstash makes vLLM's
  kv_load_failure_policy "recompute" (vLLM >= 0.17 defaults to "fail") and
  logs which policy is in force.
- KV computed on top of KV that never arrived is never stored, whatever the
  call order: the worker remembers failed requests and failed blocks across
  steps (speculative decoding asks for load errors before wait_for_save;
  async scheduling plans step N+1 before step N's errors are known), and
  the scheduler stops a request's stores until vLLM has rewound it to its
  first bad block (a block shared by several requests is recomputed by the
  first only: the others never store again).
- Steps vLLM may replay as a FULL CUDA graph (no per-layer hooks) load
  everything in start_load_kv; any load whose layers were not all waited
  for is reported as failed, never as loaded.
- get_num_new_matched_tokens never blocks vLLM's scheduler thread longer
  than lookup_timeout_ms: lookups run on their own threads and a lookup
  still running answers "not known yet" (None), or a miss on vLLM versions
  without that answer.
"""

import logging
import math
import os
import queue
import re
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from . import _lib
from . import metrics as _metrics
from . import _log, checks as _checks, vllm_stats as _vstats  # ops hooks (issue 11)
from .config import Config
from .engine import Engine
from .kv import KV, as_token_array, slot_mapping_from_blocks

try:  # the real base classes when vLLM is installed
    from vllm.distributed.kv_transfer.kv_connector.v1.base import (KVConnectorBase_V1,
                                                                   KVConnectorMetadata)
    HAVE_VLLM = True
except ImportError:  # stand-ins with the same contract, for use and tests without vLLM
    HAVE_VLLM = False

    class KVConnectorMetadata:  # noqa: D101
        pass

    class KVConnectorBase_V1:  # noqa: D101
        def __init__(self, vllm_config, role, kv_cache_config=None):
            self._connector_metadata = None
            self._vllm_config = vllm_config
            self._kv_transfer_config = vllm_config.kv_transfer_config
            self._kv_cache_config = kv_cache_config
            self._role = role

        @property
        def role(self):
            return self._role

        def bind_connector_metadata(self, connector_metadata):
            self._connector_metadata = connector_metadata

        def clear_connector_metadata(self):
            self._connector_metadata = None

        def _get_connector_metadata(self):
            assert self._connector_metadata is not None
            return self._connector_metadata

        def has_connector_metadata(self):
            return self._connector_metadata is not None

        def handle_preemptions(self, kv_connector_metadata):
            return

# Under vLLM, log through its "vllm" logger tree so lines land where its own do.
log = logging.getLogger("vllm.kvstash" if HAVE_VLLM else "kvstash.vllm")

# kv_connector_extra_config keys the connector itself reads; every other
# "kvstash.<key>" or "lmcache.<key>" is a configuration key (Config.set).
_OWN_KEYS = ("layerwise", "metrics_port", "variant", "lookup_all_ranks",
             "load_failure_policy", "piecewise_cudagraph",
             "metrics_host", "event_medium")  # the last two: ops (issue 11)
_PREFIXES = ("kvstash.", "lmcache.")


def _own_setting(extra, key, default):
    """A connector setting from kv_connector_extra_config, under either
    spelling ("kvstash.<key>" wins over "lmcache.<key>")."""
    extra = extra or {}
    for prefix in _PREFIXES:
        if prefix + key in extra:
            return extra[prefix + key]
    return default


def _vllm_accepts_none():
    """Whether this vLLM's scheduler takes None from
    get_num_new_matched_tokens as "not known yet" (its base class says so
    in its return annotation and docstring).  Without vLLM: yes, as the
    newest vLLM."""
    if not HAVE_VLLM:
        return True
    fn = getattr(KVConnectorBase_V1, "get_num_new_matched_tokens", None)
    ann = str(getattr(fn, "__annotations__", {}).get("return", ""))
    doc = getattr(fn, "__doc__", "") or ""
    return "None" in ann or "Optional" in ann or "If None" in doc


# ---- metadata: scheduler -> workers ---------------------------------------------


@dataclass
class ReqMeta:
    """One request's work for one step.  Tokens [load_start, load_end) are
    loaded (those before load_start are already in vLLM's cache); whole
    chunks of [store_start, store_end) are stored.  token_ids covers
    [0, max(load_end, store_end)); block_ids are the request's blocks."""
    req_id: str
    token_ids: np.ndarray
    block_ids: list
    load_start: int = 0
    load_end: int = 0
    store_start: int = 0
    store_end: int = 0
    epoch: int = 0           # the scheduler's recovery count for the request


    @property
    def loads(self):
        return self.load_end > self.load_start

    @property
    def stores(self):
        return self.store_end > self.store_start


@dataclass
class KvstashConnectorMetadata(KVConnectorMetadata):
    """One step's work.  load_now: vLLM may run this step as a FULL CUDA
    graph (no per-layer hooks), so loads complete in start_load_kv.
    finished: requests the worker may forget."""
    requests: list = field(default_factory=list)
    load_now: bool = False
    finished: list = field(default_factory=list)


# ---- helpers ----------------------------------------------------------------------


def _group0(block_ids):
    """Block ids of the one KV cache group (vLLM >= 0.9 passes a tuple of
    per-group lists; older versions a flat list)."""
    if block_ids is None:
        return []
    if len(block_ids) and isinstance(block_ids[0], (list, tuple)):
        if len(block_ids) != 1:
            raise ValueError("kvstash: %d KV cache groups; the connector supports one "
                             "(hybrid models are not supported)" % len(block_ids))
        return list(block_ids[0])
    return list(block_ids)


def _layer_index(name, fallback):
    """The layer number in a vLLM layer name ("model.layers.12.self_attn.attn")."""
    try:
        from vllm.model_executor.models.utils import extract_layer_index
        return int(extract_layer_index(name))
    except Exception:
        m = re.findall(r"\.(\d+)\.", "." + name + ".")
        return int(m[0]) if len(m) == 1 else fallback


def _truthy(v):
    if isinstance(v, str):
        return v.strip().lower() in ("1", "true", "yes", "on")
    return bool(v)


def _kv_dtype(vllm_config):
    """The KV cache's dtype name as kvstash parses it."""
    cache_dtype = str(getattr(vllm_config.cache_config, "cache_dtype", "auto") or "auto")
    if cache_dtype == "auto":
        return str(vllm_config.model_config.dtype).replace("torch.", "")
    return {"fp8_e4m3": "fp8", "fp8_inc": "fp8", "fp8_ds_mla": "fp8"}.get(cache_dtype,
                                                                          cache_dtype)


def _request_eligible(request):
    """(eligible, why not): only requests whose KV follows from their token
    ids alone may be loaded or stored."""
    if getattr(request, "mm_features", None) or getattr(request, "mm_positions", None) \
            or getattr(request, "mm_hashes", None):
        return False, "multimodal inputs"
    if getattr(request, "prompt_embeds", None) is not None:
        return False, "prompt embeddings"
    if getattr(request, "lora_request", None) is not None:
        return False, "a LoRA adapter"
    if getattr(request, "cache_salt", None):
        return False, "a cache salt"
    if getattr(request, "prompt_token_ids", None) is None:
        return False, "no prompt token ids"
    return True, ""


@dataclass
class _Tracked:
    """Scheduler-side state of one request."""
    prompt: np.ndarray
    block_ids: list = field(default_factory=list)
    stored: int = 0          # leading tokens on the store or being stored
    load: tuple = None       # (start, end) to load in the next step
    expected: int = None     # num_computed_tokens vLLM should report next step
    bad_from: int = None     # first token of a failed block not yet recomputed
    epoch: int = 0           # bumped when vLLM recomputes from bad_from or resumes


class _LookupPool:
    """Lookups off vLLM's scheduler thread.  Daemon threads (a lookup stuck
    in a hung filesystem never holds up the interpreter's exit); results are
    kept per request until taken.  submit() never blocks: when every thread
    is busy and the backlog is full, it refuses and the caller answers a
    miss."""

    def __init__(self, lookup_fn, threads=4, backlog=64):
        self._fn = lookup_fn
        self._q = queue.Queue(maxsize=backlog)
        self._lock = threading.Lock()
        self._busy = 0
        self._threads = [threading.Thread(target=self._run, name="kvstash-lookup-%d" % i,
                                          daemon=True) for i in range(threads)]
        for t in self._threads:
            t.start()

    def _run(self):
        while True:
            job = self._q.get()
            if job is None:
                return
            with self._lock:
                self._busy += 1
            try:
                job["hit"] = self._fn(job["tokens"])
            except Exception as e:       # never let a thread die
                log.warning("kvstash: lookup failed, treating as a miss: %s", e)
                job["hit"] = 0
            finally:
                with self._lock:
                    self._busy -= 1
                job["done"].set()

    def submit(self, tokens):
        job = {"tokens": tokens, "hit": None, "done": threading.Event(),
               "started": time.monotonic()}
        try:
            self._q.put_nowait(job)
        except queue.Full:
            return None
        return job

    def idle(self):
        with self._lock:
            return self._busy == 0 and self._q.empty()

    def close(self, deadline_s):
        """Stops the threads; True if none is still inside a lookup when
        deadline_s passes."""
        end = time.monotonic() + deadline_s
        for _ in self._threads:
            try:
                self._q.put(None, timeout=max(0.0, end - time.monotonic()))
            except queue.Full:
                break
        for t in self._threads:
            t.join(max(0.0, end - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)


@dataclass
class _Load:
    """Worker-side state of one retrieve in flight."""
    meta: ReqMeta
    op: object
    loaded: int              # prefix in place for every layer waited so far
    layers_waited: set = field(default_factory=set)


# Engines left open because a lookup thread may still be inside them (a hung
# mount at shutdown): closing them under it would free memory it uses.
_LEFT_OPEN = []


class KvstashConnector(KVConnectorBase_V1):
    """vLLM KV connector storing and loading KV through kvstash."""

    def __init__(self, vllm_config, role, kv_cache_config=None):
        if not hasattr(KVConnectorBase_V1, "has_connector_metadata"):
            raise RuntimeError("kvstash: this vLLM is too old for KvstashConnector (its "
                               "KVConnectorBase_V1 has no has_connector_metadata, which came "
                               "in v0.11.1); use vLLM v0.11.1 or later")
        try:
            super().__init__(vllm_config=vllm_config, role=role,
                             kv_cache_config=kv_cache_config)
        except TypeError:  # vLLM before kv_cache_config was passed
            super().__init__(vllm_config=vllm_config, role=role)
        self._vcfg = vllm_config
        self._kv_cache_config = kv_cache_config
        tc = vllm_config.kv_transfer_config
        self._role_name = getattr(role, "name", str(role)).upper()
        kv_role = str(getattr(tc, "kv_role", None) or "kv_both")
        self._can_load = kv_role in ("kv_both", "kv_consumer")
        self._can_store = kv_role in ("kv_both", "kv_producer")
        extra = dict(getattr(tc, "kv_connector_extra_config", None) or {})
        overrides = {}
        for prefix in reversed(_PREFIXES):      # kvstash.<key> wins
            for k, v in extra.items():
                if k.startswith(prefix) and k[len(prefix):] not in _OWN_KEYS:
                    overrides[k[len(prefix):]] = v
        self._layerwise = _truthy(_own_setting(extra, "layerwise", True))
        self._lookup_all_ranks = _truthy(_own_setting(extra, "lookup_all_ranks", True))
        self._metrics_port = _own_setting(extra, "metrics_port",
                                          os.environ.get("KVSTASH_METRICS_PORT"))
        self._metrics_server = None
        _log.bridge()   # ops: the library's lines (config warnings first) in Python logging
        self._config = Config.load(overrides)
        if self._layerwise and self._config.source("retrieve_order") == "default":
            # layer by layer waits get their layers early (docs/design.md,
            # "Retrieve order"); a value the user set stays
            self._config.set("retrieve_order", "layer")
        _log.bridge(self._config.get("log_level"))
        _checks.check_store_path(self._config, overrides=overrides)
        self._metrics_host = _own_setting(extra, "metrics_host",
                                          os.environ.get("KVSTASH_METRICS_HOST", "127.0.0.1"))

        mc, pc = vllm_config.model_config, vllm_config.parallel_config
        self._check_parallelism(pc)
        self._block_size = int(vllm_config.cache_config.block_size)
        self._chunk = int(self._config.get("chunk_size"))
        # Hits must be whole chunks and whole vLLM blocks.
        self._align = self._chunk * self._block_size // math.gcd(self._chunk,
                                                                 self._block_size)
        self._tp = int(getattr(pc, "tensor_parallel_size", 1) or 1)
        self._mla = bool(getattr(mc, "use_mla", False))
        self._geo = dict(
            model=str(mc.model),
            num_layers=self._expected_layers(),
            num_kv_heads=1 if self._mla else int(mc.get_num_kv_heads(pc)),
            head_dim=int(mc.get_head_size()),
            dtype=_kv_dtype(vllm_config),
            layout="mla" if self._mla else "mha",
            world_size=self._tp,
        )
        variant = _own_setting(extra, "variant", None)
        revision = getattr(mc, "revision", None)
        if variant or revision:
            self._geo["variant"] = ";".join(x for x in (
                "revision=%s" % revision if revision else "", str(variant or "")) if x)
        self._policy = self._settle_failure_policy(tc, extra)

        # ops: stats, histograms and KV events (kvstash/vllm_stats.py)
        self._obs = _vstats.Observer(tp=self._tp, stores_per_op=1 if self._mla else self._tp,
                                     block_size=self._block_size,
                                     medium=_own_setting(extra, "event_medium", _vstats.MEDIUM),
                                     log=log)
        # Scheduler side
        self._lookup_engines = []
        self._lookup_pool = None
        self._lookup_wait_s = int(self._config.get("lookup_timeout_ms")) / 1000.0
        self._lookup_give_up_s = (int(self._config.get("io_timeout_ms"))
                                  + int(self._config.get("lookup_timeout_ms"))) / 1000.0
        self._accepts_none = _vllm_accepts_none()
        self._pending = {}       # req_id -> lookup job (scheduler thread only)
        self._lookups = {}       # req_id -> (num_computed, hit) from the last answer
        self._tracked = {}       # req_id -> _Tracked
        self._skipped = set()    # req_ids never loaded or stored
        self._full_graphs = self._full_graph_sizes(vllm_config)
        # Tensor parallel: a load that fails on one rank poisons what every
        # rank computes on top of it (the all-reduce after attention), and
        # only the scheduler learns of it, one step later, or two with async
        # scheduling.  Until then blocks loaded in a step are "unsettled"
        # and no request holding one stores.
        sc = getattr(vllm_config, "scheduler_config", None)
        self._settle_steps = 1 if getattr(sc, "async_scheduling", None) is False else 2
        self._step_seq = 0
        self._unsettled = []     # (step, set of block ids loaded in it)
        # Worker side
        self._engine = None
        self._kv = None
        self._layer_names = {}   # layer name -> index
        self._rank = 0
        self._loads = []
        self._stores = []
        self._failed_blocks = set()   # to report (get_block_ids_with_load_errors)
        self._bad_now = set()         # blocks that failed to load this step
        self._bad_before = set()      # ... and the step before (async scheduling)
        self._taint = {}              # req_id -> epoch of its failed load

        if self._role_name == "SCHEDULER":
            self._open_lookup_engines()
        log.info("kvstash connector (%s): %s, chunk %d tokens, block %d, kv_role %s, "
                 "layerwise %s, kv_load_failure_policy %s%s", self._role_name.lower(),
                 self._geo, self._chunk, self._block_size, kv_role, self._layerwise,
                 self._policy, "" if HAVE_VLLM else " (without vLLM)")

    # ---- shared -----------------------------------------------------------

    @staticmethod
    def _check_parallelism(pc):
        """Refuses what the connector cannot serve, at startup, by name."""
        for attr, what in (("pipeline_parallel_size", "pipeline parallelism"),
                           ("decode_context_parallel_size", "decode context parallelism"),
                           ("prefill_context_parallel_size", "prefill context parallelism")):
            n = int(getattr(pc, attr, 1) or 1)
            if n != 1:
                raise ValueError(
                    "kvstash: %s (%s=%d) is not supported by KvstashConnector: each rank "
                    "would hold only part of the layers or of the tokens, and the store's "
                    "chunks hold every layer of every token of a rank's heads. Run with "
                    "%s=1 (tensor parallelism is supported)." % (what, attr, n, attr))

    def _settle_failure_policy(self, tc, extra):
        """What vLLM does with a block the connector reports as not loaded.
        vLLM >= 0.17 defaults kv_load_failure_policy to "fail" (the request
        ends with an error); a cache miss must never do that, so kvstash
        sets "recompute" unless kvstash.load_failure_policy is "vllm".  The
        scheduler reads the field right after building its connector, from
        this same config object."""
        want = str(_own_setting(extra, "load_failure_policy", "recompute")).lower()
        if want not in ("recompute", "vllm"):
            raise ValueError("kvstash: load_failure_policy must be \"recompute\" (make vLLM "
                             "recompute what kvstash fails to load; the default) or \"vllm\" "
                             "(keep vLLM's kv_load_failure_policy), not %r" % (want,))
        if not hasattr(tc, "kv_load_failure_policy"):
            return "recompute (this vLLM always recomputes)"
        have = getattr(tc, "kv_load_failure_policy", None)
        if have == "recompute":
            return "recompute"
        if want == "recompute":
            try:
                setattr(tc, "kv_load_failure_policy", "recompute")
            except Exception as e:      # a frozen config: say what that means
                log.error("kvstash: cannot set kv_load_failure_policy to \"recompute\" "
                          "(%s); it stays %r", e, have)
            else:
                if getattr(tc, "kv_load_failure_policy", None) == "recompute":
                    if self._role_name == "SCHEDULER":
                        log.warning("kvstash: kv_load_failure_policy was %r (vLLM's default "
                                    "since 0.17); kvstash set it to \"recompute\": a block "
                                    "kvstash cannot load is recomputed, never an error. Set "
                                    "\"kv_load_failure_policy\":\"recompute\" in "
                                    "--kv-transfer-config to make this explicit (under "
                                    "MultiConnector that is the only way: vLLM gives each "
                                    "connector a copy of the setting), or "
                                    "kvstash.load_failure_policy=vllm to keep %r.", have, have)
                    return "recompute (set by kvstash)"
        have = getattr(tc, "kv_load_failure_policy", None)
        if have == "fail" and self._role_name == "SCHEDULER":
            log.error("kvstash: kv_load_failure_policy is \"fail\": every request whose KV "
                      "kvstash cannot load in full (a chunk missing, corrupt, or late on the "
                      "filesystem) ENDS WITH AN ERROR instead of being recomputed. A cache "
                      "should never do that: set \"kv_load_failure_policy\":\"recompute\" "
                      "in --kv-transfer-config.")
        return str(have)

    def _expected_layers(self):
        """Attention layers with KV: the KV cache config's layer names when
        vLLM passes it (scheduler and workers agree), else the model's."""
        kcc = self._kv_cache_config
        groups = getattr(kcc, "kv_cache_groups", None) if kcc is not None else None
        if groups:
            if len(groups) != 1:
                raise ValueError("kvstash: %d KV cache groups; the connector supports one "
                                 "(hybrid models are not supported)" % len(groups))
            return len(groups[0].layer_names)
        mc, pc = self._vcfg.model_config, self._vcfg.parallel_config
        return int(mc.get_num_layers(pc))

    @staticmethod
    def _full_graph_sizes(vllm_config):
        """(decode_only, max_tokens) for the steps vLLM may replay as a FULL
        CUDA graph, where no per-layer hook runs: (True, n) uniform decode
        batches of up to n tokens, (False, n) any batch of up to n tokens,
        None: no full graphs.  Unknown settings count as full graphs for
        every batch (loads then complete before the forward: slower, never
        wrong)."""
        mc = getattr(vllm_config, "model_config", None)
        if getattr(mc, "enforce_eager", False):
            return None
        cc = getattr(vllm_config, "compilation_config", None)
        if cc is None:
            return (False, 1 << 62)
        mode = getattr(cc, "cudagraph_mode", None)
        if mode is None:       # vLLM before cudagraph_mode: full_cuda_graph
            full = getattr(cc, "full_cuda_graph", None)
            if full is None:
                return (False, 1 << 62)
            name = "FULL" if full else "PIECEWISE"
        else:
            name = str(getattr(mode, "name", mode)).upper().split(".")[-1]
        if name in ("NONE", "PIECEWISE"):
            return None
        sizes = getattr(cc, "cudagraph_capture_sizes", None) or ()
        biggest = getattr(cc, "max_cudagraph_capture_size", None) or \
            (max(sizes) if sizes else 1 << 62)
        return (name in ("FULL_DECODE_ONLY", "FULL_AND_PIECEWISE"), int(biggest))

    def _start_metrics(self, port_offset):
        if self._metrics_port in (None, "") or self._metrics_server is not None:
            return
        try:
            port = int(self._metrics_port) + port_offset
            self._metrics_server = _metrics.serve(port, host=self._metrics_host)
            log.info("kvstash metrics at http://%s:%d/metrics", self._metrics_host, port)
        except (OSError, ValueError) as e:
            log.warning("kvstash: cannot serve metrics on port %s+%d: %s",
                        self._metrics_port, port_offset, e)

    @property
    def requires_kv_delivery(self):
        # A best-effort cache: a preempted request's KV need not reach the
        # store, and vLLM must not hold or redo work for it.
        return False

    # ---- scheduler side ------------------------------------------------------

    def _open_lookup_engines(self):
        if not self._can_load:
            return
        cfg = self._config.copy()
        cfg.set("local_cpu", False)   # the scheduler holds no KV
        cfg.set("gds_io_threads", min(8, int(cfg.get("gds_io_threads"))))
        ranks = [0] if (self._mla or not self._lookup_all_ranks) else range(self._tp)
        for r in ranks:
            eng = Engine(cfg, rank=r, **self._geo)
            self._lookup_engines.append(eng)
            _metrics.register(eng)
        self._lookup_pool = _LookupPool(self._lookup)
        self._start_metrics(0)

    def _lookup(self, tokens):
        """Runs on a lookup thread: the hit every rank has."""
        hit = None
        for eng in self._lookup_engines:
            try:
                n = eng.lookup(tokens)
            except _lib.KvstashError as e:
                log.warning("kvstash: lookup failed, treating as a miss: %s", e)
                return 0
            hit = n if hit is None else min(hit, n)
            if hit == 0:
                break
        return hit or 0

    def _hit(self, rid, prompt):
        """The store's hit for the prompt, None while not known yet, without
        blocking longer than lookup_timeout_ms."""
        limit = (len(prompt) - 1) // self._chunk * self._chunk
        if limit <= 0:
            return 0
        job = self._pending.get(rid)
        if job is None or job["limit"] != limit:
            job = self._lookup_pool.submit(as_token_array(prompt[:limit]))
            if job is None:
                log.warning("kvstash: every lookup thread is busy (is the store's filesystem "
                            "hung?); request %s is treated as a miss", rid)
                return 0
            job["limit"] = limit
            self._pending[rid] = job
        if job["done"].wait(self._lookup_wait_s):
            self._pending.pop(rid, None)
            self._obs.lookup(rid, time.monotonic() - job["started"], job["hit"])
            return job["hit"]
        if time.monotonic() - job["started"] > self._lookup_give_up_s:
            self._pending.pop(rid, None)
            log.warning("kvstash: the lookup of request %s has run %.1f s; treating it as a "
                        "miss", rid, time.monotonic() - job["started"])
            return 0
        if not self._accepts_none:
            self._pending.pop(rid, None)
            return 0
        return None

    def get_num_new_matched_tokens(self, request, num_computed_tokens):
        rid = request.request_id
        self._lookups.pop(rid, None)
        if not self._can_load or not self._lookup_engines or not _request_eligible(request)[0]:
            return 0, False
        # Whole chunks only, and never the last prompt token: vLLM computes
        # it to get the next token's logits.
        hit = self._hit(rid, request.prompt_token_ids)
        if hit is None:
            return None, False          # vLLM asks again in a later step
        # What is stored is remembered even when vLLM has it all, so the
        # worker does not write it again.
        self._lookups[rid] = (int(num_computed_tokens), hit)
        load_to = hit // self._align * self._align
        need = max(0, load_to - int(num_computed_tokens))
        self._obs.hit_line(rid, len(request.prompt_token_ids), hit, int(num_computed_tokens),
                           need)
        return need, False

    def update_state_after_alloc(self, request, blocks, num_external_tokens):
        rid = request.request_id
        ok, why = _request_eligible(request)
        if not ok:
            if rid not in self._skipped:
                log.debug("kvstash: request %s is neither loaded nor stored (%s)", rid, why)
            self._skipped.add(rid)
            return
        t = self._tracked.get(rid)
        if t is None:
            t = self._tracked[rid] = _Tracked(prompt=as_token_array(request.prompt_token_ids))
        self._obs.note_request(request)
        found = self._lookups.pop(rid, None)
        t.load = None
        if found is None:
            return
        num_computed, hit = found
        if t.bad_from is None:
            t.stored = max(t.stored, hit)     # present: never written again
        if num_external_tokens > 0:
            offered = hit // self._align * self._align
            end = num_computed + int(num_external_tokens)
            if end > offered:
                log.warning("kvstash: request %s: vLLM asks for %d external tokens, the "
                            "lookup offered %d; loading those", rid, num_external_tokens,
                            offered - num_computed)
                end = offered
            if end > num_computed:
                t.load = (num_computed, end)

    def _emit(self, meta, rid, t, num_computed, num_sched, unsettled=frozenset()):
        """The request's work this step.  num_computed is vLLM's count
        before the step: below what the last step left, vLLM rewound the
        request (a load error); at or before its first bad token, what it
        computes from now on is sound again."""
        if t.expected is not None and num_computed < t.expected:
            if t.bad_from is not None and num_computed <= t.bad_from:
                t.bad_from = None
                t.epoch += 1
            t.stored = min(t.stored, num_computed // self._chunk * self._chunk)
        t.expected = num_computed + num_sched
        computed_after = num_computed + num_sched
        m = ReqMeta(req_id=rid, token_ids=t.prompt, block_ids=list(t.block_ids),
                    epoch=t.epoch)
        if t.load is not None:
            m.load_start, m.load_end = t.load
            t.load = None
        if self._can_store and t.bad_from is None:
            end = min(computed_after, t.prompt.size) // self._chunk * self._chunk
            if unsettled and unsettled.intersection(t.block_ids[:-(-end // self._block_size)]):
                end = 0                  # stored once its loads are known good
            if end > t.stored:
                m.store_start = t.stored // self._chunk * self._chunk
                m.store_end = end
                t.stored = end
        if not (m.loads or m.stores):
            return
        upto = max(m.load_end, m.store_end)
        m.token_ids = t.prompt[:upto]
        need = -(-upto // self._block_size)
        if len(m.block_ids) < need:
            log.error("kvstash: request %s has %d blocks for %d tokens; skipping it this "
                      "step", rid, len(m.block_ids), upto)
            return
        m.block_ids = m.block_ids[:need]
        meta.requests.append(m)

    def _load_now(self, scheduler_output):
        """Whether vLLM may replay this step as a FULL CUDA graph."""
        if self._full_graphs is None:
            return False
        decode_only, biggest = self._full_graphs
        sched = scheduler_output.num_scheduled_tokens
        total = int(getattr(scheduler_output, "total_num_scheduled_tokens", 0) or
                    sum(sched.values()))
        if total > biggest:
            return False
        if not decode_only:
            return True
        spec = getattr(scheduler_output, "scheduled_spec_decode_tokens", None) or {}
        uniform = 1 + max((len(v) for v in spec.values()), default=0)
        spec_cfg = getattr(self._vcfg, "speculative_config", None)
        uniform = max(uniform, 1 + int(getattr(spec_cfg, "num_speculative_tokens", 0) or 0))
        return max(sched.values(), default=0) <= uniform

    def build_connector_meta(self, scheduler_output):
        meta = KvstashConnectorMetadata()
        for rid in getattr(scheduler_output, "finished_req_ids", ()) or ():
            self._forget(rid)
            meta.finished.append(rid)
        sched = scheduler_output.num_scheduled_tokens
        self._step_seq += 1
        rows = []                # (rid, _Tracked, num_computed) of this step
        for new in scheduler_output.scheduled_new_reqs:
            rid = new.req_id
            if rid in self._skipped:
                continue
            t = self._tracked.get(rid)
            if t is None:   # not seen by update_state_after_alloc: judge it here
                if not _request_eligible(new)[0]:
                    self._skipped.add(rid)
                    continue
                t = self._tracked[rid] = _Tracked(prompt=as_token_array(new.prompt_token_ids))
            t.block_ids = _group0(new.block_ids)
            t.expected = None
            rows.append((rid, t, int(new.num_computed_tokens)))
        cached = scheduler_output.scheduled_cached_reqs
        if isinstance(cached, list):  # vLLM < 0.9.2: one object per request
            crows = [(c.req_id, bool(getattr(c, "resumed_from_preemption", False)),
                      c.new_block_ids, c.num_computed_tokens) for c in cached]
        else:
            resumed_ids = getattr(cached, "resumed_req_ids", None)
            flags = getattr(cached, "resumed_from_preemption", None)
            crows = []
            for i, rid in enumerate(cached.req_ids):
                if resumed_ids is not None:
                    resumed = rid in resumed_ids
                else:
                    resumed = bool(flags[i]) if flags is not None else False
                crows.append((rid, resumed, cached.new_block_ids[i],
                              cached.num_computed_tokens[i]))
        for rid, resumed, new_blocks, num_computed in crows:
            t = self._tracked.get(rid)
            if t is None:
                continue
            if resumed:   # after preemption: the whole, new block list, KV redone
                t.block_ids = _group0(new_blocks)
                t.expected = None
                if t.bad_from is not None:
                    t.bad_from = None
                    t.epoch += 1
            else:
                t.block_ids.extend(_group0(new_blocks))
            rows.append((rid, t, int(num_computed)))
        unsettled = frozenset()
        if self._tp > 1:
            self._unsettled = [(n, b) for n, b in self._unsettled
                               if n > self._step_seq - self._settle_steps]
            loading = set()
            for _, t, _ in rows:
                if t.load is not None:
                    lo, hi = t.load
                    loading.update(t.block_ids[lo // self._block_size:
                                               -(-hi // self._block_size)])
            if loading:
                self._unsettled.append((self._step_seq, loading))
            unsettled = frozenset().union(*(b for _, b in self._unsettled))
        for rid, t, num_computed in rows:
            self._emit(meta, rid, t, num_computed, int(sched.get(rid, 0)), unsettled)
        meta.load_now = any(m.loads for m in meta.requests) and \
            self._load_now(scheduler_output)
        return meta

    def update_connector_output(self, connector_output):
        """Blocks that failed to load: every request holding one stores
        nothing more until vLLM has recomputed it from there (the first
        holder; vLLM lets the others keep the block as computed, so they
        never store again), and its chunks from there on are stored again
        once recomputed (the bad file was set aside by the library)."""
        self._obs.on_connector_output(connector_output)
        invalid = getattr(connector_output, "invalid_block_ids", None)
        if not invalid:
            return
        for t in self._tracked.values():
            for i, b in enumerate(t.block_ids):
                if b in invalid:
                    first = i * self._block_size
                    t.bad_from = first if t.bad_from is None else min(t.bad_from, first)
                    t.stored = min(t.stored, first // self._chunk * self._chunk)
                    break

    def _forget(self, rid):
        self._tracked.pop(rid, None)
        self._lookups.pop(rid, None)
        self._pending.pop(rid, None)
        self._skipped.discard(rid)

    def request_finished(self, request, block_ids):
        # Stores capture their KV before wait_for_save returns, so the blocks
        # may be freed at once.
        self._forget(request.request_id)
        self._obs.forget_request(request.request_id)
        return False, None

    # ---- worker side -----------------------------------------------------------

    def _tp_rank(self):
        try:
            from vllm.distributed.parallel_state import get_tensor_model_parallel_rank
            return int(get_tensor_model_parallel_rank())
        except Exception:
            pc = self._vcfg.parallel_config
            return int(getattr(pc, "rank", 0) or 0) % self._tp

    def register_kv_caches(self, kv_caches):
        names = list(kv_caches)
        order = sorted(range(len(names)), key=lambda i: (_layer_index(names[i], i), i))
        names = [names[i] for i in order]
        if len(names) != self._geo["num_layers"]:
            raise ValueError("kvstash: vLLM registered %d KV cache layers, the model has %d"
                             % (len(names), self._geo["num_layers"]))
        tensors = [kv_caches[n] for n in names]
        want = str(self._geo["dtype"])
        have = str(getattr(tensors[0], "dtype", "")).replace("torch.", "")
        planes = 1 if self._mla else 2
        kv = KV.paged(tensors, num_planes=planes)
        heads = 1 if self._mla else self._geo["num_kv_heads"]
        if kv.row_elems != heads * self._geo["head_dim"] or \
                (kv.head_stride and kv.head_elems != self._geo["head_dim"]):
            raise ValueError("kvstash: the KV cache (shape %s) has %d heads of %d elements per "
                             "token; the model %d of %d"
                             % (tuple(getattr(tensors[0], "shape", ())), kv.num_heads,
                                kv.head_elems, heads, self._geo["head_dim"]))
        self._kv = kv
        self._layer_names = {n: i for i, n in enumerate(names)}
        self._rank = self._tp_rank()
        self._engine = Engine(self._config, rank=self._rank, **self._geo)
        if self._engine.dtype_size != self._kv.itemsize:
            raise ValueError("kvstash: the KV cache is %s, the namespace %s" % (have, want))
        self._engine.check_kv(self._kv)     # refused now, not at the first request
        _metrics.register(self._engine)
        self._start_metrics(1 + int(getattr(self._vcfg.parallel_config, "rank", 0) or 0))
        log.info("kvstash: registered %d layers (%r), namespace %s, rank %d%s", len(names),
                 self._kv, self._engine.namespace_id, self._rank,
                 " (MLA: rank 0 stores)" if self._mla else "")

    def _kv_from_forward_context(self, forward_context):
        """vLLM builds without register_kv_caches: take the tensors from the
        attention layers of the forward context."""
        caches = {}
        ve = getattr(forward_context, "virtual_engine", 0)
        for name, layer in (getattr(forward_context, "no_compile_layers", None) or {}).items():
            kv = getattr(layer, "kv_cache", None)
            if kv is not None:
                caches[name] = kv[ve] if isinstance(kv, (list, tuple)) else kv
        if caches:
            self.register_kv_caches(caches)

    def start_load_kv(self, forward_context, **kwargs):
        # A step begins: what failed two steps ago can no longer be in
        # flight anywhere (vLLM plans at most one step ahead).
        self._finish_loads()
        self._bad_before, self._bad_now = self._bad_now, set()
        if self._engine is None:
            self._kv_from_forward_context(forward_context)
        if self._engine is None or not self.has_connector_metadata():
            return
        meta = self._get_connector_metadata()
        for rid in getattr(meta, "finished", ()) or ():
            self._taint.pop(rid, None)
        for m in meta.requests:
            if not m.loads:
                continue
            slots = slot_mapping_from_blocks(m.block_ids, self._block_size, m.load_end,
                                             first_token=m.load_start)
            try:
                op = self._engine.retrieve_start(m.token_ids[:m.load_end], self._kv,
                                                 slot_mapping=slots)
            except _lib.KvstashError as e:
                log.warning("kvstash: request %s: load of %d tokens failed to start: %s",
                            m.req_id, m.load_end - m.load_start, e)
                self._fail(m, m.load_start)
                continue
            self._loads.append(_Load(meta=m, op=op, loaded=m.load_end))
            self._obs.started(op, "load", m.req_id, m.load_start, m.load_end)
        if not self._layerwise or getattr(meta, "load_now", False):
            # No per-layer waits will come (FULL CUDA graph, or layerwise
            # off): everything is in place before the forward starts.
            for ld in self._loads:
                ld.layers_waited = set(range(self._kv.num_layers))
            self._finish_loads()

    def wait_for_layer_load(self, layer_name):
        i = self._layer_names.get(layer_name)
        if i is None or not self._loads:
            return
        for ld in self._loads:
            try:
                ld.loaded = min(ld.loaded, ld.op.wait_layer(i))
            except _lib.KvstashError as e:
                log.warning("kvstash: request %s: waiting for layer %d failed: %s",
                            ld.meta.req_id, i, e)
                ld.loaded = 0
            ld.layers_waited.add(i)

    def _fail(self, m, first_bad_token):
        """Reports the blocks of tokens [first_bad_token, load_end); the
        request stores nothing until the scheduler has seen it recomputed."""
        start = max(first_bad_token, m.load_start)
        if start >= m.load_end:
            return
        first, last = start // self._block_size, (m.load_end - 1) // self._block_size
        bad = {int(b) for b in m.block_ids[first:last + 1]}
        self._failed_blocks |= bad
        self._bad_now |= bad
        self._taint[m.req_id] = max(m.epoch, self._taint.get(m.req_id, -1))

    def _finish_loads(self):
        """Completes every retrieve of the step and records its failures.
        Tokens count as loaded only if every layer was waited for before
        attention read it (wait_for_layer_load) and every byte arrived."""
        loads, self._loads = self._loads, []
        n_layers = self._kv.num_layers if self._kv is not None else 0
        for ld in loads:
            m = ld.meta
            res = None
            try:
                res = ld.op.wait()
                good = min(ld.loaded, res.tokens)
            except _lib.KvstashError as e:
                log.warning("kvstash: request %s: load failed: %s", m.req_id, e)
                good = 0
            finally:
                self._obs.finished(ld.op, res, max(0, good - m.load_start))
                ld.op.free()
            if len(ld.layers_waited) < n_layers:
                if good > m.load_start:
                    log.warning("kvstash: request %s: %d of %d layers were waited for before "
                                "use; its loaded blocks are reported for recompute",
                                m.req_id, len(ld.layers_waited), n_layers)
                good = 0
            if good < m.load_end:
                log.info("kvstash: request %s: loaded %d of %d tokens; vLLM recomputes the "
                         "rest", m.req_id, max(0, good - m.load_start),
                         m.load_end - m.load_start)
                self._fail(m, good)

    def save_kv_layer(self, layer_name, kv_layer, attn_metadata, **kwargs):
        # Chunk files are layer-major: one store after the last layer
        # (wait_for_save) captures every layer of the step at once.
        return

    def _may_store(self, m):
        """False when what the request computed may rest on KV that never
        arrived: its load failed and the scheduler has not yet seen it
        recomputed, or one of its blocks failed to load this step or the
        step before (a block shared with a request that loaded it)."""
        tainted = self._taint.get(m.req_id)
        if tainted is not None:
            if m.epoch <= tainted:
                return False
            # Recomputed since its failure: only a failure of this step
            # can still touch it.
            del self._taint[m.req_id]
            bad = self._bad_now
        else:
            bad = self._bad_now | self._bad_before
        return not (bad and bad.intersection(m.block_ids))

    def wait_for_save(self):
        self._finish_loads()
        self._reap_stores()
        if self._engine is None or not self._can_store or not self.has_connector_metadata():
            return
        if self._mla and self._rank != 0:
            return   # MLA KV is the same on every rank: rank 0 stores it
        for m in self._get_connector_metadata().requests:
            if not m.stores:
                continue
            if not self._may_store(m):
                log.info("kvstash: request %s: not storing tokens %d-%d (computed on KV that "
                         "did not load)", m.req_id, m.store_start, m.store_end)
                continue
            slots = slot_mapping_from_blocks(m.block_ids, self._block_size, m.store_end,
                                             first_token=m.store_start)
            try:
                op = self._engine.store(m.token_ids[:m.store_end], self._kv,
                                        slot_mapping=slots)
            except _lib.KvstashError as e:
                log.warning("kvstash: request %s: store skipped: %s", m.req_id, e)
                continue
            self._obs.started(op, "store", m.req_id, m.store_start, m.store_end)
            if self._kv.is_cuda:
                self._stores.append(op)      # captured; the writes go on
            else:
                with op:                     # host memory is vLLM's again after this
                    self._obs.finished(op, op.wait())

    def _reap_stores(self):
        keep = []
        for op in self._stores:
            res = op.poll()
            if res is None:
                keep.append(op)
            else:
                self._obs.finished(op, res)
                op.free()
        self._stores = keep

    def get_finished(self, finished_req_ids):
        self._reap_stores()
        return None, None

    def get_block_ids_with_load_errors(self):
        # Every load of the step completes here at the latest, so each
        # failure is reported in its own step, exactly once.  What the
        # step's stores must skip stays known (speculative decoding calls
        # this before wait_for_save).
        self._finish_loads()
        failed, self._failed_blocks = self._failed_blocks, set()
        return failed

    def shutdown(self):
        """Returns within a deadline even on a hung mount (docs/vllm.md):
        lookups still running get io_timeout_ms, after which their engines
        are left open (closing them under a lookup would free its memory);
        stores already captured from GPU memory go on; each engine closes on
        a thread of its own, waited for up to store_timeout_ms on a worker
        (its stores finish or time out) and 1 s on the scheduler, and past
        that it finishes closing in the background."""
        self._finish_loads()
        for op in self._stores:
            op.free()                # captured CUDA stores continue
        self._stores = []
        stuck = False
        if self._lookup_pool is not None:
            stuck = not self._lookup_pool.close(int(self._config.get("io_timeout_ms")) / 1000.0)
            self._lookup_pool = None
        closing = []
        for eng in [self._engine] + self._lookup_engines:
            if eng is None:
                continue
            _metrics.unregister(eng)
            if stuck and eng is not self._engine:
                _LEFT_OPEN.append(eng)
            else:
                closing.append(eng)
        if stuck:
            log.warning("kvstash: a lookup is still stuck in the store's filesystem; its "
                        "engines are left open")
        worker = self._engine is not None
        self._engine, self._lookup_engines = None, []
        if closing:
            t = threading.Thread(target=lambda: [e.close() for e in closing],
                                 name="kvstash-close", daemon=True)
            t.start()
            t.join(int(self._config.get("store_timeout_ms")) / 1000.0 if worker else 1.0)
            if t.is_alive():
                log.warning("kvstash: the store's filesystem holds up closing; the engines "
                            "finish closing in the background")
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None

    # ---- ops: stats, metrics and events (kvstash/vllm_stats.py) ---------------------

    def get_kv_connector_stats(self):
        return self._obs.take_stats([self._engine] + self._lookup_engines)

    @classmethod
    def build_kv_connector_stats(cls, data=None):
        return _vstats.build_kv_connector_stats(data)

    @classmethod
    def build_prom_metrics(cls, vllm_config, metric_types, labelnames, per_engine_labelvalues):
        return _vstats.build_prom_metrics(vllm_config, metric_types, labelnames,
                                          per_engine_labelvalues)

    def take_events(self):
        return self._obs.take_events()

    # ---- class-level hooks ---------------------------------------------------------

    @classmethod
    def get_required_kvcache_layout(cls, vllm_config):
        # Any layout works (KV.paged); NHD keeps each token's heads in one
        # run, the fastest to gather and scatter.
        return "NHD"

    @classmethod
    def requires_piecewise_for_cudagraph(cls, extra_config):
        # Layer-pipelined loads need wait_for_layer_load between layers,
        # which FULL CUDA graphs skip.  The connector does not need it: a
        # step vLLM may replay as a full graph loads before the forward
        # (KvstashConnectorMetadata.load_now), so full decode graphs stay on
        # unless kvstash.piecewise_cudagraph asks otherwise.
        return _truthy(_own_setting(extra_config, "layerwise", True)) and \
            _truthy(_own_setting(extra_config, "piecewise_cudagraph", False))
