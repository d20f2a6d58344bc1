#!/usr/bin/env bash
# The GPU check: one prepared command that builds nothing and, in one go, measures on the device
# what CPU machines cannot, writing report.json + report.md (+ logs.tar.gz) into --out.
#
#   scripts/gpu-check.sh --bundle dist/cuda-bundle.tar.xz --device cuda:0      (on the GPU machine)
#   scripts/gpu-check.sh --device cpu --quick --bin target/debug               (CPU rehearsal, CI)
#
# Parts (each under its own time budget; a failed or timed-out part is recorded, the next runs):
#   parity   log-probs (base and with a seeded LoRA adapter, scoring and training paths), LoRA
#            gradients and greedy tokens of `asrl-tools parity` vs transformers/PEFT on the same
#            device: tiny Qwen3/Llama fixtures (f32, Qwen3 bf16) and the Qwen3-0.6B-shaped random
#            model (f32, bf16). Tolerance 1e-3 f32, 2e-2 bf16 (see scripts/gpu_check/torch_side.py).
#   rollout  tokens/s, Qwen3-0.6B shape, bf16, 8 questions x 6 completions x 300 new tokens:
#            `asrl-tools bench generate` (batched) vs transformers.generate.
#   train    LoRA r 32 on the bf16 Qwen3-0.6B shape: SFT at seq 2000 (`asrl-tools bench sft`) and
#            a GRPO micro-batch of 6 x (1700 + 300) tokens: tokens/s and peak GPU memory vs PEFT.
#   run      learner + one worker on the same device (scripts/launch.sh), 2 epochs of demo data,
#            ending with the summary table.
# --quick shrinks every size (a 2-layer model with Qwen3-0.6B's vocabulary, a few tokens), for
# CPU rehearsals. Without torch + transformers + peft importable (and working on --device), the
# torch side of each part is "skipped" with the reason; the asrl side still runs.
#
# Options:
#   --device cpu|cuda:N   device of both sides (default cuda:0)
#   --bin DIR             asrl-learner, asrl-rollout-worker, asrl-tools (default: the unpacked
#                         --bundle, else target/release)
#   --bundle FILE         a scripts/bundle-cuda.sh tarball, unpacked into the work dir
#   --out DIR             report dir (default $OUT when set, else gpu-report/)
#   --work DIR            scratch dir: models, logs (default: a fresh mktemp dir, removed at exit
#                         unless --keep-work)
#   --keep-work           keep the scratch dir
#   --quick               tiny sizes (CPU rehearsal)
#   --parts LIST          comma-separated subset of parity,rollout,train,run (default: all)
#   --run-model M         model of the run part: qwen3-0.6b (default) or tiny (the tiny-qwen3
#                         fixture; always with --quick)
#   --budget PART=SECS    override a part's time budget (setup 45, parity 110, rollout 80,
#                         train 120, run 100; --quick: 60 each); repeatable
#   --total SECS          the whole command's budget (default 460): parts get what is left
# Env: PYTHON (default python3): the interpreter of the torch side and of the report (stdlib).
#      ASRL_GRPO_BENCH_ARGS: `asrl-tools bench sft` arguments of the GRPO micro-batch, used when
#      `bench sft --help` mentions grpo (default: --mode grpo --group-size 6 --prompt-tokens 1700
#      --completion-tokens 300).
# Exit status: 0 when every selected part passed or was skipped, 1 otherwise, 2 on bad usage.
set -uo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
self="$repo/scripts/gpu-check.sh"
here="$repo/scripts/gpu_check"

# --- the parts (run as `gpu-check.sh __part NAME`, with the settings in GC_* variables) -------

kv() { printf '%s=%s\n' "$1" "$2" >>"$GC_RESULTS/$GC_PART.kv"; }
tools() { "$GC_BIN/asrl-tools" "$@"; }
log() { echo "[$GC_PART +$((SECONDS))s] $*" >&2; }

# Memory in use now, MiB: the GPU's used memory (one process at a time uses it here), or the RSS
# of process $1 on CPU.
mem_now() {
  if [[ $GC_DEVICE == cuda* ]]; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i "${GC_DEVICE#cuda:}" 2>/dev/null | head -n1
  else
    awk '/^VmRSS:/ {print int($2 / 1024)}' "/proc/$1/status" 2>/dev/null || echo 0
  fi
}

