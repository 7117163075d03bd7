"""Training efficiency on this machine: matmul peak, useful FLOP/s, and the first layer's variants side by side.

    python bench/efficiency.py --quick     # a short check: R=4, D up to 1e5, fewer repeats
    python bench/efficiency.py             # the full run (D = 1e6 needs the most memory)

Every figure is a best of --repeats, with the variants of a table measured in turn within each repeat, so
a busy machine slows them alike and the ratios hold. The first layer runs three ways: densified (the rows
scattered into a dense [batch, D] matrix up to 4,096 inputs, else tf.sparse.sparse_dense_matmul; a dense
gradient and dense Adam), CSR with dense Adam, and CSR with lazy Adam (mach.model's sparse_first_layer).
Useful FLOPs count non-zero work only: per row 2 x 2 nnz x hidden for the first layer (forward and weight
gradient), 3 x 2 fan_in x fan_out for every other layer. Recorded runs: experiments/efficiency.

1. The Delicious preset's train step (its D, hidden, B and dropout, the data's mean non-zeros per row,
   batch 256, R repetitions in one step) on synthetic batches, through mach.training's own step,
   beside alternatives that were tried and not adopted (jit_compile, bfloat16 matmuls, stacked weights).
2. The Delicious training loop: train_repetitions on the bundled data (R repetitions, the second of two
   epochs timed, input pipeline included), the densified first layer vs the CSR one.
3. Wide inputs (D = 1e3 .. 1e6 at --nnz non-zeros per row, one repetition): examples/s of the densified
   first layer, of the CSR first layer with dense Adam (sparse_first_layer off) and with lazy Adam (on).
4. With --allocators: section 3 for --allocator-D in child processes, alternately with TensorFlow's
   default CPU allocator and with TF_CPU_ALLOCATOR_USE_BFC=true (a caching allocator: large tensors skip
   the page faults of fresh memory).
5. Limits: the Delicious step with dropout off and with no update; the forward pass over the Delicious
   test split's rows and the merge kernel; one row through the exported serving module beside its floors
   (a NumPy matvec over the weights a row reads, the copy bandwidth, an empty tf.function call), and
   through the compiled forward kernel that predict.py runs on a run directory.
The matmul peak (tf.matmul of two 2048x2048 float32 matrices) is sampled between all measurements.
"""

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace

import numpy as np
import tensorflow as tf
from common import machine, matmul_peak_gflops

import mach.training
from mach import Config
from mach.datasets import DATASETS as FACTS
from mach.model import Adam, MachNet, bucket_loss
from mach.presets import load_presets

DENSIFIED = "densified first layer, dense Adam"
CSR_DENSE = "CSR first layer, dense Adam"  # the path training takes at Delicious' width
CSR_LAZY = "CSR first layer, lazy Adam"
# (densified first layer, sparse_first_layer and lazy Adam) of each path compared.
PATHS = {DENSIFIED: (True, False), CSR_DENSE: (False, False), CSR_LAZY: (False, True)}


def delicious() -> SimpleNamespace:
    """The Delicious preset's network and its data's shape (config.py, mach.datasets)."""
    preset, facts = load_presets()[1]["delicious"], FACTS["delicious"]
    return SimpleNamespace(
        preset=preset,
        D=preset.n_features,
        K=preset.n_classes,
        nnz=round(facts.features_per_row),  # mean non-zeros per row
        hidden=preset.hidden,
        B=preset.B,
        R=preset.R,
        dropout=preset.dropout,
        test_rows=facts.test_rows,
    )


class BenchNet(MachNet):
    """MachNet whose first layer can also run densified (a dense matrix of the rows, dense gradient)."""

    densify = False

    def first_layer(self, inputs):
        if not self.densify:
            return MachNet.first_layer(self, inputs)  # autograph mistakes a bare super() here
        if self.weights_[0].shape[0] <= 4096:
            dense = tf.scatter_nd(inputs.indices, inputs.values, inputs.dense_shape)
            return tf.matmul(dense, self.weights_[0]) + self.biases[0]
        return tf.sparse.sparse_dense_matmul(inputs, self.weights_[0]) + self.biases[0]


class DensifiedNet(BenchNet):
    densify = True


