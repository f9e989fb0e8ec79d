"""Config from Python: the library's sources, precedence and messages."""

import os

import pytest

import kvstash

SEED_YAML = """\
 local_cpu: false
 chunk_size: 256
 weka_path: "{path}"
 cufile_buffer_size: 8192
 extra_config:
gds_io_threads: 32
"""


def test_seed_file_then_environment(tmp_path, monkeypatch):
    store = tmp_path / "cache"
    store.mkdir()
    f = tmp_path / "weka-offload.yaml"
    f.write_text(SEED_YAML.format(path=store))
    monkeypatch.setenv("LMCACHE_CONFIG_FILE", str(f))
    monkeypatch.setenv("LMCACHE_USE_EXPERIMENTAL", "True")
    monkeypatch.setenv("LMCACHE_CHUNK_SIZE", "128")
    cfg = kvstash.Config.load()
    assert cfg.get("weka_path") == str(store)
    assert cfg.source("weka_path") == "file"
    assert cfg.get("gds_io_threads") == 32
    assert cfg.get("local_cpu") is False
    assert cfg.get("cufile_buffer_size") == 8192
    assert cfg["chunk_size"] == 128 and cfg.source("chunk_size") == "env"
    cfg.set("chunk_size", 64)
    assert cfg.get("chunk_size") == 64 and cfg.source("chunk_size") == "api"


def test_seed_environment_example(tmp_path, monkeypatch):
    monkeypatch.setenv("LMCACHE_USE_EXPERIMENTAL", "True")
    monkeypatch.setenv("LMCACHE_CHUNK_SIZE", "256")
    monkeypatch.setenv("LMCACHE_WEKA_PATH", str(tmp_path))
    monkeypatch.setenv("LMCACHE_CUFILE_BUFFER_SIZE", "8192")
    monkeypatch.setenv("LMCACHE_LOCAL_CPU", "False")
    monkeypatch.setenv("LMCACHE_EXTRA_CONFIG", '{"gds_io_threads": 32}')
    d = kvstash.Config.load().to_dict()
    assert (d["chunk_size"], d["weka_path"], d["cufile_buffer_size"], d["local_cpu"],
            d["gds_io_threads"]) == (256, str(tmp_path), 8192, False, 32)


def test_bad_value_raises_with_library_message():
    cfg = kvstash.Config.defaults()
    with pytest.raises(kvstash.ConfigError) as e:
        cfg.set("chunk_size", "abc")
    assert e.value.status_name == "KVS_ERR_CONFIG"
    assert "chunk_size" in e.value.message and "abc" in e.value.message
    assert cfg.get("chunk_size") == 256  # unchanged


def test_use_experimental_false_is_an_error(monkeypatch):
    monkeypatch.setenv("LMCACHE_USE_EXPERIMENTAL", "False")
    with pytest.raises(kvstash.ConfigError, match="LMCACHE_USE_EXPERIMENTAL"):
        kvstash.Config.load()


def test_missing_config_file_names_it(tmp_path, monkeypatch):
    missing = tmp_path / "nope.yaml"
    monkeypatch.setenv("LMCACHE_CONFIG_FILE", str(missing))
    with pytest.raises(kvstash.KvstashError) as e:
        kvstash.Config.load()
    assert str(missing) in str(e.value)


def test_unknown_key_and_aliases():
    cfg = kvstash.Config.defaults()
    with pytest.raises(kvstash.KvstashError):
        cfg.get("no_such_key")
    cfg.update({"extra_config": {"disk_io_threads": 7}, "gds_path": "/tmp"})
    assert cfg.get("gds_io_threads") == 7
    assert cfg.get("weka_path") == "/tmp"
    assert cfg.copy().get("gds_io_threads") == 7


def test_bool_and_mapping_values():
    cfg = kvstash.Config.defaults()
    cfg.set("local_cpu", False).set("use_direct_io", True)
    assert cfg.get("local_cpu") is False and cfg.get("use_direct_io") is True


def test_reference_markdown_is_docs_config():
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(repo, "docs", "config.md")) as f:
        assert kvstash.reference_markdown() == f.read()


def test_doctor_reports_the_store(store):
    report, healthy = kvstash.doctor()
    assert str(store) in report
    assert healthy
