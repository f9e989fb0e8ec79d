"""Loading libkvstash and declaring its C API for ctypes.

The package is a thin layer over the C library: every call here goes to one
function of include/kvstash.h, and every failure raises a KvstashError that
carries kvs_last_error(), the library's own message naming what failed.

Where the library comes from, first match wins:

1. the path in the environment variable KVSTASH_LIBRARY, when set: an
   explicit choice (a build tree's library), never silently replaced;
2. the library bundled in the package: kvstash/libkvstash.so.0, which
   `pip install ./python` builds with CMake and puts in the wheel;
3. the system loader: libkvstash.so.0, then libkvstash.so (after
   `make install` or with LD_LIBRARY_PATH).

ctypes releases the GIL around each foreign call, so a retrieve waiting on
I/O never blocks other Python threads.  kvs_last_error() is per thread and is
read right after the failing call, in the same thread.
"""

import ctypes
import ctypes.util
import glob
import logging
import os
import threading

# ---- statuses and errors ---------------------------------------------------

OK = 0
STATUS_NAMES = (
    "KVS_OK",
    "KVS_ERR_INVALID",
    "KVS_ERR_CONFIG",
    "KVS_ERR_NOMEM",
    "KVS_ERR_IO",
    "KVS_ERR_NOT_FOUND",
    "KVS_ERR_CORRUPT",
    "KVS_ERR_TIMEOUT",
    "KVS_ERR_BUSY",
    "KVS_ERR_NOSPACE",
    "KVS_ERR_UNSUPPORTED",
    "KVS_ERR_CUDA",
    "KVS_ERR_CUFILE",
    "KVS_ERR_PERM",
    "KVS_ERR_INTERNAL",
)
ERR_INVALID, ERR_CONFIG, ERR_NOMEM, ERR_IO, ERR_NOT_FOUND = 1, 2, 3, 4, 5
ERR_CORRUPT, ERR_TIMEOUT, ERR_BUSY, ERR_NOSPACE, ERR_UNSUPPORTED = 6, 7, 8, 9, 10
ERR_CUDA, ERR_CUFILE, ERR_PERM, ERR_INTERNAL = 11, 12, 13, 14


class KvstashError(Exception):
    """A kvstash call failed.  .status is the kvs_status number, .status_name
    its C name, .message the library's message (kvs_last_error())."""

    def __init__(self, status, message):
        self.status = int(status)
        self.status_name = (STATUS_NAMES[self.status]
                            if 0 <= self.status < len(STATUS_NAMES)
                            else "KVS_STATUS_%d" % self.status)
        self.message = message
        super().__init__("%s (%s)" % (message, self.status_name))


class InvalidArgumentError(KvstashError, ValueError):
    """KVS_ERR_INVALID: an argument breaks the API's contract."""


class ConfigError(KvstashError):
    """KVS_ERR_CONFIG: a configuration value or file was rejected."""


class NotFoundError(KvstashError, KeyError):
    """KVS_ERR_NOT_FOUND: a path, key or configuration key does not exist."""

    def __str__(self):  # KeyError would quote the message
        return Exception.__str__(self)


class UnsupportedError(KvstashError):
    """KVS_ERR_UNSUPPORTED: not available in this build or environment."""


class KvstashTimeoutError(KvstashError, TimeoutError):
    """KVS_ERR_TIMEOUT: a deadline passed."""


class EngineClosedError(ValueError):
    """A call on an Engine (or one of its Ops) after Engine.close() began."""


_ERROR_CLASSES = {
    ERR_INVALID: InvalidArgumentError,
    ERR_CONFIG: ConfigError,
    ERR_NOT_FOUND: NotFoundError,
    ERR_UNSUPPORTED: UnsupportedError,
    ERR_TIMEOUT: KvstashTimeoutError,
}


def error_for(status, message):
    """The exception object for a failed call's status and message."""
    return _ERROR_CLASSES.get(int(status), KvstashError)(status, message)


# ---- C types -----------------------------------------------------------------

KEY_BYTES = 32


class Namespace(ctypes.Structure):
    """struct kvs_namespace."""
    _fields_ = [
        ("model", ctypes.c_char_p),
        ("dtype", ctypes.c_int),
        ("num_layers", ctypes.c_uint32),
        ("num_kv_heads", ctypes.c_uint32),
        ("head_dim", ctypes.c_uint32),
        ("layout", ctypes.c_int),
        ("world_size", ctypes.c_uint32),
        ("rank", ctypes.c_uint32),
        ("variant", ctypes.c_char_p),
        ("salt", ctypes.c_char_p),
    ]


