"""Serving speed of a trained MACH model: rows/s at batches of 1, 32 and 1,024 and single-row p50/p99
latency, for the exported SavedModel, predict.py's path over it, the work-directory paths (the R
checkpoints through each of predict.py's --forward choices, then the compiled merge kernel), and
predict.py's path over the work directory (its default, --forward auto).

    make demo                        # trains the delicious preset into ./work (about 3.5 min on 2 cores)
    python bench/predict_bench.py    # --dataset delicious; takes evaluate.py's --dataset/--set flags
    python bench/predict_bench.py --merge-sweep   # in-graph exact vs candidate merge as K grows

The rows are the test split's (from the TFRecords). "SavedModel" calls serving_default with arrays
made beforehand; "predict.py" is that tool's path from text lines to JSON lines (parse, call, format),
without its process start. Peers' figures come from bench/out/compare_<dataset>.json (bench/compare.py).
Writes bench/out/predict_bench_<dataset>.json.
"""

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import REPO, machine  # also puts the repository root on sys.path, for config

import config
from mach.cli import add_config_flags, config_from_args, run_main, setup_logging

BATCHES = (1, 32, 1024)


def test_rows(cfg, n: int):
    """Up to n test rows as mach.data.formats.Row, read from the TFRecords."""
    from mach import evaluation
    from mach.data.formats import Row
    from mach.data.prepare import load_data_manifest
    from mach.data.tfrecords import read_batches

    rows = []
    for parsed in read_batches(evaluation.test_files(cfg, load_data_manifest(cfg)), 1024):
        idx = parsed["feat_idx"]
        splits = np.searchsorted(idx.indices[:, 0].numpy(), np.arange(idx.dense_shape[0] + 1))
        values, ids = parsed["feat_val"].values.numpy(), idx.values.numpy()
        for i in range(len(splits) - 1):
            a, b = splits[i], splits[i + 1]
            rows.append(Row(len(rows) + 1, np.zeros(0, np.int64), ids[a:b], values[a:b]))
        if len(rows) >= n:
            break
    return rows[:n]


def timings(call, inputs: dict, latency_rows: int, repeats: int) -> dict:
    """rows/s per batch size (median call) and single-row p50/p99 ms.

    inputs: {batch size: [(n_rows, input of call), ...]}, made beforehand so that only call is timed.
    """
    out = {}
    for batch, chunks in inputs.items():
        call(chunks[0][1])  # traced and warm
        seconds = []
        for i in range(latency_rows if batch == 1 else repeats):
            start = time.perf_counter()
            call(chunks[i % len(chunks)][1])
            seconds.append(time.perf_counter() - start)
        out[f"rows_per_s_batch{batch}"] = chunks[0][0] / float(np.median(seconds))
        if batch == 1:
            out["p50_ms"] = 1e3 * float(np.percentile(seconds, 50))
            out["p99_ms"] = 1e3 * float(np.percentile(seconds, 99))
    return out


