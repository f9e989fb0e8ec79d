"""Stand-ins for the vLLM objects the connector meets, shaped like vLLM's
own (vllm/v1/core/sched/output.py, vllm/v1/request.py, vllm/config,
KVConnectorOutput), and MiniVllm: a small scheduler + workers loop that
drives KvstashConnector the way vLLM's V1 engine does, over numpy paged KV
caches and real kvstash engines on real files.

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


@dataclass
class ModelConfig:
    model: str
    dtype: str
    num_layers: int
    num_kv_heads: int
    head_size: int
    use_mla: bool = False
    revision: str = None

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


@dataclass
class ParallelConfig:
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    rank: int = 0


@dataclass
class KVTransferConfig:
    kv_connector: str = "KvstashConnector"
    kv_connector_module_path: str = "kvstash.vllm"
    kv_role: str = "kv_both"
    kv_connector_extra_config: dict = field(default_factory=dict)

    def get_from_extra_config(self, key, default):
        return self.kv_connector_extra_config.get(key, default)


@dataclass
class VllmConfig:
    model_config: ModelConfig
    cache_config: CacheConfig
    parallel_config: ParallelConfig
    kv_transfer_config: KVTransferConfig


@dataclass
class KVCacheGroupSpec:
    layer_names: list


@dataclass
class KVCacheConfig:
    num_blocks: int
    kv_cache_groups: list


class Request:
    """vllm.v1.request.Request, the fields a connector reads."""

    def __init__(self, request_id, prompt_token_ids, **kw):
        self.request_id = request_id
        self.prompt_token_ids = list(prompt_token_ids)
        self.output_token_ids = []
        self.mm_features = kw.get("mm_features", [])
        self.lora_request = kw.get("lora_request")
        self.cache_salt = kw.get("cache_salt")
        self.prompt_embeds = None
        self.num_computed_tokens = 0
        self.priority = 0

    @property
    def all_token_ids(self):
        return self.prompt_token_ids + self.output_token_ids

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


@dataclass
class CachedRequestData:
    req_ids: list
    resumed_req_ids: set
    new_token_ids: list
    all_token_ids: dict
    new_block_ids: list
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


@dataclass
class KVConnectorOutput:
    finished_sending: set = None
    finished_recving: set = None
    invalid_block_ids: set = field(default_factory=set)


@dataclass
class ForwardContext:
    no_compile_layers: dict = field(default_factory=dict)
    attn_metadata: dict = field(default_factory=dict)
    virtual_engine: int = 0


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


@dataclass
class _Req:
    req: Request
    state: str = "waiting"         # waiting | running | done
    blocks: list = field(default_factory=list)
    num_computed: int = 0
    local_hit: int = 0             # tokens vLLM's own prefix cache holds
    resumed: bool = False
    decode_left: int = 0
    new_blocks: list = field(default_factory=list)


class MiniVllm:
    """One vLLM instance: a scheduler-side connector and tp worker-side
    connectors with their own paged caches, stepping like vLLM's V1 loop."""

    def __init__(self, tp=1, mla=False, layers=3, kv_heads=2, head_dim=8, block_size=4,
                 num_blocks=96, budget=10 ** 6, kv_role="kv_both", extra=None,
                 layout="flash_attn", wait_layers=True, model="test/llama"):
        self.tp, self.mla, self.layers, self.bs = tp, mla, layers, block_size
        self.budget, self.wait_layers, self.layout = budget, wait_layers, layout
        self.dim = head_dim
        mc = ModelConfig(model=model, dtype="float16", num_layers=layers,
                         num_kv_heads=1 if mla else kv_heads, head_size=head_dim,
                         use_mla=mla)
        names = [layer_name(l) for l in range(layers)]
        kcc = KVCacheConfig(num_blocks=num_blocks,
                            kv_cache_groups=[KVCacheGroupSpec(layer_names=names)])

        def config(rank):
            return VllmConfig(mc, CacheConfig(block_size), ParallelConfig(tp, 1, rank),
                              KVTransferConfig(kv_role=kv_role,
                                               kv_connector_extra_config=dict(extra or {})))

        self.sched = KvstashConnector(config(0), KVConnectorRole.SCHEDULER, kcc)
        self.workers, self.caches = [], []
        self.heads = 1 if mla else max(1, kv_heads // tp)
        for r in range(tp):
            w = KvstashConnector(config(r), KVConnectorRole.WORKER, kcc)
            if mla:
                shape = (num_blocks, block_size, head_dim)
            elif layout == "flashinfer":
                shape = (num_blocks, 2, block_size, self.heads, head_dim)
            else:
                shape = (2, num_blocks, block_size, self.heads, head_dim)
            cache = {n: np.full(shape, EMPTY, np.float16) for n in names}
            w.register_kv_caches(cache)
            self.workers.append(w)
            self.caches.append([cache[n] for n in names])
        self.free = list(range(num_blocks))[::-1]
        self.reqs = {}
        self.order = []
        self.finished = set()
        self.poisoned = set()
        self.load_errors = []          # invalid block ids per step
        self.outputs = []              # SchedulerOutputs, for inspection
        self.metas = []

    # ---- the paged caches ---------------------------------------------------

    def _rows(self, rank, layer, plane, slots):
        c = self.caches[rank][layer]
        b, o = slots // self.bs, slots % self.bs
        if self.mla:
            return c[b, o]
        if self.layout == "flashinfer":
            return c[b, plane, o].reshape(len(slots), -1)
        return c[plane, b, o].reshape(len(slots), -1)

    def _write(self, rank, layer, plane, slots, rows):
        c = self.caches[rank][layer]
        b, o = slots // self.bs, slots % self.bs
        if self.mla:
            c[b, o] = rows
        elif self.layout == "flashinfer":
            c[b, plane, o] = rows.reshape(len(slots), self.heads, self.dim)
        else:
            c[plane, b, o] = rows.reshape(len(slots), self.heads, self.dim)

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

    def add(self, rid, prompt, local_hit=0, decode=0, **kw):
        """A new request; local_hit tokens (block-aligned) are in vLLM's own
        prefix cache, as if computed earlier on this instance."""
        self.reqs[rid] = _Req(Request(rid, prompt, **kw), local_hit=local_hit,
                              decode_left=decode)
        self.order.append(rid)

    def preempt(self, rid):
        r = self.reqs[rid]
        self.free.extend(reversed(r.blocks))
        r.blocks, r.num_computed, r.state, r.resumed, r.local_hit = [], 0, "waiting", True, 0

    def _alloc(self, r, upto):
        need = -(-upto // self.bs) - len(r.blocks)
        got = [self.free.pop() for _ in range(max(0, need))]
        r.blocks.extend(got)
        return got

    # ---- one engine step ---------------------------------------------------------

    def step(self):
        new_reqs, cached, num_sched = [], [], {}
        budget = self.budget
        finished, self.finished = self.finished, set()
        for rid in self.order:
            r = self.reqs[rid]
            if r.state != "running" or budget <= 0:
                continue
            remaining = r.req.num_tokens - r.num_computed
            if remaining <= 0:
                continue
            n = min(remaining, budget)
            got = self._alloc(r, r.num_computed + n)
            cached.append((rid, (got,), r.num_computed))
            num_sched[rid] = n
            budget -= n
        for rid in self.order:
            r = self.reqs[rid]
            if r.state != "waiting" or budget <= 0:
                continue
            local = r.local_hit
            ext, is_async = self.sched.get_num_new_matched_tokens(r.req, local)
            assert is_async is False
            assert ext == 0 or (local + ext) % self.bs == 0
            computed = local + ext
            assert computed < len(r.req.prompt_token_ids)   # the last token is computed
            n = min(len(r.req.prompt_token_ids) - computed, budget)
            self._alloc(r, computed + n)
            if local:   # vLLM's prefix cache: those blocks already hold the KV
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
            scheduled_spec_decode_tokens={}, scheduled_encoder_inputs={},
            num_common_prefix_blocks=[0], finished_req_ids=finished,
            free_encoder_mm_hashes=[])
        meta = self.sched.build_connector_meta(so)
        self.outputs.append(so)
        self.metas.append(meta)
        invalid = set()
        for rank, w in enumerate(self.workers):
            invalid |= self._forward(rank, w, meta, num_sched)
        self.load_errors.append(invalid)
        self.sched.update_connector_output(KVConnectorOutput(invalid_block_ids=invalid))
        self._advance(num_sched, invalid)
        return meta

    def _forward(self, rank, w, meta, num_sched):
        w.bind_connector_metadata(meta)
        w.start_load_kv(ForwardContext())
        for l in range(self.layers):
            if self.wait_layers:
                w.wait_for_layer_load(layer_name(l))
            for rid, n in num_sched.items():
                r = self.reqs[rid]
                lo = r.num_computed
                # Attention at layer l reads the prefix's KV at layer l.
                if lo and not self._layer_ok(rank, rid, l, lo):
                    self.poisoned.add(rid)
                self._compute(rank, rid, l, lo, lo + n, poison=rid in self.poisoned)
            w.save_kv_layer(layer_name(l), self.caches[rank][l], None)
        w.wait_for_save()
        w.get_finished(set())
        bad = w.get_block_ids_with_load_errors()
        w.clear_connector_metadata()
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

    def _advance(self, num_sched, invalid):
        """vLLM's update after a step, with its recovery from load errors
        (kv_load_failure_policy=recompute): a request holding a failed block
        goes back to the first one and recomputes from there."""
        for rid, n in num_sched.items():
            r = self.reqs[rid]
            bad = [i for i, b in enumerate(r.blocks) if b in invalid]
            if bad:
                r.num_computed = bad[0] * self.bs
                self.poisoned.discard(rid)
                continue
            self.poisoned.discard(rid)
            r.num_computed += n
            if r.num_computed >= r.req.num_tokens:
                if r.decode_left > 0:
                    r.decode_left -= 1
                    r.req.output_token_ids.append(1000 + r.decode_left)
                else:
                    r.state = "done"     # blocks kept, for inspection
                    self.sched.request_finished(r.req, list(r.blocks))
                    self.finished.add(rid)

    def run(self, max_steps=50):
        for _ in range(max_steps):
            if all(self.reqs[rid].state == "done" for rid in self.order):
                return
            self.step()
        raise AssertionError("requests did not finish in %d steps" % max_steps)

    def close(self):
        for w in self.workers:
            w.shutdown()
        self.sched.shutdown()
