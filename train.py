"""Train MACH repetitions: model r predicts the bucket h_r(y) of each row's labels.

    python train.py --dataset delicious                         # all R repetitions in one process (CPU)
    python train.py --dataset delicious --set R=4 --set epochs=2   # a variant: its own run directory
    python train.py --dataset delicious --repetitions 3         # one job, as train.sh runs them
    python train.py --dataset delicious --overwrite             # retrain the same settings from scratch

Each set of model settings trains in its own run directory, named by what differs from the preset
(<work_dir>/<dataset>/<hashing>/<run>/, e.g. .../B128-hs0-fhnone/R4-epochs2/); lookups of a new
B, hash seed or R are built here. Running the same command again continues an interrupted run from its
last checkpoint, and leaves a finished one as it is. preprocess.py must have run once for the dataset.
"""

import argparse
import dataclasses
import sys

import config
from mach.cli import (
    add_config_flags,
    config_from_args,
    parse_args,
    parse_ranges,
    run_main,
    setup_logging,
)


def parse_repetitions(text: str, R: int) -> list[int]:
    """'0-3,8' -> [0, 1, 2, 3, 8]; 'all' -> 0..R-1; each must be < R."""
    if text == "all":
        return list(range(R))
    reps = parse_ranges(text, "--repetitions")
    bad = [r for r in reps if not 0 <= r < R]
    if bad or not reps:
        raise ValueError(
            f"--repetitions {text!r}: repetition {bad[0] if bad else '?'} is not in 0..{R - 1} (R={R})"
        )
    return reps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_flags(parser)
    parser.add_argument(
        "--repetitions",
        default="all",
        help="which r to train in this process: 'all', '3', '0-7', '0,2,4'",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="retrain repetitions that already have checkpoints (the old model stays until the new "
        "one saves its first checkpoint)",
    )
    # Resuming is the default; the flag stays for older command lines.
    parser.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--print", metavar="KEY", help="print one resolved Config value and exit (for train.sh)"
    )
    args = parse_args(parser, argv)
    log = setup_logging().info
    return run_main(lambda: _train(args, log))


def _train(args, log) -> int:
    cfg = config_from_args(args, config.BASE, config.DATASETS)
    if args.print:
        if args.print not in dataclasses.asdict(cfg):
            raise ValueError(f"--print {args.print}: not a Config field")
        from mach.data.prepare import load_data_manifest, with_data_sizes

        # Sizes chosen from the data (R, B, ...) are known once preprocess has run.
        if (cfg.tfrecord_dir() / "manifest.json").is_file():
            cfg = with_data_sizes(cfg, load_data_manifest(cfg))
        print(getattr(cfg, args.print))
        return 0
    # TensorFlow is imported only after the flags are known to be valid.
    from mach.data.prepare import load_data_manifest, prepare_lookups, with_data_sizes
    from mach.devices import configure_devices
    from mach.training import train_repetitions

    data_manifest = load_data_manifest(cfg)
    cfg = with_data_sizes(cfg, data_manifest)
    # Another B, hash seed or R needs lookups preprocess did not write: they are a function of the
    # settings alone, so they are built here (a no-op when they exist) rather than asked for.
    prepare_lookups(cfg, log)
    repetitions = parse_repetitions(args.repetitions, cfg.R)
    configure_devices(cfg, log)
    summaries = train_repetitions(cfg, repetitions, data_manifest, log, overwrite=args.overwrite)
    wall = [s["wall_s"] for s in summaries]
    log(
        f"done repetitions={args.repetitions} epochs={cfg.epochs} "
        f"final_loss={sum(s['final_loss'] for s in summaries) / len(summaries):.5f} "
        f"wall_s={max(wall):.1f} params_per_repetition={summaries[0]['params']} run={cfg.run_dir()}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
