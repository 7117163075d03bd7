"""Export trained MACH repetitions as one TensorFlow SavedModel: networks, lookups, merge and top-k.

    python export.py --dataset delicious --out models/delicious        # writes models/delicious/1/
    python export.py --dataset delicious --out models/delicious --merge candidates --merge-candidates 10

Takes the same --dataset/--set flags as evaluate.py. Each run writes the next free version,
<out>/<version>/, TensorFlow Serving's layout; the signatures are in mach/export.py's docstring and the
README ("Using a trained model"). The merge is exact up to mach.export.EXACT_MERGE_MAX_K classes and
the candidate merge above (--merge overrides); the choice is in <version>/assets.extra/mach.json.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import config
from mach.cli import add_config_flags, config_from_args, run_main, setup_logging


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_flags(parser)
    parser.add_argument("--out", type=Path, help="model base directory (default models/<dataset>)")
    parser.add_argument("--version", type=int, help="version to write (default: the next free)")
    parser.add_argument(
        "--R", type=int, help="export only the first R repetitions (default: Config.R)"
    )
    parser.add_argument(
        "--epoch", type=int, metavar="N", help="the checkpoints of epoch N (default: latest)"
    )
    parser.add_argument(
        "--merge",
        choices=["auto", "exact", "candidates"],
        default="auto",
        help="auto: exact up to mach.export.EXACT_MERGE_MAX_K classes, candidates above",
    )
    parser.add_argument(
        "--merge-candidates",
        type=int,
        metavar="M",
        help="buckets per repetition of the candidate merge (default 10)",
    )
    parser.add_argument(
        "--min-freq",
        type=int,
        default=2,
        help="candidate merge: keep labels found in at least this many repetitions, lowered until "
        "top_k remain (default 2, at most R)",
    )
    args = parser.parse_args(argv)
    log = setup_logging().info
    return run_main(lambda: _export(args, log))


def _export(args, log) -> int:
    cfg = config_from_args(args, config.BASE, config.DATASETS)
    from mach import evaluation, export
    from mach.prepare import load_data_manifest, with_data_sizes

    # The sizes come from the data, as evaluate.py takes them; the checkpoints must agree.
    cfg = with_data_sizes(cfg, load_data_manifest(cfg))
    R = cfg.R if args.R is None else args.R
    if not 1 <= R <= cfg.R:
        raise ValueError(f"--R {R}: expected 1 <= R <= {cfg.R} (Config.R)")
    if args.merge_candidates is not None and args.merge == "auto":
        args.merge = "candidates"
    merge = export.choose_merge(
        cfg.n_classes, cfg.B, R, args.merge, args.merge_candidates, args.min_freq
    )
    start = time.time()
    reps = evaluation.load_trained(cfg, R, log, args.epoch)
    inverse = None
    if merge["kind"] == "candidates":
        # The CSR inverses preprocess saved, checked against the lookups the models were trained with.
        label_to_bucket = np.stack([rep.label_to_bucket for rep in reps])  # [R, K] int32
        inverse = evaluation.load_inverse_lookups(cfg, label_to_bucket)
    module = export.build(cfg, reps, cfg.top_k, merge, inverse)
    out = args.out if args.out is not None else Path("models") / cfg.name
    path = export.save(module, out, args.version)
    log(
        f"exported={path} R={R} K={cfg.n_classes} k={cfg.top_k} merge={merge['kind']}"
        + "".join(f" {key}={v}" for key, v in merge.items() if key != "kind")
        + f" seconds={time.time() - start:.1f}"
    )
    signatures = "serving_default" + (", predict_lines" if module.line_format else "")
    log(f"signatures={signatures} (saved_model_cli show --dir {path} --all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
