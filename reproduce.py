"""Reproduce a paper preset end to end: check the downloads, preprocess -> train.sh -> evaluate, report.

    python reproduce.py --dataset wiki10_31k --data-dir ~/data                 # the paper's setting
    python reproduce.py --dataset amazon3m --data-dir ~/data --gpus 0,1,2,3 --per-gpu 2
    python reproduce.py --dataset wiki10_31k --data-dir ~/data --quick         # a slice, in minutes
    python reproduce.py --dataset amazon670k --quick --synthetic               # no download needed

The files are checked before any work (names, header counts against the published sizes). The chain
runs the usual scripts with the same --work-dir, --data-dir and --set flags, and can be interrupted:
running the same command again skips what is done. Results go to <results-dir>/<dataset>.md and .json,
next to the published values in config.REFERENCES.

--quick runs the same chain on the first rows of each file (R=2, 1 epoch, and a network shrunk where it
would not fit a 2-core, 24 GiB machine; each change is printed) under <work-dir>/quick, and writes
<dataset>-quick.md; --synthetic (implies --quick) uses a generated stand-in with the preset's K, D and
labels per row instead of the download. Quick results only check the set-up: they are not comparable.
"""

import argparse
import shutil
import sys
from pathlib import Path

import config
from mach.cli import add_set_flag, config_from_args, setup_logging
from mach.datasets import DATASETS as FACTS
from mach.experiments import chain, reproduce


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", required=True, choices=sorted(set(FACTS) - {"delicious"}))
    parser.add_argument("--data-dir", default=config.BASE.data_dir, help="where the downloads are")
    parser.add_argument("--work-dir", default="work", help="outputs of the scripts (default: work)")
    parser.add_argument("--results-dir", default="results", help="where the results files go")
    parser.add_argument("--gpus", help="GPU ids for train.sh, e.g. 0,1,2,3; 'none' for CPU")
    parser.add_argument("--per-gpu", type=int, help="train.sh jobs per GPU (default 2)")
    parser.add_argument("--quick", action="store_true", help="a small slice, to check the set-up")
    parser.add_argument(
        "--synthetic", action="store_true", help="quick run on a generated stand-in (no download)"
    )
    parser.add_argument(
        "--quick-rows",
        default=",".join(map(str, reproduce.QUICK_ROWS)),
        metavar="TRAIN,TEST",
        help="rows of the quick slice (default %(default)s)",
    )
    add_set_flag(
        parser,
        "Config override passed to every script (repeatable); a key set here is never shrunk",
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    log = setup_logging().info
    quick = args.quick or args.synthetic
    # Absolute paths: every script sees the same directories whatever it runs from.
    data_dir = Path(args.data_dir).expanduser().resolve()
    work_dir = Path(args.work_dir).expanduser().resolve()
    if quick:
        work_dir = work_dir / ("quick-synthetic" if args.synthetic else "quick")
    user = argparse.Namespace(
        dataset=args.dataset,
        overrides=args.overrides,
        work_dir=str(work_dir),
        data_dir=str(data_dir),
    )
    try:
        rows = tuple(int(n) for n in args.quick_rows.split(","))
        if len(rows) != 2 or min(rows) < 1:
            raise ValueError(f"--quick-rows {args.quick_rows}: expected TRAIN,TEST, e.g. 2000,500")
        cfg = config_from_args(user, config.BASE, config.DATASETS)
        known = FACTS[args.dataset]
        sets, shrunk = [], []
        if quick:
            keep = {pair.partition("=")[0].strip() for pair in args.overrides}
            changes, shrunk = reproduce.quick_plan(cfg, keep)
            sets += [f"{key}={value!r}" for key, value in changes.items()]
            for note in shrunk:
                log(f"step=plan quick {note}")
        # The data: the downloads, checked; a slice of them; or a synthetic stand-in.
        data_out = work_dir / cfg.name / "data"
        if args.synthetic:
            files = reproduce.write_synthetic(cfg, known, data_out, rows, log)
            source = "synthetic stand-in"
        else:
            for line in reproduce.check_downloads(cfg, known):
                log(f"step={line}")
            source = "slice of the download" if quick else "download"
            files = {}
            if quick:
                ext = "vw" if cfg.format == "vw" else "txt"
                for split, rows_wanted in zip(["train", "test"], rows):
                    files[split] = data_out / f"{split}.{ext}"
                    src = cfg.resolve(getattr(cfg, f"{split}_file"))
                    n = reproduce.write_slice(src, files[split], rows_wanted, cfg.format)
                    log(f"step=data slice split={split} rows={n} file={files[split]}")
        sets += [f"{split}_file={str(path)!r}" for split, path in files.items()]
        # The user's --set come last, so that they win over the quick plan.
        sets += args.overrides
        cfg = config_from_args(
            argparse.Namespace(**{**vars(user), "overrides": sets}), config.BASE, config.DATASETS
        )
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    flags = chain.config_flags(cfg.name, work_dir, sets, data_dir)
    steps = {}

    def step(name: str, cmd: list[str]) -> None:
        log(f"step={name} start cmd={' '.join(cmd)}")
        steps[name] = chain.run_step(name, cmd)
        log(f"step={name} done seconds={steps[name].wall_s:.1f}")

    try:
        step("preprocess", [*chain.script("preprocess"), *flags])
        if shutil.which("tmux"):
            train = [
                "bash",
                str(chain.CLONE / "train.sh"),
                "--dataset",
                cfg.name,
                "--R",
                str(cfg.R),
            ]
            train += ["--work-dir", str(work_dir), "--jobs", "1", "--wait"]
            train += ["--gpus", args.gpus] if args.gpus else []
            train += ["--per-gpu", str(args.per_gpu)] if args.per_gpu else []
            train += ["--", *flags[4:]]  # train.sh takes --dataset and --work-dir itself
        else:
            log(
                "step=train note=tmux is not installed, so train.py runs the repetitions in one process"
            )
            train = [*chain.script("train"), *flags]
        step("train", train)
        if reproduce.evaluation_up_to_date(cfg):
            log(f"step=evaluate up_to_date metrics={cfg.run_dir() / 'metrics.json'}")
        else:
            step("evaluate", [*chain.script("evaluate"), *flags])
    except chain.StepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1

    run = {
        "quick": quick,
        "synthetic": args.synthetic,
        "command": ["python", "reproduce.py", *(sys.argv[1:] if argv is None else argv)],
        "shrunk": shrunk,
        "overrides": args.overrides,
        "data_source": source,
        "seconds": {name: step.wall_s for name, step in steps.items()},
        "peak_rss": {name: step.peak_rss_bytes for name, step in steps.items()},
    }
    results = reproduce.collect_results(cfg, run, known)
    stem = cfg.name + ("-quick-synthetic" if args.synthetic else "-quick" if quick else "")
    paths = reproduce.write_results(Path(args.results_dir), stem, results)
    metrics = results["metrics"]
    log(
        f"step=report dataset={cfg.name} quick={quick} "
        + " ".join(f"{k}={metrics[k]:.2f}" for k in ["P@1", "P@3", "P@5"] if k in metrics)
        + f" results={paths[1]} json={paths[0]}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
