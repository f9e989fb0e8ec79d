"""Prometheus metrics from Python: merged across engines, served over HTTP,
and docs/metrics.md covering every field and family an engine exports."""

import os
import re
import urllib.error
import urllib.request

import numpy as np
import pytest

import kvstash
from conftest import CHUNK, GEO

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _two_engines():
    cfg = kvstash.Config.load({"chunk_size": CHUNK, "local_cpu": False})
    a = kvstash.Engine(cfg, **GEO)
    b = kvstash.Engine(cfg, **dict(GEO, world_size=2, rank=1))
    return a, b


def test_merge_keeps_each_family_once(store):
    a, b = _two_engines()
    with a, b:
        toks = np.arange(2 * CHUNK)
        a.store(toks, np.zeros((GEO["num_layers"], 2, toks.size, 2, 8), np.float16),
                wait=True)
        text = kvstash.metrics.merge([a.metrics(), b.metrics()])
        helps = re.findall(r"^# HELP (\S+)", text, re.M)
        assert len(helps) == len(set(helps))
        families = set(re.findall(r"^# TYPE (\S+)", a.metrics(), re.M))
        assert set(helps) == families
        # Every sample of both engines is there, under its family's header.
        for ns, stored in ((a.namespace_id, 2), (b.namespace_id, 0)):
            assert 'kvstash_chunks_stored_total{namespace="%s"} %d' % (ns, stored) in text
        lines = text.splitlines()
        i = lines.index("# TYPE kvstash_chunks_stored_total counter")
        assert lines[i + 1].startswith("kvstash_chunks_stored_total{")
        assert lines[i + 2].startswith("kvstash_chunks_stored_total{")


def test_serve_over_http(store):
    a, b = _two_engines()
    with a, b:
        server = kvstash.metrics.serve(0, host="127.0.0.1", sources=[a, b])
        try:
            port = server.server_address[1]
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
                body = r.read().decode()
                assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            assert a.namespace_id in body and b.namespace_id in body
            with pytest.raises(urllib.error.HTTPError):
                urllib.request.urlopen("http://127.0.0.1:%d/other" % port, timeout=10)
        finally:
            server.shutdown()
            server.server_close()


def test_registry_skips_closed_engines(store):
    a, b = _two_engines()
    kvstash.metrics.register(a)
    kvstash.metrics.register(b)
    b.close()
    text = kvstash.metrics.collect()
    assert a.namespace_id in text and b.namespace_id not in text
    a.close()
    kvstash.metrics.unregister(a)


def test_docs_metrics_lists_every_field_and_family(engine):
    with open(os.path.join(REPO, "docs", "metrics.md")) as f:
        doc = f.read()
    for field in engine.stats():
        assert "| `%s` |" % field in doc, field
    for family in re.findall(r"^# TYPE (\S+)", engine.metrics(), re.M):
        assert "| `%s` |" % family in doc, family
