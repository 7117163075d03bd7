"""Serving speed of a trained MACH model: rows/s at batches of 1, 32 and 1,024 and single-row p50/p99
latency, for the exported SavedModel, predict.py's path over it, the run-directory paths (the R
networks' weights through each of predict.py's --forward choices, then the compiled merge kernel), and
predict.py's path over the run directory (its default, --forward auto).

    make demo                        # trains the delicious preset into ./work
    python bench/predict_bench.py    # --dataset delicious; takes evaluate.py's --dataset/--set flags
    python bench/predict_bench.py --merge-sweep   # in-graph exact vs candidate merge as K grows

The rows are the test split's (from the TFRecords). "SavedModel" calls serving_default with arrays
made beforehand; "predict.py" is that tool's path from text lines to JSON lines (parse, call, format),
without its process start. Peers' figures come from bench/compare.py's JSON (--peers, default
work/bench/compare/compare_<dataset>.json). Writes <out>/predict_bench_<dataset>.json (default
work/bench/predict_bench). Recorded figures: experiments/serving.
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
from common import machine

from mach.cli import add_config_flags, config_from_args, run_main, setup_logging
from mach.presets import CLONE, load_presets

OUT = Path("work/bench/predict_bench")
PEERS = "work/bench/compare/compare_{}.json"
BATCHES = (1, 32, 1024)


def test_rows(cfg, data_manifest: dict, n: int) -> list:
    """Up to n test rows as mach.data.formats.Row (no labels), read from the TFRecords."""
    from mach import evaluation
    from mach.data.formats import Row

    rows = []
    for parsed in evaluation.test_batches(cfg, data_manifest):
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


def serving_paths(cfg, data_manifest: dict, args, log) -> dict:
    """Timings of the serving paths over the test rows."""
    import tensorflow as tf

    from mach import evaluation
    from mach.data.prepare import load_inverse_lookups
    from mach.identity import data_fingerprint
    from mach.serving import export, predictors

    rows = test_rows(cfg, data_manifest, max(BATCHES[-1], args.latency_rows))
    log(f"rows={len(rows)} from the test split")
    results, startup = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        data = data_fingerprint(data_manifest)
        reps = evaluation.load_repetitions(cfg, range(cfg.R), cfg.epochs, data, log)
        merge = export.choose_merge(cfg.n_classes, cfg.B, cfg.R, "auto")
        inverse = None
        if merge.kind == "candidates":
            lookups = np.stack([rep.label_to_bucket for rep in reps])  # [R, K] int32
            inverse = load_inverse_lookups(cfg, lookups)
        module = export.build(cfg, reps, cfg.top_k, merge, inverse, cfg.epochs)
        path = export.write_savedmodel(module, Path(tmp), 1)
        log(f"exported={path} merge={merge.name(cfg.B)}")
        model = predictors.SavedModelPredictor(path)

        def tensors(batch):
            arrays = map(tf.constant, predictors.batch_arrays(batch))
            return dict(zip(["indices", "values", "row_splits"], arrays))

        results["SavedModel serving_default"] = timings(
            lambda t: model.serve(**t), batched(rows, tensors), args.latency_rows, args.repeats
        )
        log(f"timed=savedmodel {results['SavedModel serving_default']}")

        results["predict.py over the SavedModel"] = timings(
            predict_text(cfg, model, log), batched(rows, as_text), args.latency_rows, args.repeats
        )
        log(f"timed=predict.py {results['predict.py over the SavedModel']}")
        startup["predict.py --model SavedModel"] = first_row_seconds(path, rows[0])
    run = {
        forward: predictors.RunPredictor(cfg, cfg.top_k, log, forward)
        for forward in predictors.FORWARDS
    }
    for forward, predictor in run.items():
        name = f"run dir, {forward} forward + merge kernel"
        results[name] = timings(
            predictor.predict, batched(rows, list), args.latency_rows, args.repeats
        )
        log(f"timed={forward} {results[name]}")
    # The path a user calls: text in, JSON lines out, the default forward (auto).
    results["predict.py over the run dir"] = timings(
        predict_text(cfg, run["auto"], log),
        batched(rows, as_text),
        args.latency_rows,
        args.repeats,
    )
    startup["predict.py --model RUN_DIR"] = first_row_seconds(cfg.run_dir(), rows[0])
    for name, seconds in startup.items():
        log(f"first_row name={name!r} seconds={seconds}")
    return results, startup


STARTS = 3  # predict.py processes started per model; the median counts


def first_row_seconds(model: Path, row) -> float:
    """Seconds from starting `predict.py --model model` to its first answer, one row on stdin (the
    median of STARTS processes): interpreter start, imports, model loading and one prediction."""
    import subprocess

    text = as_text([row])
    seconds = []
    for _ in range(STARTS):
        start = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, str(CLONE / "predict.py"), "--model", str(model)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        process.stdin.write(text)
        process.stdin.close()
        process.stdout.readline()  # the first answer
        seconds.append(time.perf_counter() - start)
        process.wait()
    return round(float(np.median(seconds)), 3)


def predict_text(cfg, model, log):
    """predict.py's path from text lines to JSON lines (parse, call, format) over `model`."""
    from mach.serving import textio

    def run(text: bytes) -> str:
        counts, out = textio.Counts(), io.StringIO()
        parsed = textio.read_text_rows(io.BytesIO(text), "-", "xc", cfg.n_features, False, counts)
        writer = textio.Writer(out, "jsonl", None)
        textio.predict_rows(model, parsed, cfg.top_k, BATCHES[-1], writer, counts, log)
        return out.getvalue()

    return run


