"""Export trained MACH repetitions as one TensorFlow SavedModel: networks, lookups, merge and top-k.

    python export.py --dataset delicious --out models/delicious        # writes models/delicious/1/
    python export.py --dataset delicious --out models/delicious --merge candidates --merge-buckets 10

Takes the same --dataset/--set flags as evaluate.py (the settings name the run). Each export writes
the next free version, <out>/<version>/, TensorFlow Serving's layout; the signatures are described in
docs/serving.md. --merge auto (the default) takes the exact merge up to 50,000 classes and the
candidate merge above; the choice is recorded in <version>/assets.extra/mach.json.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import config
from mach.cli import (
    add_config_flags,
    add_merge_flags,
    config_from_args,
    merge_from_args,
    parse_args,
    run_main,
    setup_logging,
)


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
        "--epoch", type=int, metavar="N", help="the weights after epoch N (default: the last)"
    )
    add_merge_flags(parser, kinds=("auto", "exact", "candidates"), with_impl=False)
    args = parse_args(parser, argv)
    log = setup_logging().info
    return run_main(lambda: _export(args, log))


def _export(args, log) -> int:
    cfg = config_from_args(args, config.BASE, config.DATASETS)
    merge, _ = merge_from_args(args)
    from mach import evaluation
    from mach.data.prepare import load_data_manifest, load_inverse_lookups, with_data_sizes
    from mach.identity import data_fingerprint
    from mach.serving import export
    from mach.weights import resolve_epoch

    # The sizes come from the data, as evaluate.py takes them; the repetitions must agree.
    data_manifest = load_data_manifest(cfg)
    cfg = with_data_sizes(cfg, data_manifest)
    R = cfg.R if args.R is None else args.R
    if not 1 <= R <= cfg.R:
        raise ValueError(f"--R {R}: expected 1 <= R <= {cfg.R} (Config.R)")
    merge = export.choose_merge(cfg.n_classes, cfg.B, R, merge)
    epoch, note = resolve_epoch(cfg, R, args.epoch)
    start = time.time()
    reps = evaluation.load_repetitions(cfg, range(R), epoch, data_fingerprint(data_manifest), log)
    inverse = None
    if merge.kind == "candidates":
        # The CSR inverses preprocess saved, checked against the lookups the models were trained with.
        inverse = load_inverse_lookups(cfg, np.stack([rep.label_to_bucket for rep in reps]))
    module = export.build(cfg, reps, cfg.top_k, merge, inverse, epoch)
    out = args.out if args.out is not None else Path("models") / cfg.name
    path = export.save(module, out, args.version)
    log(
        f"exported={path} R={R} K={cfg.n_classes} k={cfg.top_k} merge={merge.name(cfg.B)} "
        f"epoch={epoch}{f' ({note})' if note else ''} seconds={time.time() - start:.1f}"
    )
    signatures = "serving_default" + (", predict_lines" if module.line_format else "")
    log(f"signatures={signatures} (saved_model_cli show --dir {path} --all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
