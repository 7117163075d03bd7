"""What one GPU gives a MACH repetition at the paper's shapes, measured with PyTorch, not TensorFlow.

For a GPU machine with PyTorch but without TensorFlow's GPU build (its wheel and CUDA libraries are
large): this script trains the same network as mach.model (sparse rows -> sum of first-layer rows ->
ReLU hidden layers -> B logits, BCE on the normalised multi-hot buckets, lazy Adam on the wide first
layer, Adam elsewhere) in PyTorch on synthetic batches that already sit on the GPU: a ceiling for the
model's arithmetic on that GPU, with no input pipeline, not a figure of this project's TensorFlow code.
Recorded runs: experiments/gpu-proxy-h200.

    python bench/gpu_proxy.py --shape amazon670k --packs 1,2,4,8 --out proxy.json
    python bench/gpu_proxy.py --shape tiny --packs 1,2 --seconds 2      # anywhere, on the CPU too

For each pack, that many processes start together, warm up, then train for --seconds side by side;
each reports its examples/s and peak GPU memory. Then one process times evaluation: the forward pass of
R networks over --eval-rows rows on the GPU and the merge of their logits by this project's compiled
kernel (mach.merge.merge_topk) on the CPU, when it is built.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

# Shapes of the presets in config.py; rows' non-zeros and labels are the datasets' means (XC repository).
SHAPES = {
    "amazon670k": dict(
        D=135_909, hidden=(500, 500), B=10_000, R=32, K=670_091, batch=1000, nnz=76, labels=5.45
    ),
    "amazon3m": dict(
        D=337_067, hidden=(4096,), B=10_000, R=16, K=2_812_281, batch=2000, nnz=36, labels=36.04
    ),
    "tiny": dict(D=2_000, hidden=(64,), B=100, R=4, K=5_000, batch=250, nnz=20, labels=3.0),
}


class Repetition(torch.nn.Module):
    """One MACH network: a sparse first layer (EmbeddingBag sum = row @ W1), ReLU layers, B logits."""

    def __init__(self, D, hidden, B):
        super().__init__()
        self.first = torch.nn.EmbeddingBag(D, hidden[0], mode="sum", sparse=True)
        self.first_bias = torch.nn.Parameter(torch.zeros(hidden[0]))
        sizes = list(hidden) + [B]
        self.rest = torch.nn.ModuleList(
            torch.nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])
        )

    def forward(self, indices, offsets, values):
        x = torch.relu(self.first(indices, offsets, per_sample_weights=values) + self.first_bias)
        for i, layer in enumerate(self.rest):
            x = layer(x)
            if i < len(self.rest) - 1:
                x = torch.relu(x)
        return x


def synthetic_batches(shape, n, device, seed):
    """n batches (indices, offsets, values, targets) on the device: max-normalised binary rows, targets
    the normalised multi-hot of `labels` random buckets a row (a MACH repetition's view of the labels).
    """
    g = torch.Generator(device=device).manual_seed(seed)
    batch, nnz, B = shape["batch"], shape["nnz"], shape["B"]
    out = []
    for _ in range(n):
        indices = torch.randint(0, shape["D"], (batch * nnz,), device=device, generator=g)
        offsets = torch.arange(0, batch * nnz, nnz, device=device)
        values = torch.ones(batch * nnz, device=device)
        per_row = max(1, round(shape["labels"]))
        buckets = torch.randint(0, B, (batch, per_row), device=device, generator=g)
        targets = torch.zeros(batch, B, device=device).scatter_(1, buckets, 1.0)
        targets = targets / targets.sum(1, keepdim=True)
        out.append((indices, offsets, values, targets))
    return out


def train_worker(args, shape, device):
    """Warm up, wait for the common start, train for args.seconds; print one JSON line."""
    torch.manual_seed(args.worker)
    torch.set_num_threads(args.threads)  # packed workers share the host's cores
    with device:  # parameters made on the GPU, not copied there
        model = Repetition(shape["D"], shape["hidden"], shape["B"])
    lazy = torch.optim.SparseAdam(list(model.first.parameters()), lr=1e-3)
    dense = torch.optim.Adam([model.first_bias, *model.rest.parameters()], lr=1e-3)
    batches = synthetic_batches(shape, 16, device, seed=args.worker)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def step(i):
        indices, offsets, values, targets = batches[i % len(batches)]
        lazy.zero_grad(set_to_none=True)
        dense.zero_grad(set_to_none=True)
        loss = loss_fn(model(indices, offsets, values), targets)
        loss.backward()
        lazy.step()
        dense.step()
        return loss

    for i in range(5):
        step(i)
    sync(device)
    time.sleep(max(0.0, args.start_at - time.time()))
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < args.seconds:
        for _ in range(5):
            loss = step(steps).detach()
            steps += 1
        sync(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else 0
    print(
        json.dumps(
            {
                "worker": args.worker,
                "steps": steps,
                "seconds": round(seconds, 3),
                "ex_per_s": round(steps * shape["batch"] / seconds, 1),
                "loss": round(float(loss), 6),
                "peak_gpu_mib": round(peak),
            }
        ),
        flush=True,
    )


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_pack(args, pack):
    """pack workers side by side; their JSON lines."""
    start_at = time.time() + args.start_delay
    cmd = [
        sys.executable,
        __file__,
        "--shape",
        args.shape,
        "--seconds",
        str(args.seconds),
        "--start-at",
        str(start_at),
        "--threads",
        str(max(1, args.threads // pack)),
        "--tf32",
        args.tf32,
    ]
    procs = [
        subprocess.Popen(cmd + ["--worker", str(w)], stdout=subprocess.PIPE, text=True)
        for w in range(pack)
    ]
    rows = []
    for p in procs:
        out, _ = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"gpu_proxy: a worker of pack {pack} failed (exit {p.returncode})")
        rows.append(json.loads(out.strip().splitlines()[-1]))
    return rows


def rate(rows, seconds):
    return {"s": round(seconds, 3), "rows_per_s": round(rows / seconds, 1)}


def evaluate(shape, device, rows, threads):
    """Evaluation's parts, timed apart: the R networks' forward pass (GPU), copying the [rows, R, B]
    logits to the host, this project's merge kernel (CPU), and the same merge on the GPU (gather the
    [R, K] lookups, add in r order, top-5), whose top-5 is checked against the kernel's."""
    R, B, K, batch = shape["R"], shape["B"], shape["K"], shape["batch"]
    with device:
        nets = [Repetition(shape["D"], shape["hidden"], B).eval() for _ in range(R)]
    data = synthetic_batches(shape, -(-rows // batch), device, seed=99)
    n = len(data) * batch
    with torch.no_grad():
        for net in nets:  # warm-up
            net(*data[0][:3])
        sync(device)
        start = time.perf_counter()
        outs = [torch.stack([net(i, o, v) for net in nets], dim=1) for i, o, v, _ in data]
        sync(device)
        result = {"rows": n, "R": R, "forward": rate(n, time.perf_counter() - start)}
        start = time.perf_counter()
        logits = torch.cat([out.cpu() for out in outs]).numpy()  # [n, R, B] float32
        result["to_host"] = rate(n, time.perf_counter() - start)
    try:  # mach from an install, or from PYTHONPATH=src (bench/device_check.sh sets it)
        from mach.hashing import build_label_lookup
        from mach.merge import merge_topk
    except ImportError as error:
        return {**result, "merge": f"not run: {error}"}
    lookups = np.stack([build_label_lookup(K, B, seed=r) for r in range(R)])
    merge_topk(logits[:16], lookups, 5, threads)  # warm-up
    start = time.perf_counter()
    labels, scores = merge_topk(logits, lookups, 5, threads)
    result["kernel_merge"] = {"threads": threads, **rate(n, time.perf_counter() - start)}
    # The same merge in PyTorch, on the GPU there (on a CPU it checks the code).
    on_gpu = torch.from_numpy(lookups.astype(np.int64)).to(device)

    def gpu_merge(out):
        tops = []
        for part in out.split(250):  # [250, K] float32 sums: 2.8 GB at K = 2.8e6
            total = part[:, 0, :].index_select(1, on_gpu[0])
            for r in range(1, R):
                total += part[:, r, :].index_select(1, on_gpu[r])
            tops.append(torch.topk(total, 5))
        return torch.cat([t.values for t in tops]), torch.cat([t.indices for t in tops])

    with torch.no_grad():
        gpu_merge(outs[0])
        sync(device)
        start = time.perf_counter()
        tops = [gpu_merge(out) for out in outs]
        sync(device)
        result["gpu_merge"] = rate(n, time.perf_counter() - start)
    gpu_scores = torch.cat([values for values, _ in tops]).cpu().numpy()
    gpu_labels = torch.cat([labels for _, labels in tops]).cpu().numpy()
    result["gpu_merge"]["same_labels"] = float(np.mean(gpu_labels == labels))
    result["gpu_merge"]["max_score_diff"] = float(np.abs(gpu_scores - scores).max())
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="amazon670k")
    parser.add_argument(
        "--packs", default="1,2,4,8", help="processes side by side, comma-separated"
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="timed training window")
    parser.add_argument(
        "--start-delay",
        type=float,
        default=25.0,
        help="seconds for every worker of a pack to start and warm up",
    )
    parser.add_argument("--eval-rows", type=int, default=4000)
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count(),
        help="merge kernel threads; CPU threads shared by a pack's workers",
    )
    parser.add_argument(
        "--tf32",
        choices=("on", "off"),
        default="on",
        help="TF32 matmuls (TensorFlow's default on GPUs)",
    )
    parser.add_argument("--out", type=Path, help="append the results here as one JSON line")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    shape = SHAPES[args.shape]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # TensorFlow runs float32 matmuls in TF32 on Ampere and later GPUs by default; PyTorch does not.
    torch.backends.cuda.matmul.allow_tf32 = args.tf32 == "on"
    if args.worker is not None:
        return train_worker(args, shape, device)

    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    print(f"gpu_proxy: {args.shape} {shape} on {name}, torch {torch.__version__}", flush=True)
    packs = {}
    for pack in [int(p) for p in args.packs.split(",")]:
        rows = run_pack(args, pack)
        rates = [r["ex_per_s"] for r in rows]
        packs[pack] = {
            "per_job_ex_per_s": rates,
            "total_ex_per_s": round(sum(rates), 1),
            "peak_gpu_mib_per_job": max(r["peak_gpu_mib"] for r in rows),
        }
        print(
            f"gpu_proxy: pack={pack} total {sum(rates):,.0f} ex/s, per job "
            f"{min(rates):,.0f}..{max(rates):,.0f}, peak GPU memory/job "
            f"{packs[pack]['peak_gpu_mib_per_job']} MiB",
            flush=True,
        )
    evaluation = evaluate(shape, device, args.eval_rows, args.threads)
    print(f"gpu_proxy: evaluation {evaluation}", flush=True)
    record = {
        "shape": args.shape,
        **shape,
        "device": name,
        "torch": torch.__version__,
        "tf32": args.tf32,
        "seconds": args.seconds,
        "packs": packs,
        "evaluation": evaluation,
    }
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
