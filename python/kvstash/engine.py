"""Engine and Op: one namespace on one store, from Python.

An Engine wraps a kvs_engine: lookup, store, retrieve (whole or layer by
layer), remove, stats and Prometheus metrics.  Token ids are any integer
sequence (list, numpy, torch); KV memory is a kvstash.KV or a buffer that
KV.contiguous() accepts.  Every check the library makes it makes again, with
its own message; the checks here only turn Python-side mistakes (wrong
element size, too short a slot mapping) into clear errors before any pointer
is handed over.
"""

import ctypes
import json
import threading
import weakref

from . import _lib
from .config import Config
from .kv import KV, as_token_array

_LAYOUTS = {"mha": 0, "mla": 1}
_OP_CLOSED = "this Op was freed: its Engine was closed"


def parse_dtype(dtype):
    """A kvs_dtype number from "bf16", "bfloat16", torch.bfloat16, ..."""
    name = str(dtype)
    if name.startswith("torch."):
        name = name[len("torch."):]
    out = ctypes.c_int()
    _lib.check(_lib.load().kvs_dtype_parse(name.encode(), ctypes.byref(out)))
    return out.value


class OpResult:
    """What a finished operation did (struct kvs_op_result)."""

    __slots__ = ("status", "tokens", "chunks_done", "chunks_present", "chunks_failed",
                 "bytes")

    def __init__(self, r):
        self.status = int(r.status)
        self.tokens = int(r.tokens)
        self.chunks_done = int(r.chunks_done)
        self.chunks_present = int(r.chunks_present)
        self.chunks_failed = int(r.chunks_failed)
        self.bytes = int(r.bytes)

    @property
    def ok(self):
        return self.status == _lib.OK

    @property
    def status_name(self):
        return _lib.STATUS_NAMES[self.status] if self.status < len(_lib.STATUS_NAMES) \
            else str(self.status)

    def __repr__(self):
        return ("OpResult(%s, tokens=%d, done=%d, present=%d, failed=%d, bytes=%d)"
                % (self.status_name, self.tokens, self.chunks_done, self.chunks_present,
                   self.chunks_failed, self.bytes))


class Op(_lib.Closing):
    """An asynchronous store or retrieve.  Holds the memory it uses alive
    until it is freed; free it (or use it as a context manager) when done.
    Freeing an unfinished retrieve cancels it; so does freeing an unfinished
    store of host memory (the memory is the caller's again), while a store of
    CUDA memory, captured when it started, goes on in the background.
    Engine.close() waits for the stores it still holds before freeing them,
    and frees every Op it has; a call on an Op after that raises
    EngineClosedError."""

    def __init__(self, engine, handle, kind, keep):
        self._engine = engine
        self._h = ctypes.c_void_p(handle)
        self._lock = threading.Lock()
        self.kind = kind           # "store" or "retrieve"
        self._keep = keep          # tokens, slots, struct, KV: alive while in flight
        self.result = None
        engine._ops.add(self)

    def _handle(self):
        if not self._h:
            raise ValueError("kvstash: this Op was freed")
        return self._h

    def wait(self, timeout_ms=-1):
        """Waits until the op is complete (timeout_ms < 0: the op's own
        deadline, for a store without limit) and returns its OpResult.
        Raises KvstashTimeoutError when timeout_ms passes first."""
        if self.result is not None:
            return self.result
        with _InFlight(self._engine, _OP_CLOSED):
            return self._wait(timeout_ms)

    def _wait(self, timeout_ms):
        r = _lib.OpResult()
        _lib.check(_lib.load().kvs_op_wait(self._handle(), int(timeout_ms), ctypes.byref(r)))
        self.result = OpResult(r)
        return self.result

    def poll(self):
        """The OpResult if the op is complete, else None."""
        try:
            return self.wait(0)
        except _lib.KvstashTimeoutError:
            return None

    @property
    def done(self):
        return self.poll() is not None

    def wait_layer(self, layer):
        """Retrieve only: waits until layer `layer` (and every layer before
        it) of every loaded chunk is in place; returns the prefix of tokens
        whose layers 0..layer are in place."""
        out = ctypes.c_size_t()
        with _InFlight(self._engine, _OP_CLOSED):
            _lib.check(_lib.load().kvs_op_wait_layer(self._handle(), int(layer),
                                                     ctypes.byref(out)))
        return int(out.value)

    def free(self):
        if not self._h:
            return
        try:
            self._engine._enter()
        except _lib.EngineClosedError:
            return                 # Engine.close() frees (or freed) it
        try:
            self._release()
        finally:
            self._engine._leave()

    def _release(self):
        with self._lock:
            h, self._h = self._h, ctypes.c_void_p()
            keep, self._keep = self._keep, None
        if h:
            _lib.load().kvs_op_free(h)   # the memory in keep is the caller's again
        del keep
        self._engine._ops.discard(self)

    close = free


