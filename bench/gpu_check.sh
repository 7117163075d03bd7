#!/usr/bin/env bash
# How many MACH repetitions one GPU holds: train.sh packs 1, 2, 4, 8 jobs on GPU 0 over an Amazon-670K-
# shaped synthetic set (K 670,091, D 135,909, (500, 500) hidden, B 10,000, batch 1000), then evaluates on
# the GPU. Writes gpu_check.json and gpu_check.md to --report-dir (default work/bench/gpu_check):
# examples/s per job and in total (from each repetition's train.json), GPU memory per job, evaluation.
#
#   bash bench/gpu_check.sh                  # on a GPU machine
#   bash bench/gpu_check.sh --tiny           # anywhere (CPU too): small shapes, packs 1 and 2; for CI
#   bash bench/gpu_check.sh --out DIR        # where the data and work dir go (default: a temp dir)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$([ -x "$repo/.venv/bin/python" ] && echo "$repo/.venv/bin/python" || echo python3)}
tiny=0 out="" report_dir=work/bench/gpu_check
while [ $# -gt 0 ]; do
  case "$1" in
    --tiny) tiny=1; shift ;;
    --out) out=$2; shift 2 ;;
    --report-dir) report_dir=$2; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$out" ] || out=$(mktemp -d)
mkdir -p "$out" "$report_dir"

if [ "$tiny" = 1 ]; then
  K=5000 D=2000 train_rows=1000 test_rows=300 packs="1 2" sets=(--set B=100 --set "hidden=(64,)" --set batch_size=250)
else
  K=670091 D=135909 train_rows=100000 test_rows=10000 packs="1 2 4 8" sets=(--set B=10000 --set "hidden=(500,500)" --set batch_size=1000)
fi
gpus=none
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then gpus=0; fi
echo "gpu_check: K=$K D=$D train_rows=$train_rows packs=[$packs] device=$([ "$gpus" = 0 ] && nvidia-smi --query-gpu=name --format=csv,noheader | head -n1 || echo cpu)"

# Amazon-670K's shape: 5.45 labels and about 76 features a row.
"$python" -m mach.data.synthetic --K "$K" --D "$D" --train-rows "$train_rows" --test-rows "$test_rows" \
  --labels-per-row 5.45 --features-per-label 12 --noise-features 24 --out "$out/data" >/dev/null
common=(--dataset gpucheck --work-dir "$out/work" --set "train_file='$out/data/train.txt'" \
        --set "test_file='$out/data/test.txt'" --set epochs=1 --set recipe=official --set loss=bce "${sets[@]}")
"$python" "$repo/preprocess.py" "${common[@]}" --set R=8 >/dev/null

: > "$out/runs.tsv"
for pack in $packs; do
  mem_log="$out/gpu_mem_$pack.csv"
  if [ "$gpus" = 0 ]; then
    # Sample each process's GPU memory while the jobs run.
    (while true; do nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits >> "$mem_log" 2>/dev/null || true; sleep 1; done) &
    sampler=$!
  fi
  start=$(date +%s%N)
  bash "$repo/train.sh" --dataset gpucheck --work-dir "$out/work" --R "$pack" --gpus "$gpus" --per-gpu "$pack" \
    --jobs "$pack" --overwrite --wait -- "${common[@]:4}" >/dev/null
  seconds=$(awk -v a="$start" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
  [ "$gpus" = 0 ] && kill "$sampler" 2>/dev/null || true
  # Each job's rate comes from its repetition's train.json (gpu_check_report.py); here only the wall.
  printf '%s\t%s\n' "$pack" "$seconds" >> "$out/runs.tsv"
  echo "gpu_check: pack=$pack done in ${seconds}s"
done

# Evaluate the repetitions of the largest pack, on the GPU when there is one: the exact merge on the
# host (the compiled kernel; the [rows, R, B] logits copied over) and in the graph on the device.
for where in host device; do
  "$python" "$repo/evaluate.py" "${common[@]}" --set R="$pack" --set merge_device="$where" \
    > "$out/evaluate_$where.log"
  cp "$(ls "$out"/work/gpucheck/B*/*/metrics.json | head -n 1)" "$out/metrics_$where.json"
done
"$python" "$repo/bench/gpu_check_report.py" --out "$out" --report-dir "$report_dir" --tiny "$tiny" \
  --device "$([ "$gpus" = 0 ] && nvidia-smi --query-gpu=name --format=csv,noheader | head -n1 || lscpu | sed -n 's/^Model name: *//p')"
