#!/usr/bin/env bash
# The project's test command (README, .ci/run): set-up, then the whole workspace test suite on CPU.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
"$root/scripts/setup.sh"
export PATH="$root/.venv/bin:$PATH"
export GRPCURL="${GRPCURL:-$root/.venv/bin/grpcurl}"
cargo build --workspace --bins
cargo test --workspace --no-fail-fast "$@"
