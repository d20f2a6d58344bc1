#!/usr/bin/env bash
# Starts a learner and one rollout worker per device from one config, waits until the learner is
# healthy, shows progress, prints the summary at the end, and stops everything on Ctrl-C.
#
#   scripts/launch.sh --config configs/demo-cpu.toml [--devices cpu,cpu] [--logs DIR]
#                     [--bin DIR] [-- LEARNER TRAIN ARGS...]
#
#   --devices   comma-separated worker devices (default: the config's workers.devices).
#               Rollouts on a second GPU: --devices cuda:1 (learner on model.device, e.g. cuda:0);
#               two workers sharing the learner's GPU, each on its own stream: --devices cuda:0,cuda:0
#   --logs      where logs go (default: <run.dir>/logs): learner.log, worker-N.log, summary.txt
#   --bin       directory holding asrl-learner and asrl-rollout-worker (default: target/release,
#               built if missing)
#   after --     extra arguments for `asrl-learner train` (e.g. --fresh, --epochs 5, --run-dir D)
#
# A worker that dies (crash, OOM kill, kill -9) is restarted with backoff (1 s doubling to 60 s;
# back to 1 s once a worker has run for 60 s), and the script says so; its prompts go to the
# other workers meanwhile (the learner re-queues a silent worker's leases).
#
# Ctrl-C (or SIGTERM) stops the learner at a safe point (run the same command again to resume from its last
# checkpoint) and the workers after their current call.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

config="" devices="" logs="" bin=""
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --config) config=$2; shift 2 ;;
    --devices) devices=$2; shift 2 ;;
    --logs) logs=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ -n "$config" ]] || { echo "error: --config FILE is required (see --help)" >&2; exit 2; }
[[ -f "$config" ]] || { echo "error: --config $config: no such file" >&2; exit 2; }

if [[ -z "$bin" ]]; then
  bin="$root/target/release"
  if [[ ! -x "$bin/asrl-learner" || ! -x "$bin/asrl-rollout-worker" ]]; then
    echo "== building release binaries"
    (cd "$root" && cargo build --release -q -p asrl-learner -p asrl-rollout-worker)
  fi
fi
learner_bin="$bin/asrl-learner"
worker_bin="$bin/asrl-rollout-worker"

# The config as the learner resolves it (also validates it before anything starts).
"$learner_bin" config --config "$config" >/dev/null
run_dir=$("$learner_bin" config --config "$config" --get run.dir)
for ((i = 0; i < ${#extra[@]}; i++)); do
  [[ "${extra[$i]}" == "--run-dir" ]] && run_dir=${extra[$((i + 1))]}
done
if [[ -z "$devices" ]]; then
  devices=$("$learner_bin" config --config "$config" --get workers.devices | paste -sd, -)
fi
[[ -n "$devices" ]] || echo "note: no worker devices configured; the learner waits for remote workers"
logs=${logs:-$run_dir/logs}
mkdir -p "$logs"
rm -f "$logs/learner.addr"

learner_pid=""
worker_pids=()
all_pids() { echo "$learner_pid" "${worker_pids[@]}"; }
stop() {
  trap - INT TERM
  echo
  echo "== stopping (learner checkpoints at its next safe point; rerun to resume)"
  # TERM, not INT: background children of a non-interactive shell ignore SIGINT.
  for pid in $(all_pids); do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in $(all_pids); do wait "$pid" 2>/dev/null || true; done
  exit 130
}
trap stop INT TERM

"$learner_bin" train --config "$config" --addr-file "$logs/learner.addr" "${extra[@]}" \
  >"$logs/summary.txt" 2>"$logs/learner.log" &
learner_pid=$!

# Healthy = the address file exists: it is written once the service reports SERVING.
for _ in $(seq 1 600); do
  [[ -s "$logs/learner.addr" ]] && break
  if ! kill -0 "$learner_pid" 2>/dev/null; then
    echo "error: the learner exited during start-up; its log ($logs/learner.log) ends with:" >&2
    tail -n 5 "$logs/learner.log" >&2
    exit 2
  fi
  sleep 0.5
done
[[ -s "$logs/learner.addr" ]] || { echo "error: learner not healthy after 300 s (see $logs/learner.log)" >&2; kill -TERM "$learner_pid"; exit 2; }
addr=$(cat "$logs/learner.addr")
echo "== learner healthy on $addr (run dir $run_dir)"

# Workers reach the learner over https when the config sets up TLS.
scheme=http
[[ -n "$("$learner_bin" config --config "$config" --get learner.tls_cert 2>/dev/null)" ||
   -n "$("$learner_bin" config --config "$config" --get learner.tls_ca 2>/dev/null)" ]] && scheme=https

IFS=, read -r -a device_list <<<"$devices"
worker_started=() worker_delay=() worker_due=()
start_worker() {
  local i=$1
  # Appends: a restarted worker's log follows its predecessor's.
  "$worker_bin" run --config "$config" --learner "$scheme://$addr" --device "${device_list[$i]}" --name "worker-$i" \
    >>"$logs/worker-$i.log" 2>&1 &
  worker_pids[$i]=$!
  worker_started[$i]=$SECONDS
  worker_due[$i]=0
}
for i in "${!device_list[@]}"; do
  : >"$logs/worker-$i.log"
  worker_delay[$i]=1
  start_worker "$i"
  echo "== worker-$i on ${device_list[$i]}"
done
echo "== logs: $logs/learner.log, $logs/worker-N.log; status: grpcurl -plaintext $addr asrl.v1.Learner/GetStatus"
echo "== Ctrl-C stops everything"

# Restarts dead workers with backoff while the learner runs.
supervise_workers() {
  local i pid code
  for i in "${!device_list[@]}"; do
    pid=${worker_pids[$i]}
    if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
      code=0
      wait "$pid" 2>/dev/null || code=$?
      (( SECONDS - worker_started[$i] >= 60 )) && worker_delay[$i]=1
      echo "== worker-$i exited (status $code); restarting it in ${worker_delay[$i]} s (log: $logs/worker-$i.log)"
      worker_pids[$i]=""
      worker_due[$i]=$(( SECONDS + worker_delay[$i] ))
      worker_delay[$i]=$(( worker_delay[$i] * 2 > 60 ? 60 : worker_delay[$i] * 2 ))
    elif [[ -z "$pid" ]] && (( SECONDS >= worker_due[$i] )); then
      start_worker "$i"
      echo "== worker-$i restarted (pid ${worker_pids[$i]})"
    fi
  done
}

# Progress: the learner's epoch-level lines as they come (tail ends with the learner).
tail -n +1 -F --pid="$learner_pid" "$logs/learner.log" 2>/dev/null |
  grep --line-buffered -E "epoch [0-9]+:|phase done|validation generations|epoch [0-9]+ done|early stopping|ERROR|error:" |
  sed -u -E 's/^[^ ]+ +[A-Z]+ +[a-z_:]+: //' &

while kill -0 "$learner_pid" 2>/dev/null; do
  supervise_workers
  sleep 0.5
done
status=0
wait "$learner_pid" || status=$?
for pid in "${worker_pids[@]}"; do [[ -n "$pid" ]] && kill -TERM "$pid" 2>/dev/null || true; done
for pid in "${worker_pids[@]}"; do [[ -n "$pid" ]] && wait "$pid" 2>/dev/null || true; done
echo
if [[ $status -eq 0 ]]; then
  cat "$logs/summary.txt"
else
  echo "error: the learner exited with status $status; its log ($logs/learner.log) ends with:" >&2
  tail -n 10 "$logs/learner.log" >&2
fi
exit "$status"
