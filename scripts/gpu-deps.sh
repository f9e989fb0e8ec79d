#!/usr/bin/env bash
# gpu-deps.sh [DIR] - downloads, on a Debian 12 machine with apt, the
# packages bench/gpu_session.sh takes from DIR (default .deps beside the
# sources) on a GPU machine that has no apt or no network:
#   DIR/        the -dev packages the build needs (and their libraries);
#   DIR/text/   English text for the model bench/codec_ratios.sh trains;
#   DIR/tools/  the zstd and lz4 command-line tools (the ratios' fallback).
# Nothing is installed here; the GPU scripts unpack them with dpkg -x.
# Carry DIR with the sources (the device tool: carry ".deps").
set -eu
DIR=${1:-$(cd "$(dirname "$0")/.." && pwd)/.deps}
mkdir -p "$DIR/text" "$DIR/tools"
fetch() {  # fetch FOLDER PACKAGE...
    local to=$1
    shift
    (cd "$to" && apt-get download -q "$@")
}
fetch "$DIR" libyaml-dev libyaml-0-2 libxxhash-dev libxxhash0 libssl-dev libcmocka-dev \
    libcmocka0 libzstd-dev libzstd1 liblz4-dev liblz4-1 pkgconf pkgconf-bin libpkgconf3
# the list bench/kv_corpus.py documents (DEBS)
fetch "$DIR/text" python3.11-doc perl-doc fortunes jargon-text gnu-standards debian-reference-en
fetch "$DIR/tools" zstd lz4 libzstd1
echo "gpu-deps: $(find "$DIR" -name '*.deb' | wc -l) packages in $DIR"
