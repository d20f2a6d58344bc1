#!/usr/bin/env bash
# CI-sized CUDA check: `cargo check --features cuda --all-targets` for asrl-common, asrl-learner
# and asrl-rollout-worker against the pinned CUDA 13.0 wheel toolkit; no GPU needed. Same
# environment and options as scripts/build-cuda.sh (see its header and docs/cuda.md).
exec "$(dirname "$0")/build-cuda.sh" --check "$@"
