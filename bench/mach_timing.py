"""Top-k predictions, prediction timings and model size of trained MACH repetitions, for bench/compare.py.

    python bench/mach_timing.py --dataset delicious --out work/bench/compare/delicious/split01/mach

Takes the same --dataset/--set flags as evaluate.py and runs the same forward + merge (mach.evaluation), so
its predictions equal evaluate.py's. Writes <out>/topk.npy ([n_test, top_k] int64) and <out>/result.json:
batch prediction time per row (the second of two passes, so tf.function tracing is not counted), the median
latency of one row at a time (through predict.py's path for single rows: RunPredictor, whose --forward auto
takes a single row through the compiled forward kernel, then the merge kernel), and the bytes of the model
weights and lookups (the checkpoints also hold Adam's two slots per variable, which inference does not
need, so they are reported apart).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from predict_bench import test_rows

from mach.cli import add_config_flags, config_from_args, setup_logging
from mach.experiments import chain
from mach.presets import load_presets


def checkpoint_bytes(ckpt_dir: Path, name: str) -> int:
    """Bytes of one checkpoint (its index and data shards), not the older ones kept beside it."""
    return sum(p.stat().st_size for p in ckpt_dir.glob(name + ".*"))


def batch_topk(cfg, reps, data_manifest: dict, log) -> tuple[np.ndarray, float]:
    """Top-k labels [n_test, top_k] int64 of the test rows, as evaluate.py merges them, and the seconds
    of the second pass (forward + merge; the first traces the forward function)."""
    from mach import evaluation
    from mach.merge import Merge

    forward = evaluation.make_forward(cfg, reps)
    label_to_bucket = np.stack([rep.label_to_bucket for rep in reps])  # [R, K] int32

    def blocks():
        for parsed in evaluation.test_batches(cfg, data_manifest):
            yield forward(parsed).numpy()  # [batch, R, B] float32

    for _ in range(2):
        pred = evaluation.merge_blocks(
            cfg, blocks(), label_to_bucket, [cfg.R], "compiled", log, Merge()
        )
    return pred["topk"][cfg.R], pred["forward_s"] + pred["merge_s"]


def single_row_ms(cfg, data_manifest: dict, n: int, log) -> list[float]:
    """Milliseconds of n single-row calls through predict.py's path (rows read beforehand)."""
    from mach.serving.predictors import RunPredictor

    predictor = RunPredictor(cfg, cfg.top_k, log, forward="auto")
    warm_up = 5
    latencies = []
    for i, row in enumerate(test_rows(cfg, data_manifest, warm_up + n)):
        start = time.perf_counter()
        predictor.predict([row])
        if i >= warm_up:
            latencies.append(1e3 * (time.perf_counter() - start))
    return latencies


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_flags(parser)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument(
        "--latency-rows", type=int, default=300, help="test rows predicted one at a time"
    )
    args = parser.parse_args(argv)
    log = setup_logging().info
    base, presets = load_presets()
    cfg = config_from_args(args, base, presets)

    from mach import evaluation
    from mach.data.prepare import load_data_manifest, with_data_sizes
    from mach.devices import configure_devices
    from mach.identity import data_fingerprint

    data_manifest = load_data_manifest(cfg)
    cfg = with_data_sizes(cfg, data_manifest)
    configure_devices(cfg, log)
    data = data_fingerprint(data_manifest)
    reps = evaluation.load_repetitions(cfg, range(cfg.R), cfg.epochs, data, log)
    topk, batch_s = batch_topk(cfg, reps, data_manifest, log)
    latencies = single_row_ms(cfg, data_manifest, args.latency_rows, log)

    args.out.mkdir(parents=True, exist_ok=True)
    np.save(args.out / "topk.npy", topk)
    lookup_bytes = chain.dir_bytes(cfg.lookup_dir())
    weight_bytes = 4 * cfg.R * cfg.params_per_repetition()  # float32 weights and biases
    saved = chain.train_summaries(cfg)
    # The settings as resolved (preset, defaults, B from K, --set), which is what was trained.
    origin = f"preset {cfg.name!r}" if cfg.name in presets else "defaults (no preset)"
    settings = (
        f"{origin} as resolved: B={cfg.B} R={cfg.R} hidden={cfg.hidden} dropout={cfg.dropout} "
        f"lr={cfg.lr} normalize={cfg.normalize} epochs={cfg.epochs} batch_size={cfg.batch_size} "
        f"loss={cfg.loss} score={cfg.score}"
    )
    result = {
        "method": "mach",
        "settings": settings,
        "B": cfg.B,
        "threads": cfg.threads,
        "predict_ms_per_sample": 1e3 * batch_s / topk.shape[0],
        "eval_batch_size": cfg.eval_batch_size,
        "latency_ms_median": float(np.median(latencies)) if latencies else None,
        "latency_rows": len(latencies),
        "latency_path": "predict.py's path for single rows (compiled forward kernel + merge kernel)",
        "model_bytes": weight_bytes + lookup_bytes,
        "model_variable_bytes": weight_bytes,
        "lookup_bytes": lookup_bytes,
        "checkpoint_bytes_with_optimizer": sum(
            checkpoint_bytes(cfg.ckpt_dir(s["r"]), s["checkpoint"]) for s in saved
        ),
    }
    (args.out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
