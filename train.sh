#!/usr/bin/env bash
# Train the R repetitions of a dataset as independent jobs in detached tmux sessions, spread over GPUs.
#
#   ./train.sh --dataset delicious --wait                       # CPU: all repetitions, then report
#   ./train.sh --dataset amazon3m --gpus 0,1,2,3,4,5,6,7 --per-gpu 2   # 16 jobs, 2 per GPU
#   ./train.sh --dataset delicious --status | --stop
#   ./train.sh --dataset delicious --R 4 --jobs 2 -- --set epochs=3   # after --: passed to train.py
#   ./train.sh --dataset amazon3m --ray auto --wait        # Ray tasks on a cluster (docs/scaling.md)
#
# Each job is one session `mach-<dataset>-<id>-rNN` (or `...-rNN-MM` for a block of repetitions; <id>
# tells work directories apart), logs to <work>/<dataset>/jobs/<job>.log and leaves its exit code in
# <job>.exit. Repetitions are independent, so a failing job never stops the others. Launching again
# resumes: finished repetitions are left alone, interrupted ones continue from their last epoch.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; cat <<'EOF'
Options:
  --dataset NAME   preset from config.py (default: delicious)
  --R N            repetitions to train (default: the R of the last launch here, else the preset's)
  --gpus LIST      GPU ids, e.g. 0,1,2,3; 'none' for CPU (default: all visible GPUs, else CPU)
  --per-gpu N      concurrent jobs per GPU (default: 2); each job gets --gpu-mem MB if given
  --gpu-mem MB     GPU memory cap per job (default: memory growth)
  --jobs N         concurrent jobs on CPU (default: 1; each uses nproc/N threads)
  --work-dir DIR   outputs (default: work)
  --overwrite      retrain repetitions that already have checkpoints (default: resume them)
  --wait           wait for all jobs; exit 1 naming the repetitions that failed
  --status         each job's last epoch line; exit 1 if a job failed      --stop   kill them
  --ray ADDRESS    run the jobs as Ray tasks on the cluster at HOST:PORT ('auto': this node's);
                   more options: ./train.sh --ray auto --help
EOF
}

repo=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-$([ -x "$repo/.venv/bin/python" ] && echo "$repo/.venv/bin/python" || echo python3)}
dataset=delicious R="" gpus="" per_gpu=2 gpu_mem="" jobs=1 work_dir=work
mode="" action=launch wait=0 extra=()
# --ray: src/mach/ray_launch.py takes over, with every option as given (it reads the same ones).
for arg in "$@"; do
  [ "$arg" = -- ] && break
  [ "$arg" = --ray ] && exec "$python" -m mach.distributed.launch "$@"
done
while [ $# -gt 0 ]; do
  case "$1" in
    --dataset) dataset=$2; shift 2 ;;
    --R) R=$2; shift 2 ;;
    --gpus) gpus=$2; shift 2 ;;
    --per-gpu) per_gpu=$2; shift 2 ;;
    --gpu-mem) gpu_mem=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --work-dir) work_dir=$2; shift 2 ;;
    --resume) mode=""; shift ;;  # the default; kept for older command lines
    --overwrite) mode=--overwrite; shift ;;
    --wait) wait=1; shift ;;
    --status) action=status; shift ;;
    --stop) action=stop; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "train.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

die() { echo "train.sh: $*" >&2; exit 2; }
positive() { [[ "$2" =~ ^[1-9][0-9]*$ ]] || die "$1 $2: expected a positive integer"; }
positive --per-gpu "$per_gpu"; positive --jobs "$jobs"
[ -z "$R" ] || positive --R "$R"
[ -z "$gpu_mem" ] || positive --gpu-mem "$gpu_mem"
[[ "$dataset" =~ ^[A-Za-z0-9][A-Za-z0-9._+-]*$ ]] || die "--dataset $dataset: expected letters, digits and . _ + -"

have_tmux=1
command -v tmux >/dev/null || have_tmux=0
if [ "$have_tmux" = 0 ] && [ "$action" != status ]; then
  echo "train.sh: tmux is not installed; install it with 'sudo apt-get install tmux' (Debian/Ubuntu)," \
       "'sudo dnf install tmux' (Fedora) or 'brew install tmux' (macOS)" >&2
  exit 127
fi

job_dir="$work_dir/$dataset/jobs"
# Sessions carry an id of the work directory, and are matched whole: another dataset whose name starts
# with this one, or the same dataset in another work directory, is never touched.
work_id=$(realpath -m "$work_dir" | cksum | awk '{printf "%06x", $1 % 16777216}')
prefix="mach-$dataset-$work_id-"
sessions() {
  [ "$have_tmux" = 1 ] || return 0
  tmux list-sessions -F '#{session_name}' 2>/dev/null | grep -E "^${prefix//./\\.}r[0-9]+(-[0-9]+)?\$" || true
}

# A job's progress: the last epoch line of its log (train.py prints one per epoch), never library noise.
progress() {
  local line
  line=$(grep -a '^epoch=' "$job_dir/$1.log" 2>/dev/null | tail -n 1)
  echo "${line:-starting}"
}

