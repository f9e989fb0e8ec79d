#!/usr/bin/env bash
# `make install` (cmake --install) into a temporary prefix gives a header, the
# libraries, the CLI and a pkg-config file that builds and links a program.
set -eu
BUILD=${1:?usage: $0 BUILD_DIR}
PREFIX=$(mktemp -d "${TMPDIR:-/tmp}/kvs-install-XXXXXX")
trap 'rm -rf "$PREFIX"' EXIT
cmake --install "$BUILD" --prefix "$PREFIX" >/dev/null
for f in include/kvstash.h bin/kvstash share/man/man1/kvstash.1; do
    [ -e "$PREFIX/$f" ] || { echo "FAIL: $f not installed"; exit 1; }
done
pc=$(find "$PREFIX" -name kvstash.pc)
[ -n "$pc" ] || { echo "FAIL: no kvstash.pc"; exit 1; }
# in front of the search path already set: kvstash.pc requires yaml-0.1 and
# the others, which live where the caller found them to build kvstash
export PKG_CONFIG_PATH=$(dirname "$pc")${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
cat >"$PREFIX/prog.c" <<'C'
#include <kvstash.h>
#include <stdio.h>
int main(void)
{
    kvs_config *cfg;
    if (kvs_config_new(&cfg) != KVS_OK)
        return 1;
    char *v = NULL;
    int rc = kvs_config_get(cfg, "chunk_size", &v, NULL) != KVS_OK || v[0] != '2';
    printf("kvstash %s, chunk_size %s\n", kvs_version_string(), v);
    kvs_free(v);
    kvs_config_free(cfg);
    return rc || kvs_version_number() != KVS_VERSION_NUMBER;
}
C
libdir=$(pkg-config --variable=libdir kvstash)
cc "$PREFIX/prog.c" $(pkg-config --cflags --libs kvstash) -Wl,-rpath,"$libdir" -o "$PREFIX/prog"
# In the sanitizer build the library carries ASan, which this uninstrumented
# program then loads second; tell ASan that is expected.
ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0 "$PREFIX/prog"
echo "ok: installed tree builds and runs a program through pkg-config"