def synthetic_batch(rng, batch: int, D: int, nnz: int, B: int):
    """(sparse inputs [batch, D] with nnz distinct features per row, one-hot buckets [batch, B] float32)."""
    cols = np.sort(np.stack([rng.choice(D, nnz, replace=False) for _ in range(batch)]), axis=1)
    indices = np.stack([np.repeat(np.arange(batch), nnz), cols.ravel()], axis=1)
    values = rng.random(batch * nnz, dtype=np.float32)
    return tf.SparseTensor(indices, values, [batch, D]), tf.one_hot(rng.integers(0, B, batch), B)


def useful_flop(rows: float, nnz: float, sizes: list[int]) -> float:
    rest = sum(a * b for a, b in zip(sizes[1:-1], sizes[2:]))
    return rows * (4 * nnz * sizes[1] + 6 * rest)


def repetitions(n: int, D: int, hidden, B: int, dropout: float):
    reps = []
    for r in range(n):
        model = BenchNet(D, tuple(hidden), B, dropout, 0, r)
        optimizer = Adam(model.trainable_variables, 1e-3, lazy=True)  # lazy is set per trace
        reps.append(SimpleNamespace(model=model, optimizer=optimizer))
    return reps


def project_step(reps, path: str, batches):
    """mach.training's train step traced on batches with the first layer of `path`; the repetitions'
    variables can serve several paths, as each trace keeps the mode it was traced with."""
    for rep in reps:
        rep.model.densify, rep.model.sparse_first_layer = PATHS[path]
        rep.optimizer.lazy = rep.model.sparse_first_layer
    spec = tf.nest.map_structure(tf.type_spec_from_value, batches)
    step = mach.training._make_train_step(Config(loss="softmax"), reps, spec, lambda b: b)
    step(batches)
    return step


def matmul_peak(peaks: list) -> None:
    """Appends the GFLOP/s of one 2048x2048 float32 tf.matmul, best of 2."""
    peaks.append(matmul_peak_gflops(2))


def best_times(variants: dict, batches: list, steps: int, repeats: int, peaks: list) -> dict:
    """Seconds per step of each variant: best of repeats, variants in turn within each repeat."""
    best = {name: float("inf") for name in variants}
    for _ in range(repeats):
        for name, run in variants.items():
            matmul_peak(peaks)
            start = time.perf_counter()
            for i in range(steps):
                out = run(batches[i % len(batches)])
            np.asarray(out)
            best[name] = min(best[name], (time.perf_counter() - start) / steps)
    return best


def tried_steps(reps, batches):
    """Alternatives tried and not adopted, each on the Delicious step with the densified first layer."""
    R, dropout = len(reps), reps[0].model.dropout
    w = [[rep.model.weights_[i] for rep in reps] for i in range(3)]
    b = [[rep.model.biases[i] for rep in reps] for i in range(3)]

    def dense(x):
        return tf.scatter_nd(x.indices, x.values, x.dense_shape)

    def drop(x, r, layer):
        return tf.nn.experimental.stateless_dropout(
            x, dropout, seed=tf.constant([r, layer], tf.int64)
        )

    def mlp(x0, r, matmul=tf.matmul):
        x = tf.matmul(x0, w[0][r]) + b[0][r]
        for layer in (1, 2):
            x = matmul(drop(tf.nn.relu(x), r, layer), w[layer][r]) + b[layer][r]
        return x

    def loss_of(logits, y):
        return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(y, logits))

    def apply(tape, loss):
        variables = [rep.model.trainable_variables for rep in reps]
        for rep, g, v in zip(reps, tape.gradient(loss, variables), variables):
            rep.optimizer.apply(g, v)
        return loss

    @tf.function(jit_compile=True)
    def xla(xs, ys):
        with tf.GradientTape() as tape:
            loss = tf.add_n([loss_of(mlp(xs[r], r), ys[r]) for r in range(R)])
        return apply(tape, loss)

    def bf16_matmul(x, y):
        return tf.cast(tf.matmul(tf.cast(x, tf.bfloat16), tf.cast(y, tf.bfloat16)), tf.float32)

    @tf.function
    def bf16(batches):
        with tf.GradientTape() as tape:
            losses = [loss_of(mlp(dense(x), r, bf16_matmul), y) for r, (x, y) in enumerate(batches)]
            loss = tf.add_n(losses)
        return apply(tape, loss)

    @tf.function
    def stacked(batches):
        with tf.GradientTape() as tape:
            xs = tf.stack([dense(x) for x, _ in batches])  # [R, batch, D] float32
            x = tf.matmul(xs, tf.stack(w[0])) + tf.stack(b[0])[:, None]
            for layer in (1, 2):
                # Each repetition keeps its own dropout mask.
                x = tf.stack([drop(tf.nn.relu(x[r]), r, layer) for r in range(R)])
                x = tf.matmul(x, tf.stack(w[layer])) + tf.stack(b[layer])[:, None]
            loss = tf.add_n([loss_of(x[r], y) for r, (_, y) in enumerate(batches)])
        return apply(tape, loss)

    steps = {
        "jit_compile=True (XLA)": lambda bs: xla([dense(x) for x, _ in bs], [y for _, y in bs]),
        "bfloat16 matmuls (layers 2, 3)": bf16,
        "stacked [R, ...] weights, batched matmul": stacked,
    }
    for step in steps.values():
        step(batches)
    return steps


