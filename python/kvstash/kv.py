"""KV memory descriptions (struct kvs_kv) built from numpy arrays and torch
tensors.

The library addresses the row of one token in one plane (K or V; MLA has one)
of one layer as

    layers[l] + plane * plane_stride + (slot // block_size) * block_stride
              + (slot % block_size) * slot_stride

with the row itself (num_kv_heads * head_dim elements) contiguous.  A KV
object holds the per-layer base pointers and those strides, read off the
arrays' own shapes and strides, so any layout with contiguous rows works
without copies:

- KV.contiguous(buf): one buffer [layer][plane][token][row...] (or
  [layer][token][row...] for MLA), e.g. np.empty((L, 2, T, H, D));
- KV.paged(layers): vLLM's per-layer paged caches, one tensor per layer:
  flash-attention [2, num_blocks, block_size, H, D], FlashInfer
  [num_blocks, 2, block_size, H, D], MLA [num_blocks, block_size, D] or
  [num_blocks, 1, block_size, D]; which tokens go where is the slot mapping
  given to each store/retrieve (slot = block_id * block_size + offset).

Arrays are only inspected, never imported: torch need not be installed for
numpy use.  A KV keeps references to its arrays so they outlive the
operations that use them.
"""

import ctypes

import numpy as np

from . import _lib

HOST, CUDA = 0, 1
KV_DIRECT = 0x1


