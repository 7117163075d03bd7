"""Compare MACH settings over the development suite's validation splits (test rows are never read).

    python bench/devsuite_data.py --valid
    python bench/tune_suite.py --variant "defaults:" \
        --variant "old:B=64;hidden=(500,);dropout=0.0;lr=1e-3;normalize='l2'"

Each variant is `name:key=value;key=value` (Config fields over the defaults of a dataset that has no
preset, which is what a new user gets). Runs preprocess -> train -> evaluate for every set and variant
on the package's chain runner (mach.experiments.chain; each step's output goes to
<work-dir>/<variant>/<set>-<step>.log), and prints a markdown table of validation P@1/3/5 per set (from
metrics.json) and the mean over sets.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from devsuite_data import VALID

from mach.experiments import chain

OUT = Path("work/bench/tune_suite")
KS = ["P@1", "P@3", "P@5"]


def run_variant(data_dir: Path, variant: str, sets: list[str], work: Path) -> dict:
    """{set: P@1/3/5 and the chain's seconds} for one variant."""
    label, _, settings = variant.partition(":")
    results = {}
    for dataset in sets:
        pairs = [
            f"train_file={str(data_dir / dataset / 'train.txt')!r}",
            f"test_file={str(data_dir / dataset / 'test.txt')!r}",
            *(s for s in settings.split(";") if s),
        ]
        flags = chain.config_flags(f"dev_{dataset}", work / label, pairs)
        seconds = 0.0
        for step in ("preprocess", "train", "evaluate"):
            log_path = work / label / f"{dataset}-{step}.log"
            seconds += chain.run_step(step, [*chain.script(step), *flags], log_path).wall_s
        metrics = chain.read_metrics(chain.chain_config(f"dev_{dataset}", work / label, pairs))
        results[dataset] = {**{k: metrics["metrics"][k] for k in KS}, "seconds": seconds}
        print(
            f"variant={label} set={dataset} "
            + " ".join(f"{k}={results[dataset][k]:.2f}" for k in KS)
            + f" seconds={seconds:.0f}",
            file=sys.stderr,
            flush=True,
        )
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=VALID, help=f"default {VALID}")
    parser.add_argument(
        "--sets", help="comma-separated set names (default: every folder in --data)"
    )
    parser.add_argument("--variant", action="append", required=True, help="name:key=value;...")
    parser.add_argument("--work-dir", type=Path, default=OUT, help=f"runs and logs (default {OUT})")
    parser.add_argument("--out", type=Path, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    args.data = args.data.resolve()  # the scripts resolve relative data paths against data_dir
    if not args.data.is_dir():
        print(
            f"error: no validation data at {args.data}; run `python bench/devsuite_data.py --valid "
            f"--out {args.data}` first",
            file=sys.stderr,
        )
        return 2
    sets = args.sets.split(",") if args.sets else sorted(p.name for p in args.data.iterdir())
    table = {}
    for variant in args.variant:
        table[variant] = run_variant(args.data, variant, sets, args.work_dir)
        if args.out:
            args.out.write_text(json.dumps(table, indent=1) + "\n")
    print("| variant | " + " | ".join(sets) + " | mean P@1 | mean P@3 | mean P@5 | s |")
    print("|---|" + "---:|" * (len(sets) + 4))
    for variant, results in table.items():
        cells = [
            f"{results[s]['P@1']:.1f}/{results[s]['P@3']:.1f}/{results[s]['P@5']:.1f}" for s in sets
        ]
        means = [np.mean([results[s][k] for s in sets]) for k in KS]
        seconds = sum(results[s]["seconds"] for s in sets)
        print(
            f"| {variant.partition(':')[0]} | "
            + " | ".join(cells)
            + " | "
            + " | ".join(f"{m:.2f}" for m in means)
            + f" | {seconds:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
