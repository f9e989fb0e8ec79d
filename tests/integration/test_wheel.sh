#!/usr/bin/env bash
# test_wheel.sh PYTHON BUILD_CACHE HAVE_CUDA [CMAKE_ARGS] - the README's one-command
# install, offline: in a fresh virtualenv, `python -m pip install ./python`
# builds libkvstash with CMake (in BUILD_CACHE, kept between runs so a rerun
# compiles only what changed) and installs a platform wheel with the library
# inside; then, with no KVSTASH_LIBRARY and nothing of the checkout on the
# path, `import kvstash` loads the bundled library and a chunk goes through
# the Engine API on host memory and back.  HAVE_CUDA (ON/OFF) is what the
# main build found; the wheel's library must have chosen the same.
set -u
PY=${1:?usage: $0 python3 build-cache-dir ON|OFF}
CACHE=${2:?usage: $0 python3 build-cache-dir ON|OFF}
HAVE_CUDA=${3:?usage: $0 python3 build-cache-dir ON|OFF [cmake-args]}
# where the main build found its dependencies, for the wheel's CMake run
export KVSTASH_CMAKE_ARGS=${4:-}
SRC=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/kvs-wheel-XXXXXX")
trap '[ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
# nothing of the caller's may lead the import astray
unset KVSTASH_LIBRARY PYTHONPATH PYTHONHOME VIRTUAL_ENV PIP_INDEX_URL PIP_FIND_LINKS
unset $(env | grep -oE '^(LMCACHE|KVSTASH)_[A-Z_]+' | grep -v '^KVSTASH_CMAKE_ARGS$') 2>/dev/null || true
export PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1

# The package needs numpy, which pip cannot fetch offline: where the
# interpreter has none (the GPU machine's Python), there is nothing to test.
if ! "$PY" -c 'import numpy' 2>/dev/null; then
    echo "SKIP: $PY has no numpy (Debian: python3-numpy), which kvstash needs"
    exit 77
fi

t0=$(date +%s)
# Debian's numpy is seen through --system-site-packages (as the README says)
"$PY" -m venv --system-site-packages "$WORK/venv" >"$WORK/venv.log" 2>&1 ||
    fail "python3 -m venv failed (Debian: apt-get install python3-venv): $(cat "$WORK/venv.log")"
VPY="$WORK/venv/bin/python"
t1=$(date +%s)
untracked() { git -C "$SRC" status --porcelain --untracked-files=all -- python 2>/dev/null | grep '^??'; }
untracked >"$WORK/untracked.before"
# The README's command, with the build directory kept in the test's cache.
if ! (cd "$SRC" && KVSTASH_BUILD_DIR="$CACHE" "$VPY" -m pip install -v ./python) >"$WORK/pip.log" 2>&1; then
    tail -40 "$WORK/pip.log" >&2
    fail "pip install ./python failed"
fi
t2=$(date +%s)
echo "ok: venv in $((t1 - t0)) s; pip install ./python (CMake build included) in $((t2 - t1)) s"
grep -q "kvstash build: .*cmake --build $CACHE --target kvstash" "$WORK/pip.log" ||
    fail "the wheel build did not run CMake's build: $(grep 'kvstash build' "$WORK/pip.log")"
untracked | diff "$WORK/untracked.before" - >/dev/null ||
    fail "the build left files in python/: $(untracked | diff "$WORK/untracked.before" -)"

# The choice of CUDA: KVSTASH_CUDA=off builds without it even where CUDA is
# found; a value that is not auto/on/off is refused before anything builds.
if ! (cd "$SRC" && KVSTASH_CUDA=off KVSTASH_BUILD_DIR="$CACHE-nocuda" \
        "$VPY" -m pip wheel --no-deps -w "$WORK/dist" ./python) >"$WORK/pip-off.log" 2>&1; then
    tail -40 "$WORK/pip-off.log" >&2
    fail "KVSTASH_CUDA=off: pip wheel failed"
