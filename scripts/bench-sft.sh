#!/usr/bin/env bash
# LoRA training throughput and peak RSS: asrl-rs (`asrl-tools bench sft`) vs PEFT (torch,
# scripts/bench_sft_peft.py), each side in its own process, same shape, same work per step.
#
#   scripts/bench-sft.sh [--shape smollm2-135m|qwen3-0.6b] [--mode sft|grpo] [--seq N]
#       [--group-size G] [--prompt-tokens P] [--completion-tokens C] [--rank R] [--steps N]
#       [--warmup N] [--checkpointing off|on|auto] [--budget-mib M] [--share-prompts on|off]
#       [--weight-packing auto|on|off]
#       [--peft-qwen] [--no-peft] [--floor] [--rounds N]
#   scripts/bench-sft.sh [SEQ] [RANK] [STEPS]          (the old form: SmolLM2 SFT)
#
# Both sides build a random model of the shape (throughput does not depend on the weights), f32,
# LoRA r=RANK alpha=2·RANK on all 7 projections, forward + backward + clip + AdamW per step.
# sft: one sequence of SEQ tokens, every token a label. grpo: one micro-batch of G completions of
# C tokens after a shared P-token prompt (defaults 6 × (1700 + 300)), loss on completion tokens only;
# asrl-rs runs that prompt once for the group unless --share-prompts off (PEFT/TRL run it per row).
# --weight-packing (asrl-rs, default auto): frozen projections packed once for the CPU product
# kernel, `[engine] weight_packing` (docs/config.md); its copies count in asrl-rs's peak RSS.
# tok/s counts every token through the forward (rows × tokens per row / step seconds).
# --floor (sft mode): also times the step's dense products alone through the same gemm wrapper
# (`asrl-tools bench floor`), a floor under our step on this machine; "floor / PEFT" is then the
# highest ratio an engine on that product kernel could show against this PEFT run.
# --rounds N: N rounds back to back (ours, PEFT, floor in each), each round's figures and ratio,
# then the medians; on a noisy host one pair of runs can be off by 20 %.
# Peak RSS: the whole process (getrusage ru_maxrss); "train peak" is the high-water mark after
# the model was built (Linux), i.e. weights + training.
#
# Environment: PYTHON (interpreter with torch, transformers >= 4.51, peft), TORCH_THREADS
# (default: candle's thread count), PEFT_QWEN=1 (same as --peft-qwen: PEFT at the Qwen3 shape
# is skipped otherwise), PEFT_CHECKPOINTING=off|on (default: on when --checkpointing on, else
# off; PEFT has no budgeted mode), PROFILE=dev to time the dev profile instead of release.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
PROFILE=${PROFILE:-release}
PEFT_QWEN=${PEFT_QWEN:-0}
RUN_PEFT=1 FLOOR=0 ROUNDS=1

SHAPE=smollm2-135m MODE=sft SEQ=256 RANK=32 STEPS=5 WARMUP=1 GROUP=6 PROMPT=1700 COMPLETION=300
CKPT=auto BUDGET=4096 SHARE=on PACKING=auto
if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then
  SEQ=$1; RANK=${2:-$RANK}; STEPS=${3:-$STEPS}
  shift $(( $# < 3 ? $# : 3 ))
fi
while [ $# -gt 0 ]; do
  case $1 in
    --shape) SHAPE=$2; shift 2 ;;
    --mode) MODE=$2; shift 2 ;;
    --seq) SEQ=$2; shift 2 ;;
    --group-size) GROUP=$2; shift 2 ;;
    --prompt-tokens) PROMPT=$2; shift 2 ;;
    --completion-tokens) COMPLETION=$2; shift 2 ;;
    --rank) RANK=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --checkpointing) CKPT=$2; shift 2 ;;
    --budget-mib) BUDGET=$2; shift 2 ;;
    --share-prompts) SHARE=$2; shift 2 ;;
    --weight-packing) PACKING=$2; shift 2 ;;
    --peft-qwen) PEFT_QWEN=1; shift ;;
    --no-peft) RUN_PEFT=0; shift ;;
    --floor) FLOOR=1; shift ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    *) echo "bench-sft.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "bench-sft.sh: --rounds takes a whole number >= 1" >&2; exit 2; }
case $CKPT in on) DEFAULT_PEFT_CKPT=on ;; *) DEFAULT_PEFT_CKPT=off ;; esac
PEFT_CKPT=${PEFT_CHECKPOINTING:-$DEFAULT_PEFT_CKPT}

if [ "$PROFILE" = release ]; then
  cargo build -q --release -p asrl-tools
  BIN=${CARGO_TARGET_DIR:-target}/release/asrl-tools
else
  cargo build -q -p asrl-tools
  BIN=${CARGO_TARGET_DIR:-target}/debug/asrl-tools
fi

common=(--shape "$SHAPE" --mode "$MODE" --seq "$SEQ" --group-size "$GROUP" --prompt-tokens "$PROMPT"
        --completion-tokens "$COMPLETION" --rank "$RANK" --steps "$STEPS" --warmup "$WARMUP")