def delicious_step_table(args, peaks: list) -> None:
    shape, batch, R = delicious(), 256, args.R
    D, nnz, hidden, B = shape.D, shape.nnz, shape.hidden, shape.B
    rng = np.random.default_rng(0)
    batches = [tuple(synthetic_batch(rng, batch, D, nnz, B) for _ in range(R)) for _ in range(4)]
    reps = repetitions(R, D, hidden, B, shape.dropout)
    variants = {path: project_step(reps, path, batches[0]) for path in PATHS}
    if not args.skip_tried:
        variants.update(tried_steps(reps, batches[0]))
    best = best_times(variants, batches, args.steps, args.repeats, peaks)
    flop = R * useful_flop(batch, nnz, [D, *hidden, B])

    def table(peak):
        print(
            f"\n## 1. Delicious train step: R={R} x batch {batch}, D={D}, nnz={nnz}, hidden={hidden}"
        )
        print(f"useful GFLOP per step {flop / 1e9:.2f}\n")
        print("| path | ms/step | speed vs densified | useful GFLOP/s | fraction of peak |")
        print("|---|---|---|---|---|")
        for name, seconds in best.items():
            print(
                f"| {name} | {1e3 * seconds:.1f} | {best[DENSIFIED] / seconds:.2f}x | "
                f"{flop / seconds / 1e9:.0f} | {flop / seconds / 1e9 / peak:.2f} |"
            )

    return table


def second_epoch_seconds(cfg, manifest: dict) -> float:
    """Seconds of the second of two epochs of mach.training.train_repetitions (the first also traces
    the step), timed around its epoch function."""
    seconds = []
    train_epoch = mach.training._train_epoch

    def timed(*args, **kwargs):
        start = time.perf_counter()
        train_epoch(*args, **kwargs)
        seconds.append(time.perf_counter() - start)

    mach.training._train_epoch = timed
    try:
        reps = list(range(cfg.R))
        mach.training.train_repetitions(cfg, reps, manifest, lambda _: None, overwrite=True)
    finally:
        mach.training._train_epoch = train_epoch
    return seconds[1]


def delicious_loop_table(args, peaks: list) -> None:
    from mach.data.prepare import prepare_lookups, prepare_tfrecords, with_data_sizes

    def quiet(message):
        pass

    preset = delicious().preset
    work = tempfile.TemporaryDirectory(prefix="mach-efficiency-")
    cfg = dataclasses.replace(preset, work_dir=work.name, R=args.R, epochs=2, keep_checkpoints=1)
    manifest = prepare_tfrecords(cfg, quiet)
    cfg = with_data_sizes(cfg, manifest)
    prepare_lookups(cfg, quiet)
    rows, nnz = manifest["train"]["rows"], manifest["train"]["features_per_row"]
    nets = {DENSIFIED: DensifiedNet, CSR_DENSE: MachNet}
    best = {name: float("inf") for name in nets}
    for _ in range(args.loop_repeats):
        for name, net in nets.items():
            matmul_peak(peaks)
            mach.training.MachNet = net
            best[name] = min(best[name], second_epoch_seconds(cfg, manifest))
    mach.training.MachNet = MachNet
    work.cleanup()
    flop = args.R * useful_flop(rows, nnz, [cfg.input_dim(), *cfg.hidden, cfg.B])

    def table(peak):
        print(
            f"\n## 2. Delicious training loop: R={args.R}, {rows:,} rows of {nnz:.1f} non-zeros, "
            "epoch 2 of 2 (input pipeline included)\n"
        )
        print(
            "| path | s/epoch | speed vs densified | ex/s (all R) | useful GFLOP/s | fraction of peak |"
        )
        print("|---|---|---|---|---|---|")
        for name, seconds in best.items():
            print(
                f"| {name} | {seconds:.2f} | {best[DENSIFIED] / seconds:.2f}x | "
                f"{rows * args.R / seconds:,.0f} | {flop / seconds / 1e9:.0f} | "
                f"{flop / seconds / 1e9 / peak:.2f} |"
            )
        full = preset.epochs * best[CSR_DENSE] * preset.R / args.R
        print(
            f"(the preset's {preset.epochs} epochs of R={preset.R} at the CSR rate: {full:.0f} s)"
        )

    return table