# measured LABEL SECS CMD...: runs CMD (stdout to $GC_WORK/LABEL.out), kills it after SECS, and
# records LABEL.peak_mib (GPU: used memory above the level before it started; CPU: peak RSS).
measured() {
  local label=$1 secs=$2 base=0 peak=0 cur pid rc=0
  shift 2
  [[ $GC_DEVICE == cuda* ]] && base=$(mem_now)
  "$@" >"$GC_WORK/$label.out" &
  pid=$!
  local end=$((SECONDS + secs))
  while kill -0 "$pid" 2>/dev/null; do
    cur=$(mem_now "$pid")
    [[ $cur =~ ^[0-9]+$ ]] && ((cur - base > peak)) && peak=$((cur - base))
    if ((SECONDS >= end)); then
      log "$label: killed after ${secs}s"
      kill -TERM "$pid" 2>/dev/null; sleep 2; kill -KILL "$pid" 2>/dev/null
      break
    fi
    sleep 0.2
  done
  wait "$pid" || rc=$?
  cat "$GC_WORK/$label.out"
  kv "$label.peak_mib" "$peak"
  kv "$label.exit" "$rc"
  return "$rc"
}

# Seconds left in this part (its budget minus what it used), at least 5.
left() { local l=$((GC_BUDGET - SECONDS)); echo $((l > 5 ? l : 5)); }

no_torch() { # reason the torch side does not run, empty when it does
  [[ $GC_TORCH == ok ]] || echo "torch not usable with $GC_PY on $GC_DEVICE: $GC_TORCH"
}

part_parity() {
  local cases="$GC_WORK/parity-cases.txt" name model dtype greedy len
  : >"$cases"
  # name, model dir, dtype, greedy (check: must match; info: recorded only; off), length
  local list=(
    "tiny-qwen3-f32 $repo/tests/fixtures/tiny-qwen3 f32 check 32"
    "tiny-llama-f32 $repo/tests/fixtures/tiny-llama f32 check 32"
    "tiny-qwen3-bf16 $repo/tests/fixtures/tiny-qwen3 bf16 off 32"
    "${GC_SHAPE//./_}-f32 $GC_MODEL f32 info 64"
    "${GC_SHAPE//./_}-bf16 $GC_MODEL bf16 off 64"
  )
  local failed=0
  for c in "${list[@]}"; do
    read -r name model dtype greedy len <<<"$c"
    log "asrl-tools parity $name"
    if measured "asrl.$name" "$(left)" "$GC_BIN/asrl-tools" parity --model "$model" --dtype "$dtype" --device "$GC_DEVICE" \
      --len "$len" --out "$GC_WORK/parity/$name"; then
      kv "asrl.$name.seconds" "$(python_get "$GC_WORK/parity/$name/parity.json" seconds)"
      echo "$name $model $dtype $GC_WORK/parity/$name $greedy" >>"$cases"
    else
      failed=1
    fi
  done
  local why
  why=$(no_torch)
  if [[ -n $why ]]; then
    kv status "$([[ $failed == 1 ]] && echo error || echo skipped)"
    kv reason "$why (the asrl side ran)"
    return
  fi
  log "torch_side.py parity"
  measured torch.parity "$(left)" "$GC_PY" "$here/torch_side.py" parity --device "$GC_DEVICE" \
    --cases "$cases" --out "$GC_RESULTS/parity.checks.json" $GC_THREADS || failed=1
  if [[ $failed == 1 ]]; then
    kv status fail
    kv reason "a parity run failed (see logs/parity.log)"
  elif grep -q '"status": "fail"' "$GC_RESULTS/parity.checks.json" 2>/dev/null; then
    kv status fail
    kv reason "$(grep -c '"status": "fail"' "$GC_RESULTS/parity.checks.json") checks out of tolerance"
  fi
}

python_get() { # FILE KEY: a JSON value, compact
  "$GC_PY" -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))[sys.argv[2]], separators=(",", ":")))' "$1" "$2"
}

