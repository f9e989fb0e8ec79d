"""Stand-ins for the vLLM objects KvstashConnector meets, and MiniVllm: a
scheduler and model runners that drive the connector the way vLLM does,
over paged KV caches (numpy, or torch on any device) and real kvstash
engines on real files.

Source.  vLLM main at 6adad0876758 (2026-08-14, the newest full tree read;
shared/reference/vllm-today.md section 1 says from which fork), with the
fields of vllm/v1/core/sched/output.py checked again against the copy the
code index holds (local-inference-lab/vllm 04258d07, upstream fields only).
Each class lists the real one's attributes in the real order, with the
real defaults; attributes only other subsystems read (multimodal, pooling,
grammar, encoder cache, EC connector) keep their names with empty values.
Files: vllm/v1/core/sched/output.py (NewRequestData, CachedRequestData,
SchedulerOutput), vllm/v1/outputs.py (KVConnectorOutput),
vllm/config/kv_transfer.py (KVTransferConfig), vllm/config/parallel.py,
vllm/config/compilation.py (CUDAGraphMode, CompilationConfig),
vllm/v1/request.py (Request), vllm/v1/core/kv_cache_manager.py
(KVCacheBlocks), vllm/v1/kv_cache_interface.py (KVCacheConfig,
KVCacheGroupSpec), vllm/forward_context.py (ForwardContext).

The loop (MiniVllm.step) follows vllm/v1/core/sched/scheduler.py and both
model runners (vllm/v1/worker/kv_connector_model_runner_mixin.py, V1;
vllm/v1/worker/gpu/kv_connector.py, V2):

- schedule: running requests first, then waiting ones with
  num_computed_tokens == 0: local prefix hit, get_num_new_matched_tokens
  (None parks the request for a later step), allocate,
  update_state_after_alloc; then build_connector_meta once;
  num_computed_tokens advances at schedule time (_update_after_schedule);
- execute: handle_preemptions(meta), bind, start_load_kv, per layer
  wait_for_layer_load / attention / save_kv_layer (skipped when the step is
  replayed as a FULL CUDA graph: uniform decode batches under
  FULL_AND_PIECEWISE or FULL_DECODE_ONLY, every batch under FULL), then
  wait_for_save, get_finished, get_block_ids_with_load_errors, clear; with
  speculative decoding get_finished and get_block_ids_with_load_errors come
  before wait_for_save (defer_finalize); steps with nothing scheduled go
  through kv_connector_no_forward (no wait_for_save, no layer hooks);
- async scheduling (vLLM's default): step N+1 is scheduled before step N's
  output is processed;
- output: _handle_invalid_blocks: with policy "recompute", for each invalid
  block only the first request (scheduling order) holding it within its
  computed range is rewound to it, the others keep it as computed; with
  "fail" those requests end with an error; then update_connector_output.

The "model" is a function: the K/V row of a token at a layer is a hash of the
token ids up to it (so restored KV can be compared with recomputed KV), and
a step that computes tokens on top of a prefix whose KV is wrong poisons what
it computes (as attention over wrong KV would), so stored poison shows up.
"""

import enum
from dataclasses import dataclass, field

import numpy as np

from kvstash.vllm import KvstashConnector

POISON = np.float16(-999.0)
EMPTY = np.float16(-7.0)


class KVConnectorRole(enum.Enum):
    SCHEDULER = 0
    WORKER = 1


class CUDAGraphMode(enum.Enum):
    """vllm/config/compilation.py: (mixed batches, uniform decode batches)."""
    NONE = 0
    PIECEWISE = 1
    FULL = 2
    FULL_DECODE_ONLY = (2, 0)
    FULL_AND_PIECEWISE = (2, 1)


