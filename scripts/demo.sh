#!/usr/bin/env bash
# The demo: set-up on a fresh machine, then what asrl-rs can do today on the embedded default
# model (SmolLM2-135M-Instruct, CPU, f32):
#   1. writes demo data in the paper's dual-brain format and checks it (counts per type/split),
#   2. samples one 6-completion group for a demo question and scores it with the paper's rewards,
#   3. scores a reference response token by token.
# The full ASRL loop (learner + two workers, 3 epochs) is being built; see docs/STATUS.md.
# Output goes to runs/demo/ (git-ignored).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
"$root/scripts/setup.sh"

echo "== building (release)"
cargo build --release -p asrl-learner -p asrl-rollout-worker
bin="$root/target/release"
model="$root/assets/SmolLM2-135M-Instruct.Q4_1.gguf"
out="$root/runs/demo"
mkdir -p "$out"

echo "== 1. demo data (seed 7, 400 examples) and its check"
rm -f "$out/data.jsonl"
"$bin/asrl-learner" data generate --out "$out/data.jsonl" --count 400 --seed 7 >/dev/null
"$bin/asrl-learner" data check "$out/data.jsonl"

question=$(head -n 1 "$out/data.jsonl" | python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["context"].split("User:",1)[-1].strip())')
echo
echo "== 2. one GRPO-style group: 6 samples, T 0.7, top-p 0.95, 96 new tokens"
echo "question: $question"
start=$(date +%s.%N)
"$bin/asrl-rollout-worker" generate --model "$model" --prompt "$question" -n 6 --temperature 0.7 \
  --top-p 0.95 --max-new-tokens 96 --seed 1 --json > "$out/group.json"
end=$(date +%s.%N)
python3 - "$out/group.json" "$start" "$end" <<'PY'
import json, sys
group = json.load(open(sys.argv[1]))["completions"]
tokens = sum(len(c["tokens"]) for c in group)
secs = float(sys.argv[3]) - float(sys.argv[2])
for i, c in enumerate(group):
    text = c["text"].replace("\n", " ")
    print(f"  [{i}] {len(c['tokens']):3d} tok  mean logprob {sum(c['logprobs'])/max(1,len(c['logprobs'])):6.3f}  {text[:90]}")
print(f"  {tokens} tokens in {secs:.1f}s wall (model load included)")
PY

echo
echo "== 3. per-token log-probs of a reference response"
"$bin/asrl-learner" score --model "$model" --text "The capital of France is Paris." --json > "$out/score.json"
python3 - "$out/score.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
lp = [x for x in r["logprobs"] if x is not None]
print(f"  {len(r['tokens'])} tokens, total log-prob {sum(lp):.3f}")
PY
echo
echo "demo done; outputs in $out"
