"""Shared fixtures of the Python tests: a clean kvstash environment, a fresh
store folder per test, and small geometries so each test takes milliseconds.

The tests run against the library named by KVSTASH_LIBRARY (CTest sets it to
the build's libkvstash.so); run by hand from the repository they fall back
to build/libkvstash.so.
"""

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "python"))

if not os.environ.get("KVSTASH_LIBRARY"):
    _built = os.path.join(REPO, "build", "libkvstash.so")
    if os.path.exists(_built):
        os.environ["KVSTASH_LIBRARY"] = _built


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No LMCACHE_*/KVSTASH_* setting leaks in from the caller's shell."""
    for name in list(os.environ):
        if (name.startswith("LMCACHE_") or name.startswith("KVSTASH_")) and \
                name != "KVSTASH_LIBRARY":
            monkeypatch.delenv(name)
    monkeypatch.setenv("KVSTASH_LOG_LEVEL", "warning")


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A fresh store folder, set as LMCACHE_WEKA_PATH."""
    path = tmp_path / "store"
    path.mkdir()
    monkeypatch.setenv("LMCACHE_WEKA_PATH", str(path))
    return path


# 3 layers, 2 KV heads of 8, fp16, 16-token chunks: 1.5 KiB per chunk.
GEO = dict(model="test/model", num_layers=3, num_kv_heads=2, head_dim=8, dtype="fp16")
CHUNK = 16


@pytest.fixture
def engine(store):
    import kvstash
    # No CPU tier: every hit comes from the files, so the tests see the store.
    cfg = kvstash.Config.load({"chunk_size": CHUNK, "gds_io_threads": 2, "local_cpu": False})
    with kvstash.Engine(cfg, **GEO) as eng:
        yield eng
