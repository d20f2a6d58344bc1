#!/usr/bin/env bash
# LoRA SFT throughput: asrl-rs (candle, `asrl-tools bench sft`) vs PEFT (torch), same shape, same run.
#
# Shape: SmolLM2-135M (30 layers, hidden 576, 9/3 heads, vocab 49152, tied), f32, one sequence of
# SEQ tokens per step, LoRA r=RANK alpha=2·RANK on all 7 projections, forward + backward + AdamW.
# candle loads assets/SmolLM2-135M-Instruct.Q4_1.gguf (dequantised) when present, else a random
# model of the same shape; PEFT always uses a random model of that shape (throughput does not
# depend on the weights). PEFT runs with 2 torch threads.
#
# Usage: scripts/bench-sft.sh [SEQ] [RANK] [STEPS]     (PYTHON=... to pick the interpreter)
# The candle side is built in release by default (PROFILE=dev times the dev profile, where this
# crate is opt-level 1: 41 vs 69 tok/s measured).
set -euo pipefail
cd "$(dirname "$0")/.."
SEQ=${1:-256}
RANK=${2:-32}
STEPS=${3:-5}
PYTHON=${PYTHON:-python3}
PROFILE=${PROFILE:-release}

if [ "$PROFILE" = release ]; then
  cargo build -q --release -p asrl-tools
  BIN=${CARGO_TARGET_DIR:-target}/release/asrl-tools
else
  cargo build -q -p asrl-tools
  BIN=${CARGO_TARGET_DIR:-target}/debug/asrl-tools
fi

candle_out=$("$BIN" bench sft --seq "$SEQ" --rank "$RANK" --steps "$STEPS")
echo "$candle_out"
candle_tps=$(echo "$candle_out" | sed -n 's/^candle_tokens_per_second=//p')

if ! "$PYTHON" -c "import torch, peft, transformers" 2>/dev/null; then
  echo "peft: torch/peft/transformers not importable with $PYTHON; no comparison"
  exit 0
fi

peft_tps=$("$PYTHON" - "$SEQ" "$RANK" "$STEPS" <<'PY'
import sys, time
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from peft import LoraConfig, get_peft_model

seq, rank, steps = (int(x) for x in sys.argv[1:4])
torch.set_num_threads(2)
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                  num_attention_heads=9, num_key_value_heads=3, head_dim=64, rope_theta=100000.0,
                  rms_norm_eps=1e-5, tie_word_embeddings=True, max_position_embeddings=8192)
model = LlamaForCausalLM(cfg).float()
model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
    target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
model.train()
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
ids = torch.randint(0, cfg.vocab_size, (1, seq))

def step():
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)

step()
t0 = time.perf_counter()
for _ in range(steps):
    step()
dt = (time.perf_counter() - t0) / steps
print(f"{seq / dt:.1f}")
PY
)
echo "peft_tokens_per_second=$peft_tps (torch threads 2)"
"$PYTHON" -c "print(f'ratio_candle_over_peft={float(\"$candle_tps\") / float(\"$peft_tps\"):.2f}')"
