#!/usr/bin/env bash
# The paper's experiment: the schedules asrl, sft, grpo, sequential and ares on the same seed and
# data, then the analogue of the paper's Table 1 (format accuracy at each epoch, epochs to 90%)
# and the live-data test: a pattern absent at the start (the `multi_turn` examples) is appended
# to each run's data while epoch INJECT runs; the report counts epochs until its format accuracy
# reaches 80%.
#
#   scripts/paper-experiment.sh [--config FILE] [--epochs N] [--inject K] [--out DIR]
#                               [--schedules "asrl sft grpo sequential ares"]
#
# Defaults: configs/paper-cpu.toml (SmolLM2-135M on CPU, two workers), 4 epochs, injection during
# epoch 3, outputs in runs/paper/<schedule>/ and the report in runs/paper/table1.txt.
# Each schedule gets its own copy of the data (the injection grows it) and its own port.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

config="$root/configs/paper-cpu.toml" epochs=4 inject=3 out="$root/runs/paper"
schedules="asrl sft grpo sequential ares"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --config) config=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --inject) inject=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --schedules) schedules=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
(( inject >= 2 && inject <= epochs )) || { echo "error: --inject must be in 2..=--epochs" >&2; exit 2; }

"$root/scripts/setup.sh" >/dev/null
cargo build --release -q -p asrl-learner -p asrl-rollout-worker -p asrl-tools
bin="$root/target/release"
mkdir -p "$out"

# The starting data, without multi_turn examples; the injected batch is multi_turn only.
base="$out/base.jsonl" injected="$out/injected.jsonl"
rm -f "$base" "$injected"
for pattern in simple_qa reasoning_chain mixed; do
  "$bin/asrl-tools" demo-data --out "$base" --append --count 100 --seed 7 --pattern "$pattern" >/dev/null
done
"$bin/asrl-tools" demo-data --out "$injected" --count 80 --seed 11 --pattern multi_turn >/dev/null

port=50100
for schedule in $schedules; do
  run="$out/$schedule"
  rm -rf "$run"
  mkdir -p "$run"
  cp "$base" "$run/data.jsonl"
  # Append the new pattern once epoch INJECT has begun (its snapshot is taken): epoch INJECT+1
  # is the first to train and evaluate on it.
  (
    while ! grep -q "\"kind\":\"epoch\",\"epoch\":$((inject - 1))," "$run/metrics.jsonl" 2>/dev/null; do sleep 2; done
    sleep 5
    cat "$injected" >>"$run/data.jsonl"
    echo "injected $(wc -l <"$injected") multi_turn examples during epoch $inject" >"$run/injected.txt"
  ) &
  injector=$!
  echo "== $schedule: $epochs epochs (log: $run/logs/learner.log)"
  "$root/scripts/launch.sh" --config "$config" --bin "$bin" -- --fresh --schedule "$schedule" \
    --epochs "$epochs" --run-dir "$run" --data "$run/data.jsonl" --bind "127.0.0.1:$port" |
    grep -E "^(epoch|[0-9]+ )" || true
  kill "$injector" 2>/dev/null || true
  port=$((port + 1))
done

runs=()
for schedule in $schedules; do runs+=("$out/$schedule"); done
"$bin/asrl-learner" report "${runs[@]}" --pattern multi_turn | tee "$out/table1.txt"
"$bin/asrl-learner" plot "${runs[@]}" --out "$out/plots" >/dev/null && echo "plots: $out/plots"
