#!/usr/bin/env bash
# This project's figures on a GPU machine, in one command: the machine, then bench/gpu_proxy.py (a MACH
# repetition's training at the paper's shapes on the GPU, 1..8 packed processes, and evaluation: GPU
# forward pass + this project's merge kernel on the CPU), then bench/merge_bench.py over 1..16 kernel
# threads. Results go to --out DIR (default work/bench/device_check) as they come, so a run cut short
# still leaves what it finished. Recorded runs: experiments/gpu-proxy-h200.
#
#   bash bench/device_check.sh              # on the GPU machine, python3 = a Python with PyTorch
#   bash bench/device_check.sh --tiny       # anywhere: small shapes, for a rehearsal
set -uo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
out=work/bench/device_check tiny=0
while [ $# -gt 0 ]; do
  case "$1" in
    --tiny) tiny=1; shift ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "device_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$repo"
export PYTHONUNBUFFERED=1
# mach from this clone's src/, where the kernel is built below (the machine need not have it installed).
export PYTHONPATH="$repo/src${PYTHONPATH:+:$PYTHONPATH}"

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo "no nvidia-smi"
  lscpu | grep -E '^(Model name|CPU\(s\)|L3)' || true
  "$python" --version
  "$python" -c "import tensorflow as tf; print('tensorflow', tf.__version__)" 2>&1 | tail -n 1
  "$python" -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"
} 2>&1 | tee "$out/machine.txt"

# The merge kernel, built for this Python (the evaluation part of gpu_proxy and merge_bench need it).
if "$python" setup.py build_ext --inplace > "$out/build.log" 2>&1; then
  echo "device_check: merge kernel built"
else
  echo "device_check: merge kernel build failed (tail of build.log):"; tail -n 5 "$out/build.log"
fi

if [ "$tiny" = 1 ]; then
  "$python" bench/gpu_proxy.py --shape tiny --packs 1,2 --seconds 2 --start-delay 8 --eval-rows 500 \
    --out "$out/proxy.jsonl" 2>&1 | tee "$out/proxy.txt"
  "$python" bench/merge_bench.py --K 100000 --B 1000 --threads 1,2 --repeats 1 2>&1 | tee "$out/merge.txt"
  exit 0
fi
threads=$(nproc)
"$python" bench/gpu_proxy.py --shape amazon670k --packs 1,2,4,8 --seconds 6 --start-delay 20 \
  --eval-rows 4000 --threads "$threads" --out "$out/proxy.jsonl" 2>&1 | tee "$out/proxy.txt"
"$python" bench/merge_bench.py --threads "1,2,4,8,$threads" --repeats 3 2>&1 | tee "$out/merge.txt"
"$python" bench/gpu_proxy.py --shape amazon3m --packs 1,2,4 --seconds 6 --start-delay 25 \
  --eval-rows 2000 --threads "$threads" --out "$out/proxy.jsonl" 2>&1 | tee -a "$out/proxy.txt"
