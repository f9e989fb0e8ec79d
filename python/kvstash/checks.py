"""Start-up checks of a deployment's configuration (the vLLM connector).

The CLI may fall back to a local folder when no store path is configured:
that is what a demo on a laptop wants.  A server must not.  When a fleet's
configuration names no store path but other LMCACHE_* settings are present,
the likeliest story is a misspelt LMCACHE_WEKA_PATH, and falling back would
send every node's cache to its own home folder, silently: hit rates drop and
nothing says why.  check_store_path() refuses that with a message naming the
unknown settings and the nearest known names.
"""

import os

from ._lib import ERR_CONFIG, ConfigError

# Variables that say nothing about where the store is meant to be.
_NEUTRAL = {"LMCACHE_USE_EXPERIMENTAL", "LMCACHE_LOG_LEVEL"}


def check_store_path(cfg, environ=None, overrides=()):
    """Raises ConfigError when cfg has no store path (weka_path is the
    default) while other settings were made: LMCACHE_* variables, a
    configuration file, connector overrides (names in overrides), or
    settings kvstash did not recognize."""
    environ = os.environ if environ is None else environ
    if cfg.source("weka_path") != "default":
        return
    lm = sorted(k for k in environ if k.startswith("LMCACHE_") and k not in _NEUTRAL)
    unknown = cfg.unknown()
    given = lm + ["kv_connector_extra_config %s" % k for k in sorted(overrides)]
    if not given and not unknown:
        return
    msg = ["kvstash: no store path is configured (weka_path / LMCACHE_WEKA_PATH is "
           "unset), but other settings are (%s)" % ", ".join(given or ["none known"])]
    if unknown:
        msg.append("; unknown settings: %s" % unknown)
    msg.append(". Refusing to start: the cache would go to this node's local folder "
               "(%s), shared with no other instance. Set LMCACHE_WEKA_PATH (or weka_path "
               "in LMCACHE_CONFIG_FILE) to the shared mount; to use a local folder on "
               "purpose, set it to that folder." % _default_folder(environ))
    raise ConfigError(ERR_CONFIG, "".join(msg))


def _default_folder(environ):
    """The folder the library falls back to (docs/config.md, weka_path)."""
    xdg, home = environ.get("XDG_CACHE_HOME", ""), environ.get("HOME", "")
    if xdg.startswith("/"):
        return os.path.join(xdg, "kvstash")
    if home.startswith("/"):
        return os.path.join(home, ".cache", "kvstash")
    return os.path.join(os.getcwd(), "kvstash-cache")