# Prints "name status" per job and returns 1 when any job failed.
report() {
  local failed=() f name code found=0
  for f in "$job_dir"/*.job; do
    [ -e "$f" ] || continue
    found=1
    name=$(basename "$f" .job)
    if [ -e "$job_dir/$name.exit" ]; then
      code=$(cat "$job_dir/$name.exit")
      if [ "$code" = 0 ]; then echo "$name done"; else echo "$name FAILED exit=$code (log: $job_dir/$name.log)"; failed+=("$(cat "$f")"); fi
    elif [ "$have_tmux" = 0 ]; then
      echo "$name no exit code yet (tmux is not installed here, so whether it runs is unknown): $(progress "$name")"
    elif sessions | grep -qx "$prefix$name"; then
      echo "$name running: $(progress "$name")"
    else
      echo "$name FAILED: session ended without an exit code (killed?)"; failed+=("$(cat "$f")")
    fi
  done
  [ "$found" = 1 ] || echo "no jobs of $dataset in $work_dir (train.sh has not launched any there)"
  if [ ${#failed[@]} -gt 0 ]; then echo "failed repetitions: ${failed[*]}"; return 1; fi
}

# The flags that reach the same jobs again, for the hints printed below.
same=(--dataset "$dataset")
[ "$work_dir" = work ] || same+=(--work-dir "$work_dir")
hint="$0 $(printf '%q ' "${same[@]}")"

case "$action" in
  status) report; exit $? ;;
  stop)
    running=$(sessions)
    [ -n "$running" ] || { echo "no running jobs of $dataset in $work_dir: nothing to stop"; exit 0; }
    for s in $running; do tmux kill-session -t "$s"; echo "stopped $s"; done; exit 0 ;;
esac

if [ -n "$(sessions)" ] && [ "$wait" = 1 ]; then
  while [ -n "$(sessions)" ]; do sleep 2; done
  report; exit $?
elif [ -n "$(sessions)" ]; then
  echo "train.sh: jobs of $dataset are still running ($(sessions | tr '\n' ' ')); use ${hint}--status, --wait or --stop" >&2
  exit 1
fi

# Preprocess once here (a no-op when up to date) rather than racing in every job.
# A relaunch without --R keeps the R of the last launch, so it resumes the same repetitions.
if [ -z "$R" ] && [ -s "$job_dir/launch.R" ]; then
  R=$(cat "$job_dir/launch.R"); echo "R=$R (from the last launch, $job_dir/launch.R; pass --R to change it)"
fi
"$python" "$repo/preprocess.py" --dataset "$dataset" --work-dir "$work_dir" ${R:+--set R=$R} "${extra[@]}"
[ -n "$R" ] || R=$("$python" "$repo/train.py" --dataset "$dataset" "${extra[@]}" --print R)
mkdir -p "$job_dir" && echo "$R" > "$job_dir/launch.R"

# Slots: per_gpu jobs on each GPU, or --jobs CPU jobs; repetitions are cut into one block per slot.
if [ -z "$gpus" ]; then
  if [ -n "${CUDA_VISIBLE_DEVICES+x}" ]; then gpus=$CUDA_VISIBLE_DEVICES
  elif command -v nvidia-smi >/dev/null; then gpus=$(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null | paste -sd, || true)
  fi
fi
[ "$gpus" = none ] && gpus=""
IFS=, read -r -a gpu_list <<< "$gpus"
if [ ${#gpu_list[@]} -gt 0 ]; then slots=$(( ${#gpu_list[@]} * per_gpu )); threads=0; else slots=$jobs; threads=$(( $(nproc) / jobs )); fi
[ "$slots" -gt "$R" ] && slots=$R
[ "$threads" -lt 1 ] && threads=1

mkdir -p "$job_dir"
rm -f "$job_dir"/*.job "$job_dir"/*.exit "$job_dir"/*.sh
for (( j = 0; j < slots; j++ )); do
  first=$(( j * R / slots )); last=$(( (j + 1) * R / slots - 1 ))
  name=$(printf 'r%02d' "$first"); [ "$last" -gt "$first" ] && name+=$(printf -- '-%02d' "$last")
  if [ ${#gpu_list[@]} -gt 0 ]; then device=${gpu_list[$(( j % ${#gpu_list[@]} ))]}; else device=""; fi
  flags=(--dataset "$dataset" --work-dir "$work_dir" --repetitions "$first-$last" --set R="$R" --set threads="$threads")
  [ -n "$gpu_mem" ] && flags+=(--set gpu_memory_mb="$gpu_mem")
  [ -z "$mode" ] || flags+=("$mode")
  if [ "$last" -gt "$first" ]; then echo "$first-$last"; else echo "$first"; fi > "$job_dir/$name.job"
  # The job script records train.py's own exit code, whatever tee does.
  {
    echo "export CUDA_VISIBLE_DEVICES='$device'"
    printf '%q ' "$python" "$repo/train.py" "${flags[@]}" "${extra[@]}"
    echo "2>&1 | tee -a '$job_dir/$name.log'"
    echo "echo \${PIPESTATUS[0]} > '$job_dir/$name.exit'"
  } > "$job_dir/$name.sh"
  tmux new-session -d -s "$prefix$name" "bash '$job_dir/$name.sh'"
  echo "started $prefix$name repetitions=$first-$last device=${device:-cpu} log=$job_dir/$name.log"
done

[ "$wait" = 1 ] || { echo "follow with: ${hint}--status (or --wait, --stop)"; exit 0; }
while [ -n "$(sessions)" ]; do sleep 2; done
report
