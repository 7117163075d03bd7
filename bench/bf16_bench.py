"""Serving weights stored as bfloat16 against float32: bytes on disk and P@k, side by side in one run.

    python bench/bf16_bench.py --dataset delicious          # the run `make demo` trains

Builds the SavedModel of a trained run twice (export.py's code: float32 weights, then bfloat16), writes
both to a temporary directory to weigh their variables, and serves the run's test rows through each
(the serving_default signature, in process), scoring both with evaluate.py's scorer. Prints one JSON
object; --out writes it too. Recorded runs: experiments/serving.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import cpu_name

from mach.cli import add_config_flags, config_from_args, run_main, setup_logging
from mach.presets import load_presets


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_flags(parser)
    parser.add_argument("--out", type=Path, help="also write the JSON result here")
    args = parser.parse_args(argv)
    log = setup_logging().info
    return run_main(lambda: _bench(args, log))


def _bench(args, log) -> int:
    import tensorflow as tf

    from mach import evaluation
    from mach.data.prepare import load_data_manifest, with_data_sizes
    from mach.identity import data_fingerprint
    from mach.merge import Merge
    from mach.serving import export

    cfg = config_from_args(args, *load_presets())
    manifest = load_data_manifest(cfg)
    cfg = with_data_sizes(cfg, manifest)
    reps = evaluation.load_repetitions(
        cfg, range(cfg.R), cfg.epochs, data_fingerprint(manifest), log
    )
    batches = []
    for parsed in evaluation.test_batches(cfg, manifest):
        ragged = tf.RaggedTensor.from_sparse(parsed["feat_idx"])
        request = (ragged.flat_values, parsed["feat_val"].values, ragged.row_splits)
        batches.append((request, evaluation.row_labels(parsed)))
    true_labels = [labels for _, batch_labels in batches for labels in batch_labels]
    result = {"machine": cpu_name(), "dataset": cfg.name, "R": cfg.R, "test_rows": len(true_labels)}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in export.PRECISIONS:
            module = export.build(cfg, reps, cfg.top_k, Merge(), None, cfg.epochs, precision)
            path = export.write_savedmodel(module, Path(tmp) / precision, 1)
            variables = sum(f.stat().st_size for f in (path / "variables").iterdir())
            weights = sum(w.numpy().nbytes for net in module.nets for w in net.weights_)
            serve = tf.saved_model.load(str(path)).signatures["serving_default"]
            start, topk = time.perf_counter(), []
            for (indices, values, row_splits), _ in batches:
                topk.append(serve(indices=indices, values=values, row_splits=row_splits)["labels"])
            seconds = time.perf_counter() - start
            metrics = evaluation.score(cfg, np.concatenate(topk), true_labels, manifest)
            result[precision] = {
                "weight_bytes": int(weights),
                "savedmodel_variables_bytes": int(variables),
                "serve_s": round(seconds, 3),
                **{k: round(metrics[k], 2) for k in ("P@1", "P@3", "P@5", "PSP@5")},
            }
            log(f"precision={precision} {result[precision]}")
    half, full = result["bfloat16"], result["float32"]
    result["variables_bytes_ratio"] = round(
        half["savedmodel_variables_bytes"] / full["savedmodel_variables_bytes"], 3
    )
    result["P@k_change"] = {k: round(half[k] - full[k], 2) for k in ("P@1", "P@3", "P@5")}
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