@dataclass
class ModelConfig:
    model: str
    dtype: str
    num_layers: int
    num_kv_heads: int
    head_size: int
    use_mla: bool = False
    revision: str = None
    enforce_eager: bool = False
    max_model_len: int = 4096

    def get_num_layers(self, parallel_config):
        return self.num_layers

    def get_num_kv_heads(self, parallel_config):
        return max(1, self.num_kv_heads // parallel_config.tensor_parallel_size)

    def get_head_size(self):
        return self.head_size


@dataclass
class CacheConfig:
    block_size: int
    cache_dtype: str = "auto"
    enable_prefix_caching: bool = True


@dataclass
class ParallelConfig:
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    rank: int = 0
    data_parallel_size: int = 1
    decode_context_parallel_size: int = 1
    prefill_context_parallel_size: int = 1


@dataclass
class CompilationConfig:
    cudagraph_mode: CUDAGraphMode = CUDAGraphMode.FULL_AND_PIECEWISE
    cudagraph_capture_sizes: list = field(default_factory=lambda: [1, 2, 4, 8])
    max_cudagraph_capture_size: int = 8


@dataclass
class SpeculativeConfig:
    num_speculative_tokens: int = 0


@dataclass
class KVTransferConfig:
    kv_connector: str = "KvstashConnector"
    engine_id: str = None
    kv_buffer_device: str = "cuda"
    kv_buffer_size: float = 1e9
    kv_role: str = "kv_both"
    kv_rank: int = None
    kv_parallel_size: int = 1
    kv_ip: str = "127.0.0.1"
    kv_port: int = 14579
    kv_connector_extra_config: dict = field(default_factory=dict)
    kv_connector_module_path: str = "kvstash.vllm"
    enable_permute_local_kv: bool = False
    kv_load_failure_policy: str = "fail"     # the default since vLLM 0.17

    @property
    def is_kv_transfer_instance(self):
        return self.kv_connector is not None and self.kv_role is not None

    @property
    def is_kv_producer(self):
        return self.kv_connector is not None and self.kv_role in ("kv_producer", "kv_both")

    @property
    def is_kv_consumer(self):
        return self.kv_connector is not None and self.kv_role in ("kv_consumer", "kv_both")

    def get_from_extra_config(self, key, default):
        return self.kv_connector_extra_config.get(key, default)


@dataclass
class VllmConfig:
    model_config: ModelConfig
    cache_config: CacheConfig
    parallel_config: ParallelConfig
    kv_transfer_config: KVTransferConfig
    compilation_config: CompilationConfig = field(default_factory=CompilationConfig)
    speculative_config: SpeculativeConfig = None


@dataclass
class KVCacheGroupSpec:
    layer_names: list
    kv_cache_spec: object = None


@dataclass
class KVCacheConfig:
    num_blocks: int
    kv_cache_tensors: list = field(default_factory=list)
    kv_cache_groups: list = field(default_factory=list)


class Request:
    """vllm.v1.request.Request, the fields a connector reads."""

    def __init__(self, request_id, prompt_token_ids, **kw):
        self.request_id = request_id
        self.prompt_token_ids = list(prompt_token_ids)
        self._output_token_ids = []
        self.mm_features = kw.get("mm_features", [])
        self.lora_request = kw.get("lora_request")
        self.cache_salt = kw.get("cache_salt")
        self.prompt_embeds = None
        self.sampling_params = None
        self.pooling_params = None
        self.kv_transfer_params = None
        self.num_computed_tokens = 0
        self.num_external_computed_tokens = 0
        self.priority = 0

    @property
    def output_token_ids(self):
        return self._output_token_ids

    @property
    def all_token_ids(self):
        return self.prompt_token_ids + self._output_token_ids

    @property
    def num_tokens(self):
        return len(self.all_token_ids)


@dataclass
class KVCacheBlocks:
    ids: list

    def get_block_ids(self):
        return (list(self.ids),)


@dataclass
class NewRequestData:
    req_id: str
    prompt_token_ids: list
    mm_features: list
    sampling_params: object
    pooling_params: object
    block_ids: tuple
    num_computed_tokens: int
    lora_request: object
    prompt_embeds: object = None
    prompt_is_token_ids: list = None
    prefill_token_ids: list = None


@dataclass
class CachedRequestData:
    req_ids: list
    resumed_req_ids: set
    new_token_ids: list
    all_token_ids: dict
    new_block_ids: list          # entries: tuple of per-group lists, or None
    num_computed_tokens: list
    num_output_tokens: list


@dataclass
class SchedulerOutput:
    scheduled_new_reqs: list
    scheduled_cached_reqs: CachedRequestData
    num_scheduled_tokens: dict
    total_num_scheduled_tokens: int
    scheduled_spec_decode_tokens: dict
    scheduled_encoder_inputs: dict
    num_common_prefix_blocks: list
    finished_req_ids: set
    free_encoder_mm_hashes: list
    preempted_req_ids: set = None
    has_structured_output_requests: bool = False
    pending_structured_output_tokens: bool = False
    num_invalid_spec_tokens: dict = None
    kv_connector_metadata: object = None
    ec_connector_metadata: object = None
    new_block_ids_to_zero: list = None


@dataclass
class KVConnectorOutput:
    finished_sending: set = None
    finished_recving: set = None
    kv_connector_stats: object = None
    kv_cache_events: object = None
    invalid_block_ids: set = field(default_factory=set)
    expected_finished_count: int = 0
    kv_connector_worker_meta: object = None


@dataclass
class ForwardContext:
    no_compile_layers: dict = field(default_factory=dict)
    attn_metadata: object = None
    slot_mapping: dict = None


def layer_name(l):
    return "model.layers.%d.self_attn.attn" % l


def expected_rows(prompt, upto, layer, plane, rank, row):
    """The KV rows the model computes for tokens [0, upto) of prompt."""
    h = np.zeros(upto, np.int64)
    acc = 0
    for t in range(upto):
        acc = (acc * 1000003 + int(prompt[t]) + 1) % (1 << 31)
        h[t] = acc
    base = (h + layer * 7 + plane * 13 + rank * 17)[:, None] + np.arange(row)[None, :]
    return ((base % 1000) / 8.0).astype(np.float16)


# ---- the per-layer caches as each vLLM line allocates them --------------------
#
# name: (logical shape, physical order = the permutation the memory is
# allocated in; the tensor handed over is that allocation permuted back).

def cache_shape(layout, blocks, bs, heads, dim):
    """(logical shape, physical dimension order) of one layer's cache."""
    if layout == "flash_attn":          # <= 0.22
        return (2, blocks, bs, heads, dim), (0, 1, 2, 3, 4)
    if layout == "flash_attn_hnd":
        return (2, blocks, bs, heads, dim), (0, 1, 3, 2, 4)
    if layout == "flashinfer":          # FlashInfer/Triton <= 0.25, FA 0.23-0.25
        return (blocks, 2, bs, heads, dim), (0, 1, 2, 3, 4)
    if layout == "flashinfer_hnd":      # FlashInfer on Blackwell
        return (blocks, 2, bs, heads, dim), (0, 1, 3, 2, 4)
    if layout == "packed_nhd":          # >= 0.26, default memory order
        return (blocks, heads, bs, 2 * dim), (0, 2, 1, 3)
    if layout == "packed_hnd":          # >= 0.26, HND
        return (blocks, heads, bs, 2 * dim), (0, 1, 2, 3)
    if layout == "mla":
        return (blocks, bs, dim), (0, 1, 2)
    if layout == "mla4":
        return (blocks, 1, bs, dim), (0, 1, 2, 3)
    raise ValueError(layout)


def alloc_cache(layout, blocks, bs, heads, dim, fill, xp=np, **kw):
    """One layer's cache with the real shape and strides, numpy or torch."""
    shape, order = cache_shape(layout, blocks, bs, heads, dim)
    phys = tuple(shape[i] for i in order)
    inv = tuple(order.index(i) for i in range(len(order)))
    if xp is np:
        return np.full(phys, fill, np.float16).transpose(inv)
    return xp.full(phys, float(fill), **kw).permute(*inv)


def view_rows(cache, layout, plane, b, o, heads, dim):
    """Index expression: the rows (tokens x heads*dim) of plane at blocks b,
    offsets o, as a function for reading and writing."""
    if layout.startswith("flash_attn"):
        return (plane, b, o), None
    if layout.startswith("flashinfer"):
        return (b, plane, o), None
    if layout.startswith("packed"):
        return (b, slice(None), o, slice(plane * dim, (plane + 1) * dim)), "packed"
    if layout == "mla":
        return (b, o), None
    return (b, 0, o), None


@dataclass
class _Req:
    req: Request
    state: str = "waiting"         # waiting | running | done | error
    blocks: list = field(default_factory=list)
    num_computed: int = 0
    local_hit: int = 0             # tokens vLLM's own prefix cache holds
    share_from: str = None         # whose blocks hold that local hit
    resumed: bool = False
    decode_left: int = 0
    parked: int = 0                # steps get_num_new_matched_tokens said None


class MiniVllm:
    """One vLLM instance: a scheduler-side connector and tp worker-side
    connectors with their own paged caches, stepping like vLLM."""

    def __init__(self, tp=1, mla=False, layers=3, kv_heads=2, head_dim=8, block_size=4,
                 num_blocks=96, budget=10 ** 6, kv_role="kv_both", extra=None,
                 layout="flash_attn", wait_layers=True, model="test/llama",
                 async_sched=False, spec_tokens=0, cudagraph="PIECEWISE",
                 policy="fail", kvtc=None):
        self.tp, self.mla, self.layers, self.bs = tp, mla, layers, block_size
        self.budget, self.wait_layers = budget, wait_layers
        self.layout = ("mla" if layout not in ("mla", "mla4") else layout) if mla else layout
        self.dim = head_dim
        self.async_sched, self.spec_tokens = async_sched, spec_tokens
        mc = ModelConfig(model=model, dtype="float16", num_layers=layers,
                         num_kv_heads=1 if mla else kv_heads, head_size=head_dim,
                         use_mla=mla)
        names = [layer_name(l) for l in range(layers)]
        kcc = KVCacheConfig(num_blocks=num_blocks,
                            kv_cache_groups=[KVCacheGroupSpec(layer_names=names)])
        self.cc = CompilationConfig(cudagraph_mode=CUDAGraphMode[cudagraph])

        def config(rank):
            tc = kvtc() if kvtc else KVTransferConfig(
                kv_role=kv_role, kv_connector_extra_config=dict(extra or {}),
                kv_load_failure_policy=policy)
            return VllmConfig(mc, CacheConfig(block_size), ParallelConfig(tp, 1, rank), tc,
                              compilation_config=self.cc,
                              speculative_config=SpeculativeConfig(spec_tokens)
                              if spec_tokens else None)

        cfg0 = config(0)
        self.sched = KvstashConnector(cfg0, KVConnectorRole.SCHEDULER, kcc)
        # What the scheduler reads right after building its connector.
        self.policy = getattr(cfg0.kv_transfer_config, "kv_load_failure_policy", "recompute")
        self.workers, self.caches = [], []
        self.heads = 1 if mla else max(1, kv_heads // tp)
        for r in range(tp):
            w = KvstashConnector(config(r), KVConnectorRole.WORKER, kcc)
            cache = {n: alloc_cache(self.layout, num_blocks, block_size, self.heads,
                                    head_dim, EMPTY) for n in names}
            w.register_kv_caches(cache)
            self.workers.append(w)
            self.caches.append([cache[n] for n in names])
        self.free = list(range(num_blocks))[::-1]
        self.reqs = {}
        self.order = []
        self.finished = set()
        self.poisoned = set()
        self.load_errors = []          # invalid block ids per executed step
        self.outputs = []              # SchedulerOutputs, for inspection
        self.metas = []
        self.full_graph_steps = []     # steps replayed as FULL CUDA graphs
        self.calls = []                # connector calls of rank 0, in order
        self._inflight = None          # async scheduling: the step not yet processed

    # ---- the paged caches ---------------------------------------------------

    def _rows(self, rank, layer, plane, slots):
        c = self.caches[rank][layer]
        b, o = slots // self.bs, slots % self.bs
        idx, kind = view_rows(c, self.layout, plane, b, o, self.heads, self.dim)
        v = c[idx]
        if kind == "packed":           # (tokens, heads, dim) after fancy indexing
            return np.asarray(v).reshape(len(slots), -1)
        return np.asarray(v).reshape(len(slots), -1)

    def _write(self, rank, layer, plane, slots, rows):
        c = self.caches[rank][layer]
        b, o = slots // self.bs, slots % self.bs
        idx, kind = view_rows(c, self.layout, plane, b, o, self.heads, self.dim)
        if self.mla:
            c[idx] = rows
        else:
            c[idx] = rows.reshape(len(slots), self.heads, self.dim)

    def slots(self, rid, lo, hi):
        r = self.reqs[rid]
        t = np.arange(lo, hi)
        return np.asarray(r.blocks, np.int64)[t // self.bs] * self.bs + t % self.bs

    def planes(self):
        return 1 if self.mla else 2

    def row(self):
        return self.heads * self.dim

    def correct(self, rid, lo, hi):
        """Whether every rank's cache holds the model's KV for tokens [lo, hi)."""
        r = self.reqs[rid]
        s = self.slots(rid, lo, hi)
        for rank in range(self.tp):
            for l in range(self.layers):
                for p in range(self.planes()):
                    want = expected_rows(r.req.prompt_token_ids, hi, l, p,
                                         0 if self.mla else rank, self.row())[lo:hi]
                    if not np.array_equal(self._rows(rank, l, p, s), want):
                        return False
        return True

    # ---- requests -------------------------------------------------------------

    def add(self, rid, prompt, local_hit=0, decode=0, share_from=None, **kw):
        """A new request; local_hit tokens (block-aligned) are in vLLM's own
        prefix cache: computed earlier on this instance, or, with
        share_from, the blocks of that request (shared, as vLLM's prefix
        cache shares them)."""
        self.reqs[rid] = _Req(Request(rid, prompt, **kw), local_hit=local_hit,
                              decode_left=decode, share_from=share_from)
        self.order.append(rid)

    def preempt(self, rid):
        r = self.reqs[rid]
        self.free.extend(reversed(r.blocks))
        r.blocks, r.num_computed, r.state, r.resumed, r.local_hit = [], 0, "waiting", True, 0
        r.share_from = None

    def _alloc(self, r, upto):
        need = -(-upto // self.bs) - len(r.blocks)
        got = [self.free.pop() for _ in range(max(0, need))]
        r.blocks.extend(got)
        return got

    # ---- the scheduler --------------------------------------------------------

    def _schedule(self):
        new_reqs, cached, num_sched = [], [], {}
        budget = self.budget
        finished, self.finished = self.finished, set()
        spec = {}
        for rid in self.order:
            r = self.reqs[rid]
            if r.state != "running" or budget <= 0:
                continue
            remaining = r.req.num_tokens - r.num_computed
            if remaining <= 0:
                continue
            n = min(remaining, budget)
            if self.spec_tokens and r.num_computed >= len(r.req.prompt_token_ids):
                spec[rid] = [0] * self.spec_tokens   # drafts, all rejected here
            got = self._alloc(r, r.num_computed + n)
            cached.append((rid, (got,) if got else None, r.num_computed))
            num_sched[rid] = n
            budget -= n
        for rid in self.order:
            r = self.reqs[rid]
            if r.state != "waiting" or budget <= 0:
                continue
            local = r.local_hit
            ext, is_async = self.sched.get_num_new_matched_tokens(r.req, local)
            assert is_async is False
            if ext is None:              # not known yet: ask again next step
                r.parked += 1
                continue
            assert ext == 0 or (local + ext) % self.bs == 0
            computed = local + ext
            assert computed < len(r.req.prompt_token_ids)   # the last token is computed
            n = min(len(r.req.prompt_token_ids) - computed, budget)
            if r.share_from and local:
                r.blocks = list(self.reqs[r.share_from].blocks[:local // self.bs])
            self._alloc(r, computed + n)
            if local and not r.share_from:   # vLLM's prefix cache holds these
                self._fill(rid, 0, local)
            self.sched.update_state_after_alloc(r.req, KVCacheBlocks(r.blocks), ext)
            r.num_computed = computed
            r.req.num_computed_tokens = computed
            num_sched[rid] = n
            budget -= n
            if r.resumed:
                cached.append((rid, (list(r.blocks),), computed))
            else:
                new_reqs.append(NewRequestData(
                    rid, list(r.req.prompt_token_ids), r.req.mm_features, None, None,
                    (list(r.blocks),), computed, r.req.lora_request))
            r.state = "running"
        resumed = {rid for rid, _, _ in cached if self.reqs[rid].resumed}
        for rid in resumed:
            self.reqs[rid].resumed = False
        so = SchedulerOutput(
            scheduled_new_reqs=new_reqs,
            scheduled_cached_reqs=CachedRequestData(
                req_ids=[c[0] for c in cached], resumed_req_ids=resumed,
                new_token_ids=[[] for _ in cached], all_token_ids={},
                new_block_ids=[c[1] for c in cached],
                num_computed_tokens=[c[2] for c in cached],
                num_output_tokens=[len(self.reqs[c[0]].req.output_token_ids)
                                   for c in cached]),
            num_scheduled_tokens=num_sched, total_num_scheduled_tokens=sum(num_sched.values()),
            scheduled_spec_decode_tokens=spec, scheduled_encoder_inputs={},
            num_common_prefix_blocks=[0], finished_req_ids=finished,
            free_encoder_mm_hashes=[], preempted_req_ids=set())
        so.kv_connector_metadata = self.sched.build_connector_meta(so)
        # _update_after_schedule: computed counts advance when scheduled.
        starts = {}
        for rid, n in num_sched.items():
            r = self.reqs[rid]
            starts[rid] = r.num_computed
            r.num_computed += n
            r.req.num_computed_tokens = r.num_computed
        self.outputs.append(so)
        self.metas.append(so.kv_connector_metadata)
        return so, starts

    def _full_graph(self, so):
        """Whether the runner replays this step as a FULL CUDA graph."""
        mode = self.cc.cudagraph_mode
        n = so.total_num_scheduled_tokens
        if mode in (CUDAGraphMode.NONE, CUDAGraphMode.PIECEWISE) or n == 0 or \
                n > self.cc.max_cudagraph_capture_size:
            return False
        if mode == CUDAGraphMode.FULL:
            return True
        uniform = 1 + self.spec_tokens
        return all(v == uniform for v in so.num_scheduled_tokens.values())

    # ---- the model runners ---------------------------------------------------

    def _execute(self, so, starts):
        """The workers of every rank run the step in lockstep, layer by
        layer, as tensor-parallel ranks do: attention over missing KV on
        any rank reaches every rank through the all-reduce that follows, so
        what the step computes for that request is poison on every rank."""
        invalid = set()
        full = self._full_graph(so)
        if full:
            self.full_graph_steps.append(len(self.outputs) - 1)
        ranks = range(self.tp)
        if so.total_num_scheduled_tokens == 0:
            for rank in ranks:
                invalid |= self._no_forward(rank, self.workers[rank], so)
            self.load_errors.append(invalid)
            return invalid
        meta = so.kv_connector_metadata
        for rank in ranks:
            self._call(rank, "handle_preemptions", meta)
            self._call(rank, "bind_connector_metadata", meta)
            self._call(rank, "start_load_kv", ForwardContext(attn_metadata={}))
        for l in range(self.layers):
            for rank in ranks:
                if self.wait_layers and not full:
                    self._call(rank, "wait_for_layer_load", layer_name(l))
            for rid, n in so.num_scheduled_tokens.items():
                lo = starts[rid]
                # Attention at layer l reads the prefix's KV at layer l.
                if lo and not all(self._layer_ok(rank, rid, l, lo) for rank in ranks):
                    self.poisoned.add(rid)
                for rank in ranks:
                    self._compute(rank, rid, l, lo, lo + n, poison=rid in self.poisoned)
            for rank in ranks:
                if not full:
                    self._call(rank, "save_kv_layer", layer_name(l), self.caches[rank][l],
                               None)
        for rank in ranks:
            if self.spec_tokens:   # defer_finalize: errors first, save after the drafter
                self._call(rank, "get_finished", so.finished_req_ids)
                invalid |= self._call(rank, "get_block_ids_with_load_errors")
                self._call(rank, "wait_for_save")
            else:
                self._call(rank, "wait_for_save")
                self._call(rank, "get_finished", so.finished_req_ids)
                invalid |= self._call(rank, "get_block_ids_with_load_errors")
            self._call(rank, "clear_connector_metadata")
        self.load_errors.append(invalid)
        return invalid

    def _call(self, rank, name, *args):
        if rank == 0:
            self.calls.append(name)
        return getattr(self.workers[rank], name)(*args)

    def _no_forward(self, rank, w, so):
        meta = so.kv_connector_metadata
        self._call(rank, "handle_preemptions", meta)
        self._call(rank, "bind_connector_metadata", meta)
        self._call(rank, "start_load_kv", ForwardContext())
        self._call(rank, "get_finished", so.finished_req_ids)
        bad = self._call(rank, "get_block_ids_with_load_errors")
        self._call(rank, "clear_connector_metadata")
        return bad

    def _layer_ok(self, rank, rid, l, upto):
        r = self.reqs[rid]
        s = self.slots(rid, 0, upto)
        for p in range(self.planes()):
            want = expected_rows(r.req.all_token_ids, upto, l, p,
                                 0 if self.mla else rank, self.row())
            if not np.array_equal(self._rows(rank, l, p, s), want):
                return False
        return True

    def _compute(self, rank, rid, l, lo, hi, poison):
        r = self.reqs[rid]
        s = self.slots(rid, lo, hi)
        for p in range(self.planes()):
            rows = expected_rows(r.req.all_token_ids, hi, l, p, 0 if self.mla else rank,
                                 self.row())[lo:hi]
            if poison:
                rows = np.full_like(rows, POISON)
            self._write(rank, l, p, s, rows)

    def _fill(self, rid, lo, hi):
        for rank in range(self.tp):
            for l in range(self.layers):
                self._compute(rank, rid, l, lo, hi, poison=False)

    # ---- the scheduler, after a step ------------------------------------------------

    def _update_from_output(self, so, starts, invalid):
        """vLLM's update after a step: _handle_invalid_blocks, then
        update_connector_output, then the requests' progress."""
        hit = set()
        claimed = set()                     # bad blocks some request recomputes
        for rid in self.order if invalid else ():
            r = self.reqs[rid]
            if r.state != "running":
                continue
            held = r.num_computed // self.bs + (1 if r.num_computed % self.bs else 0)
            bad = [i for i, b in enumerate(r.blocks[:held]) if b in invalid]
            if not bad:
                continue
            if self.policy == "fail":       # every holder ends with an error
                hit.add(rid)
                r.state = "error"
                self.sched.request_finished(r.req, list(r.blocks))
                self.finished.add(rid)
                continue
            mine = [i for i in bad if r.blocks[i] not in claimed]
            if not mine:                    # the first holder recomputes it
                continue
            hit.add(rid)
            claimed.update(r.blocks[i] for i in bad)
            r.num_computed = mine[0] * self.bs
            r.req.num_computed_tokens = r.num_computed
        self.sched.update_connector_output(KVConnectorOutput(invalid_block_ids=set(invalid)))
        for rid, n in so.num_scheduled_tokens.items():
            r = self.reqs[rid]
            if rid in hit or r.state != "running":
                continue
            self.poisoned.discard(rid)
            if r.num_computed >= r.req.num_tokens:
                if r.decode_left > 0:
                    r.decode_left -= 1
                    r.req.output_token_ids.append(1000 + r.decode_left)
                else:
                    r.state = "done"     # blocks kept, for inspection
                    self.sched.request_finished(r.req, list(r.blocks))
                    self.finished.add(rid)
        for rid in hit:
            self.poisoned.discard(rid)

    def step(self):
        """One engine step; with async scheduling, the next step is
        scheduled before this one's output is processed."""
        if not self.async_sched:
            so, starts = self._schedule()
            invalid = self._execute(so, starts)
            self._update_from_output(so, starts, invalid)
            return so.kv_connector_metadata
        if self._inflight is None:
            so, starts = self._schedule()
            self._inflight = (so, starts, self._execute(so, starts))
        so, starts, invalid = self._inflight
        nxt, nstarts = self._schedule()          # before this step's output is known
        self._update_from_output(so, starts, invalid)
        self._inflight = (nxt, nstarts, self._execute(nxt, nstarts))
        return so.kv_connector_metadata

    def idle(self):
        return all(self.reqs[rid].state in ("done", "error") for rid in self.order)

    def run(self, max_steps=60):
        for _ in range(max_steps):
            if self.idle() and self._inflight is None:
                return
            if self.idle():
                so, starts, invalid = self._inflight
                self._update_from_output(so, starts, invalid)
                self._inflight = None
                return
            self.step()
        raise AssertionError("requests did not finish in %d steps" % max_steps)

    def close(self):
        for w in self.workers:
            w.shutdown()
        self.sched.shutdown()
