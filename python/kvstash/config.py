"""Config: the library's configuration object, from Python.

A Config wraps one kvs_config.  The library owns the table of keys, their
types, bounds and aliases, so nothing here repeats it: values are handed over
as text exactly as an environment variable would give them, and read back as
typed JSON.  Precedence is the library's: defaults, the YAML file named by
LMCACHE_CONFIG_FILE, the environment (LMCACHE_*, LMCACHE_EXTRA_CONFIG,
KVSTASH_<ENTRY>), then set() calls.
"""

import ctypes
import json

from . import _lib

SOURCES = ("default", "file", "env", "api")


def _text(value):
    """A Python value as the text an environment variable would hold."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


class Config(_lib.Closing):
    """One configuration.  Build it with Config.load() (what engines and the
    CLI use), Config.defaults() or Config.from_file(path); change it with
    set() / update(); read it with get(), source(), to_dict()."""

    def __init__(self, _handle):
        self._h = ctypes.c_void_p(_handle)

    # ---- construction ---------------------------------------------------

    @classmethod
    def load(cls, overrides=None):
        """Defaults, then LMCACHE_CONFIG_FILE if set, then the environment;
        then the overrides (a mapping of key -> value), if any."""
        lib = _lib.load()
        h = ctypes.c_void_p()
        _lib.check(lib.kvs_config_load(ctypes.byref(h)))
        cfg = cls(h.value)
        if overrides:
            cfg.update(overrides)
        return cfg

    @classmethod
    def defaults(cls):
        """The defaults only: no file, no environment."""
        lib = _lib.load()
        h = ctypes.c_void_p()
        _lib.check(lib.kvs_config_new(ctypes.byref(h)))
        return cls(h.value)

    @classmethod
    def from_file(cls, path, env=False):
        """Defaults, then the YAML file at path; then the environment when
        env is true."""
        cfg = cls.defaults()
        cfg.apply_file(path)
        if env:
            cfg.apply_env()
        return cfg

    def apply_file(self, path):
        _lib.check(_lib.load().kvs_config_apply_file(self._handle(), str(path).encode()))
        return self

    def apply_env(self):
        _lib.check(_lib.load().kvs_config_apply_env(self._handle()))
        return self

    def copy(self):
        h = ctypes.c_void_p()
        _lib.check(_lib.load().kvs_config_copy(self._handle(), ctypes.byref(h)))
        return Config(h.value)

    # ---- changing -------------------------------------------------------

    def set(self, key, value):
        """Sets one key or extra_config entry (by its own name, e.g.
        "gds_io_threads"); the value as text or a Python value (bools become
        true/false, dicts JSON).  Raises ConfigError naming the key, value
        and what is accepted.  Returns self."""
        key, text = str(key), _text(value)
        for what, t in (("key", key), ("value", text)):
            if "\0" in t:
                # the library takes C strings: it would see only the text
                # before the NUL (a salt "a\0b" would be the salt "a")
                raise _lib.ConfigError(
                    _lib.ERR_CONFIG, "kvstash: %s: the %s %r contains a NUL byte (at offset %d); "
                    "NUL bytes are not accepted" % (key.split("\0")[0], what, t, t.index("\0")))
        _lib.check(_lib.load().kvs_config_set(self._handle(), key.encode(), text.encode()))
        return self

    def update(self, mapping):
        """set() for each item; "extra_config" may be a mapping of entries."""
        for key, value in dict(mapping).items():
            if key == "extra_config" and isinstance(value, dict):
                for k, v in value.items():
                    self.set(k, v)
            else:
                self.set(key, value)
        return self

    # ---- reading --------------------------------------------------------

    def to_json(self):
        return _lib.call_string(_lib.load().kvs_config_to_json, self._handle())

    def to_text(self):
        return _lib.call_string(_lib.load().kvs_config_to_text, self._handle())

    def _all(self):
        return json.loads(self.to_json())

    def get(self, key):
        """The effective value of key (typed: int, float, bool, str, None)."""
        entry = self._all().get(key)
        if entry is None:
            # Let the library resolve aliases and name the error.
            out = ctypes.c_void_p()
            src = ctypes.c_int()
            _lib.check(_lib.load().kvs_config_get(self._handle(), str(key).encode(),
                                                  ctypes.byref(out), ctypes.byref(src)))
            return _lib.take_string(out.value)
        return entry["value"]

    def unknown(self):
        """The unknown settings the loaders warned about, each with the
        nearest known name where one is close ("; "-separated), or None
        (kvs_config_unknown)."""
        fn = _lib.load().kvs_config_unknown
        fn.restype = ctypes.c_char_p
        fn.argtypes = [ctypes.c_void_p]
        text = fn(self._handle())
        return text.decode("utf-8", "replace") if text else None

    def source(self, key):
        """Where key's value came from: "default", "file", "env" or "api"."""
        out = ctypes.c_void_p()
        src = ctypes.c_int()
        _lib.check(_lib.load().kvs_config_get(self._handle(), str(key).encode(),
                                              ctypes.byref(out), ctypes.byref(src)))
        _lib.take_string(out.value)
        return SOURCES[src.value] if 0 <= src.value < len(SOURCES) else str(src.value)

    def to_dict(self):
        """{key: value} for every key and extra_config entry."""
        return {k: v["value"] for k, v in self._all().items()}

    def __getitem__(self, key):
        return self.get(key)

    def __setitem__(self, key, value):
        self.set(key, value)

    def __repr__(self):
        return "Config(%s)" % self.to_json()

    # ---- lifetime -------------------------------------------------------

    def _handle(self):
        if not self._h:
            raise ValueError("kvstash: this Config was closed")
        return self._h

    def close(self):
        if self._h:
            _lib.load().kvs_config_free(self._h)
            self._h = ctypes.c_void_p()


def reference_markdown():
    """docs/config.md, as the library generates it."""
    return _lib.call_string(_lib.load().kvs_config_reference_markdown)


def doctor(config=None):
    """(report text, healthy) for the store of config (default: Config.load())."""
    cfg = config if config is not None else Config.load()
    out = ctypes.c_void_p()
    healthy = ctypes.c_int()
    _lib.check(_lib.load().kvs_doctor(cfg._handle(), ctypes.byref(out), ctypes.byref(healthy)))
    return _lib.take_string(out.value), bool(healthy.value)
