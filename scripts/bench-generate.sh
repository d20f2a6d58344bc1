#!/usr/bin/env bash
# Generation throughput of asrl-rs vs transformers on the same model, same work:
# one chat prompt, N samples x M new tokens (eos ignored on both sides: transformers gets
# min_new_tokens = M), sampling T 0.7, top-p 0.95, CPU, 2 threads each (RAYON_NUM_THREADS /
# torch.set_num_threads). The GGUF is dequantised to f32 on both sides.
# --batched: 4 chat prompts of different lengths x N samples in one batch, as a worker samples a
# lease (asrl-rs: one prefill per prompt, then decode steps over all 4·N sequences;
# transformers: one left-padded generate call with num_return_sequences = N).
#
# Usage: scripts/bench-generate.sh [--batched] [MODEL] [N] [MAX_NEW_TOKENS] [REPEATS]
#   MODEL defaults to assets/SmolLM2-135M-Instruct.Q4_1.gguf (scripts/fetch-assets.sh), N 6,
#   MAX_NEW_TOKENS 128, REPEATS 3. An HF model dir works too.
# Env: PYTHON (default python3) must import torch + transformers (+ gguf for .gguf models) for
#   the comparison; without them only the Rust figure is printed. THREADS (default 2).
#   CARGO_TARGET_DIR is honoured; the Rust side is built with --release.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
batched=0
if [[ "${1:-}" == "--batched" ]]; then batched=1; shift; fi
model=${1:-assets/SmolLM2-135M-Instruct.Q4_1.gguf}
n=${2:-6}
max_new=${3:-128}
repeats=${4:-3}
threads=${THREADS:-2}
py=${PYTHON:-python3}
prompts=("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?")
if [[ $batched == 1 ]]; then
  prompts=(
    "What is 7 times 8?"
    "${prompts[0]}"
    "Weng earns \$12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?"
    "Betty is saving money for a new wallet which costs \$100. Betty has only half of the money she needs. Her parents decided to give her \$15 for that purpose, and her grandparents twice as much as her parents. How much more money does Betty need to buy the wallet? Explain each step before giving the final answer."
  )
fi
prompt_args=()
for p in "${prompts[@]}"; do prompt_args+=(--prompt "$p"); done

[[ -e "$model" ]] || { echo "error: $model not found (run scripts/fetch-assets.sh)" >&2; exit 2; }

cargo build --release --quiet -p asrl-tools
target=${CARGO_TARGET_DIR:-$root/target}
echo "== asrl-rs (candle, f32, $threads threads)"
rust_out=$(RAYON_NUM_THREADS=$threads "$target/release/asrl-tools" bench generate --model "$model" -n "$n" \
  --max-new-tokens "$max_new" --repeats "$repeats" "${prompt_args[@]}")
echo "$rust_out"
rust_tps=$(sed -n 's/^tokens_per_s=//p' <<<"$rust_out")

if ! "$py" -c 'import torch, transformers' 2>/dev/null; then
  echo "($py cannot import torch + transformers: skipping the transformers comparison)"
  exit 0
fi
echo "== transformers generate (torch, f32, $threads threads)"
py_out=$("$py" - "$model" "$n" "$max_new" "$repeats" "$threads" "${prompts[@]}" <<'PY'
import os, sys, time, warnings
warnings.filterwarnings("ignore")
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging
logging.disable_progress_bar()
logging.set_verbosity_error()

model_path, n, max_new, repeats, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
prompts = sys.argv[6:]
torch.set_num_threads(threads)
if model_path.endswith(".gguf"):
    d, f = os.path.split(os.path.abspath(model_path))
    kw = dict(gguf_file=f)
else:
    d, kw = model_path, {}
t0 = time.time()
tok = AutoTokenizer.from_pretrained(d, **kw)
model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, **kw).eval()
load_s = time.time() - t0
texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True) for p in prompts]
# Several prompts: one left-padded batch. Each prompt's n samples: the prompt repeated n times
# (transformers has no shared-prefill group API).
tok.padding_side = "left"
if tok.pad_token is None:
    tok.pad_token = tok.eos_token
enc = tok(texts, return_tensors="pt", add_special_tokens=False, padding=True)
lens = enc.attention_mask.sum(dim=1).tolist()
gen = dict(do_sample=True, temperature=0.7, top_p=0.95, top_k=0, num_return_sequences=n,
           pad_token_id=tok.pad_token_id)
with torch.inference_mode():
    model.generate(**enc, max_new_tokens=8, min_new_tokens=8, **gen)
    total, t = 0, time.time()
    for r in range(repeats):
        torch.manual_seed(r)
        out = model.generate(**enc, max_new_tokens=max_new, min_new_tokens=max_new, **gen)
        total += (out.shape[1] - enc.input_ids.shape[1]) * out.shape[0]
    secs = time.time() - t
print(f"load {load_s:.2f}s | prompts of {'/'.join(str(l) for l in lens)} tokens | {repeats} batches x {len(prompts)} prompts x {n} samples x {max_new} new tokens")
print(f"generated {total} tokens in {secs:.3f}s")
print(f"tokens_per_s={total / secs:.2f}")
PY
)
echo "$py_out"
py_tps=$(sed -n 's/^tokens_per_s=//p' <<<"$py_out")
"$py" -c "print(f'== ratio asrl-rs / transformers: {float($rust_tps) / float($py_tps):.2f}x ($rust_tps vs $py_tps tokens/s)')"