def merge_functions(lookups, offsets, labels, k: int, m: int, min_freq: int) -> dict:
    """The two in-graph merges of logits [batch, R, B]."""
    import tensorflow as tf

    from mach import merge_graph

    return {
        "exact": lambda x: merge_graph.exact_topk(tf.unstack(x, axis=1), lookups, k),
        "candidates": lambda x: merge_graph.candidate_topk(
            x, lookups, offsets, labels, k, m, min_freq
        ),
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


def peers(path: Path, name: str) -> list[str]:
    """Table rows of bench/compare.py's methods (its latency is one row at a time)."""
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
    parser.add_argument(
        "--out", type=Path, default=OUT, help=f"where the JSON goes (default {OUT})"
    )
    parser.add_argument("--peers", type=Path, help=f"bench/compare.py's JSON (default {PEERS})")
    args = parser.parse_args(argv)
    log = setup_logging().info
    return run_main(lambda: _bench(args, log))


def _bench(args, log) -> int:
    cfg = config_from_args(args, *load_presets())
    host = f"{machine()}, load average {os.getloadavg()[0]:.2f} at start"
    out_dir = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.merge_sweep:
        Ks = [int(float(k)) for k in args.K.split(",")]
        sweep = merge_sweep(Ks, cfg.R, 10, 2, cfg.top_k, args.repeats, log)
        (out_dir / "predict_merge_sweep.json").write_text(
            json.dumps({"machine": host, "rows": sweep}, indent=2) + "\n"
        )
        return 0
    from mach.data.prepare import load_data_manifest, with_data_sizes

    if not (cfg.ckpt_dir(0) / "train.json").is_file():
        raise FileNotFoundError(
            f"no trained model at {cfg.run_dir()}: train the delicious preset with `make demo`, "
            "or pass --work-dir/--dataset/--set of a trained one"
        )
    data_manifest = load_data_manifest(cfg)
    cfg = with_data_sizes(cfg, data_manifest)
    results, startup = serving_paths(cfg, data_manifest, args, log)
    header = (
        "| path | batch 1 rows/s | batch 32 rows/s | batch 1024 rows/s | p50 ms (1 row) | p99 ms |"
    )
    lines = [f"Machine: {host}.", "", header, "|---|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        per_s = " | ".join(f"{r[f'rows_per_s_batch{b}']:,.0f}" for b in BATCHES)
        lines.append(f"| {name} | {per_s} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |")
    lines += ["", "| process start to first answer (one row on stdin) | seconds |", "|---|---:|"]
    lines += [f"| {name} | {seconds:.2f} |" for name, seconds in startup.items()]
    lines += peers(args.peers or Path(PEERS.format(cfg.name)), cfg.name)
    print("\n".join(lines))
    (out_dir / f"predict_bench_{cfg.name}.json").write_text(
        json.dumps({"machine": host, "results": results, "first_row_s": startup}, indent=2) + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
