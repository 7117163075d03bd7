"""Top-k predictions, prediction timings and model size of trained MACH repetitions, for bench/compare.py.

    python bench/mach_timing.py --dataset delicious --out work/compare/delicious/split01/mach

Takes the same --dataset/--set flags as evaluate.py and runs the same forward + merge (mach.evaluation), so
its predictions equal evaluate.py's. Writes <out>/topk.npy ([n_test, top_k] int64) and <out>/result.json:
batch prediction time per row (the second of two passes, so tf.function tracing is not counted), the median
latency of one row at a time (through predict.py's path for single rows: the compiled forward kernel and
the merge kernel), and the bytes of the model variables and lookups (the checkpoints also hold
Adam's two slots per variable, which inference does not need, so they are reported apart).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import common  # noqa: F401  (puts the repository root on sys.path, for config)
import numpy as np

import config
from mach.cli import add_config_flags, config_from_args, setup_logging


def checkpoint_bytes(checkpoint_path: str) -> int:
    """Bytes of one checkpoint (its index and data shards), not the older ones kept beside it."""
    path = Path(checkpoint_path)
    return sum(p.stat().st_size for p in path.parent.glob(path.name + ".*"))


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
    cfg = config_from_args(args, config.BASE, config.DATASETS)

    from mach import evaluation
    from mach.data.prepare import load_data_manifest, with_data_sizes
    from mach.data.tfrecords import read_batches
    from mach.devices import configure_devices
    from mach.merge import merge_scores
    from mach.serving.forward import CompiledNets

    data_manifest = load_data_manifest(cfg)
    cfg = with_data_sizes(cfg, data_manifest)
    configure_devices(cfg, log)
    reps = evaluation.load_trained(cfg, cfg.R, log)
    files = evaluation.test_files(cfg, data_manifest)

    evaluation.predict(cfg, reps, files, [cfg.R], "kernel", log)  # warm-up: traces the tf.function
    pred = evaluation.predict(cfg, reps, files, [cfg.R], "kernel", log)
    topk = pred["topk"][cfg.R]  # [n, top_k] int64
    batch_s = pred["forward_s"] + pred["merge_s"]

    # One row per call, as a served request would arrive, through predict.py's path for single rows
    # (--forward auto: the compiled forward kernel, then the merge kernel). Rows are read beforehand.
    nets = CompiledNets.of_repetitions(cfg, reps)
    label_to_bucket = np.stack([rep.label_to_bucket for rep in reps])  # [R, K] int32
    warm_up = 5
    singles = [
        (p["feat_idx"].values.numpy(), p["feat_val"].values.numpy())
        for p in read_batches(files, 1).take(warm_up + args.latency_rows)
    ]
    latencies = []
    for i, (indices, values) in enumerate(singles):
        start = time.perf_counter()
        logits = nets.logits(indices, values, np.array([0, len(indices)]), cfg.threads)
        merge_scores(
            logits, label_to_bucket, cfg.top_k, mode=cfg.merge, loss=cfg.loss, threads=cfg.threads
        )
        if i >= warm_up:
            latencies.append(time.perf_counter() - start)

    args.out.mkdir(parents=True, exist_ok=True)
    np.save(args.out / "topk.npy", topk)
    lookup_bytes = sum(p.stat().st_size for p in cfg.lookup_dir().glob("*") if p.is_file())
    variable_bytes = sum(v.numpy().nbytes for rep in reps for v in rep.model.variables)
    # The settings as resolved (preset, defaults, B from K, --set), which is what was trained.
    origin = f"preset {cfg.name!r}" if cfg.name in config.DATASETS else "defaults (no preset)"
    settings = (
        f"{origin} as resolved: B={cfg.B} R={cfg.R} hidden={cfg.hidden} dropout={cfg.dropout} "
    )
    settings += (
        f"lr={cfg.lr} normalize={cfg.normalize} epochs={cfg.epochs} batch_size={cfg.batch_size}"
    )
    result = {
        "method": "mach",
        "settings": f"{settings} loss={cfg.loss} merge={cfg.merge}",
        "B": cfg.B,
        "threads": cfg.threads,
        "predict_ms_per_sample": 1e3 * batch_s / topk.shape[0],
        "eval_batch_size": cfg.eval_batch_size,
        "latency_ms_median": 1e3 * float(np.median(latencies)) if latencies else None,
        "latency_rows": len(latencies),
        "latency_path": "compiled forward kernel + merge kernel (predict.py, single rows)",
        "model_bytes": variable_bytes + lookup_bytes,
        "model_variable_bytes": variable_bytes,
        "lookup_bytes": lookup_bytes,
        "checkpoint_bytes_with_optimizer": sum(checkpoint_bytes(r.checkpoint_path) for r in reps),
    }
    (args.out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