class KvDesc(ctypes.Structure):
    """struct kvs_kv."""
    _fields_ = [
        ("mem", ctypes.c_int),
        ("device", ctypes.c_int),
        ("flags", ctypes.c_uint32),
        ("num_layers", ctypes.c_uint32),
        ("layers", ctypes.POINTER(ctypes.c_void_p)),
        ("num_slots", ctypes.c_uint64),
        ("block_size", ctypes.c_uint64),
        ("slot_stride", ctypes.c_uint64),
        ("block_stride", ctypes.c_uint64),
        ("plane_stride", ctypes.c_uint64),
        ("slot_mapping", ctypes.POINTER(ctypes.c_int64)),
        ("cuda_stream", ctypes.c_void_p),
        ("head_stride", ctypes.c_uint64),   # bytes; 0: head_dim * dtype size
    ]


class OpResult(ctypes.Structure):
    """struct kvs_op_result."""
    _fields_ = [
        ("status", ctypes.c_int),
        ("tokens", ctypes.c_uint64),
        ("chunks_done", ctypes.c_uint32),
        ("chunks_present", ctypes.c_uint32),
        ("chunks_failed", ctypes.c_uint32),
        ("bytes", ctypes.c_uint64),
    ]


LOG_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p)

_p = ctypes.c_void_p
_pp = ctypes.POINTER(ctypes.c_void_p)
_u32p = ctypes.POINTER(ctypes.c_uint32)
_sizep = ctypes.POINTER(ctypes.c_size_t)
_charpp = ctypes.POINTER(ctypes.c_void_p)  # char ** freed with kvs_free

# name: (restype, argtypes); restype int means a kvs_status.
_PROTOTYPES = {
    "kvs_version_number": (ctypes.c_uint, []),
    "kvs_version_string": (ctypes.c_char_p, []),
    "kvs_build_features": (ctypes.c_uint, []),
    "kvs_build_commit": (ctypes.c_char_p, []),
    "kvs_strerror": (ctypes.c_char_p, [ctypes.c_int]),
    "kvs_last_error": (ctypes.c_char_p, []),
    "kvs_free": (None, [_p]),
    "kvs_set_log_handler": (None, [LOG_FN, _p]),
    "kvs_set_log_level": (None, [ctypes.c_int]),
    "kvs_config_new": (ctypes.c_int, [_pp]),
    "kvs_config_load": (ctypes.c_int, [_pp]),
    "kvs_config_apply_file": (ctypes.c_int, [_p, ctypes.c_char_p]),
    "kvs_config_apply_env": (ctypes.c_int, [_p]),
    "kvs_config_set": (ctypes.c_int, [_p, ctypes.c_char_p, ctypes.c_char_p]),
    "kvs_config_get": (ctypes.c_int, [_p, ctypes.c_char_p, _charpp,
                                      ctypes.POINTER(ctypes.c_int)]),
    "kvs_config_to_json": (ctypes.c_int, [_p, _charpp]),
    "kvs_config_to_text": (ctypes.c_int, [_p, _charpp]),
    "kvs_config_reference_markdown": (ctypes.c_int, [_charpp]),
    "kvs_config_copy": (ctypes.c_int, [_p, _pp]),
    "kvs_config_free": (None, [_p]),
    "kvs_dtype_size": (ctypes.c_size_t, [ctypes.c_int]),
    "kvs_dtype_name": (ctypes.c_char_p, [ctypes.c_int]),
    "kvs_dtype_parse": (ctypes.c_int, [ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)]),
    "kvs_chunk_keys": (ctypes.c_int, [_u32p, ctypes.c_size_t, ctypes.c_uint32,
                                      ctypes.c_void_p, ctypes.c_size_t, _sizep]),
    "kvs_engine_open": (ctypes.c_int, [_p, ctypes.POINTER(Namespace), _pp]),
    "kvs_engine_close": (None, [_p]),
    "kvs_engine_namespace_id": (ctypes.c_char_p, [_p]),
    "kvs_engine_namespace_path": (ctypes.c_char_p, [_p]),
    "kvs_engine_chunk_size": (ctypes.c_uint32, [_p]),
    "kvs_engine_chunk_bytes": (ctypes.c_uint64, [_p]),
    "kvs_lookup": (ctypes.c_int, [_p, _u32p, ctypes.c_size_t, _sizep]),
    "kvs_store": (ctypes.c_int, [_p, _u32p, ctypes.c_size_t, ctypes.POINTER(KvDesc), _pp]),
    "kvs_retrieve": (ctypes.c_int, [_p, _u32p, ctypes.c_size_t, ctypes.POINTER(KvDesc),
                                    _sizep]),
    "kvs_retrieve_start": (ctypes.c_int, [_p, _u32p, ctypes.c_size_t,
                                          ctypes.POINTER(KvDesc), _pp]),
    "kvs_remove": (ctypes.c_int, [_p, _u32p, ctypes.c_size_t, _sizep]),
    "kvs_kv_check": (ctypes.c_int, [_p, ctypes.POINTER(KvDesc)]),
    "kvs_op_wait": (ctypes.c_int, [_p, ctypes.c_int64, ctypes.POINTER(OpResult)]),
    "kvs_op_wait_layer": (ctypes.c_int, [_p, ctypes.c_uint32, _sizep]),
    "kvs_op_free": (None, [_p]),
    "kvs_engine_stats_json": (ctypes.c_int, [_p, _charpp]),
    "kvs_engine_metrics": (ctypes.c_int, [_p, _charpp]),
    "kvs_doctor": (ctypes.c_int, [_p, _charpp, ctypes.POINTER(ctypes.c_int)]),
}

