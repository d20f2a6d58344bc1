#!/usr/bin/env bash
# Optional: a venv with the Python peers (torch, transformers, peft, trl, gguf, accelerate) for the fixture
# generators (tests/parity/*.py) and the peer side of the benchmarks. Several GB; never needed by
# the tests or the demo. Afterwards: PYTHON=.venv-peers/bin/python scripts/bench-generate.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv-peers"
[[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  torch transformers peft trl gguf safetensors accelerate
"$venv/bin/python" -c 'import torch, transformers, peft, trl; print("peers:", torch.__version__, transformers.__version__, peft.__version__, trl.__version__)'