if [ "$MODE" = grpo ]; then work="$GROUP x ($PROMPT + $COMPLETION) tokens"; else work="1 x $SEQ tokens"; fi
echo "== LoRA $MODE, $SHAPE, $work, r $RANK, 7 modules, f32, $STEPS timed steps after $WARMUP; load: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo n/a)"

field() { echo "$1" | sed -n "s/.*\b$2=\([^ ]*\).*/\1/p" | head -n 1; }
ratio() { "$PYTHON" -c "import sys
try: print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')
except ValueError: print('n/a')" "$1" "$2"; }
median() { "$PYTHON" -c "import statistics, sys
v = []
for x in sys.argv[1:]:
    try: v.append(float(x))
    except ValueError: pass
print(f'{statistics.median(v):.1f}' if v else 'n/a')" "$@"; }

why=""
if [ "$RUN_PEFT" != 1 ]; then
  why="--no-peft"
elif [ "$SHAPE" = qwen3-0.6b ] && [ "$PEFT_QWEN" != 1 ]; then
  why="Qwen3 shape: PEFT_QWEN=1 or --peft-qwen to run it"
elif ! "$PYTHON" -c "import torch, peft, transformers" 2>/dev/null; then
  why="torch/peft/transformers not importable with $PYTHON"
fi
[ -n "$why" ] && echo "peft: skipped ($why)"
[ "$FLOOR" = 1 ] && [ "$MODE" != sft ] && echo "floor: skipped (it times the SFT step's products; --mode $MODE)"

all_ours=() all_peft=() all_floor=()
for round in $(seq 1 "$ROUNDS"); do
  [ "$ROUNDS" = 1 ] || echo "-- round $round of $ROUNDS; load: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo n/a)"
  ours=$("$BIN" bench sft "${common[@]}" --checkpointing "$CKPT" --budget-mib "$BUDGET" --share-prompts "$SHARE" --weight-packing "$PACKING")
  echo "$ours"
  ours_tps=$(field "$ours" candle_tokens_per_second)
  ours_peak=$(field "$ours" peak_rss_mib)
  ours_train=$(field "$ours" train_peak_rss_mib)
  threads=$(field "$ours" threads)

  peft_tps=skipped peft_peak=skipped peft_train=skipped
  if [ -z "$why" ]; then
    peft=$("$PYTHON" scripts/bench_sft_peft.py "${common[@]}" --checkpointing "$PEFT_CKPT" \
           --threads "${TORCH_THREADS:-${threads:-2}}")
    echo "$peft"
    peft_tps=$(field "$peft" peft_tokens_per_second)
    peft_peak=$(field "$peft" peft_peak_rss_mib)
    peft_train=$(field "$peft" peft_train_peak_rss_mib)
  fi

  floor_tps=""
  if [ "$FLOOR" = 1 ] && [ "$MODE" = sft ]; then
    floor=$("$BIN" bench floor --shape "$SHAPE" --seq "$SEQ" --rank "$RANK" --steps "$STEPS" --warmup "$WARMUP")
    echo "$floor"
    floor_tps=$(field "$floor" floor_tokens_per_second)
  fi
  all_ours+=("$ours_tps") all_peft+=("$peft_tps") all_floor+=("$floor_tps")
  [ "$ROUNDS" = 1 ] || echo "round $round: ours $ours_tps tok/s, PEFT $peft_tps tok/s, ratio $(ratio "$ours_tps" "$peft_tps")${floor_tps:+, floor $floor_tps tok/s}"
done

# One round: its figures. Several: the medians of tok/s (peak RSS: the last round's).
if [ "$ROUNDS" != 1 ]; then
  ours_tps=$(median "${all_ours[@]}") peft_tps=$(median "${all_peft[@]}")
  [ -z "$floor_tps" ] || floor_tps=$(median "${all_floor[@]}")
  echo
  echo "medians of $ROUNDS rounds (peak RSS: the last round)"
fi
echo
echo "| side | checkpointing | tok/s | tok/s ratio (ours / PEFT) | peak RSS MiB | train peak RSS MiB |"
echo "|---|---|---|---|---|---|"
echo "| asrl-rs | $CKPT (budget $BUDGET MiB) | $ours_tps | $(ratio "$ours_tps" "$peft_tps") | $ours_peak | $ours_train |"
echo "| PEFT | $PEFT_CKPT | $peft_tps | | $peft_peak | $peft_train |"
if [ -n "$floor_tps" ]; then
  echo "| dense products alone (floor) | - | $floor_tps | $(ratio "$floor_tps" "$peft_tps") | | |"
fi
echo "ratio_candle_over_peft=$(ratio "$ours_tps" "$peft_tps")"
[ -z "$floor_tps" ] || echo "ratio_floor_over_peft=$(ratio "$floor_tps" "$peft_tps")"