# ---- owners of a handle ------------------------------------------------------

class Closing:
    """A Python object that owns a library handle: a with-block and garbage
    collection both call its close(), and at collection a failure is
    dropped (the interpreter may be shutting down)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


# ---- loading -----------------------------------------------------------------

_lock = threading.Lock()
_lib = None
_lib_path = None


def _candidates():
    env = os.environ.get("KVSTASH_LIBRARY")
    if env:
        yield env, "KVSTASH_LIBRARY"
        return  # an explicit choice is never silently replaced
    for path in _bundled():
        yield path, "bundled in the package"
    yield "libkvstash.so.0", "the system loader"
    found = ctypes.util.find_library("kvstash")
    if found:
        yield found, "the system loader"


def _bundled():
    here = os.path.dirname(os.path.abspath(__file__))
    return sorted(glob.glob(os.path.join(here, "libkvstash.so*")))


def override_note(env_path, bundled):
    """The warning to give when KVSTASH_LIBRARY replaces a library bundled in
    the package (a variable left from a build-tree setup would otherwise
    pick an old library without a word), or None."""
    if not env_path or not bundled:
        return None
    if os.path.realpath(env_path) in {os.path.realpath(b) for b in bundled}:
        return None
    return ("KVSTASH_LIBRARY=%s overrides the library bundled in the package (%s); "
            "unset it to use the bundled one" % (env_path, bundled[0]))


def load():
    """The loaded library (a ctypes.CDLL), loading it on first use."""
    global _lib, _lib_path
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is not None:
            return _lib
        tried = []
        for path, where in _candidates():
            try:
                lib = ctypes.CDLL(path)
            except OSError as e:
                tried.append("%s (%s): %s" % (path, where, e))
                continue
            for name, (restype, argtypes) in _PROTOTYPES.items():
                fn = getattr(lib, name)
                fn.restype = restype
                fn.argtypes = argtypes
            _lib_path = getattr(lib, "_name", path)
            _lib = lib
            note = override_note(path, _bundled()) if where == "KVSTASH_LIBRARY" else None
            if note:
                logging.getLogger("kvstash").warning("%s", note)
            return _lib
        raise OSError(
            "kvstash: cannot load libkvstash. Install the package with its library "
            "(python3 -m pip install ./python from a kvstash checkout builds it), set "
            "KVSTASH_LIBRARY to the path of libkvstash.so, or install it where the "
            "system loader finds it (make install; LD_LIBRARY_PATH). "
            "Tried: " + "; ".join(tried))


def library_path():
    """Where the loaded library came from."""
    load()
    return _lib_path


def last_error():
    msg = load().kvs_last_error()
    return msg.decode("utf-8", "replace") if msg else ""


def check(status):
    """Raises the error of a failed call; returns None on KVS_OK."""
    if status == OK:
        return
    message = last_error() or load().kvs_strerror(status).decode()
    raise error_for(status, message)


def take_string(ptr):
    """Copies and releases a char * the library returned through char **."""
    if not ptr:
        return ""
    try:
        return ctypes.string_at(ptr).decode("utf-8", "replace")
    finally:
        load().kvs_free(ptr)


HEAD_STRIDE_VERSION = 200   # kvs_kv.head_stride came in 0.2


def require_head_stride():
    """Raises UnsupportedError unless the loaded library reads
    kvs_kv.head_stride (an older one ignores the field and would address
    strided heads as one contiguous row)."""
    have = int(load().kvs_version_number())
    if have < HEAD_STRIDE_VERSION:
        raise UnsupportedError(ERR_UNSUPPORTED, (
            "kvstash: the library at %s is version %d.%d, which ignores kvs_kv.head_stride; "
            "KV layouts with strided heads (vLLM >= 0.26 packed caches, HND) need 0.2 or "
            "later: build and load the libkvstash of this Python package"
            % (library_path(), have // 10000, have // 100 % 100)))


def call_string(fn, *args):
    """Calls fn(*args, &out) and returns out as a str (freed)."""
    out = ctypes.c_void_p()
    check(fn(*args, ctypes.byref(out)))
    return take_string(out.value)