def wide_rows(args, peaks: list) -> list[dict]:
    rng = np.random.default_rng(1)
    out = []
    for D in args.D:
        batches = [(synthetic_batch(rng, args.batch, D, args.nnz, args.B),) for _ in range(2)]
        # One model for all paths, so memory holds one [D, hidden] set of weights and moments.
        reps = repetitions(1, D, args.hidden, args.B, 0.0)
        variants = {path: project_step(reps, path, batches[0]) for path in PATHS}
        best = best_times(variants, batches, args.wide_steps, args.repeats, peaks)
        assert all(step.experimental_get_tracing_count() == 1 for step in variants.values())
        flop = useful_flop(args.batch, args.nnz, [D, *args.hidden, args.B])
        out.append({"D": D, "ex_per_s": {k: args.batch / t for k, t in best.items()}, "flop": flop})
        del reps, variants
    return out


def print_wide(args, rows: list[dict], peak: float, title: str) -> None:
    print(
        f"\n## {title}: nnz={args.nnz} per row, hidden={tuple(args.hidden)}, B={args.B}, "
        f"batch {args.batch}, 1 repetition; examples/s (useful fraction of peak)\n"
    )
    print(f"| D | {' | '.join(rows[0]['ex_per_s'])} | lazy / densified | lazy / dense Adam |")
    print("|---|" + "---|" * (len(rows[0]["ex_per_s"]) + 2))
    for row in rows:
        rates = row["ex_per_s"]
        cells = [
            f"{v:,.0f} ({v / args.batch * row['flop'] / 1e9 / peak:.2f})" for v in rates.values()
        ]
        lazy, dense = rates[CSR_LAZY], rates[CSR_DENSE]
        print(
            f"| {row['D']:,} | {' | '.join(cells)} | {lazy / rates[DENSIFIED]:.2f}x | "
            f"{lazy / dense:.2f}x |",
            flush=True,
        )


def allocator_table(args) -> None:
    """Section 3 for --allocator-D in child processes, alternately without and with the BFC allocator."""
    best = {}
    for _ in range(args.loop_repeats):
        for allocator in ("default", "bfc"):
            env = dict(
                os.environ, TF_CPU_ALLOCATOR_USE_BFC="true" if allocator == "bfc" else "false"
            )
            command = [sys.executable, __file__, "--child-wide", "--repeats", "2"]
            command += ["--D", *map(str, args.allocator_D), "--B", str(args.B)]
            child = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            for row in json.loads(child.stdout.splitlines()[-1]):
                for path, rate in row["ex_per_s"].items():
                    key = (row["D"], path, allocator)
                    best[key] = max(best.get(key, 0.0), rate)
    print(f"\n## 4. CPU allocator (child processes, alternately; B={args.B}): examples/s\n")
    print("| D | path | default allocator | BFC allocator | BFC / default |")
    print("|---|---|---|---|---|")
    for D in args.allocator_D:
        for path in PATHS:
            plain, bfc = best[(D, path, "default")], best[(D, path, "bfc")]
            print(f"| {D:,} | {path} | {plain:,.0f} | {bfc:,.0f} | {bfc / plain:.2f}x |")


def _p50_ms(fn, calls: int) -> float:
    """Median milliseconds of fn() over `calls` calls, after 10 warm-up calls."""
    for _ in range(10):
        fn()
    seconds = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return 1e3 * float(np.median(seconds))


