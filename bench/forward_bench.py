"""The compiled forward kernel (predict.py over a work directory) at the presets' shapes: single-row p50
latency over thread counts, float32 and bfloat16 weights; then its time by batch size, which grows
with the rows (each reads its own weight rows), where a matmul reads the weights once per batch.

    python bench/forward_bench.py                               # delicious and amazon670k shapes
    python bench/forward_bench.py --shapes delicious --threads 1,2

Shapes are the presets' (config.py: input width, hidden, B, R) with their data's mean non-zeros per
row (mach.datasets; assumed where unpublished, as bench/rehearse.py assumes them). Weights are random
(Glorot uniform, zero biases), so about half of each layer's units are active, where a trained model
has fewer: the bytes a row reads, and so its time, are an upper side of a trained model's. Needs NumPy
and the compiled kernel only (no TensorFlow). The merge is not included (bench/merge_bench.py times
it). Recorded figures: experiments/serving.
"""

import argparse
import os
import time

import numpy as np
from common import machine
from rehearse import shape_of

from mach.merge import load_kernel
from mach.presets import load_presets
from mach.serving.forward import to_bfloat16

PRESETS = ("delicious", "amazon670k", "amazon3m")


def shape(name: str) -> tuple:
    """(input width, hidden, B, R, non-zeros per row) of a preset and its data's mean row."""
    cfg = load_presets()[1][name]
    nnz = round(shape_of(name)["features_per_row"])
    return cfg.input_dim(), cfg.hidden, cfg.B, cfg.R, nnz


def random_nets(D, hidden, B, R, rng):
    sizes = [D, *hidden, B]
    weights, biases = [], []
    for a, b in zip(sizes[:-1], sizes[1:]):
        limit = np.float32(np.sqrt(6.0 / (a + b)))
        w = np.empty((R, a, b), np.float32)  # filled per repetition: no float64 copy of GBs
        for r in range(R):
            rng.random(out=w[r], dtype=np.float32)
            w[r] *= 2 * limit
            w[r] -= limit
        weights.append(w)
        biases.append(np.zeros((R, b), np.float32))
    return weights, biases


def rows(rng, n, D, nnz, R):
    """(row_splits, slots [R, n*nnz], values) of n rows with nnz distinct features each."""
    cols = np.concatenate([np.sort(rng.choice(D, nnz, replace=False)) for _ in range(n)])
    slots = np.ascontiguousarray(np.broadcast_to(cols.astype(np.int64), (R, len(cols))))
    return np.arange(0, n * nnz + 1, nnz, dtype=np.int64), slots, np.ones(len(cols), np.float32)


def _seconds(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["delicious", "amazon670k"], choices=PRESETS)
    parser.add_argument("--threads", default=f"1,{os.cpu_count()}", help="comma-separated")
    parser.add_argument("--calls", type=int, default=300, help="single-row calls timed")
    args = parser.parse_args(argv)
    forward = load_kernel("forward_rows")
    print(f"machine: {machine()}")
    rng = np.random.default_rng(0)
    nets = {}
    print("| shape | weights | threads | p50 ms (1 row) | p99 ms |")
    print("|---|---|---:|---:|---:|")
    for name in args.shapes:
        D, hidden, B, R, nnz = shape(name)
        nets[name] = random_nets(D, hidden, B, R, rng)
        weights, biases = nets[name]
        singles = [rows(rng, 1, D, nnz, R) for _ in range(64)]
        for precision in ("float32", "bfloat16"):
            w = weights if precision == "float32" else [to_bfloat16(x) for x in weights]
            for threads in [int(t) for t in args.threads.split(",")]:
                ms = 1e3 * np.array(
                    [
                        _seconds(forward, w, biases, *singles[i % len(singles)], threads)
                        for i in range(args.calls + 10)
                    ][10:]
                )
                print(
                    f"| {name} (R={R}, D={D:,}, {hidden}, B={B:,}) | {precision} | {threads} | "
                    f"{np.median(ms):.3f} | {np.percentile(ms, 99):.3f} |",
                    flush=True,
                )
    print("\n| shape | batch | kernel ms | ms per row |")
    print("|---|---:|---:|---:|")
    for name, (weights, biases) in nets.items():
        D, hidden, B, R, nnz = shape(name)
        for n in (1, 8, 32, 256):
            batch = rows(rng, n, D, nnz, R)
            best = min(_seconds(forward, weights, biases, *batch) for _ in range(3))
            print(f"| {name} | {n} | {1e3 * best:.2f} | {1e3 * best / n:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