class _InFlight:
    """A call on an engine: counted while it runs, so close() waits for it,
    and refused once close() has begun."""

    __slots__ = ("_engine", "_what")

    def __init__(self, engine, what="this Engine was closed"):
        self._engine = engine
        self._what = what

    def __enter__(self):
        return self._engine._enter(self._what)

    def __exit__(self, *exc):
        self._engine._leave()


def _no_nul(what, value):
    """The library takes model, variant and salt as C strings: a NUL byte
    would cut them there, and two different salts would share a namespace."""
    if value is not None and "\0" in value:
        raise ValueError("kvstash: %s contains a NUL byte (at offset %d); NUL bytes are "
                         "not accepted in model, variant or salt"
                         % (what, value.index("\0")))
    return value


class Engine(_lib.Closing):
    """One namespace (model, KV geometry, dtype, layout, tensor-parallel rank,
    chunk size, salt) on the store of a configuration.

        with Engine(model="meta-llama/Llama-3.1-8B", num_layers=32,
                    num_kv_heads=8, head_dim=128, dtype="bf16") as eng:
            eng.store(tokens, kv).wait()
            n = eng.lookup(tokens)
            n = eng.retrieve(tokens, kv)

    config: a Config, a mapping of overrides applied on Config.load(), or
    None for Config.load() (LMCACHE_CONFIG_FILE and the environment).

    Threads: every method may be called from any thread.  close() waits for
    the calls in flight in other threads, then frees the engine; a call
    that starts after close() began raises EngineClosedError.
    """

    def __init__(self, config=None, *, model, num_layers, num_kv_heads, head_dim,
                 dtype="bf16", layout="mha", world_size=1, rank=0, variant=None, salt=None):
        self._h = ctypes.c_void_p()
        self._cv = threading.Condition()
        self._busy = 0             # calls in flight
        self._closing = False
        model = _no_nul("model", str(model))
        variant = _no_nul("variant", variant)
        salt = _no_nul("salt", salt)
        lib = _lib.load()
        if config is None:
            config = Config.load()
        elif not isinstance(config, Config):
            config = Config.load(overrides=config)
        if layout not in _LAYOUTS:
            raise ValueError("kvstash: layout must be 'mha' or 'mla', not %r" % (layout,))
        self.model = str(model)
        self.dtype = parse_dtype(dtype)
        self.dtype_name = lib.kvs_dtype_name(self.dtype).decode()
        self.dtype_size = int(lib.kvs_dtype_size(self.dtype))
        self.layout = layout
        self.num_layers = int(num_layers)
        self.num_kv_heads = 1 if layout == "mla" else int(num_kv_heads)
        self.head_dim = int(head_dim)
        self.world_size = int(world_size)
        self.rank = int(rank)
        self.num_planes = 1 if layout == "mla" else 2
        self.row_elems = self.num_kv_heads * self.head_dim
        ns = _lib.Namespace()
        ns.model = self.model.encode()
        ns.dtype = self.dtype
        ns.num_layers = self.num_layers
        ns.num_kv_heads = self.num_kv_heads
        ns.head_dim = self.head_dim
        ns.layout = _LAYOUTS[layout]
        ns.world_size = self.world_size
        ns.rank = self.rank
        ns.variant = variant.encode() if variant else None
        ns.salt = salt.encode() if salt is not None else None
        h = ctypes.c_void_p()
        _lib.check(lib.kvs_engine_open(config._handle(), ctypes.byref(ns), ctypes.byref(h)))
        self._ops = weakref.WeakSet()
        self._h = h
        self.namespace_id = lib.kvs_engine_namespace_id(h).decode()
        self.namespace_path = lib.kvs_engine_namespace_path(h).decode()
        self.chunk_size = int(lib.kvs_engine_chunk_size(h))
        self.chunk_bytes = int(lib.kvs_engine_chunk_bytes(h))

    def __repr__(self):
        return "Engine(%s, chunk %d tokens, %s)" % (
            self.namespace_id, self.chunk_size, "open" if self._h else "closed")

    # ---- helpers --------------------------------------------------------

    def _enter(self, what="this Engine was closed"):
        with self._cv:
            if self._closing or not self._h:
                raise _lib.EngineClosedError("kvstash: " + what)
            self._busy += 1
            return self._h

    def _leave(self):
        with self._cv:
            self._busy -= 1
            if not self._busy:
                self._cv.notify_all()

    def _as_kv(self, kv):
        if not isinstance(kv, KV):
            kv = KV.contiguous(kv, num_planes=self.num_planes)
        if kv.num_layers != self.num_layers:
            raise ValueError("kvstash: the KV memory has %d layers, the namespace %d"
                             % (kv.num_layers, self.num_layers))
        if kv.itemsize != self.dtype_size:
            raise ValueError("kvstash: the KV memory has %d-byte elements (%s), the "
                             "namespace's dtype %s has %d"
                             % (kv.itemsize, kv.dtype, self.dtype_name, self.dtype_size))
        if kv.row_elems != self.row_elems or kv.num_planes != self.num_planes:
            raise ValueError("kvstash: the KV memory has rows of %d elements in %d plane(s); "
                             "the namespace %d x %d in %d"
                             % (kv.row_elems, kv.num_planes, self.num_kv_heads,
                                self.head_dim, self.num_planes))
        if kv.head_stride and kv.head_elems != self.head_dim:
            raise ValueError("kvstash: the KV memory has %d heads of %d elements; the "
                             "namespace %d x %d" % (kv.num_heads, kv.head_elems,
                                                    self.num_kv_heads, self.head_dim))
        return kv

    def _prepare(self, tokens, kv, slot_mapping, stream, writing):
        toks = as_token_array(tokens)
        kv = self._as_kv(kv)
        if writing and not kv.writable():
            raise ValueError("kvstash: retrieve needs writable KV memory")
        desc, slots = kv.c_desc(slot_mapping, stream)
        if slots is not None and slots.size < toks.size:
            raise ValueError("kvstash: the slot mapping has %d entries for %d tokens"
                             % (slots.size, toks.size))
        ptr = toks.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32))
        return toks, ptr, kv, desc, slots

    # ---- the API --------------------------------------------------------

    def check_kv(self, kv):
        """Checks, without touching the memory, that kv describes KV this
        engine can read and write (strides that do not overlap, rows of the
        namespace's size); raises KvstashError naming the strides otherwise."""
        kv = self._as_kv(kv)
        desc, _ = kv.c_desc(None, None)
        with _InFlight(self) as h:
            _lib.check(_lib.load().kvs_kv_check(h, ctypes.byref(desc)))

    def _count(self, fn, tokens):
        """A call that takes the prompt's tokens and gives back a count
        (kvs_lookup, kvs_remove)."""
        toks = as_token_array(tokens)
        out = ctypes.c_size_t()
        with _InFlight(self) as h:
            _lib.check(getattr(_lib.load(), fn)(
                h, toks.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32)), toks.size,
                ctypes.byref(out)))
        return int(out.value)

    def lookup(self, tokens):
        """Leading tokens available as whole chunks (CPU tier or store)."""
        return self._count("kvs_lookup", tokens)

    def store(self, tokens, kv, slot_mapping=None, stream=None, wait=False):
        """Stores the whole chunks of the prompt the store lacks.  Returns an
        Op (host memory stays borrowed until it completes; CUDA memory is
        captured before this returns), or with wait=True the OpResult."""
        toks, ptr, kv, desc, slots = self._prepare(tokens, kv, slot_mapping, stream, False)
        h = ctypes.c_void_p()
        with _InFlight(self) as eh:
            _lib.check(_lib.load().kvs_store(eh, ptr, toks.size, ctypes.byref(desc),
                                             ctypes.byref(h)))
            op = Op(self, h.value, "store", (toks, slots, desc, kv))
        if not wait:
            return op
        with op:
            return op.wait()

    def retrieve_start(self, tokens, kv, slot_mapping=None, stream=None):
        """Starts loading the longest available prefix; returns an Op to
        wait on whole (wait) or layer by layer (wait_layer)."""
        toks, ptr, kv, desc, slots = self._prepare(tokens, kv, slot_mapping, stream, True)
        h = ctypes.c_void_p()
        with _InFlight(self) as eh:
            _lib.check(_lib.load().kvs_retrieve_start(eh, ptr, toks.size,
                                                      ctypes.byref(desc), ctypes.byref(h)))
            return Op(self, h.value, "retrieve", (toks, slots, desc, kv))

    def retrieve(self, tokens, kv, slot_mapping=None, stream=None):
        """Loads the longest available prefix of whole chunks into kv and
        returns how many tokens were loaded (every byte verified)."""
        toks, ptr, kv, desc, slots = self._prepare(tokens, kv, slot_mapping, stream, True)
        out = ctypes.c_size_t()
        with _InFlight(self) as h:
            _lib.check(_lib.load().kvs_retrieve(h, ptr, toks.size,
                                                ctypes.byref(desc), ctypes.byref(out)))
        return int(out.value)

    def remove(self, tokens):
        """Removes the prompt's stored chunks; returns how many files went."""
        return self._count("kvs_remove", tokens)

    def stats(self):
        """The counters and gauges as a dict (names of KVS_STATS_FIELDS)."""
        with _InFlight(self) as h:
            text = _lib.call_string(_lib.load().kvs_engine_stats_json, h)
        return json.loads(text)

    def metrics(self):
        """The same in the Prometheus text exposition format (0.0.4)."""
        with _InFlight(self) as h:
            return _lib.call_string(_lib.load().kvs_engine_metrics, h)

    # ---- lifetime -------------------------------------------------------

    def close(self):
        """Refuses new calls (EngineClosedError), waits for the calls in
        flight in other threads, waits for the stores still held (each up to
        the store timeout), frees every op, then releases the engine.
        Closing twice, or from two threads at once, is harmless: each
        returns once the engine is released."""
        with self._cv:
            if self._closing:
                while self._h:
                    self._cv.wait()
                return
            if not self._h:
                return
            self._closing = True
            while self._busy:
                self._cv.wait()
        # No call is in flight and none can start: the ops and the engine are
        # this thread's alone.
        try:
            for op in list(self._ops):
                if op.kind == "store" and op._h and op.result is None:
                    try:
                        op._wait(-1)     # the caller's host memory is still held
                    except _lib.KvstashError:
                        pass
                op._release()
            _lib.load().kvs_engine_close(self._h)
        finally:
            with self._cv:
                self._h = ctypes.c_void_p()
                self._cv.notify_all()

    @property
    def closed(self):
        return self._closing or not self._h


def chunk_keys(tokens, chunk_size):
    """The chained SHA-256 keys of a token sequence's whole chunks, as bytes
    (the same in every process and language)."""
    toks = as_token_array(tokens)
    n = toks.size // int(chunk_size)
    buf = (ctypes.c_uint8 * (_lib.KEY_BYTES * max(1, n)))()
    out = ctypes.c_size_t()
    _lib.check(_lib.load().kvs_chunk_keys(
        toks.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32)), toks.size, int(chunk_size), buf,
        n, ctypes.byref(out)))
    raw = bytes(buf)
    return [raw[i * _lib.KEY_BYTES:(i + 1) * _lib.KEY_BYTES] for i in range(out.value)]
