"""kvstash: KV cache of LLM inference engines on a shared filesystem.

A Python layer over libkvstash (ctypes; see kvstash/_lib.py for where the
library is found: KVSTASH_LIBRARY, the copy bundled in the package by
`pip install ./python`, then the system loader).

    import kvstash
    cfg = kvstash.Config.load()                 # LMCACHE_CONFIG_FILE + LMCACHE_*
    with kvstash.Engine(cfg, model="m", num_layers=32, num_kv_heads=8,
                        head_dim=128, dtype="bf16") as eng:
        eng.store(tokens, kv_buffer, wait=True)
        loaded = eng.retrieve(tokens, kv_buffer)

The vLLM connector is kvstash.vllm.KvstashConnector.
"""

from . import _lib
from ._lib import (ConfigError, EngineClosedError, InvalidArgumentError, KvstashError,
                   KvstashTimeoutError, NotFoundError, UnsupportedError)
from .config import Config, doctor, reference_markdown
from .engine import Engine, Op, OpResult, chunk_keys, parse_dtype
from .kv import KV, slot_mapping_from_blocks
from . import metrics

__all__ = [
    "Config", "Engine", "Op", "OpResult", "KV", "KvstashError", "ConfigError",
    "InvalidArgumentError", "EngineClosedError", "NotFoundError", "UnsupportedError",
    "KvstashTimeoutError",
    "chunk_keys", "doctor", "reference_markdown", "slot_mapping_from_blocks", "metrics",
    "version", "library_path", "build_info", "log_to_python", "parse_dtype",
]

__version__ = "0.2.0"


def version():
    """The version of the loaded libkvstash ("0.1.0")."""
    return _lib.load().kvs_version_string().decode()


def library_path():
    """The path of the loaded libkvstash."""
    return _lib.library_path()


def build_info():
    """What the loaded libkvstash is: {"version", "commit" (git, "unknown"
    outside a checkout), "cuda" and "cufile" (built in), "library" (path)}."""
    lib = _lib.load()
    features = lib.kvs_build_features()
    return {
        "version": lib.kvs_version_string().decode(),
        "commit": lib.kvs_build_commit().decode(),
        "cuda": bool(features & 0x1),
        "cufile": bool(features & 0x2),
        "library": _lib.library_path(),
    }


def log_to_python(logger="kvstash", level=None):
    """Routes the library's log lines to a Python logger (default
    logging.getLogger("kvstash")) instead of standard error; level (a
    log_level name) sets both sides' level.  See kvstash/_log.py."""
    from . import _log
    return _log.bridge(level, logger)