def batched(rows, prepare) -> dict:
    """{batch size: [(rows, prepare(rows))]} over consecutive test rows."""
    return {
        b: [(len(rows[i : i + b]), prepare(rows[i : i + b])) for i in range(0, len(rows), b)][
            : max(1, len(rows) // b)
        ]
        for b in BATCHES
    }


def as_text(rows) -> bytes:
    """Rows as predict.py reads them: xc lines without labels."""
    lines = (" " + " ".join(f"{i}:{v:.9g}" for i, v in zip(r.feat_idx, r.feat_val)) for r in rows)
    return ("\n".join(lines) + "\n").encode()


def serving_paths(cfg, args, log) -> dict:
    """Timings of the serving paths over the test rows."""
    import tensorflow as tf

    from mach import evaluation
    from mach.serving import export, predict

    rows = test_rows(cfg, max(BATCHES[-1], args.latency_rows))
    log(f"rows={len(rows)} from the test split")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        reps = evaluation.load_trained(cfg, cfg.R, log)
        merge = export.choose_merge(cfg.n_classes, cfg.B, cfg.R, "auto", None, 2)
        inverse = None
        if merge["kind"] == "candidates":
            lookups = np.stack([rep.label_to_bucket for rep in reps])  # [R, K] int32
            inverse = evaluation.load_inverse_lookups(cfg, lookups)
        path = export.save(export.build(cfg, reps, cfg.top_k, merge, inverse), Path(tmp), 1)
        log(f"exported={path} merge={merge}")
        model = predict.SavedModelPredictor(path)

        def tensors(batch):
            return dict(
                zip(
                    ["indices", "values", "row_splits"],
                    map(tf.constant, predict.batch_arrays(batch)),
                )
            )

        results["SavedModel serving_default"] = timings(
            lambda t: model.serve(**t), batched(rows, tensors), args.latency_rows, args.repeats
        )
        log(f"timed=savedmodel {results['SavedModel serving_default']}")

        results["predict.py over the SavedModel"] = timings(
            predict_text(cfg, model, log), batched(rows, as_text), args.latency_rows, args.repeats
        )
        log(f"timed=predict.py {results['predict.py over the SavedModel']}")
    work = {
        forward: predict.WorkDirPredictor(cfg, cfg.top_k, log, forward)
        for forward in predict.FORWARDS
    }
    for forward, predictor in work.items():
        name = f"work dir, {forward} forward + merge kernel"
        results[name] = timings(
            predictor.predict, batched(rows, list), args.latency_rows, args.repeats
        )
        log(f"timed={forward} {results[name]}")
    # The path a user calls: text in, JSON lines out, the default forward (auto).
    results["predict.py over the work dir"] = timings(
        predict_text(cfg, work["auto"], log),
        batched(rows, as_text),
        args.latency_rows,
        args.repeats,
    )
    return results


def predict_text(cfg, model, log):
    """predict.py's path from text lines to JSON lines (parse, call, format) over `model`."""
    from mach.serving import predict

    def run(text: bytes) -> str:
        counts, out = predict.Counts(), io.StringIO()
        parsed = predict.read_text_rows(io.BytesIO(text), "-", "xc", cfg.n_features, False, counts)
        writer = predict.Writer(out, "jsonl", None)
        predict.predict_rows(model, parsed, cfg.top_k, BATCHES[-1], writer, counts, log)
        return out.getvalue()

    return run


def merge_functions(lookups, offsets, labels, k: int, m: int, min_freq: int) -> dict:
    """The two in-graph merges of logits [batch, R, B]."""
    import tensorflow as tf

    from mach.serving import export

    return {
        "exact": lambda x: export.exact_topk(tf.unstack(x, axis=1), lookups, k),
        "candidates": lambda x: export.candidate_topk(x, lookups, offsets, labels, k, m, min_freq),
    }


def merge_sweep(Ks, R: int, m: int, min_freq: int, k: int, repeats: int, log) -> list[dict]:
    """ms per row of the in-graph exact and candidate merges on random logits, B = clip(K/100)."""
    import tensorflow as tf

    from mach import hashing
    from mach.serving import export

    rng = np.random.default_rng(0)
    out = []
    for K in Ks:
        B = int(np.clip(K // 100, 128, 10_000))
        label_to_bucket = np.stack([hashing.build_label_lookup(K, B, r) for r in range(R)])
        inverse = [hashing.invert_lookup(lookup, B) for lookup in label_to_bucket]
        offsets, labels = export.global_inverse(*map(np.stack, zip(*inverse)))
        lookups = [tf.constant(x) for x in label_to_bucket]
        offsets, labels = tf.constant(offsets), tf.constant(labels)
        spec = [tf.TensorSpec([None, R, B], tf.float32)]
        merges = merge_functions(lookups, offsets, labels, k, m, min_freq)
        for batch in (1, 256):
            logits = tf.constant(3 * rng.normal(size=(batch, R, B)).astype(np.float32))
            row = {"K": K, "B": B, "batch": batch}
            for name, fn in merges.items():
                fn = tf.function(fn, input_signature=spec)
                fn(logits)
                seconds = []
                for _ in range(repeats * (10 if batch == 1 else 1)):
                    start = time.perf_counter()
                    fn(logits)
                    seconds.append(time.perf_counter() - start)
                row[f"{name}_ms_per_row"] = 1e3 * float(np.median(seconds)) / batch
            log(
                " ".join(
                    f"{key}={v:.3f}" if isinstance(v, float) else f"{key}={v}"
                    for key, v in row.items()
                )
            )
            out.append(row)
    return out


def peers(name: str) -> list[str]:
    """Table rows of bench/compare.py's methods (its latency is one row at a time, 2 threads)."""
    path = REPO / "bench" / "out" / f"compare_{name}.json"
    if not path.is_file():
        return [f"(peers: run `python bench/compare.py --dataset {name}` for their figures)"]
    rows = []
    for method, r in json.loads(path.read_text())["results"].items():
        if "error" not in r:
            per_s = 1e3 / r["predict_ms_per_sample"]
            rows.append(
                f"| {method} (bench/compare.py) | | | {per_s:,.0f} | {r['latency_ms_median']:.2f} | |"
            )
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_flags(parser)
    parser.add_argument("--latency-rows", type=int, default=300, help="single-row calls timed")
    parser.add_argument("--repeats", type=int, default=5, help="calls timed per larger batch")
    parser.add_argument("--merge-sweep", action="store_true", help="time the in-graph merges vs K")
    parser.add_argument("--K", default="1e3,1e4,3e4,1e5,3e5", help="--merge-sweep: class counts")
    args = parser.parse_args(argv)
    log = setup_logging().info
    return run_main(lambda: _bench(args, log))


def _bench(args, log) -> int:
    cfg = config_from_args(args, config.BASE, config.DATASETS)
    host = f"{machine()}, load average {os.getloadavg()[0]:.2f} at start"
    out_dir = REPO / "bench" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.merge_sweep:
        Ks = [int(float(k)) for k in args.K.split(",")]
        sweep = merge_sweep(Ks, cfg.R, 10, 2, cfg.top_k, args.repeats, log)
        (out_dir / "predict_merge_sweep.json").write_text(
            json.dumps({"machine": host, "rows": sweep}, indent=2) + "\n"
        )
        return 0
    from mach.data.prepare import load_data_manifest, with_data_sizes

    if not (cfg.ckpt_dir(0) / "checkpoint").is_file():
        raise FileNotFoundError(
            f"no trained model at {cfg.run_dir()}: train the delicious preset with `make demo` "
            "(about 3.5 min on 2 cores), or pass --work-dir/--dataset/--set of a trained one"
        )
    cfg = with_data_sizes(cfg, load_data_manifest(cfg))
    results = serving_paths(cfg, args, log)
    header = (
        "| path | batch 1 rows/s | batch 32 rows/s | batch 1024 rows/s | p50 ms (1 row) | p99 ms |"
    )
    lines = [f"Machine: {host}.", "", header, "|---|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        per_s = " | ".join(f"{r[f'rows_per_s_batch{b}']:,.0f}" for b in BATCHES)
        lines.append(f"| {name} | {per_s} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |")
    lines += peers(cfg.name)
    print("\n".join(lines))
    (out_dir / f"predict_bench_{cfg.name}.json").write_text(
        json.dumps({"machine": host, "results": results}, indent=2) + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
