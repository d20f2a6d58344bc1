#!/usr/bin/env bash
# The demo: set-up on a fresh machine, then ASRL on the embedded default model
# (SmolLM2-135M-Instruct, CPU, f32) with a learner and two rollout workers, 3 epochs:
#   1. writes 300 demo examples in the paper's dual-brain format and checks them,
#   2. starts the demo data generator in live mode (new examples keep arriving during training),
#   3. runs configs/demo-cpu.toml through scripts/launch.sh: each epoch an SFT phase, then a GRPO
#      phase whose groups the two workers sample and score, then validation,
#   4. prints the summary table (format accuracy per epoch) and where the plots are.
# Outputs: runs/demo-cpu/ (git-ignored). Ctrl-C stops everything; running it again starts over.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
"$root/scripts/setup.sh"

echo "== building (release)"
cargo build --release -q -p asrl-learner -p asrl-rollout-worker -p asrl-tools
bin="$root/target/release"
config="$root/configs/demo-cpu.toml"
run_dir="$root/runs/demo-cpu"
data="$run_dir/data.jsonl"
mkdir -p "$run_dir"

echo "== 1. demo data: 300 examples (seed 7) and their check"
rm -f "$data"
"$bin/asrl-tools" demo-data --out "$data" --count 300 --seed 7 >/dev/null
"$bin/asrl-learner" data check "$data"

echo "== 2. live data: 900/h more examples (seed 8) appended while training runs"
"$bin/asrl-tools" demo-data --out "$data" --seed 8 --append --live --rate 900/h \
  >"$run_dir/live-generator.log" 2>&1 &
generator=$!
trap 'kill $generator 2>/dev/null || true' EXIT

echo "== 3. ASRL: learner + 2 CPU workers, 3 epochs"
start=$(date +%s)
status=0
"$root/scripts/launch.sh" --config "$config" --bin "$bin" -- --fresh || status=$?
kill "$generator" 2>/dev/null || true
echo
echo "== demo took $(( $(date +%s) - start )) s of training; outputs in $run_dir"
echo "   plots: $run_dir/plots/format_accuracy.png (and .svg), reward_mean, val_loss"
echo "   adapters (PEFT): $run_dir/final-adapter, $run_dir/best-adapter"
exit "$status"
