"""Pick MACH settings on a validation split carved from the training rows (the test rows are never read).

    python bench/tune.py --dataset delicious --valid-fraction 0.2 \
        --variant "base:" --variant "bce:loss=bce" --variant "wide:hidden=(1024,);dropout=0.3"

Each variant is `name:key=value;key=value` (Config fields).  Runs preprocess -> train -> evaluate for each,
with every --seed, on the package's chain runner (mach.experiments.chain; each step's output goes to
<work-dir>/logs/), and prints a markdown table of validation P@1/3/5 (mean over seeds, from metrics.json)
and the training loop's seconds (from train.json).
"""

import argparse
import sys
from pathlib import Path

import numpy as np

from mach.experiments import chain

OUT = Path("work/bench/tune")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="delicious")
    parser.add_argument("--valid-fraction", type=float, default=0.2)
    parser.add_argument(
        "--variant", action="append", required=True, help="name:key=value;key=value"
    )
    parser.add_argument("--seed", type=int, action="append", help="training seeds (default: 0)")
    parser.add_argument("--work-dir", type=Path, default=OUT, help=f"runs and logs (default {OUT})")
    parser.add_argument("--out", default=None, help="also append the table rows to this file")
    args = parser.parse_args(argv)
    print(
        "| variant | settings | P@1 | P@3 | P@5 | train s |\n|---|---|---|---|---|---|", flush=True
    )
    for variant in args.variant:
        name, _, settings = variant.partition(":")
        sets = [s for s in settings.split(";") if s]
        results, seconds = [], []
        for seed in args.seed or [0]:
            run = [f"valid_fraction={args.valid_fraction}", f"seed={seed}", f"tag='{name}-s{seed}'"]
            flags = chain.config_flags(args.dataset, args.work_dir, [*run, *sets])
            for step in ("preprocess", "train", "evaluate"):
                log_path = args.work_dir / "logs" / f"{name}-s{seed}-{step}.log"
                chain.run_step(step, [*chain.script(step), *flags], log_path)
            cfg = chain.chain_config(args.dataset, args.work_dir, [*run, *sets])
            results.append(chain.read_metrics(cfg)["metrics"])
            seconds.append(max(s["wall_s"] for s in chain.train_summaries(cfg)))
        mean = {k: np.mean([r[k] for r in results]) for k in ["P@1", "P@3", "P@5"]}
        row = f"| {name} | {'; '.join(sets) or 'defaults'} | {mean['P@1']:.2f} | {mean['P@3']:.2f} | {mean['P@5']:.2f} | {np.mean(seconds):.0f} |"
        print(row, flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(row + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
