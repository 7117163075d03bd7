"""The user's paths against the speed of their arithmetic, side by side in one run.

    make demo                        # trains the delicious preset into ./work
    python bench/paths_bench.py      # the same --dataset/--set/--work-dir flags as evaluate.py

Measures, on the trained run and its test rows:
1. the machine's matmul peak (tf.matmul of two 2048x2048 float32 matrices, best of the samples taken
   between the measurements);
2. the pure forward pass: the R networks on the test rows already parsed in memory, steady (best of
   --repeats), as bench/efficiency.py measures it;
3. evaluate.py's forward pass, from its metrics file, the script run as a user runs it: forward_s
   (the networks over the parsed batches), and apart, read_s (reading and parsing the test rows)
   and trace_s (the forward's one trace);
4. predict.py's path over the run directory at batches of 1,024 rows (forward and merge, best of
   --repeats), per row beside the pure forward;
5. the training loop through train.py (--train-epochs epochs in a scratch work directory): its useful
   FLOP/s (train.json) as a fraction of the peak.
Prints a table of the ratios; writes <out>/paths_bench.json (default work/bench/paths_bench).
Recorded runs: experiments/efficiency.
"""

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import machine

from mach.cli import add_config_flags, config_from_args, run_main, setup_logging
from mach.experiments import chain
from mach.presets import load_presets

OUT = Path("work/bench/paths_bench")


def cpu_flags() -> str:
    """The CPU features that decide the kernels: AVX-512 (and its bfloat16 part), AMX."""
    try:
        flags = set(open("/proc/cpuinfo").read().split())
    except OSError:
        return "unknown"
    shown = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return " ".join(shown) or "none of avx2/avx512/amx"


def forward_flop(rows: int, nnz: float, sizes: list[int], R: int) -> float:
    """Useful FLOPs of the forward pass: 2 nnz x hidden for the first layer, 2 fan_in x fan_out after."""
    return R * rows * (2 * nnz * sizes[1] + 2 * sum(a * b for a, b in zip(sizes[1:-1], sizes[2:])))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_flags(parser)
    parser.add_argument("--repeats", type=int, default=3, help="timings per path; the best counts")
    parser.add_argument("--train-epochs", type=int, default=3, help="epochs of the training path")
    parser.add_argument(
        "--out", type=Path, default=OUT, help=f"where the JSON goes (default {OUT})"
    )
    args = parser.parse_args(argv)
    log = setup_logging().info
    return run_main(lambda: _bench(args, log))