part_rollout() {
  local n=6 max_new=300 prompts=(
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?"
    "Weng earns \$12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?"
    "Betty is saving money for a new wallet which costs \$100. Betty has only half of the money she needs. Her parents decided to give her \$15 for that purpose, and her grandparents twice as much as her parents. How much more money does Betty need to buy the wallet?"
    "Julie is reading a 120-page book. Yesterday, she was able to read 12 pages and today, she read twice as many pages as yesterday. If she wants to read half of the remaining pages tomorrow, how many pages should she read?"
    "James writes a 3-page letter to 2 different friends twice a week. How many pages does he write a year?"
    "Mark has a garden with flowers. He planted plants of three different colors in it. Ten of them are yellow, and there are 80% more of those in purple. There are only 25% as many green flowers as there are yellow and purple flowers. How many flowers does Mark have in his garden?"
    "Albert is wondering how much pizza he can eat in one day. He buys 2 large pizzas and 2 small pizzas. A large pizza has 16 slices and a small pizza has 8 slices. If he eats it all, how many pieces does he eat that day?"
    "What is 7 times 8?"
  )
  [[ $GC_QUICK == 1 ]] && { n=2; max_new=16; prompts=("${prompts[@]:6:2}"); }
  local args=() p
  for p in "${prompts[@]}"; do args+=(--prompt "$p"); done
  kv shape "${#prompts[@]} questions x $n completions x $max_new new tokens, $GC_DTYPE, $GC_SHAPE"
  log "asrl-tools bench generate"
  local out
  # Half of what is left, so that transformers still gets its turn when ours is slow.
  if out=$(measured asrl.generate "$(($(left) / 2))" "$GC_BIN/asrl-tools" bench generate --model "$GC_MODEL" --dtype "$GC_DTYPE" \
    --device "$GC_DEVICE" -n "$n" --max-new-tokens "$max_new" --repeats 1 "${args[@]}"); then
    echo "$out"
    kv asrl.tokens_per_s "$(sed -n 's/^tokens_per_s=//p' <<<"$out")"
  else
    kv status error
    kv reason "asrl-tools bench generate failed or timed out (see logs)"
  fi
  local why
  why=$(no_torch)
  if [[ -n $why ]]; then kv torch_skipped "$why"; return; fi
  "$GC_PY" -c 'import json,sys; json.dump(sys.argv[1:], open("'"$GC_WORK"'/prompts.json", "w"))' "${prompts[@]}"
  log "transformers generate"
  if measured torch.generate "$(left)" "$GC_PY" "$here/torch_side.py" generate --device "$GC_DEVICE" --model "$GC_MODEL" \
    --dtype "$GC_DTYPE" -n "$n" --max-new "$max_new" --prompts "$GC_WORK/prompts.json" --out "$GC_WORK/torch-generate.json" $GC_THREADS; then
    kv torch.tokens_per_s "$(python_get "$GC_WORK/torch-generate.json" tokens_per_s)"
  else
    kv status error
    kv reason "transformers generate failed or timed out (see logs)"
  fi
}

