#!/usr/bin/python3
"""check_grafana.py METRICS_DOC DASHBOARD_JSON VLLM_STATS_PY - every metric
the Grafana dashboard queries exists.

The names kvstash exports come from where they are made: the metric
families of KVS_STATS_FIELDS (the table docs/metrics.md is generated from,
printed by METRICS_DOC, build/tests/kvs_metrics_doc) and the histograms
python/kvstash/vllm_stats.py adds on vLLM's /metrics (HISTOGRAMS).  On
vLLM's /metrics a counter family kvstash_X_total is vllm:kvstash_X_total; a
histogram H is queried as H_bucket, H_sum or H_count.

Every PromQL expression of the dashboard (panel targets and template
queries) is scanned for kvstash metric names; each must be one of those.
Exit 0 when all are, 1 naming each one that is not.  Before that, the
checker proves it can fail: a name that is not exported must be refused.
"""

import importlib.util
import json
import re
import subprocess
import sys

NAME = re.compile(r"(?<![A-Za-z0-9_:])((?:vllm:)?kvstash_[A-Za-z0-9_]+)")


def families(metrics_doc):
    """{family: type} from the Families table of the generated page."""
    page = subprocess.run([metrics_doc], check=True, capture_output=True, text=True).stdout
    out = {}
    for m in re.finditer(r"^\| `(kvstash_[a-z0-9_]+)` \| (counter|gauge) \|", page, re.M):
        out[m.group(1)] = m.group(2)
    if len(out) < 20:
        sys.exit("check_grafana: only %d families parsed from %s" % (len(out), metrics_doc))
    return out


def histograms(vllm_stats_py):
    spec = importlib.util.spec_from_file_location("kvs_vllm_stats", vllm_stats_py)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return {name for name, _, _ in mod.HISTOGRAMS}


def exported(name, fams, hists):
    if name.startswith("vllm:"):
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and name[:-len(suffix)] in hists:
                return True
        fam = name[len("vllm:"):]
        return fams.get(fam) == "counter"
    return name in fams


def queries(node):
    """Every PromQL string of a dashboard: "expr" of targets, "query" of
    template variables (text, or an object with a "query")."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("expr", "query") and isinstance(v, str):
                yield v
            elif k == "query" and isinstance(v, dict) and isinstance(v.get("query"), str):
                yield v["query"]
            else:
                yield from queries(v)
    elif isinstance(node, list):
        for v in node:
            yield from queries(v)


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    fams = families(sys.argv[1])
    hists = histograms(sys.argv[3])
    for bad in ("vllm:kvstash_no_such_metric_total", "kvstash_store_used_bytes_total",
                "vllm:kvstash_store_used_bytes"):       # a gauge is not sent through vLLM
        if exported(bad, fams, hists):
            sys.exit("check_grafana: would accept %s" % bad)
    with open(sys.argv[2]) as f:
        dash = json.load(f)
    used, missing = set(), []
    for q in queries(dash):
        for name in NAME.findall(q):
            used.add(name)
            if not exported(name, fams, hists):
                missing.append((name, q))
    if not used:
        sys.exit("check_grafana: no kvstash metric found in %s" % sys.argv[2])
    for name, q in missing:
        print("FAIL: %s is not exported (in: %s)" % (name, q))
    if missing:
        return 1
    print("ok: %d kvstash metrics used by the dashboard all exist: %s"
          % (len(used), ", ".join(sorted(used))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
