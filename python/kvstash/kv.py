"""KV memory descriptions (struct kvs_kv) built from numpy arrays and torch
tensors.

The library addresses one head's row (head_dim contiguous elements) of one
token in one plane (K or V; MLA has one) of one layer as

    layers[l] + plane * plane_stride + (slot // block_size) * block_stride
              + (slot % block_size) * slot_stride + head * head_stride

(head_stride 0: the heads of a token are one contiguous run).  A KV object
holds the per-layer base pointers and those strides, read off the arrays'
own shapes and strides, so every layout vLLM hands a connector works without
copies, and the files keep one canonical layout whatever the memory's:

- KV.contiguous(buf): one buffer [layer][plane][token][row...] (or
  [layer][token][row...] for MLA), e.g. np.empty((L, 2, T, H, D));
- KV.paged(layers): vLLM's per-layer paged caches, one tensor per layer:
  [2, B, N, H, D], [B, 2, N, H, D], packed [B, H, N, 2D] (NHD or HND memory
  order), MLA [B, N, D] or [B, 1, N, D]; which tokens go where is the slot
  mapping given to each store/retrieve (slot = block_id * block_size +
  offset).

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


_ACCEPTED = ("accepted per-layer KV caches (B blocks, N tokens per block, H heads, D head "
             "size): [2, B, N, H, D], [B, 2, N, H, D], packed [B, H, N, 2D], MLA [B, N, D] or "
             "[B, 1, N, D]; any strides (NHD or HND order, padded blocks) with each head's D "
             "elements contiguous and no overlap")


def _layout_error(arr, what):
    return ValueError("kvstash: cannot describe KV memory of shape %s, strides %s (in "
                      "elements): %s. %s." % (arr.shape, arr.strides, what, _ACCEPTED))


def _guess_layout(shape, num_planes):
    nd = len(shape)
    if nd == 5 and shape[0] == 2 and num_planes in (None, 2):
        return "flash_attn"
    if nd == 5 and shape[1] == 2 and num_planes in (None, 2):
        return "flashinfer"
    if nd == 3 and num_planes in (None, 1):
        return "mla"
    if nd == 4 and shape[1] == 1 and num_planes in (None, 1):
        return "mla"
    if nd == 4 and shape[3] % 2 == 0 and num_planes in (None, 2):
        return "packed"
    raise ValueError("kvstash: cannot tell the layout of paged KV of shape %s%s. %s; or "
                     "pass layout= flash_attn, flashinfer, packed or mla."
                     % (shape, "" if num_planes is None else " with %d plane(s)" % num_planes,
                        _ACCEPTED))


def _disjoint(dims, itemsize):
    """Whether (extent, stride in bytes) dimensions address distinct
    elements: sorted by stride, each stride must clear everything the
    smaller ones span."""
    span = 0
    for extent, stride in sorted((d for d in dims if d[0] > 1), key=lambda d: d[1]):
        if stride < max(span, itemsize):
            return False
        span = stride * (extent - 1) + max(span, itemsize)
    return True


class KV:
    """A description of KV memory, host or CUDA.  Build it with
    KV.contiguous() or KV.paged(); pass it to Engine.store/retrieve together
    with the prompt's slot mapping (None for a contiguous buffer: token i is
    slot i)."""

    def __init__(self, layer_ptrs, *, num_slots, row_elems, itemsize, num_planes,
                 slot_stride, plane_stride, block_size=0, block_stride=0, mem=HOST,
                 device=0, direct=False, arrays=(), dtype=None, head_stride=0,
                 num_heads=1, layout="contiguous"):
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
        self.head_stride = int(head_stride)      # bytes; 0: heads contiguous
        self.num_heads = int(num_heads)
        self.head_elems = self.row_elems // max(1, self.num_heads)
        self.layout = layout
        if self.head_stride:
            _lib.require_head_stride()
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
        return ("KV(%s, %d layers, %s, %d slots%s, row %d B%s, planes %d)"
                % (self.layout, self.num_layers,
                   "cuda:%d" % self.device if self.is_cuda else "host", self.num_slots,
                   ", blocks of %d" % self.block_size if self.block_size else "",
                   self.row_bytes,
                   ", heads %d B apart" % self.head_stride if self.head_stride else "",
                   self.num_planes))

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
        """vLLM's paged caches, one array per layer (all alike), by logical
        shape (B blocks, N tokens per block, H KV heads, D head size):

        "flash_attn" [2, B, N, H, D]   (vLLM <= 0.22 FlashAttention)
        "flashinfer" [B, 2, N, H, D]   (FlashInfer, Triton; FlashAttention
                                        0.23-0.25)
        "packed"     [B, H, N, 2*D]    (vLLM >= 0.26, every non-MLA backend:
                                        K in the first D of the last dim, V
                                        in the second)
        "mla"        [B, N, D] or [B, 1, N, D]
        "auto"       the first of these the shape fits; num_planes (2 for
                     K/V, 1 for MLA), when given, decides between a packed
                     [B, 1, N, 2D] and an MLA [B, 1, N, D].

        Any memory order the strides describe is accepted (NHD or HND,
        padded or strided blocks) as long as each head's D elements are
        contiguous and no two elements share an address; anything else is
        refused with a message naming the shape and strides."""
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
        if num_planes not in (None, 1, 2):
            raise ValueError("kvstash: num_planes must be 1 or 2, not %r" % (num_planes,))
        if layout == "auto":
            layout = _guess_layout(shape, num_planes)
        # Roles of the dimensions: block, slot, plane (a dimension, or the
        # last one split in two), head (None: one head) and element.
        split = False
        if layout == "flash_attn":
            if nd != 5 or shape[0] != 2:
                raise _layout_error(a, "flash_attn is [2, blocks, block_size, heads, "
                                       "head_dim]")
            planes, plane_d, block_d, slot_d, head_d, elem_d = 2, 0, 1, 2, 3, 4
        elif layout == "flashinfer":
            if nd != 5 or shape[1] != 2:
                raise _layout_error(a, "flashinfer is [blocks, 2, block_size, heads, "
                                       "head_dim]")
            planes, plane_d, block_d, slot_d, head_d, elem_d = 2, 1, 0, 2, 3, 4
        elif layout == "packed":
            if nd != 4 or shape[3] % 2:
                raise _layout_error(a, "packed is [blocks, heads, block_size, 2 * head_dim]")
            planes, plane_d, block_d, slot_d, head_d, elem_d = 2, None, 0, 2, 1, 3
            split = True
        elif layout == "mla":
            if nd == 3:
                planes, plane_d, block_d, slot_d, head_d, elem_d = 1, None, 0, 1, None, 2
            elif nd == 4 and shape[1] == 1:
                planes, plane_d, block_d, slot_d, head_d, elem_d = 1, None, 0, 2, None, 3
            else:
                raise _layout_error(a, "mla is [blocks, block_size, dim] or [blocks, 1, "
                                       "block_size, dim]")
        else:
            raise ValueError("kvstash: unknown paged layout %r (accepted: auto, flash_attn, "
                             "flashinfer, packed, mla)" % (layout,))
        if num_planes is not None and num_planes != planes:
            raise ValueError("kvstash: layout %s has %d plane(s), the namespace %d"
                             % (layout, planes, num_planes))
        it = a.itemsize
        head_elems = shape[elem_d] // 2 if split else shape[elem_d]
        heads = shape[head_d] if head_d is not None else 1
        if head_elems > 1 and st[elem_d] != 1:
            raise _layout_error(a, "each head's head_dim elements must be contiguous "
                                   "(stride 1 in the last dimension)")
        if split:
            plane_stride = head_elems * it
        else:
            plane_stride = st[plane_d] * it if plane_d is not None else 0
        head_stride = st[head_d] * it if (head_d is not None and heads > 1) else 0
        if head_stride == head_elems * it:
            head_stride = 0              # heads contiguous: the row is one run
        dims = [(planes, plane_stride), (shape[block_d], st[block_d] * it),
                (shape[slot_d], st[slot_d] * it), (heads, head_stride or head_elems * it),
                (head_elems, it)]
        if not _disjoint(dims, it):
            raise _layout_error(a, "no two elements may share an address (the strides "
                                   "overlap)")
        block_size = shape[slot_d]
        return cls([x.ptr for x in arrs], num_slots=shape[block_d] * block_size,
                   row_elems=heads * head_elems, itemsize=it, num_planes=planes,
                   slot_stride=st[slot_d] * it, plane_stride=plane_stride,
                   block_size=block_size, block_stride=st[block_d] * it, mem=a.mem,
                   device=a.device, direct=direct, arrays=layers, dtype=a.dtype,
                   head_stride=head_stride, num_heads=heads, layout=layout)

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
        d.head_stride = self.head_stride
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