def limits_table(args, peaks: list):
    """Section 5: where training and prediction stop, measured on the Delicious preset's shape.

    Training: the step's useful FLOP/s with dropout off and with no update (forward + backward only),
    the best any update or dropout could leave. Prediction: the test split's rows through the R
    networks (as evaluation calls them) and the merge kernel; a single row through the exported
    serving module beside the floors that bound it: a NumPy matvec over the float32 weights that
    every row reads, and an empty tf.function call.
    """
    from mach.hashing import build_label_lookup
    from mach.merge import Merge, merge_topk
    from mach.serving import export
    from mach.serving.forward import Networks

    shape = delicious()
    D, nnz, hidden, B, K, R = shape.D, shape.nnz, shape.hidden, shape.B, shape.K, shape.R
    sizes = [D, *hidden, B]
    rng = np.random.default_rng(0)

    # Training, batch 256: full step, no dropout, no update.
    batches = [tuple(synthetic_batch(rng, 256, D, nnz, B) for _ in range(R)) for _ in range(2)]
    steps = {}
    for dropout in (shape.dropout, 0.0):
        reps = repetitions(R, D, hidden, B, dropout)
        steps[f"full step, dropout {dropout}"] = project_step(reps, CSR_DENSE, batches[0])
    models = [rep.model for rep in reps]  # dropout 0

    @tf.function
    def no_update(batch):
        with tf.GradientTape() as tape:
            loss = tf.add_n([bucket_loss(m(x), y, "softmax") for m, (x, y) in zip(models, batch)])
        grads = tape.gradient(loss, [m.trainable_variables for m in models])
        # Every gradient is used, or the graph would prune the ones left out.
        return tf.add_n([tf.reduce_sum(g) for rep_grads in grads for g in rep_grads])

    steps["forward + backward, no update, dropout 0"] = no_update
    no_update(batches[0])
    train_s = best_times(steps, batches, args.steps, args.repeats, peaks)
    train_flop = R * useful_flop(256, nnz, sizes)

    # Prediction: evaluation's forward pass over as many rows as the test split, then the kernel.
    rows, eval_batch = shape.test_rows, shape.preset.eval_batch_size
    sizes_of_batches = [min(eval_batch, rows - i) for i in range(0, rows, eval_batch)]
    test = [synthetic_batch(rng, n, D, nnz, B)[0] for n in sizes_of_batches]
    forward = tf.function(lambda x: tf.stack([m(x) for m in models], axis=1))
    lookups = np.stack([build_label_lookup(K, B, seed=r) for r in range(R)])
    forward_s = merge_s = float("inf")
    for _ in range(args.repeats):
        matmul_peak(peaks)
        start = time.perf_counter()
        logits = np.concatenate([forward(x).numpy() for x in test])
        middle = time.perf_counter()
        merge_topk(logits, lookups, 5, 0)
        forward_s = min(forward_s, middle - start)
        merge_s = min(merge_s, time.perf_counter() - middle)
    # Forward FLOPs only: a third of useful_flop's 3 x 2 per weight, and 2 nnz x hidden for layer 1.
    forward_flop = (
        R * rows * (2 * nnz * hidden[0] + 2 * sum(a * b for a, b in zip(sizes[1:-1], sizes[2:])))
    )

    # One row through the exported serving module, and its floors.
    cfg = dataclasses.replace(shape.preset, R=R)
    served = [
        SimpleNamespace(
            model=m, label_to_bucket=lookups[r], feature_to_slot=None, checkpoint_path=""
        )
        for r, m in enumerate(models)
    ]
    module = export.build(cfg, served, 5, Merge(), None, cfg.epochs)
    row = synthetic_batch(rng, 1, D, nnz, B)[0]
    request = (row.indices[:, 1], row.values, tf.constant([0, nnz], tf.int64))
    serve_ms = _p50_ms(lambda: module.serve(*request)["labels"].numpy(), 300)
    compiled = Networks([m.arrays() for m in models], None, cfg.normalize)
    splits = np.array([0, nnz], np.int64)
    compiled_ms = _p50_ms(
        lambda: merge_topk(
            compiled.logits(request[0].numpy(), request[1].numpy(), splits), lookups, 5
        ),
        300,
    )
    values = request[1].numpy() / request[1].numpy().max()  # normalize="max", as served
    first = np.einsum("k,rkh->rh", values, compiled.weights[0][:, request[0].numpy()])
    first += compiled.biases[0]  # [R, H] before the ReLU
    active = float(np.mean(first > 0))  # the share of layer 2's weight rows a row reads
    empty = tf.function(lambda x: x + 1.0)
    empty_ms = _p50_ms(lambda: empty(row.values).numpy(), 300)
    weights = [np.stack([m.weights_[i].numpy() for m in models]) for i in (1, 2)]
    x1 = rng.standard_normal((R, 1, hidden[0]), dtype=np.float32)
    x2 = rng.standard_normal((R, 1, hidden[1]), dtype=np.float32)
    gemv_ms = _p50_ms(lambda: (np.matmul(x1, weights[0]), np.matmul(x2, weights[1])), 300)
    weight_mb = sum(w.nbytes for w in weights) / 1e6
    src = np.ones(1 << 26, np.float32)
    dst = np.empty_like(src)
    bandwidth = (
        2 * src.nbytes / min(_p50_ms(lambda: np.copyto(dst, src), 5) for _ in range(3)) / 1e6
    )

    def table(peak):
        print(f"\n## 5. Limits (Delicious preset's shape, R={R})\n")
        print("| training step, batch 256 | ms/step | useful GFLOP/s | fraction of peak |")
        print("|---|---|---|---|")
        for name, seconds in train_s.items():
            rate = train_flop / seconds / 1e9
            print(f"| {name} | {1e3 * seconds:.1f} | {rate:.0f} | {rate / peak:.2f} |")
        rate = forward_flop / forward_s / 1e9
        print(
            f"\nprediction, {rows:,} rows: forward {forward_s:.2f} s ({rate:.0f} useful GFLOP/s, "
            f"{rate / peak:.2f} of peak) + kernel merge {merge_s:.3f} s; at the full matmul peak "
            f"the forward pass alone would take {forward_flop / peak / 1e9:.2f} s"
        )
        print(
            f"single row: serving module p50 {serve_ms:.2f} ms; floors: NumPy matvec over the "
            f"{weight_mb:.0f} MB of float32 weights every row reads (layers 2 and 3) "
            f"{gemv_ms:.2f} ms, that many bytes at the measured copy bandwidth "
            f"({bandwidth:.1f} GB/s) {weight_mb / bandwidth:.2f} ms, an empty tf.function call "
            f"{empty_ms:.2f} ms"
        )
        print(
            f"single row, compiled forward + merge kernel (predict.py over a run directory; rows "
            f"read only the weight rows of their features and active units): p50 {compiled_ms:.2f} ms "
            f"({active:.0%} of the first layer's units active on these random weights; a trained "
            "model has fewer)"
        )

    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="R=4, D up to 1e5, fewer repeats")
    parser.add_argument("--R", type=int, help="repetitions trained together (16; --quick 4)")
    parser.add_argument("--repeats", type=int, help="measurements per variant (8; --quick 3)")
    parser.add_argument("--loop-repeats", type=int, help="training loops per path (2; --quick 1)")
    parser.add_argument("--steps", type=int, default=3, help="Delicious steps per measurement")
    parser.add_argument("--wide-steps", type=int, default=2, help="wide steps per measurement")
    parser.add_argument("--D", type=int, nargs="+", help="input widths (1e3..1e6; --quick to 1e5)")
    parser.add_argument("--nnz", type=int, default=100, help="non-zeros per row of the wide inputs")
    parser.add_argument("--hidden", type=int, nargs="+", default=[500])
    parser.add_argument("--B", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument(
        "--skip", nargs="+", default=[], choices=["step", "tried", "loop", "wide", "limits"]
    )
    parser.add_argument("--allocators", action="store_true", help="add section 4")
    parser.add_argument("--allocator-D", type=int, nargs="+", default=[100_000])
    parser.add_argument("--child-wide", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    full = dict(R=16, repeats=8, loop_repeats=2, D=[1_000, 10_000, 100_000, 1_000_000])
    quick = dict(R=4, repeats=3, loop_repeats=1, D=[1_000, 10_000, 100_000])
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.skip_tried = "tried" in args.skip
    peaks = []
    if args.child_wide:
        print(json.dumps(wide_rows(args, peaks)))
        return 0
    threads = tf.config.threading.get_intra_op_parallelism_threads() or "all"
    print(f"machine: {machine()}, {threads} threads, TF {tf.__version__}")
    # Tables are printed at the end, with fractions of the best peak of the whole run.
    tables = []
    if "step" not in args.skip:
        tables.append(delicious_step_table(args, peaks))
    if "loop" not in args.skip:
        tables.append(delicious_loop_table(args, peaks))
    if "wide" not in args.skip:
        rows = wide_rows(args, peaks)
        tables.append(lambda peak: print_wide(args, rows, peak, "3. Wide inputs"))
    if "limits" not in args.skip:
        tables.append(limits_table(args, peaks))
    for table in tables:
        table(max(peaks))
    if args.allocators:
        allocator_table(args)
    if peaks:
        print(
            f"\nmatmul peak (2048x2048 float32): best {max(peaks):.0f} GFLOP/s, median "
            f"{np.median(peaks):.0f} over {len(peaks)} samples taken between the measurements"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