part_train() {
  local seq=2000 rank=32 steps=3 rows=6 prompt=1700 completion=300
  [[ $GC_QUICK == 1 ]] && { seq=64; rank=8; steps=2; rows=2; prompt=48; completion=16; }
  kv shape "$GC_SHAPE $GC_DTYPE base, LoRA r $rank, SFT seq $seq, GRPO $rows x ($prompt + $completion), $steps timed steps"
  local out status=""
  log "asrl-tools bench sft --seq $seq"
  if out=$(measured asrl.sft "$(($(left) / 2))" "$GC_BIN/asrl-tools" bench sft --model "$GC_MODEL" --dtype "$GC_DTYPE" --device "$GC_DEVICE" \
    --seq "$seq" --rank "$rank" --steps "$steps"); then
    echo "$out"
    kv asrl.sft.tokens_per_s "$(sed -n 's/^candle_tokens_per_second=//p' <<<"$out")"
  else
    status=error
  fi
  # The GRPO mode of `bench sft` (worktree bench: `--mode sft|grpo`), when this build has it.
  if "$GC_BIN/asrl-tools" bench sft --help 2>/dev/null | grep -q 'grpo'; then
    local grpo_args
    read -r -a grpo_args <<<"${ASRL_GRPO_BENCH_ARGS:---mode grpo --group-size $rows --prompt-tokens $prompt --completion-tokens $completion}"
    log "asrl-tools bench sft ${grpo_args[*]}"
    if out=$(measured asrl.grpo "$(($(left) / 2))" "$GC_BIN/asrl-tools" bench sft --model "$GC_MODEL" --dtype "$GC_DTYPE" \
      --device "$GC_DEVICE" --rank "$rank" --steps "$steps" "${grpo_args[@]}"); then
      echo "$out"
      kv asrl.grpo.tokens_per_s "$(sed -n 's/^candle_tokens_per_second=//p' <<<"$out")"
    else
      status=error
    fi
  else
    kv asrl.grpo_skipped "this asrl-tools' bench sft has no GRPO mode"
  fi
  local why
  why=$(no_torch)
  if [[ -z $why ]]; then
    log "PEFT train"
    if measured torch.train "$(left)" "$GC_PY" "$here/torch_side.py" train --device "$GC_DEVICE" --model "$GC_MODEL" \
      --dtype "$GC_DTYPE" --rank "$rank" --seq "$seq" --steps "$steps" --grpo-rows "$rows" --grpo-prompt "$prompt" \
      --grpo-completion "$completion" --out "$GC_WORK/torch-train.json" $GC_THREADS; then
      kv torch.sft "$(python_get "$GC_WORK/torch-train.json" sft)"
      kv torch.grpo "$(python_get "$GC_WORK/torch-train.json" grpo)"
    else
      status=error
    fi
  else
    kv torch_skipped "$why"
  fi
  if [[ -n $status ]]; then
    kv status "$status"
    kv reason "a benchmark failed or timed out (see logs)"
  fi
}

part_run() {
  local dir="$GC_WORK/run" model=$GC_MODEL dtype=$GC_DTYPE
  if [[ $GC_RUN_MODEL == tiny ]]; then model="$repo/tests/fixtures/tiny-qwen3"; dtype=f32; fi
  local n=4 max_new=48 questions=2 sft=8
  [[ $GC_QUICK == 1 ]] && { n=2; max_new=6; questions=2; sft=4; }
  mkdir -p "$dir"
  tools demo-data --count 40 --seed 2 --out "$dir/data.jsonl" >/dev/null || { kv status error; return; }
  cat >"$dir/run.toml" <<EOF
[model]
path = "$model"
dtype = "$dtype"
device = "$GC_DEVICE"
[lora]
r = 8
[sampling]
n = $n
max_new_tokens = $max_new
[schedule]
epochs = 2
questions_per_epoch = $questions
sft_examples_per_epoch = $sft
[run]
dir = "$dir/run"
[learner]
addr = "127.0.0.1:0"
[workers]
devices = ["$GC_DEVICE"]
[data]
path = "$dir/data.jsonl"
[sft]
grad_accum_steps = 2
[eval]
generate_examples = 2
loss_examples = 2
[leases]
heartbeat_interval_ms = 200
no_work_retry_ms = 50
EOF
  kv shape "$(basename "$model") $dtype, 2 epochs, $questions questions x $n completions x $max_new tokens, $sft SFT examples"
  log "scripts/launch.sh"
  local rc=0
  measured asrl.run "$(left)" bash "$repo/scripts/launch.sh" --config "$dir/run.toml" --bin "$GC_BIN" --logs "$dir/logs" \
    -- --fresh || rc=$?
  cp "$dir/logs/summary.txt" "$GC_RESULTS/run.summary.txt" 2>/dev/null
  cp "$dir/logs/"*.log "$GC_LOGS/" 2>/dev/null
  if [[ $rc != 0 ]]; then
    kv status error
    kv reason "launch.sh exited with $rc (see logs/learner.log, logs/worker-0.log)"
  elif [[ ! -s $GC_RESULTS/run.summary.txt ]]; then
    kv status fail
    kv reason "the run ended without a summary table"
  fi
}

if [[ ${1:-} == __part ]]; then
  GC_PART=$2
  SECONDS=0
  "part_$GC_PART"
  exit $?
