"""Prometheus metrics of one process's engines, merged and served.

Each engine renders its own counters (kvs_engine_metrics, every sample
labelled with its namespace).  A process often holds several engines (one per
tensor-parallel rank in a scheduler, one per tenant), and the text format
wants each metric family once, so merge() regroups the samples of several
renderings under one HELP/TYPE header per family.  serve() exposes the
merged text over HTTP for Prometheus to scrape (GET /metrics), from a daemon
thread of this process, on the loopback address unless told otherwise.
Values of the whole store (labelled store="...", not namespace) are the same
in every engine on that store, so merge() keeps one series of each.
"""

import http.server
import threading
import weakref

_registry = weakref.WeakSet()
_registry_lock = threading.Lock()


def register(source):
    """Adds an Engine (or anything with a metrics() method returning
    Prometheus text) to the set serve() and collect() render."""
    with _registry_lock:
        _registry.add(source)


def unregister(source):
    with _registry_lock:
        _registry.discard(source)


def merge(texts):
    """One exposition from several: families in first-seen order, each with
    its HELP and TYPE once and the samples of every text."""
    order, heads, samples = [], {}, {}

    def family_of(name):
        if name not in heads:
            order.append(name)
            heads[name] = {}
            samples[name] = []
        return name

    seen = set()
    for text in texts:
        family = None
        for line in text.splitlines():
            if line.startswith("# HELP ") or line.startswith("# TYPE "):
                parts = line.split(None, 3)
                family = family_of(parts[2])
                heads[family].setdefault(parts[1], line)
            elif line.strip() and not line.startswith("#"):
                name = line.split("{", 1)[0].split(" ", 1)[0]
                if family is None or not name.startswith(family):
                    family = family_of(name)
                series = line.rsplit(" ", 1)[0]
                if series in seen:
                    # a value of the whole store (store="..." label) that
                    # every engine on it reports: one series, not one each
                    continue
                seen.add(series)
                samples[family].append(line)
    out = []
    for family in order:
        out.extend(heads[family][k] for k in ("HELP", "TYPE") if k in heads[family])
        out.extend(samples[family])
    return "\n".join(out) + ("\n" if out else "")


def collect(sources=None):
    """The merged metrics of sources (default: every registered one that is
    still open)."""
    if sources is None:
        with _registry_lock:
            sources = list(_registry)
    texts = []
    for s in sources:
        if getattr(s, "closed", False):
            continue
        try:
            texts.append(s.metrics())
        except Exception:  # an engine closing under us: skip it this time
            continue
    return merge(texts)


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.split("?", 1)[0] not in ("/metrics", "/"):
            self.send_error(404)
            return
        body = collect(self.server.kvs_sources).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # no access log on stderr
        pass


def serve(port, host="127.0.0.1", sources=None):
    """Serves GET /metrics on host:port from a daemon thread and returns the
    server (server.shutdown() stops it; port 0 picks a free port, see
    server.server_address).  host defaults to the loopback address: pass
    "0.0.0.0" (or one interface's address) for Prometheus on another
    machine.  sources: a list of engines, or None for every registered
    engine at each scrape."""
    server = http.server.ThreadingHTTPServer((host, int(port)), _Handler)
    server.daemon_threads = True
    server.kvs_sources = sources
    t = threading.Thread(target=server.serve_forever, name="kvstash-metrics", daemon=True)
    t.start()
    return server
