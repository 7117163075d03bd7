"""How MACH's cost grows with the number of classes K, against a full softmax with the same hidden layer.

    python bench/scale_bench.py                    # K = 1e3 ... 1e7: table, <out>/scale.json, <out>/scale.png
    python bench/scale_bench.py --huge             # adds K = 5e7 (lookups of several GB)
    python bench/scale_bench.py --replot --out experiments/scale/raw   # redraw a recorded run

Per K, with B = min(10,000, K / 10) and R = round(8 ln K / ln 1e6) (R grows as log K, B stays fixed):
parameters and float32 bytes of one repetition, of R repetitions and of the full softmax (counted by
formula, and checked against instantiated models where they fit); training examples/s of one MACH
repetition and of the full softmax (measured on random sparse batches where the softmax fits in
--softmax-max-K, extrapolated by output-layer FLOPs beyond); label-lookup preprocessing seconds
(measured for one repetition, times R); merge samples/s, exact and candidate (measured, on logits that
point every repetition at three labels, as trained models do). Every figure is tagged measured or
computed in the table and the JSON. --out defaults to work/bench/scale_bench; the recorded run is in
experiments/scale.
"""

import argparse
import json
import math
import resource
import time
from pathlib import Path

import numpy as np
from common import best_seconds

from mach import Config
from mach.hashing import build_label_lookup, invert_lookup
from mach.merge import merge_candidates, merge_topk

GIB = 1 << 30
OUT = Path("work/bench/scale_bench")


