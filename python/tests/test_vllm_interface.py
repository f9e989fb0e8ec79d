"""KvstashConnector against the interface of vLLM's KVConnectorBase_V1 as it
stood in each version the docs claim (data/vllm_connector_interface.json:
facts read from vLLM's source, not code), without importing vLLM: every
abstract method is defined by the connector itself, and every member vLLM
calls accepts the call (same parameter names in the same order, defaults
where vLLM has them or adds parameters, **kwargs where vLLM passes extras,
the same kind: classmethod, property)."""

import inspect
import json
import os

import pytest

import kvstash.vllm as kv_vllm
from kvstash.vllm import KvstashConnector

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "data", "vllm_connector_interface.json")) as f:
    FACTS = json.load(f)


def interfaces():
    members = dict(FACTS["base"])
    for v in FACTS["versions"]:
        members = dict(members, **v["changes"])
        yield v["label"], v["commit"], dict(members)


VERSIONS = list(interfaces())


def _ours(name):
    """(object as defined where the class gets it, defining class)."""
    for klass in KvstashConnector.__mro__:
        if name in vars(klass):
            return vars(klass)[name], klass
    return None, None


def _problems(name, fact):
    obj, owner = _ours(name)
    if obj is None:
        return ["%s: not defined" % name]
    if fact.get("inherited"):
        return []                      # vLLM's own base provides it
    out = []
    if fact["kind"] == "abstract" and owner is not KvstashConnector:
        out.append("%s: abstract in vLLM, not defined by KvstashConnector" % name)
    if fact["kind"] == "classmethod" and not isinstance(obj, classmethod):
        out.append("%s: vLLM calls it on the class; ours is not a classmethod" % name)
    if fact["kind"] == "property":
        if not isinstance(obj, property):
            out.append("%s: a property in vLLM" % name)
        return out
    fn = obj.__func__ if isinstance(obj, (classmethod, staticmethod)) else obj
    params = list(inspect.signature(fn).parameters.values())[1:]     # self / cls
    ours = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    var_kw = any(p.kind == p.VAR_KEYWORD for p in params)
    theirs = [p for p in fact["params"] if p[1] == "positional"]
    for i, (pname, _, has_default) in enumerate(theirs):
        if i >= len(ours) or ours[i].name != pname:
            out.append("%s: parameter %d is %r in vLLM, %r here" % (
                name, i + 1, pname, ours[i].name if i < len(ours) else None))
            continue
        if has_default and ours[i].default is inspect.Parameter.empty:
            out.append("%s: %r has a default in vLLM (callers may leave it out)"
                       % (name, pname))
    for p in ours[len(theirs):]:
        if p.default is inspect.Parameter.empty:
            out.append("%s: extra parameter %r without a default" % (name, p.name))
    if any(p[1] == "var_keyword" for p in fact["params"]) and not var_kw:
        out.append("%s: vLLM passes **kwargs; ours takes none" % name)
    return out


@pytest.mark.parametrize("label,commit,members", VERSIONS, ids=[v[0] for v in VERSIONS])
def test_connector_fits_vllm_interface(label, commit, members):
    problems = [p for name, fact in sorted(members.items()) for p in _problems(name, fact)]
    assert not problems, "vLLM %s (%s): %s" % (label, commit, "; ".join(problems))


def test_every_abstract_method_is_in_the_facts():
    abstract = {n for n, f in FACTS["base"].items() if f["kind"] == "abstract"}
    assert abstract == {"start_load_kv", "wait_for_layer_load", "save_kv_layer",
                        "wait_for_save", "get_num_new_matched_tokens",
                        "update_state_after_alloc", "build_connector_meta"}


def test_the_check_catches_a_mismatch():
    # The checker itself: a wrong name, a lost **kwargs, a lost classmethod.
    assert _problems("wait_for_layer_load",
                     {"kind": "abstract", "params": [["layer", "positional", False]]})
    assert _problems("wait_for_save",
                     {"kind": "abstract", "params": [["kwargs", "var_keyword", False]]})
    assert _problems("register_kv_caches", {"kind": "classmethod", "params": []})
    assert _problems("no_such_member", {"kind": "method", "params": []})


def test_v0_11_0_is_refused_by_name(monkeypatch):
    # v0.11.0's base class lacks has_connector_metadata (vLLM PR #28253,
    # first in v0.11.1): refuse at startup instead of failing every step.
    monkeypatch.delattr(kv_vllm.KVConnectorBase_V1, "has_connector_metadata")
    from vllm_standins import MiniVllm
    with pytest.raises(RuntimeError, match="v0.11.1"):
        MiniVllm()
