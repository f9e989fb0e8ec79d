"""The library's log lines in Python's logging.

libkvstash writes its lines to standard error unless a handler is set
(kvs_set_log_handler).  Inside a Python process, vLLM above all, they belong
in Python's logging: bridge() installs a ctypes callback that hands each line
to the logger "kvstash" at the matching level, so whatever formats vLLM's
lines (timestamps, process names) formats these too.

Threads: the library calls the handler from its I/O worker threads.  A
ctypes CFUNCTYPE callback takes the GIL for the call, and the library holds
none of its own locks that a Python thread could be waiting for while it
holds the GIL (every call into the library releases the GIL), so a line
never deadlocks.  At interpreter exit the handler is taken out again
(atexit) before Python finalizes, so a worker that logs while an engine
closes late writes to standard error instead of calling into a dying
interpreter.
"""

import atexit
import logging
import threading

from . import _lib

LOGGER = "kvstash"

# kvs_log_level -> logging level, and the configuration's names -> both.
_TO_PY = {0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO, 3: logging.DEBUG}
_NAMES = {"error": 0, "warning": 1, "warn": 1, "info": 2, "debug": 3}

_lock = threading.Lock()
_cb = None          # the installed callback; the library holds its pointer
_atexit_done = False


def level_number(name):
    """kvs_log_level of a log_level name ("info"); ValueError if unknown."""
    try:
        return _NAMES[str(name).strip().lower()]
    except KeyError:
        raise ValueError("log level %r is not one of error, warning, info, debug"
                         % (name,)) from None


def _emit_to(log):
    def emit(_ctx, level, msg):
        try:
            log.log(_TO_PY.get(level, logging.INFO), "%s",
                    msg.decode("utf-8", "replace") if msg else "")
        except Exception:  # a handler's failure must never reach a C thread
            pass
    return emit


def _attach_handlers(log):
    """Gives the kvstash logger somewhere to write when nothing would: vLLM's
    own handlers when vLLM configured logging (so its format applies), else
    one stderr handler with timestamps.  A logger the application already
    configured, or a root logger with handlers, is left alone."""
    if log.handlers or logging.getLogger().handlers:
        return
    vllm_handlers = logging.getLogger("vllm").handlers
    if vllm_handlers:
        for h in vllm_handlers:
            log.addHandler(h)
    else:
        h = logging.StreamHandler()
        h.setFormatter(logging.Formatter("%(levelname)s %(asctime)s [%(name)s] %(message)s"))
        log.addHandler(h)
    log.propagate = False


def _detach():
    global _cb
    with _lock:
        if _cb is not None:
            _lib.load().kvs_set_log_handler(_lib.LOG_FN(), None)
            # _cb stays referenced: a worker may be inside it right now
            _cb_graveyard.append(_cb)
            _cb = None


_cb_graveyard = []


def bridge(level=None, logger=LOGGER):
    """Routes the library's log lines to a Python logger (by default
    logging.getLogger("kvstash")) and returns that logger.  level, a
    log_level name or kvs_log_level number, sets both the library's level
    and the logger's; None leaves them (the library then uses the log_level
    of the configuration an engine opens with)."""
    global _cb, _atexit_done
    log = logging.getLogger(logger) if isinstance(logger, str) else logger
    lib = _lib.load()
    if level is not None:
        n = level if isinstance(level, int) else level_number(level)
        lib.kvs_set_log_level(int(n))
        log.setLevel(_TO_PY[int(n)])
    _attach_handlers(log)
    with _lock:
        cb = _lib.LOG_FN(_emit_to(log))
        lib.kvs_set_log_handler(cb, None)
        if _cb is not None:
            _cb_graveyard.append(_cb)
        _cb = cb
        if not _atexit_done:
            atexit.register(_detach)
            _atexit_done = True
    return log


def unbridge():
    """Standard error again, as before bridge()."""
    _detach()
