#!/usr/bin/env bash
# demo.sh KVSTASH - what `make run` shows: one process stores four prompts
# that share a 4096-token prefix (Llama-3.1-8B geometry, bf16: 32 MiB per
# 256-token chunk); a second process, started afresh, finds them on the
# store, restores them and checks every byte.
set -eu
KVSTASH=${1:-build/kvstash}
TOKENS=${DEMO_TOKENS:-8192}
PREFIX=${DEMO_PREFIX:-4096}
SEEDS=${DEMO_SEEDS:-11,12,13,14}

echo "== kvstash demo: the store and the data path"
"$KVSTASH" doctor | sed 's/^/   /'
echo
echo "== process 1: store prompts $SEEDS ($TOKENS tokens each, the first $PREFIX shared)"
"$KVSTASH" store --seed "$SEEDS" --tokens "$TOKENS" --shared-prefix 7:"$PREFIX" --quiet
echo
echo "== process 2: look up, restore and verify the same prompts"
"$KVSTASH" retrieve --seed "$SEEDS" --tokens "$TOKENS" --shared-prefix 7:"$PREFIX" --verify --quiet
echo
echo "== process 3: a new prompt sharing only the prefix loads the prefix, not more"
"$KVSTASH" retrieve --seed 99 --tokens "$TOKENS" --shared-prefix 7:"$PREFIX" --verify --quiet
