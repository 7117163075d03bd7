"""Train MACH repetitions: model r predicts the bucket h_r(y) of each row's labels.

    python train.py --dataset delicious --repetitions 0-15        # all 16 in one process (CPU)
    python train.py --dataset delicious --repetitions 3 --resume  # one job, as train.sh runs them
    python train.py --dataset delicious --overwrite               # replace an earlier model

A repetition that already has checkpoints is never replaced silently: pass --resume to continue it
(finished ones are left alone), --overwrite to retrain it, or --set tag=NAME to train a variant beside it.

Checkpoints go to <work_dir>/<dataset>/<hashing>/ckpt/rNN/, TensorBoard logs to .../logs/tensorboard/.
"""

import argparse
import dataclasses
import sys

import config
from mach.cli import (
    add_config_flags,
    check_config,
    config_from_args,
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
        "--resume", action="store_true", help="continue from each repetition's last complete epoch"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace repetitions that already have checkpoints (the old ones go once the new run saves its first checkpoint)",
    )
    parser.add_argument(
        "--print", metavar="KEY", help="print one resolved Config value and exit (for train.sh)"
    )
    args = parser.parse_args(argv)
    log = setup_logging().info
    return run_main(lambda: _train(args, log))


def _train(args, log) -> int:
    cfg = config_from_args(args, config.BASE, config.DATASETS)
    if args.print:
        if args.print not in dataclasses.asdict(cfg):
            raise ValueError(f"--print {args.print}: not a Config field")
        print(getattr(cfg, args.print))
        return 0
    # TensorFlow is imported only after the flags are known to be valid.
    from mach.devices import configure_devices
    from mach.prepare import load_data_manifest, with_data_sizes
    from mach.training import train_repetitions

    data_manifest = load_data_manifest(cfg)
    cfg = check_config(with_data_sizes(cfg, data_manifest))
    repetitions = parse_repetitions(args.repetitions, cfg.R)
    configure_devices(cfg, log)
    summaries = train_repetitions(
        cfg, repetitions, data_manifest, args.resume, log, overwrite=args.overwrite
    )
    for s in summaries:
        log(
            f"done r={s['r']} epochs={s['epochs']} final_loss={s['final_loss']:.5f} "
            f"wall_s={s['wall_s']} params={s['params']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
