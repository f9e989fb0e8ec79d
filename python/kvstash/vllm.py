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
get_block_ids_with_load_errors() and vLLM recomputes them; a request whose
load failed stores nothing that step, since what it computed used the
missing KV.
"""

import logging
import math
import os
import re
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

# Under vLLM, log through its "vllm" logger tree so lines land where its own do.
log = logging.getLogger("vllm.kvstash" if HAVE_VLLM else "kvstash.vllm")

# kv_connector_extra_config keys the connector itself reads; every other
# "kvstash.<key>" or "lmcache.<key>" is a configuration key (Config.set).
_OWN_KEYS = ("layerwise", "metrics_port", "variant", "lookup_all_ranks",
             "metrics_host", "event_medium")


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

    @property
    def loads(self):
        return self.load_end > self.load_start

    @property
    def stores(self):
        return self.store_end > self.store_start


@dataclass
class KvstashConnectorMetadata(KVConnectorMetadata):
    requests: list = field(default_factory=list)


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


@dataclass
class _Load:
    """Worker-side state of one retrieve in flight."""
    meta: ReqMeta
    op: object
    loaded: int              # prefix in place for every layer waited so far
    layers_waited: set = field(default_factory=set)


class KvstashConnector(KVConnectorBase_V1):
    """vLLM KV connector storing and loading KV through kvstash."""

    def __init__(self, vllm_config, role, kv_cache_config=None):
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
        own, overrides = {}, {}
        for k, v in extra.items():
            for prefix in ("kvstash.", "lmcache."):
                if k.startswith(prefix):
                    key = k[len(prefix):]
                    (own if key in _OWN_KEYS else overrides)[key] = v
        self._layerwise = _truthy(own.get("layerwise", True))
        self._lookup_all_ranks = _truthy(own.get("lookup_all_ranks", True))
        self._metrics_port = own.get("metrics_port", os.environ.get("KVSTASH_METRICS_PORT"))
        self._metrics_server = None
        _log.bridge()   # ops: the library's lines (config warnings first) in Python logging
        self._config = Config.load(overrides)
        _log.bridge(self._config.get("log_level"))
        _checks.check_store_path(self._config, overrides=overrides)
        self._metrics_host = own.get("metrics_host",
                                     os.environ.get("KVSTASH_METRICS_HOST", "127.0.0.1"))

        mc, pc = vllm_config.model_config, vllm_config.parallel_config
        self._block_size = int(vllm_config.cache_config.block_size)
        self._chunk = int(self._config.get("chunk_size"))
        # Hits must be whole chunks and whole vLLM blocks.
        self._align = self._chunk * self._block_size // math.gcd(self._chunk,
                                                                 self._block_size)
        self._tp = int(getattr(pc, "tensor_parallel_size", 1) or 1)
        pp = int(getattr(pc, "pipeline_parallel_size", 1) or 1)
        if pp != 1:
            raise ValueError("kvstash: pipeline parallelism (pipeline_parallel_size=%d) is "
                             "not supported by KvstashConnector yet" % pp)
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
        variant = own.get("variant")
        revision = getattr(mc, "revision", None)
        if variant or revision:
            self._geo["variant"] = ";".join(x for x in (
                "revision=%s" % revision if revision else "", str(variant or "")) if x)

        # ops: stats, histograms and KV events (kvstash/vllm_stats.py)
        self._obs = _vstats.Observer(tp=self._tp, stores_per_op=1 if self._mla else self._tp,
                                     block_size=self._block_size,
                                     medium=own.get("event_medium", _vstats.MEDIUM))
        # Scheduler side
        self._lookup_engines = []
        self._lookups = {}       # req_id -> (num_computed, hit) from the last lookup
        self._tracked = {}       # req_id -> _Tracked
        self._skipped = set()    # req_ids never loaded or stored
        # Worker side
        self._engine = None
        self._kv = None
        self._layer_names = {}   # layer name -> index
        self._rank = 0
        self._loads = []
        self._stores = []
        self._failed_blocks = set()
        self._load_failed_reqs = set()

        if self._role_name == "SCHEDULER":
            self._open_lookup_engines()
        log.info("kvstash connector (%s): %s, chunk %d tokens, block %d, kv_role %s%s",
                 self._role_name.lower(), self._geo, self._chunk, self._block_size, kv_role,
                 "" if HAVE_VLLM else " (without vLLM)")

    # ---- shared -----------------------------------------------------------

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
        self._start_metrics(0)

    def _lookup(self, tokens):
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

    def get_num_new_matched_tokens(self, request, num_computed_tokens):
        rid = request.request_id
        self._lookups.pop(rid, None)
        if not self._can_load or not self._lookup_engines or not _request_eligible(request)[0]:
            return 0, False
        prompt = request.prompt_token_ids
        # Whole chunks only, and never the last prompt token: vLLM computes
        # it to get the next token's logits.
        limit = (len(prompt) - 1) // self._chunk * self._chunk
        t0 = time.monotonic()
        hit = self._lookup(prompt[:limit]) if limit > 0 else 0
        self._obs.lookup(rid, time.monotonic() - t0, hit)
        # What is stored is remembered even when vLLM has it all, so the
        # worker does not write it again.
        self._lookups[rid] = (int(num_computed_tokens), hit)
        load_to = hit // self._align * self._align
        return max(0, load_to - int(num_computed_tokens)), False

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
        t.stored = max(t.stored, hit)         # present: never written again
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

    def _emit(self, meta, rid, t, computed_after):
        m = ReqMeta(req_id=rid, token_ids=t.prompt, block_ids=list(t.block_ids))
        if t.load is not None:
            m.load_start, m.load_end = t.load
            t.load = None
        if self._can_store:
            end = min(computed_after, t.prompt.size) // self._chunk * self._chunk
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

    def build_connector_meta(self, scheduler_output):
        meta = KvstashConnectorMetadata()
        for rid in getattr(scheduler_output, "finished_req_ids", ()) or ():
            self._forget(rid)
        sched = scheduler_output.num_scheduled_tokens
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
            self._emit(meta, rid, t, int(new.num_computed_tokens) + int(sched.get(rid, 0)))
        cached = scheduler_output.scheduled_cached_reqs
        if isinstance(cached, list):  # vLLM < 0.9.2: one object per request
            rows = [(c.req_id, bool(getattr(c, "resumed_from_preemption", False)),
                     c.new_block_ids, c.num_computed_tokens) for c in cached]
        else:
            resumed_ids = getattr(cached, "resumed_req_ids", None)
            flags = getattr(cached, "resumed_from_preemption", None)
            rows = []
            for i, rid in enumerate(cached.req_ids):
                if resumed_ids is not None:
                    resumed = rid in resumed_ids
                else:
                    resumed = bool(flags[i]) if flags is not None else False
                rows.append((rid, resumed, cached.new_block_ids[i],
                             cached.num_computed_tokens[i]))
        for rid, resumed, new_blocks, num_computed in rows:
            t = self._tracked.get(rid)
            if t is None:
                continue
            if resumed:   # after preemption: the whole, new block list
                t.block_ids = _group0(new_blocks)
            else:
                t.block_ids.extend(_group0(new_blocks))
            self._emit(meta, rid, t, int(num_computed) + int(sched.get(rid, 0)))
        return meta

    def update_connector_output(self, connector_output):
        """Blocks that failed to load are recomputed by vLLM; their chunks
        must be stored again (the bad file was set aside by the library)."""
        self._obs.on_connector_output(connector_output)
        invalid = getattr(connector_output, "invalid_block_ids", None)
        if not invalid:
            return
        for t in self._tracked.values():
            for i, b in enumerate(t.block_ids):
                if b in invalid:
                    first = i * self._block_size // self._chunk * self._chunk
                    t.stored = min(t.stored, first)
                    break

    def _forget(self, rid):
        self._tracked.pop(rid, None)
        self._lookups.pop(rid, None)
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
        self._kv = KV.paged(tensors, num_planes=planes)
        self._layer_names = {n: i for i, n in enumerate(names)}
        self._rank = self._tp_rank()
        self._engine = Engine(self._config, rank=self._rank, **self._geo)
        if self._engine.dtype_size != self._kv.itemsize:
            raise ValueError("kvstash: the KV cache is %s, the namespace %s" % (have, want))
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
        for name, layer in getattr(forward_context, "no_compile_layers", {}).items():
            kv = getattr(layer, "kv_cache", None)
            if kv is not None:
                caches[name] = kv[ve] if isinstance(kv, (list, tuple)) else kv
        if caches:
            self.register_kv_caches(caches)

    def start_load_kv(self, forward_context, **kwargs):
        self._finish_loads()
        if self._engine is None:
            self._kv_from_forward_context(forward_context)
        if self._engine is None or not self.has_connector_metadata():
            return
        meta = self._get_connector_metadata()
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
        if not self._layerwise:
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
        """Reports the blocks of tokens [first_bad_token, load_end)."""
        start = max(first_bad_token, m.load_start)
        if start >= m.load_end:
            return
        first, last = start // self._block_size, (m.load_end - 1) // self._block_size
        self._failed_blocks.update(int(b) for b in m.block_ids[first:last + 1])
        self._load_failed_reqs.add(m.req_id)

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
                                "use; its loaded blocks are reported for recompute (set "
                                "kvstash.layerwise=false if wait_for_layer_load is not "
                                "called)", m.req_id, len(ld.layers_waited), n_layers)
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
            if m.req_id in self._load_failed_reqs:
                # What this step computed read KV that did not arrive.
                log.info("kvstash: request %s: not storing this step (its load failed)",
                         m.req_id)
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
        self._finish_loads()
        failed, self._failed_blocks = self._failed_blocks, set()
        self._load_failed_reqs = set()
        return failed

    def shutdown(self):
        self._finish_loads()
        for op in self._stores:
            try:
                op.wait()
            except _lib.KvstashError:
                pass
            op.free()
        self._stores = []
        for eng in [self._engine] + self._lookup_engines:
            if eng is not None:
                _metrics.unregister(eng)
                eng.close()
        self._engine, self._lookup_engines = None, []
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
        # Each token's heads x head_dim must be one contiguous row.
        return "NHD"

    @classmethod
    def requires_piecewise_for_cudagraph(cls, extra_config):
        # wait_for_layer_load must run between layers, outside CUDA graphs.
        extra = extra_config or {}
        return _truthy(extra.get("kvstash.layerwise", True))