class _Array:
    """Pointer, shape, strides (in elements), element size and memory kind of
    a numpy array or torch tensor."""

    __slots__ = ("obj", "ptr", "shape", "strides", "itemsize", "mem", "device", "dtype")

    def __init__(self, obj):
        self.obj = obj
        if _is_torch(obj):
            if obj.device.type not in ("cpu", "cuda"):
                raise TypeError("kvstash: KV memory must be on the CPU or a CUDA device, "
                                "not %s" % obj.device)
            self.ptr = int(obj.data_ptr())
            self.shape = tuple(int(s) for s in obj.shape)
            self.strides = tuple(int(s) for s in obj.stride())
            self.itemsize = int(obj.element_size())
            self.mem = CUDA if obj.is_cuda else HOST
            self.device = obj.device.index if obj.is_cuda and obj.device.index is not None else 0
            self.dtype = str(obj.dtype).replace("torch.", "")
            return
        if not isinstance(obj, np.ndarray):
            raise TypeError("kvstash: KV memory must be a numpy array or a torch tensor, "
                            "not %s" % type(obj).__name__)
        self.ptr = int(obj.ctypes.data)
        self.shape = tuple(obj.shape)
        self.itemsize = int(obj.itemsize)
        if any(s % self.itemsize for s in obj.strides):
            raise ValueError("kvstash: array strides %s are not multiples of the element "
                             "size %d" % (obj.strides, self.itemsize))
        self.strides = tuple(s // self.itemsize for s in obj.strides)
        self.mem = HOST
        self.device = 0
        self.dtype = obj.dtype.name

    def writable(self):
        if isinstance(self.obj, np.ndarray):
            return bool(self.obj.flags.writeable)
        return True


def _is_torch(obj):
    return type(obj).__module__.startswith("torch") and hasattr(obj, "data_ptr")


def _rows_contiguous(arr, first_row_dim):
    """Elements in one row (the dims from first_row_dim on), or raises when
    those dims are not one contiguous run."""
    expect = 1
    for dim in range(len(arr.shape) - 1, first_row_dim - 1, -1):
        size = arr.shape[dim]
        if size != 1 and arr.strides[dim] != expect:
            raise ValueError(
                "kvstash: the rows of this KV memory are not contiguous (shape %s, strides "
                "%s in elements): each token's heads x head_dim must be one contiguous run. "
                "For vLLM use the NHD KV cache layout (VLLM_KV_CACHE_LAYOUT=NHD)."
                % (arr.shape, arr.strides))
        expect *= size
    return expect


def _nonneg(arr):
    if any(s < 0 for s in arr.strides):
        raise ValueError("kvstash: negative strides are not supported (shape %s, strides %s)"
                         % (arr.shape, arr.strides))


class KV:
    """A description of KV memory, host or CUDA.  Build it with
    KV.contiguous() or KV.paged(); pass it to Engine.store/retrieve together
    with the prompt's slot mapping (None for a contiguous buffer: token i is
    slot i)."""

    def __init__(self, layer_ptrs, *, num_slots, row_elems, itemsize, num_planes,
                 slot_stride, plane_stride, block_size=0, block_stride=0, mem=HOST,
                 device=0, direct=False, arrays=(), dtype=None):
        self.layer_ptrs = [int(p) for p in layer_ptrs]
        self.num_layers = len(self.layer_ptrs)
        self.num_slots = int(num_slots)
        self.row_elems = int(row_elems)
        self.itemsize = int(itemsize)
        self.num_planes = int(num_planes)
        self.slot_stride = int(slot_stride)      # bytes
        self.plane_stride = int(plane_stride)    # bytes
        self.block_size = int(block_size)        # slots per block; 0: one block
        self.block_stride = int(block_stride)    # bytes
        self.mem = mem
        self.device = int(device)
        self.direct = bool(direct)
        self.dtype = dtype
        self._arrays = tuple(arrays)             # keeps the memory alive
        self._ptr_array = (ctypes.c_void_p * max(1, self.num_layers))(*self.layer_ptrs)

    @property
    def row_bytes(self):
        return self.row_elems * self.itemsize

    @property
    def is_cuda(self):
        return self.mem == CUDA

    def writable(self):
        return all(_Array(a).writable() for a in self._arrays)

    def __repr__(self):
        return ("KV(%d layers, %s, %d slots%s, row %d B, planes %d)"
                % (self.num_layers, "cuda:%d" % self.device if self.is_cuda else "host",
                   self.num_slots,
                   ", blocks of %d" % self.block_size if self.block_size else "",
                   self.row_bytes, self.num_planes))

    # ---- constructors ---------------------------------------------------

    @classmethod
    def contiguous(cls, buf, num_planes=None, direct=False):
        """One buffer [layers][planes][tokens][row...]; with one plane (MLA)
        the plane dimension may be left out: [layers][tokens][row...].  Any
        strides with contiguous rows (a slice of a larger buffer works).
        num_planes: 2 (K and V) or 1 (MLA); None: 2 when shape[1] == 2 and
        there are at least 4 dimensions, else 1.  direct=True lets the engine
        read files straight into host memory (KVS_KV_DIRECT)."""
        a = _Array(buf)
        _nonneg(a)
        nd = len(a.shape)
        if nd < 3:
            raise ValueError("kvstash: a contiguous KV buffer needs at least 3 dimensions "
                             "([layers][tokens][row]); got shape %s" % (a.shape,))
        if num_planes is None:
            num_planes = 2 if nd >= 4 and a.shape[1] == 2 else 1
        if num_planes == 2:
            if nd < 4 or a.shape[1] != 2:
                raise ValueError("kvstash: a K/V buffer must be [layers][2][tokens][row...]; "
                                 "got shape %s" % (a.shape,))
            plane_dim, tok_dim = 1, 2
        elif num_planes == 1:
            if nd >= 4 and a.shape[1] == 1:
                plane_dim, tok_dim = 1, 2
            else:
                plane_dim, tok_dim = None, 1
        else:
            raise ValueError("kvstash: num_planes must be 1 or 2, not %r" % (num_planes,))
        row = _rows_contiguous(a, tok_dim + 1)
        it = a.itemsize
        ptrs = [a.ptr + l * a.strides[0] * it for l in range(a.shape[0])]
        plane_stride = a.strides[plane_dim] * it if plane_dim is not None else 0
        return cls(ptrs, num_slots=a.shape[tok_dim], row_elems=row, itemsize=it,
                   num_planes=num_planes, slot_stride=a.strides[tok_dim] * it,
                   plane_stride=plane_stride, mem=a.mem, device=a.device, direct=direct,
                   arrays=(buf,), dtype=a.dtype)

    @classmethod
    def paged(cls, layers, layout="auto", num_planes=None, direct=False):
        """vLLM's paged caches, one array per layer (all alike):

        "flash_attn" [2, num_blocks, block_size, heads, head_dim]
        "flashinfer" [num_blocks, 2, block_size, heads, head_dim]
        "mla"        [num_blocks, block_size, dim] or [num_blocks, 1, block_size, dim]
        "auto"       the first of these the shape fits (num_planes, when
                     given, decides between K/V and MLA).

        The heads x head_dim of a token must be contiguous (vLLM's NHD
        layout); strides are read from the arrays, so padded blocks work."""
        layers = list(layers)
        if not layers:
            raise ValueError("kvstash: KV.paged needs at least one layer")
        arrs = [_Array(t) for t in layers]
        a = arrs[0]
        for b in arrs[1:]:
            if (b.shape, b.strides, b.itemsize, b.mem, b.device) != \
                    (a.shape, a.strides, a.itemsize, a.mem, a.device):
                raise ValueError("kvstash: every layer must have the same shape, strides, "
                                 "dtype and device (layer 0: %s %s, another: %s %s)"
                                 % (a.shape, a.strides, b.shape, b.strides))
        _nonneg(a)
        shape, st, nd = a.shape, a.strides, len(a.shape)
        if layout == "auto":
            if nd == 5 and shape[0] == 2 and num_planes in (None, 2):
                layout = "flash_attn"
            elif nd == 5 and shape[1] == 2 and num_planes in (None, 2):
                layout = "flashinfer"
            elif nd == 3 or (nd == 4 and shape[1] == 1):
                layout = "mla"
            else:
                raise ValueError("kvstash: cannot tell the layout of paged KV of shape %s; "
                                 "pass layout= flash_attn, flashinfer or mla" % (shape,))
        if layout == "flash_attn":
            if nd != 5 or shape[0] != 2:
                raise ValueError("kvstash: flash_attn layout is [2, blocks, block_size, "
                                 "heads, head_dim]; got %s" % (shape,))
            planes, plane_dim, block_dim, slot_dim = 2, 0, 1, 2
        elif layout == "flashinfer":
            if nd != 5 or shape[1] != 2:
                raise ValueError("kvstash: flashinfer layout is [blocks, 2, block_size, "
                                 "heads, head_dim]; got %s" % (shape,))
            planes, plane_dim, block_dim, slot_dim = 2, 1, 0, 2
        elif layout == "mla":
            if nd == 3:
                planes, plane_dim, block_dim, slot_dim = 1, None, 0, 1
            elif nd == 4 and shape[1] == 1:
                planes, plane_dim, block_dim, slot_dim = 1, None, 0, 2
            else:
                raise ValueError("kvstash: mla layout is [blocks, block_size, dim]; got %s"
                                 % (shape,))
        else:
            raise ValueError("kvstash: unknown paged layout %r" % (layout,))
        if num_planes is not None and num_planes != planes:
            raise ValueError("kvstash: layout %s has %d plane(s), the namespace %d"
                             % (layout, planes, num_planes))
        row = _rows_contiguous(a, slot_dim + 1)
        it = a.itemsize
        block_size = shape[slot_dim]
        return cls([x.ptr for x in arrs], num_slots=shape[block_dim] * block_size,
                   row_elems=row, itemsize=it, num_planes=planes,
                   slot_stride=st[slot_dim] * it,
                   plane_stride=st[plane_dim] * it if plane_dim is not None else 0,
                   block_size=block_size, block_stride=st[block_dim] * it, mem=a.mem,
                   device=a.device, direct=direct, arrays=layers, dtype=a.dtype)

    # ---- the C description ----------------------------------------------

    def c_desc(self, slot_mapping=None, stream=None):
        """(struct kvs_kv, slot array or None) for one call; the caller keeps
        both alive until the operation using them is done."""
        d = _lib.KvDesc()
        d.mem = self.mem
        d.device = self.device
        d.flags = KV_DIRECT if (self.direct and self.mem == HOST) else 0
        d.num_layers = self.num_layers
        d.layers = ctypes.cast(self._ptr_array, ctypes.POINTER(ctypes.c_void_p))
        d.num_slots = self.num_slots
        d.block_size = self.block_size
        d.slot_stride = self.slot_stride
        d.block_stride = self.block_stride
        d.plane_stride = self.plane_stride
        slots = None
        if slot_mapping is not None:
            slots = as_slot_array(slot_mapping)
            d.slot_mapping = slots.ctypes.data_as(ctypes.POINTER(ctypes.c_int64))
        if self.mem == CUDA:
            d.cuda_stream = ctypes.c_void_p(_stream_handle(stream, self.device))
        return d, slots


def as_slot_array(slot_mapping):
    """A slot mapping (list, numpy array, torch tensor on any device) as a
    contiguous host int64 array."""
    if _is_torch(slot_mapping):
        slot_mapping = slot_mapping.detach().to("cpu").numpy()
    arr = np.ascontiguousarray(slot_mapping, dtype=np.int64)
    if arr.ndim != 1:
        raise ValueError("kvstash: a slot mapping is one-dimensional; got shape %s"
                         % (arr.shape,))
    return arr


def as_token_array(tokens):
    """Token ids as a contiguous uint32 array."""
    if _is_torch(tokens):
        tokens = tokens.detach().to("cpu").numpy()
    arr = np.asarray(tokens)
    if arr.ndim != 1:
        raise ValueError("kvstash: token ids are one-dimensional; got shape %s" % (arr.shape,))
    if arr.size and arr.dtype != np.uint32:
        if arr.dtype.kind not in "iu":
            raise ValueError("kvstash: token ids must be integers, not %s" % arr.dtype)
        if int(arr.min()) < 0 or int(arr.max()) > 0xFFFFFFFF:
            raise ValueError("kvstash: token ids must be in 0..2^32-1")
    return np.ascontiguousarray(arr, dtype=np.uint32)


def _stream_handle(stream, device):
    """The cudaStream_t for a call: an int, a torch.cuda.Stream, or None for
    torch's current stream on device (the legacy default stream without
    torch)."""
    if stream is None:
        import sys
        torch = sys.modules.get("torch")
        if torch is None:
            return 0
        return int(torch.cuda.current_stream(device).cuda_stream)
    if hasattr(stream, "cuda_stream"):
        return int(stream.cuda_stream)
    return int(stream)


def slot_mapping_from_blocks(block_ids, block_size, num_tokens, first_token=0):
    """vLLM's slot mapping: token t of the request lives in slot
    block_ids[t // block_size] * block_size + t % block_size.  Returns slots
    for tokens [0, num_tokens) as int64, with tokens before first_token set
    to -1 (no place: a store skips their chunks, a retrieve leaves them)."""
    blocks = np.asarray(block_ids, dtype=np.int64)
    need = -(-num_tokens // block_size) if num_tokens else 0
    if blocks.size < need:
        raise ValueError("kvstash: %d tokens need %d blocks of %d, the request has %d"
                         % (num_tokens, need, block_size, blocks.size))
    t = np.arange(num_tokens, dtype=np.int64)
    slots = blocks[t // block_size] * block_size + t % block_size
    if first_token > 0:
        slots[:min(first_token, num_tokens)] = -1
    return slots
