"""Throughput of the compiled MACH merge kernel against the best NumPy merge; the machine's limits.

    python bench/merge_bench.py            # K=1e6, B=1e4, R=16, batch 256, threads 1 and 2
    python bench/merge_bench.py --huge     # adds K=5e7 with a batch of 8

NumPy runs on fewer rows (--numpy-rows) because it is slow. Every figure is samples per second, the
best of --repeats runs; NumPy and kernel runs alternate, so a burst of load hits both alike. Recorded
figures: experiments/merge-kernel.
"""

import argparse
import functools
import resource
import time

import numpy as np
from common import best_seconds

from mach.hashing import build_label_lookup
from mach.merge import merge_topk, merge_topk_numpy, merge_topk_numpy_fast

GIB = 1 << 30


def build_lookups(K: int, B: int, R: int) -> np.ndarray:
    """label_to_bucket [R, K] int32, the project's lookups (murmurhash3_32 with seed r)."""
    label_to_bucket = np.empty((R, K), dtype=np.int32)
    for r in range(R):
        label_to_bucket[r] = build_label_lookup(K, B, seed=r)
    return label_to_bucket


def memory_bandwidth(n_bytes: int = 1 << 28) -> float:
    """Bytes per second of one core copying a large array (read + write counted)."""
    src = np.ones(n_bytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    seconds = best_seconds(lambda: np.copyto(dst, src), 3)
    return 2 * n_bytes / seconds


def gather_rate(B: int, n: int = 1 << 22) -> float:
    """Random float32 gathers per second by NumPy from one B-bucket row (it fits in L1/L2)."""
    rng = np.random.default_rng(1)
    row = rng.standard_normal(B, dtype=np.float32)
    index = rng.integers(0, B, size=n).astype(np.int32)
    out = np.empty(n, dtype=np.float32)
    return n / best_seconds(lambda: np.take(row, index, out=out, mode="clip"), 3)


def same(a, b) -> bool:
    return np.array_equal(a[0], b[0]) and np.array_equal(a[1].view(np.int32), b[1].view(np.int32))


def run_case(K, B, R, batch, k, threads, repeats, numpy_rows, bandwidth):
    print(f"\n== K={K:,} B={B:,} R={R} batch={batch} k={k} ==")
    start = time.perf_counter()
    label_to_bucket = build_lookups(K, B, R)
    logits = np.random.default_rng(0).standard_normal((batch, R, B), dtype=np.float32)
    seconds = time.perf_counter() - start
    print(
        f"lookups [R, K] int32: {label_to_bucket.nbytes / GIB:.3f} GiB (built in {seconds:.1f} s)"
    )
    print(f"logits [batch, R, B] float32: {logits.nbytes / GIB:.3f} GiB")

    rows = logits[:numpy_rows]
    reference = merge_topk_numpy(rows, label_to_bucket, k)
    fast_equal = same(merge_topk_numpy_fast(rows, label_to_bucket, k), reference)
    kernel_equal = True
    for t in threads:
        labels, scores = merge_topk(logits, label_to_bucket, k, t)
        kernel_equal &= same((labels[:numpy_rows], scores[:numpy_rows]), reference)

    numpy_s = {"numpy spec": [], "numpy fast": []}
    kernel_s = {t: [] for t in threads}
    for _ in range(repeats):
        for name, merge in (
            ("numpy spec", merge_topk_numpy),
            ("numpy fast", merge_topk_numpy_fast),
        ):
            run = functools.partial(merge, rows, label_to_bucket, k)
            numpy_s[name].append(best_seconds(run, 1))
        for t in threads:
            run = functools.partial(merge_topk, logits, label_to_bucket, k, t)
            kernel_s[t].append(best_seconds(run, 1))

    rates = {name: numpy_rows / min(s) for name, s in numpy_s.items()}
    best_numpy = max(rates.values())
    print(f"{'implementation':<22}{'samples/s':>12}{'x best NumPy':>14}")
    for name, rate in rates.items():
        print(f"{name + ' (1 thread)':<22}{rate:>12.1f}{rate / best_numpy:>14.2f}")
    kernel_rates = {}
    for t in threads:
        kernel_rates[t] = batch / min(kernel_s[t])
        spread = max(kernel_s[t]) / min(kernel_s[t])
        print(
            f"{f'kernel ({t} threads)':<22}{kernel_rates[t]:>12.1f}"
            f"{kernel_rates[t] / best_numpy:>14.1f}   (slowest run {spread:.1f}x the best)"
        )
    print(
        f"outputs equal to the spec on {numpy_rows} rows: numpy fast {fast_equal}, "
        f"kernel {kernel_equal} (labels equal, scores bit-equal)"
    )

    lookup_bytes = R * K * label_to_bucket.itemsize
    shared = min(16, batch)  # rows that share one pass over the lookups in the kernel
    gathers = gather_rate(B)
    top = max(threads)
    rate = kernel_rates[top]
    print(
        f"lookup bytes per sample: {lookup_bytes / 1e6:.1f} MB streamed per row; "
        f"{lookup_bytes / shared / 1e6:.1f} MB in the kernel ({shared} rows share a pass)"
    )
    print(
        f"memory bandwidth (1-core np.copyto): {bandwidth / 1e9:.1f} GB/s -> at most "
        f"{bandwidth / lookup_bytes:.1f} samples/s per core if each row streams the lookups, "
        f"{shared * bandwidth / lookup_bytes:.1f} if {shared} rows share them"
    )
    print(
        f"NumPy random gathers from one {B * 4 // 1024} KB row: {gathers / 1e9:.2f} G/s -> "
        f"{gathers / (R * K):.1f} samples/s per core for a merge that gathers one row at a time"
    )
    print(
        f"kernel ({top} threads): {rate * R * K / 1e9:.1f} G gather-adds/s "
        f"= {rate * R * K / (top * gathers):.1f}x {top} cores of NumPy gathers; "
        f"{-(-batch // 16) * R * K * rate / batch / 1e9:.2f} G 64-byte line adds/s; lookup traffic "
        f"{rate * lookup_bytes / shared / 1e9:.2f} GB/s = "
        f"{rate * lookup_bytes / shared / (top * bandwidth):.0%} of {top}x one-core bandwidth"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--K", type=int, default=1_000_000, help="classes")
    parser.add_argument("--B", type=int, default=10_000, help="buckets per repetition")
    parser.add_argument("--R", type=int, default=16, help="repetitions")
    parser.add_argument("--batch", type=int, default=256, help="rows merged by the kernel per call")
    parser.add_argument("--k", type=int, default=5, help="top-k per row")
    parser.add_argument("--threads", default="1,2", help="comma-separated kernel thread counts")
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs per implementation; the best counts"
    )
    parser.add_argument(
        "--numpy-rows", type=int, default=16, help="rows timed for the NumPy merges"
    )
    parser.add_argument(
        "--huge", action="store_true", help="also run K=50,000,000 with a batch of 8"
    )
    args = parser.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]

    bandwidth = memory_bandwidth()
    run_case(
        args.K,
        args.B,
        args.R,
        args.batch,
        args.k,
        threads,
        args.repeats,
        args.numpy_rows,
        bandwidth,
    )
    if args.huge:
        run_case(50_000_000, args.B, args.R, 8, args.k, threads, 2, 2, bandwidth)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB
    print(f"\npeak RSS: {peak_gib:.2f} GiB")


if __name__ == "__main__":
    main()
