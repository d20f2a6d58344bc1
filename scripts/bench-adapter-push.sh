#!/usr/bin/env bash
# Adapter-push benchmark: an in-process learner server publishes a LoRA adapter payload of the
# Qwen3-0.6B r=32 all-7-modules shape (28 layers; hidden 1024, q 16x128=2048, kv 8x128=1024,
# intermediate 3072 -> 20,185,088 f32 params, 80,792,424 safetensors bytes) and a worker-side
# client downloads it over loopback gRPC (1 MiB chunks) into memory, reassembled and
# XXH3-128-verified, each download reusing the previous one's buffer as the worker does. Prints
# first/min/median/max milliseconds over ITERATIONS downloads and whether the median meets the
# 100 ms target; untimed, the time to parse the payload into candle tensors.
#
#   scripts/bench-adapter-push.sh [ITERATIONS]      (default 10)
#
# Equivalent: cargo run --release -p asrl-tools -- bench adapter-push 10
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --release -q -p asrl-tools -- bench adapter-push "${1:-10}"