fi

# --- the driver --------------------------------------------------------------------------------

die() { echo "error: $*" >&2; exit 2; }
device=cuda:0 bin="" bundle="" out=${OUT:-gpu-report} work="" keep=0 quick=0 parts=parity,rollout,train,run
run_model=qwen3-0.6b total=460
declare -A budget=([setup]=45 [parity]=110 [rollout]=80 [train]=120 [run]=100)
declare -A budget_set=()
while (($#)); do
  case "$1" in
    --device) device=$2; shift ;;
    --bin) bin=$2; shift ;;
    --bundle) bundle=$2; shift ;;
    --out) out=$2; shift ;;
    --work) work=$2; shift ;;
    --keep-work) keep=1 ;;
    --quick) quick=1 ;;
    --parts) parts=$2; shift ;;
    --run-model) run_model=$2; shift ;;
    --budget) [[ $2 =~ ^(setup|parity|rollout|train|run)=([0-9]+)$ ]] || die "--budget $2: want PART=SECS"
      budget_set[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]}; shift ;;
    --total) [[ $2 =~ ^[0-9]+$ ]] || die "--total $2: want seconds"; total=$2; shift ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  (($# >= 1)) || die "missing value"
  shift
done
[[ $device =~ ^(cpu|cuda:[0-9]+)$ ]] || die "--device $device: want cpu or cuda:N"
[[ $run_model =~ ^(qwen3-0.6b|tiny)$ ]] || die "--run-model $run_model: want qwen3-0.6b or tiny"
IFS=, read -r -a part_list <<<"$parts"
for p in "${part_list[@]}"; do [[ $p =~ ^(parity|rollout|train|run)$ ]] || die "--parts: unknown part $p"; done
if [[ $quick == 1 ]]; then for k in "${!budget[@]}"; do budget[$k]=60; done; run_model=tiny; fi
for k in "${!budget_set[@]}"; do budget[$k]=${budget_set[$k]}; done
py=${PYTHON:-python3}
command -v "$py" >/dev/null || die "$py not found (set PYTHON): the report is written with it"

start=$SECONDS
mkdir -p "$out" || die "cannot create --out $out"
out=$(cd "$out" && pwd)
if [[ -z $work ]]; then work=$(mktemp -d "${TMPDIR:-/tmp}/asrl-gpu-check.XXXXXX"); else mkdir -p "$work"; fi
work=$(cd "$work" && pwd)
((keep == 1)) || trap 'rm -rf "$work"' EXIT
results="$work/results" logs="$work/logs"
rm -rf "$results" "$logs" "$out/report.json" "$out/report.md" "$out/logs.tar.gz"
mkdir -p "$results" "$logs"
setup_kv() { printf '%s=%s\n' "$1" "$2" >>"$results/setup.kv"; }
note() { echo "== $*"; }

# Setup: binaries, CUDA libraries from python's nvidia wheels, torch probe, the random model.
setup() {
  if [[ -n $bundle ]]; then
    [[ -f $bundle ]] || { echo "--bundle $bundle: no such file" >&2; return 2; }
    mkdir -p "$work/bundle"
    tar -xJf "$bundle" -C "$work/bundle" || return 2
    bin=${bin:-$work/bundle}
    setup_kv bundle "$bundle ($(du -k "$bundle" | cut -f1) KiB)"
  fi
  bin=${bin:-$repo/target/release}
  bin=$(cd "$bin" 2>/dev/null && pwd) || { echo "--bin $bin: no such directory" >&2; return 2; }
  local b
  for b in asrl-learner asrl-rollout-worker asrl-tools; do
    [[ -x $bin/$b ]] || { echo "$bin/$b missing (build it, or pass --bundle)" >&2; return 2; }
  done
  setup_kv bin "$bin"
  [[ -f $bin/VERSIONS.txt ]] && setup_kv build "$(grep -E '^(git|built|CUDA_COMPUTE_CAP)' "$bin/VERSIONS.txt" | paste -sd';' -)"
  if [[ $device == cuda* ]]; then
    setup_kv gpu "$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader -i "${device#cuda:}" 2>&1 | head -n1)"
    # The bundle carries no CUDA libraries: the machine's python wheels provide them.
    local libs
    libs=$("$py" - <<'PY' 2>/dev/null
import glob, os
try:
    import nvidia
    roots = list(nvidia.__path__)
except ImportError:
    roots = []
dirs = []
for r in roots:
    for d in [os.path.join(r, "cu13", "lib")] + sorted(glob.glob(os.path.join(r, "*", "lib"))):
        if os.path.isdir(d) and d not in dirs:
            dirs.append(d)
print(":".join(dirs))
PY
)
    [[ -n $libs ]] && export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    setup_kv cuda_libs "${libs:-none found}"
    local missing
    missing=$(ldd "$bin/asrl-tools" 2>&1 | grep 'not found' | awk '{print $1}' | paste -sd' ' -)
    [[ -z $missing ]] || { echo "unresolved libraries: $missing (LD_LIBRARY_PATH=$LD_LIBRARY_PATH)" >&2; return 2; }
  fi
  local probe
  if probe=$("$py" "$here/torch_side.py" probe "$device" 2>&1); then torch=ok; setup_kv torch "$probe"; else
    torch=$(tail -n1 <<<"$probe"); setup_kv torch "unavailable: $torch"; fi
  note "torch: $probe"
  if [[ $quick == 1 ]]; then shape=qwen3-mini; else shape=qwen3-0.6b; fi
  local t=$SECONDS
  "$bin/asrl-tools" random-model --shape "$shape" --tokenizer-from "$repo/tests/fixtures/tiny-qwen3" \
    --out "$work/$shape" || return 1
  setup_kv random_model_seconds "$((SECONDS - t))"
}

note "gpu-check: device $device, parts $parts$([[ $quick == 1 ]] && echo ', quick'), out $out"
torch="not probed" shape=qwen3-0.6b
t0=$SECONDS
setup_status=pass
setup >"$logs/setup.log" 2>&1 || setup_status=error
cat "$logs/setup.log"
printf '%s %s %s\n' "$setup_status" "$((SECONDS - t0))" "${budget[setup]}" >"$results/setup.status"

export GC_DEVICE=$device GC_BIN=$bin GC_WORK=$work GC_RESULTS=$results GC_LOGS=$logs GC_QUICK=$quick \
  GC_PY=$py GC_TORCH=$torch GC_SHAPE=$shape GC_MODEL="$work/$shape" GC_RUN_MODEL=$run_model GC_DTYPE=bf16 \
  GC_THREADS=""
if [[ $device == cpu ]]; then
  # bf16 on CPU is an emulation; the rehearsal checks the plumbing in f32 (parity still covers bf16).
  GC_DTYPE=f32
  GC_THREADS="--threads $(nproc 2>/dev/null || echo 2)"
fi
for p in parity rollout train run; do
  if [[ ",$parts," != *",$p,"* ]]; then
    echo "not_selected 0 0" >"$results/$p.status"
    continue
  fi
  if [[ $setup_status != pass ]]; then
    echo "error 0 0 setup failed" >"$results/$p.status"
    continue
  fi
  b=${budget[$p]} left=$((total - (SECONDS - start) - 15))
  ((left < b)) && b=$left
  if ((left < 10)); then
    echo "timeout 0 0 no time left of --total $total" >"$results/$p.status"
    continue
  fi
  note "part $p (budget ${b}s)"
  t0=$SECONDS
  rc=0
  # timeout signals the whole process group, so launch.sh's learner and worker go too.
  GC_BUDGET=$b timeout -k 5 "$b" "$self" __part "$p" > >(tee "$logs/$p.log") 2>&1 || rc=$?
  case $rc in
    0) st=pass ;;
    124|137) st=timeout ;;
    *) st=error ;;
  esac
  printf '%s %s %s\n' "$st" "$((SECONDS - t0))" "$b" >"$results/$p.status"
done

tar -czf "$out/logs.tar.gz" -C "$work" logs 2>/dev/null
"$py" "$here/report.py" --results "$results" --out "$out" --device "$device" --quick "$quick" \
  --seconds "$((SECONDS - start))" --git "$(cd "$repo" && git rev-parse --short HEAD 2>/dev/null || echo unknown)"