def buckets_for(K: int) -> int:
    return max(2, min(10_000, K // 10))


def repetitions_for(K: int) -> int:
    return max(1, round(8 * math.log(K) / math.log(1e6)))


def n_params(input_dim: int, hidden: int, outputs: int) -> int:
    """Weights and biases of input -> hidden (ReLU) -> outputs, as Config counts a repetition's."""
    cfg = Config(n_features=input_dim, n_classes=outputs, B=outputs, hidden=(hidden,))
    return cfg.params_per_repetition()


def lookups(K: int, B: int, R: int):
    """label_to_bucket [R, K] int32, its inverse [R, B+1] / [R, K] int64, and the seconds of one repetition."""
    label_to_bucket = np.empty((R, K), dtype=np.int32)
    bucket_offsets = np.empty((R, B + 1), dtype=np.int64)
    bucket_labels = np.empty((R, K), dtype=np.int64)
    one = None
    for r in range(R):
        start = time.perf_counter()
        label_to_bucket[r] = build_label_lookup(K, B, seed=r)
        bucket_offsets[r], bucket_labels[r] = invert_lookup(label_to_bucket[r], B)
        one = time.perf_counter() - start if one is None else one
    return label_to_bucket, bucket_offsets, bucket_labels, one


def peaked_logits(label_to_bucket: np.ndarray, B: int, rows: int) -> np.ndarray:
    """[rows, R, B] float32: noise, plus +3 on the buckets of three labels per row in every repetition."""
    R, K = label_to_bucket.shape
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((rows, R, B), dtype=np.float32)
    planted = rng.integers(0, K, size=(rows, 3))
    for r in range(R):
        for j in range(3):
            logits[np.arange(rows), r, label_to_bucket[r, planted[:, j]]] += 3.0
    return logits


def run_K(K: int, args, tf_rates: dict) -> dict:
    B, R = buckets_for(K), repetitions_for(K)
    D, H = args.input_dim, args.hidden
    one = n_params(D, H, B)
    full = n_params(D, H, K)
    out = {
        "K": K,
        "B": B,
        "R": R,
        "params_one": one,
        "params_R": R * one,
        "params_full": full,
        "bytes_one": 4 * one,
        "bytes_R": 4 * R * one,
        "bytes_full": 4 * full,
    }

    # Training: one MACH repetition depends on B only; the softmax on K. Imported here because it
    # imports TensorFlow, which --replot does not need.
    from train_throughput import train_rate

    if B not in tf_rates:
        tf_rates[B] = train_rate(D, (H,), B, args.batch, args.nnz, args.steps)
    rate, instantiated = tf_rates[B]
    assert instantiated == one
    out.update(
        train_one=rate, train_R=rate / R, train_one_source="measured", train_R_source="measured / R"
    )
    if K <= args.softmax_max_K:
        rate_full, instantiated = train_rate(
            D, (H,), K, args.batch, args.nnz, max(2, args.steps // 4)
        )
        assert instantiated == full
        out.update(
            train_full=rate_full, train_full_source="measured", params_full_source="instantiated"
        )
        tf_rates["largest_full"] = (K, rate_full)
    else:
        # Beyond what fits: the output layer (2 * H * K FLOPs forward, about 3x that with the
        # backward pass and Adam) dominates, so scale the largest measured rate by H*K+D*H.
        K0, rate0 = tf_rates["largest_full"]
        out.update(
            train_full=rate0 * n_params(D, H, K0) / full,
            train_full_source="computed",
            params_full_source="computed",
        )

    # Lookups and merges: measured while [R, K] int32 + 2 x [R, K] int64 fit comfortably.
    label_to_bucket, bucket_offsets, bucket_labels, one_s = lookups(K, B, R)
    out.update(lookup_one_s=one_s, lookup_R_s=one_s * R, lookup_R_source="measured one x R")
    rows = max(16, min(args.rows, int(args.rows * 1e6 / K)))
    logits = peaked_logits(label_to_bucket, B, rows)
    k = 5
    exact = lambda: merge_topk(logits, label_to_bucket, k, args.threads)  # noqa: E731
    m = min(args.m, B)
    cand = lambda: merge_candidates(  # noqa: E731
        logits,
        label_to_bucket,
        bucket_offsets,
        bucket_labels,
        k,
        m,
        min(args.min_freq, R),
        args.threads,
    )
    exact_s = cand_s = float("inf")
    for _ in range(args.repeats):
        exact_s = min(exact_s, best_seconds(exact, 1))
        cand_s = min(cand_s, best_seconds(cand, 1))
    same_top1 = float(np.mean(exact()[0][:, 0] == cand()[0][:, 0]))
    out.update(
        merge_rows=rows,
        exact_per_s=rows / exact_s,
        candidate_per_s=rows / cand_s,
        candidate_m=m,
        candidate_min_freq=min(args.min_freq, R),
        candidate_top1_equal=same_top1,
        lookup_gib=(label_to_bucket.nbytes + bucket_labels.nbytes) / GIB,
    )
    return out


def print_table(results: list[dict]) -> None:
    print(
        "| K | B | R | params 1 rep | params R reps | params full softmax | MiB R reps | MiB full softmax "
        "| train ex/s 1 rep | train ex/s R reps | train ex/s full softmax | lookups s (R reps) "
        "| exact merge samples/s | candidate merge samples/s |"
    )
    print("|" + "---|" * 14)
    for r in results:
        star = "" if r["train_full_source"] == "measured" else " (computed)"
        print(
            f"| {r['K']:,} | {r['B']:,} | {r['R']} | {r['params_one'] / 1e6:.2f}M | {r['params_R'] / 1e6:.1f}M "
            f"| {r['params_full'] / 1e6:,.1f}M | {r['bytes_R'] / 2**20:,.0f} | {r['bytes_full'] / 2**20:,.0f} "
            f"| {r['train_one']:,.0f} | {r['train_R']:,.0f} | {r['train_full']:,.0f}{star} "
            f"| {r['lookup_R_s']:.3g} | {r['exact_per_s']:,.0f} | {r['candidate_per_s']:,.0f} |"
        )


def plot(results: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only
    import matplotlib.pyplot as plt

    K = [r["K"] for r in results]
    measured = [r["train_full_source"] == "measured" for r in results]
    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    ax = axes[0]
    ax.plot(K, [r["bytes_R"] / 2**20 for r in results], "o-", label="MACH, R repetitions")
    ax.plot(K, [r["bytes_one"] / 2**20 for r in results], "o--", label="MACH, one repetition")
    ax.plot(K, [r["bytes_full"] / 2**20 for r in results], "s-", label="full softmax")
    ax.set_ylabel("float32 parameters (MiB)")
    ax.set_title("model size (counted)")
    ax = axes[1]
    ax.plot(K, [r["train_R"] for r in results], "o-", label="MACH, R repetitions (measured)")
    full = [r["train_full"] for r in results]
    n = sum(measured)  # the measured Ks come first
    ax.plot(K[:n], full[:n], "s-", color="C2", label="full softmax (measured)")
    ax.plot(K[n - 1 :], full[n - 1 :], "s:", color="C2", label="full softmax (computed beyond)")
    ax.set_ylabel("training examples/s")
    ax.set_title("training (1 process, CPU)")
    ax = axes[2]
    ax.plot(K, [r["exact_per_s"] for r in results], "o-", label="exact merge")
    ax.plot(K, [r["candidate_per_s"] for r in results], "o-", label="candidate merge")
    ax.set_ylabel("merged samples/s (1 thread)")
    ax.set_title("evaluation merge (measured)")
    ax = axes[3]
    ax.plot(K, [r["lookup_R_s"] for r in results], "^-", label="R label lookups + inverses")
    ax.set_ylabel("seconds")
    ax.set_title("preprocessing (one measured, x R)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("K (classes)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--Ks", default="1e3,1e4,1e5,1e6,1e7", help="comma-separated class counts")
    parser.add_argument("--huge", action="store_true", help="also K = 5e7")
    parser.add_argument(
        "--input-dim", type=int, default=20_000, help="model input width (synthetic D)"
    )
    parser.add_argument("--hidden", type=int, default=256, help="hidden layer width")
    parser.add_argument("--batch", type=int, default=512, help="training batch")
    parser.add_argument("--nnz", type=int, default=20, help="non-zero features per training row")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps")
    parser.add_argument(
        "--softmax-max-K",
        type=float,
        default=1e5,
        help="largest K whose full softmax is trained (its [batch, K] logits and Adam state grow with K)",
    )
    parser.add_argument(
        "--rows", type=int, default=256, help="merged rows at K = 1e6 (more below, fewer above)"
    )
    parser.add_argument("--m", type=int, default=10, help="candidate merge: buckets per repetition")
    parser.add_argument("--min-freq", type=int, default=2, help="candidate merge: min_freq")
    parser.add_argument("--threads", type=int, default=1, help="merge kernel threads")
    parser.add_argument(
        "--repeats", type=int, default=3, help="alternating merge runs; the best counts"
    )
    parser.add_argument(
        "--out", type=Path, default=OUT, help=f"where scale.json and scale.png go (default {OUT})"
    )
    parser.add_argument(
        "--replot",
        action="store_true",
        help="measure nothing: table and plot from <out>/scale.json",
    )
    args = parser.parse_args(argv)
    Ks = [int(float(k)) for k in args.Ks.split(",")] + ([50_000_000] if args.huge else [])

    if args.replot:
        results = json.loads((args.out / "scale.json").read_text())["results"]
    else:
        results, tf_rates = [], {}
        for K in Ks:
            start = time.time()
            results.append(run_K(K, args, tf_rates))
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
            print(
                f"K={K:,} done in {time.time() - start:.0f} s, peak RSS {peak:.1f} GiB", flush=True
            )
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "scale.json").write_text(
            json.dumps(
                {"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=2
            )
            + "\n"
        )
    print_table(results)
    plot(
        results,
        args.out / "scale.png",
        f"MACH vs full softmax: input {args.input_dim:,}, hidden {args.hidden}, "
        f"B = min(10k, K/10), R = round(8 ln K / ln 1e6)",
    )
    print(
        f"wrote {args.out / 'scale.png'}" + ("" if args.replot else f" {args.out / 'scale.json'}")
    )


if __name__ == "__main__":
    main()
