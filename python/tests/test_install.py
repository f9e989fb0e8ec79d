"""`pip install ./python` offline, with Debian's setuptools: the installed
package imports and finds the library through KVSTASH_LIBRARY."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_pip_install_offline(tmp_path):
    import importlib.util
    if not (importlib.util.find_spec("pip") and importlib.util.find_spec("setuptools")):
        pytest.skip("pip or setuptools missing for this interpreter")
    target = tmp_path / "site"
    build = tmp_path / "src"
    # Build from a copy, so no build/ or egg-info lands in the checkout.
    subprocess.run(["cp", "-r", os.path.join(REPO, "python"), str(build)], check=True)
    env = dict(os.environ, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-build-isolation",
                        "--no-deps", "--no-index", "--target", str(target), str(build)],
                       capture_output=True, text=True, env=env, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (target / "kvstash" / "engine.py").exists()
    code = ("import kvstash, sys; assert kvstash.__file__.startswith(sys.argv[1]); "
            "print(kvstash.version())")
    env = dict(os.environ, PYTHONPATH=str(target))
    r = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True,
                       text=True, env=env, cwd=str(tmp_path), timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().count(".") == 2