def _bench(args, log) -> int:
    import tensorflow as tf

    from mach import evaluation
    from mach.data.prepare import load_data_manifest, with_data_sizes
    from mach.data.tfrecords import rows_to_model_input
    from mach.identity import data_fingerprint
    from mach.serving.predictors import RunPredictor

    cfg = config_from_args(args, *load_presets())
    manifest = load_data_manifest(cfg)
    cfg = with_data_sizes(cfg, manifest)
    peaks = []
    matrix = tf.random.normal([2048, 2048])
    square = tf.function(lambda: tf.matmul(matrix, matrix))

    def sample_peak():
        square().numpy()
        start = time.perf_counter()
        square().numpy()
        peaks.append(2 * 2048**3 / (time.perf_counter() - start))

    # 2. The pure forward: the networks on parsed batches already in memory.
    reps = evaluation.load_repetitions(
        cfg, range(cfg.R), cfg.epochs, data_fingerprint(manifest), log
    )
    batches = list(evaluation.test_batches(cfg, manifest))
    models = [rep.model for rep in reps]
    parsed_inputs = [
        rows_to_model_input(b, reps[0].lookup_tensor, cfg.B, cfg.input_dim(), None, cfg.normalize)[
            0
        ]
        for b in batches
    ]
    pure = tf.function(lambda x: tf.stack([m(x) for m in models], axis=1), reduce_retracing=True)
    pure_s = float("inf")
    for _ in range(args.repeats + 1):  # the first round traces
        sample_peak()
        start = time.perf_counter()
        for x in parsed_inputs:
            pure(x).numpy()
        pure_s = min(pure_s, time.perf_counter() - start)
    rows = manifest["test"]["rows"]
    nnz = manifest["test"]["features_per_row"]
    sizes = [cfg.input_dim(), *cfg.hidden, cfg.B]

    # 3. evaluate.py, as a user runs it.
    flags = [
        "--dataset",
        cfg.name,
        "--work-dir",
        cfg.work_dir,
        *sum((["--set", p] for p in args.overrides), []),
    ]
    sample_peak()
    step = chain.run_step(
        "evaluate", [*chain.script("evaluate"), *flags], args.out / "evaluate.log"
    )
    timings = chain.read_metrics(cfg)["timings"]
    evaluate_forward = timings["forward_s"]
    evaluate_all = evaluate_forward + timings["read_s"] + timings["trace_s"]

    # 4. predict.py's path over the run directory, batches of 1,024 rows.
    from mach.data.arrays import read_dataset

    X = read_dataset(cfg)[1][0] if cfg.data_file or cfg.test_file else None
    predictor = RunPredictor(cfg, cfg.top_k, lambda _m: None, "auto")
    predict_s = float("inf")
    for _ in range(args.repeats + 1):
        sample_peak()
        start = time.perf_counter()
        for i in range(0, X.shape[0], 1024):
            part = X[i : i + 1024]
            predictor.predict_arrays(part.indices, part.data, part.indptr)
        predict_s = min(predict_s, time.perf_counter() - start)

    # 5. train.py for a few epochs in a scratch work directory (the TFRecords copied, not rebuilt).
    scratch = Path(tempfile.mkdtemp(prefix="paths-bench-"))
    try:
        shutil.copytree(cfg.dataset_dir() / "tfrecords", scratch / cfg.name / "tfrecords")
        train_flags = ["--dataset", cfg.name, "--work-dir", str(scratch)]
        train_flags += ["--set", f"epochs={args.train_epochs}", *flags[4:]]
        sample_peak()
        chain.run_step("train", [*chain.script("train"), *train_flags], args.out / "train.log")
        trained = chain.chain_config(
            cfg.name, scratch, [f"epochs={args.train_epochs}", *args.overrides]
        )
        summaries = chain.train_summaries(trained)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    sample_peak()
    peak = max(peaks)
    train_rows = summaries[0]["train_rows"]
    nnz_train = manifest["train"]["features_per_row"]
    # Training's useful FLOPs: 2 x 2 nnz x hidden for the first layer (forward, weight gradient),
    # 3 x 2 fan_in x fan_out for every other layer, per row, repetition and epoch.
    per_row = 4 * nnz_train * sizes[1] + 6 * sum(a * b for a, b in zip(sizes[1:-1], sizes[2:]))
    train_flop = per_row * train_rows * args.train_epochs * cfg.R
    train_s = max(s["wall_s"] for s in summaries)
    flop = forward_flop(rows, nnz, sizes, cfg.R)
    result = {
        "machine": machine(),
        "cpu_flags": cpu_flags(),
        "matmul_peak_gflops": round(peak / 1e9, 1),
        "test_rows": rows,
        "pure_forward_s": round(pure_s, 3),
        "evaluate_forward_s": evaluate_forward,
        "evaluate_over_pure": round(evaluate_forward / pure_s, 2),
        "evaluate_read_s": round(timings["read_s"], 3),
        "evaluate_trace_s": round(timings["trace_s"], 3),
        "evaluate_with_read_and_trace_over_pure": round(evaluate_all / pure_s, 2),
        "evaluate_step_wall_s": step.wall_s,
        "predict_batch1024_s": round(predict_s, 3),
        "predict_over_pure": round(predict_s / pure_s, 2),
        "forward_fraction_of_peak": round(flop / pure_s / peak, 2),
        "train_epochs": args.train_epochs,
        "train_loop_s": train_s,
        "train_fraction_of_peak": round(train_flop / train_s / peak, 2),
    }
    print(
        f"\nMachine: {result['machine']} ({result['cpu_flags']}); matmul peak {peak / 1e9:.0f} GFLOP/s"
    )
    print("| path | seconds | over the pure forward | fraction of the peak |")
    print("|---|---:|---:|---:|")
    print(
        f"| pure forward, {rows:,} test rows | {pure_s:.3f} | 1.00 | {result['forward_fraction_of_peak']:.2f} |"
    )
    print(
        f"| evaluate.py's forward | {evaluate_forward:.3f} | {result['evaluate_over_pure']:.2f} | |"
    )
    print(
        f"| evaluate.py's forward with reading ({timings['read_s']:.3f} s) and trace "
        f"({timings['trace_s']:.3f} s) | {evaluate_all:.3f} | "
        f"{result['evaluate_with_read_and_trace_over_pure']:.2f} | |"
    )
    print(
        f"| predict.py's path, batches of 1,024 | {predict_s:.3f} | {result['predict_over_pure']:.2f} | |"
    )
    print(
        f"| train.py, {args.train_epochs} epochs | {train_s:.1f} | | {result['train_fraction_of_peak']:.2f} |"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "paths_bench.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
