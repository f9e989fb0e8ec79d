#!/bin/sh
# test_python.sh PYTHON LIBKVSTASH - runs the Python package's tests
# (python/tests) with pytest under PYTHON against the library just built.
# Exit 77 (skip) when that interpreter lacks pytest or numpy.
set -u
PY=${1:?usage: $0 python3 path/to/libkvstash.so}
LIB=${2:?usage: $0 python3 path/to/libkvstash.so}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
if ! "$PY" -c 'import pytest, numpy' 2>/dev/null; then
    echo "skip: $PY has no pytest or numpy (Debian: python3-pytest python3-numpy)"
    exit 77
fi
export KVSTASH_LIBRARY="$LIB"
export PYTHONPATH="$REPO/python${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1
exec "$PY" -m pytest -q -p no:cacheprovider "$REPO/python/tests"