fi
whl=$(ls "$WORK"/dist/kvstash-*-py3-none-linux_*.whl) || fail "no platform wheel in $WORK/dist"
"$VPY" - "$whl" "$WORK/off" <<'PY' || fail "the KVSTASH_CUDA=off wheel"
import ctypes, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
z.extract("kvstash/libkvstash.so.0", sys.argv[2])
lib = ctypes.CDLL(sys.argv[2] + "/kvstash/libkvstash.so.0")
assert lib.kvs_build_features() == 0, lib.kvs_build_features()
print("ok: KVSTASH_CUDA=off: a wheel whose library has no CUDA")
PY
(cd "$SRC" && KVSTASH_CUDA=maybe "$VPY" -m pip wheel --no-deps -w "$WORK/dist2" ./python) >"$WORK/pip-bad.log" 2>&1 &&
    fail "KVSTASH_CUDA=maybe was accepted"
grep -q "cuda='maybe' (KVSTASH_CUDA) is not one of auto, on, off" "$WORK/pip-bad.log" ||
    fail "KVSTASH_CUDA=maybe: $(tail -5 "$WORK/pip-bad.log")"
echo "ok: KVSTASH_CUDA=maybe refused, naming auto, on, off"
if [ "$HAVE_CUDA" = OFF ]; then
    (cd "$SRC" && KVSTASH_CUDA=on KVSTASH_BUILD_DIR="$WORK/cuda-on" "$VPY" -m pip wheel --no-deps \
        -w "$WORK/dist3" ./python) >"$WORK/pip-on.log" 2>&1 && fail "KVSTASH_CUDA=on built without CUDA"
    grep -q "KVS_WITH_CUDA=ON but no CUDA toolkit was found" "$WORK/pip-on.log" ||
        fail "KVSTASH_CUDA=on without CUDA: $(tail -5 "$WORK/pip-on.log")"
    echo "ok: KVSTASH_CUDA=on fails where CMake finds no CUDA toolkit"
fi

cd "$WORK" || exit 1
export LMCACHE_WEKA_PATH="$WORK/store" LMCACHE_LOCAL_CPU=false KVSTASH_MIN_FREE_SPACE=0
mkdir -p "$LMCACHE_WEKA_PATH"
"$VPY" - "$WORK/venv" "$CACHE" "$HAVE_CUDA" <<'PY' || fail "the installed package"
import filecmp, glob, os, sys
venv, cache, have_cuda = sys.argv[1:4]
import numpy as np
import kvstash

site = glob.glob(os.path.join(venv, "lib", "python3*", "site-packages"))[0]
pkg = os.path.join(site, "kvstash")
assert os.path.dirname(kvstash.__file__) == pkg, kvstash.__file__
lib = kvstash.library_path()
assert lib == os.path.join(pkg, "libkvstash.so.0"), lib
# the bundled library is the one the wheel build made in the cache directory
assert filecmp.cmp(lib, os.path.join(cache, "libkvstash.so.0"), shallow=False), lib
di = glob.glob(os.path.join(site, "kvstash-*.dist-info"))
assert len(di) == 1, di
wheel = open(os.path.join(di[0], "WHEEL")).read()
assert "Root-Is-Purelib: false" in wheel and "Tag: py3-none-linux_" in wheel, wheel
record = open(os.path.join(di[0], "RECORD")).read()
assert "kvstash/libkvstash.so.0,sha256=" in record, record
info = kvstash.build_info()
assert info["version"] == kvstash.__version__ == kvstash.version(), info
assert info["cuda"] == (have_cuda == "ON") and info["cufile"] == info["cuda"], (info, have_cuda)
assert info["commit"] != "", info

# one chunk through the Engine API on host memory, and back
L, H, D, T = 2, 8, 64, 256
with kvstash.Engine(model="wheel/test", num_layers=L, num_kv_heads=H, head_dim=D,
                    dtype="fp16") as eng:
    rng = np.random.default_rng(7)
    kv = rng.standard_normal((L, 2, T, H, D)).astype(np.float16)
    tokens = np.arange(1000, 1000 + T, dtype=np.uint32)
    eng.store(tokens, kv, wait=True)
    assert eng.lookup(tokens) == T
    out = np.zeros_like(kv)
    assert eng.retrieve(tokens, out) == T
    assert np.array_equal(out, kv)
files = [f for f in glob.glob(os.path.join(os.environ["LMCACHE_WEKA_PATH"], "**"), recursive=True)
         if len(os.path.basename(f)) == 64]
assert len(files) == 1, files
print("ok: import kvstash loads the bundled library (%s); cuda %s, commit %s; "
      "a chunk stored and retrieved byte for byte" % (lib, info["cuda"], info["commit"]))
PY
echo "all passed"
