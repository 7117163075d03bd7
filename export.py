"""Export trained MACH repetitions as one TensorFlow SavedModel: networks, lookups, merge and top-k.

    python export.py --dataset delicious --out models/delicious        # writes models/delicious/1/
    python export.py --dataset delicious --out models/delicious --merge candidates --merge-buckets 10
    python export.py --dataset delicious --out models/delicious-bf16 --precision bfloat16  # half the bytes

Takes the same --dataset/--set flags as evaluate.py (the settings name the run). Each export writes
the next free version, <out>/<version>/, TensorFlow Serving's layout; the signatures are described in
docs/serving.md. --merge auto (the default) takes the exact merge up to 50,000 classes and the
candidate merge above; the choice is recorded in <version>/assets.extra/mach.json.
"""

import argparse
import sys
from pathlib import Path

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
    parser.add_argument(
        "--precision",
        choices=["float32", "bfloat16"],
        default="float32",
        help="how the weights are stored: bfloat16 takes half the bytes (computed in float32)",
    )
    add_merge_flags(parser, kinds=("auto", "exact", "candidates"), with_impl=False)
    args = parse_args(parser, argv)
    log = setup_logging().info
    return run_main(lambda: _export(args, log))


def _export(args, log) -> int:
    cfg = config_from_args(args, config.BASE, config.DATASETS)
    merge, _ = merge_from_args(args)
    from mach.data.prepare import load_data_manifest, with_data_sizes
    from mach.serving import export

    # The sizes come from the data, as evaluate.py takes them; the repetitions must agree.
    data_manifest = load_data_manifest(cfg)
    cfg = with_data_sizes(cfg, data_manifest)
    R = cfg.R if args.R is None else args.R
    out = args.out if args.out is not None else Path("models") / cfg.name
    export.export_run(
        cfg, data_manifest, R, merge, args.epoch, out, args.version, log, args.precision
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
