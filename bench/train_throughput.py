"""Training throughput of one MACH repetition (B outputs) vs a full-softmax model (K outputs), same hidden layer.

    python bench/train_throughput.py                       # K = 1e3, 1e4, 1e5, 1e6; B = 1000
    python bench/train_throughput.py --K 1000 100000 --B 1000 --hidden 500 --seconds 10

Synthetic sparse inputs (D features, nnz per row), one label per row; both models use the project's MachNet,
softmax cross-entropy on class (or bucket) ids and fused Adam, so the only difference is the width of the output layer.  Prints examples/s,
the ratio, and parameter counts (measured in one run, side by side). bench/scale_bench.py measures its
training rates with this script's train_rate. Recorded figures: experiments/train-throughput.
"""

import argparse
import time

import numpy as np
import tensorflow as tf
from common import machine

from mach.model import Adam, MachNet


def synthetic_batches(n_batches: int, batch: int, D: int, nnz: int, n_out: int, seed: int):
    """(sparse inputs [batch, D] with up to nnz features per row, class ids [batch] int64) pairs."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_batches):
        cols = rng.integers(0, D, size=(batch, nnz))
        # np.unique drops repeated features and leaves the indices in the row-major order TF expects.
        indices = np.unique(
            np.stack([np.repeat(np.arange(batch), nnz), cols.ravel()], axis=1), axis=0
        )
        x = tf.SparseTensor(
            indices, np.full(len(indices), 1 / np.sqrt(nnz), np.float32), [batch, D]
        )
        y = tf.constant(rng.integers(0, n_out, size=batch))  # class ids: no [batch, K] one-hot
        out.append((x, y))
    return out


def train_rate(
    input_dim: int,
    hidden: tuple[int, ...],
    n_out: int,
    batch: int,
    nnz: int,
    min_steps: int = 3,
    seconds: float = 0.0,
    max_steps: int = 400,
) -> tuple[float, int]:
    """Training examples/s of one MachNet with n_out logits (B for MACH, K for the full softmax), and
    its parameter count. Times min_steps steps, then more until `seconds` or max_steps is reached.
    """
    model = MachNet(input_dim, tuple(hidden), n_out, 0.0, seed=0, r=0)
    optimizer = Adam(model.trainable_variables, 1e-3)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=model(x))
            )
        optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        return loss

    batches = synthetic_batches(4, batch, input_dim, nnz, n_out, seed=n_out)
    step(*batches[0]).numpy()  # trace and warm up
    steps, start = 0, time.perf_counter()
    while steps < min_steps or (time.perf_counter() - start < seconds and steps < max_steps):
        loss = step(*batches[steps % len(batches)])
        steps += 1
    loss.numpy()  # waits for the last step, which an accelerator runs asynchronously
    return steps * batch / (time.perf_counter() - start), model.n_params()


def rate_of(n_out: int, args) -> tuple[float, int]:
    """train_rate with this script's flags."""
    return train_rate(
        args.D,
        args.hidden,
        n_out,
        args.batch,
        args.nnz,
        args.min_steps,
        args.seconds,
        args.max_steps,
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--K", type=int, nargs="+", default=[1_000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--B", type=int, default=1000)
    parser.add_argument(
        "--R", type=int, default=16, help="for the parameter count of all repetitions"
    )
    parser.add_argument("--D", type=int, default=10_000, help="input features (sparse)")
    parser.add_argument("--nnz", type=int, default=20, help="non-zeros per row")
    parser.add_argument("--hidden", type=int, nargs="+", default=[500])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=8.0, help="time per measurement")
    parser.add_argument("--min-steps", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=400)
    args = parser.parse_args(argv)
    threads = tf.config.threading.get_intra_op_parallelism_threads() or "all"
    gpus = len(tf.config.list_physical_devices("GPU"))
    print(f"machine: {machine()}, {threads} threads, TF {tf.__version__}, GPUs: {gpus}")
    print(f"D={args.D} nnz={args.nnz} hidden={args.hidden} batch={args.batch} B={args.B}\n")
    rate_of(args.B, args)  # a first measurement, discarded: start-up noise
    print(
        f"| K | MACH ex/s (1 rep, B={args.B}) | full softmax ex/s | MACH / softmax | MACH params (1 rep) "
        f"| MACH params (R={args.R}) | softmax params |"
    )
    print("|---|---|---|---|---|---|---|")
    for K in args.K:
        # MACH is re-measured next to each K: the machine is noisy.
        mach_rate, mach_params = rate_of(args.B, args)
        full_rate, full_params = rate_of(K, args)
        print(
            f"| {K:,} | {mach_rate:,.0f} | {full_rate:,.0f} | {mach_rate / full_rate:.1f}x | {mach_params:,} | "
            f"{mach_params * args.R:,} | {full_params:,} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
