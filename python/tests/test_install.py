"""The build backend (python/build_backend/kvstash_build.py) without a build:
its settings, its metadata, the sdist it writes.  The real install (pip
install ./python in a virtualenv, CMake build, import, round trip) is the
CTest test_wheel (tests/integration/test_wheel.sh)."""

import builtins
import os
import sys
import tarfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PKG_ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(PKG_ROOT, "build_backend"))
import kvstash_build as kb  # noqa: E402


def test_backend_needs_nothing_to_download():
    assert kb.get_requires_for_build_wheel() == []
    assert kb.get_requires_for_build_sdist() == []
    assert kb.get_requires_for_build_editable() == []
    text = open(os.path.join(PKG_ROOT, "pyproject.toml")).read()
    assert 'requires = []' in text and 'build-backend = "kvstash_build"' in text


def test_cuda_setting():
    args = kb.cmake_configure_args(kb.settings({}, environ={}))
    assert "-DKVS_WITH_CUDA=AUTO" in args and "-DKVS_BUILD_TESTS=OFF" in args
    assert "-DCMAKE_BUILD_TYPE=Release" in args
    for value, want in (("off", "OFF"), ("OFF", "OFF"), ("0", "OFF"), ("on", "ON"),
                        ("auto", "AUTO")):
        args = kb.cmake_configure_args(kb.settings({}, environ={"KVSTASH_CUDA": value}))
        assert "-DKVS_WITH_CUDA=" + want in args, (value, args)
    # --config-settings wins over the environment
    s = kb.settings({"cuda": "off", "cmake-args": "-DX=1 -DY=2"}, environ={"KVSTASH_CUDA": "on"})
    args = kb.cmake_configure_args(s)
    assert "-DKVS_WITH_CUDA=OFF" in args and args[-2:] == ["-DX=1", "-DY=2"]
    with pytest.raises(kb.BuildError, match="is not one of auto, on, off"):
        kb.cmake_configure_args(kb.settings({}, environ={"KVSTASH_CUDA": "maybe"}))
    with pytest.raises(kb.BuildError, match="unknown setting cuda_mode"):
        kb.settings({"cuda_mode": "on"}, environ={})


def test_source_dir():
    src = kb.source_dir(kb.settings({}, environ={}))
    assert os.path.exists(os.path.join(src, "CMakeLists.txt"))
    with pytest.raises(kb.BuildError, match="KVSTASH_SOURCE_DIR"):
        kb.source_dir({"source_dir": "/nonexistent/kvstash"})


def test_metadata_and_tag():
    meta = kb._metadata_text()
    import kvstash
    assert "Name: kvstash\n" in meta and "Version: %s\n" % kvstash.__version__ in meta
    assert "Requires-Dist: numpy\n" in meta and 'Requires-Dist: torch; extra == "torch"' in meta
    tag = kb.wheel_tag()
    assert tag.startswith("py3-none-") and "any" not in tag


def test_pyproject_without_tomllib(monkeypatch):
    """Python 3.9 and 3.10 have no tomllib: the fallback reads the same."""
    want = kb._project()
    real_import = builtins.__import__

    def no_tomllib(name, *a, **kw):
        if name == "tomllib":
            raise ImportError(name)
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_tomllib)
    got = kb._project()
    for key in ("name", "version", "description", "requires-python", "dependencies",
                "license", "optional-dependencies"):
        assert got[key] == want[key], key


def test_sdist_builds_on_its_own(tmp_path):
    name = kb.build_sdist(str(tmp_path))
    with tarfile.open(tmp_path / name) as t:
        names = set(t.getnames())
    base = name[:-len(".tar.gz")]
    for must in ("pyproject.toml", "PKG-INFO", "kvstash/__init__.py",
                 "build_backend/kvstash_build.py", "native/CMakeLists.txt",
                 "native/include/kvstash.h", "native/src/engine.c", "native/cmake/git_commit.cmake"):
        assert base + "/" + must in names, must
    assert not [n for n in names if n.endswith((".so", ".so.0", ".pyc")) or "/build/" in n]
    # the commit travels in a file, since the sdist has no git history
    if kb._git_commit(kb.source_dir({})):
        assert base + "/native/GIT_COMMIT" in names


def test_library_lookup_order(monkeypatch, tmp_path):
    """KVSTASH_LIBRARY, when set, is the only candidate; otherwise the copy
    bundled in the package comes before the system loader."""
    from kvstash import _lib
    monkeypatch.setenv("KVSTASH_LIBRARY", "/x/libkvstash.so")
    assert list(_lib._candidates()) == [("/x/libkvstash.so", "KVSTASH_LIBRARY")]
    monkeypatch.delenv("KVSTASH_LIBRARY")
    fake = tmp_path / "kvstash"
    fake.mkdir()
    (fake / "libkvstash.so.0").write_bytes(b"")
    monkeypatch.setattr(_lib, "__file__", str(fake / "_lib.py"))
    cands = list(_lib._candidates())
    assert cands[0] == (str(fake / "libkvstash.so.0"), "bundled in the package")
    assert cands[1] == ("libkvstash.so.0", "the system loader")


def test_override_is_said(tmp_path):
    from kvstash import _lib
    b = tmp_path / "libkvstash.so.0"
    b.write_bytes(b"")
    assert _lib.override_note(None, [str(b)]) is None
    assert _lib.override_note("/x/libkvstash.so", []) is None
    assert _lib.override_note(str(b), [str(b)]) is None
    note = _lib.override_note("/x/libkvstash.so", [str(b)])
    assert "KVSTASH_LIBRARY=/x/libkvstash.so overrides the library bundled" in note
    assert str(b) in note


def test_build_info():
    import kvstash
    info = kvstash.build_info()
    assert info["version"] == kvstash.version()
    assert isinstance(info["cuda"], bool) and info["cufile"] == info["cuda"]
    assert info["commit"] == "unknown" or len(info["commit"].split("-")[0]) == 12
