"""Compare MACH settings over the development suite's validation splits (test rows are never read).

    python bench/devsuite_data.py --valid --out work/devsuite/valid
    python bench/tune_suite.py --data work/devsuite/valid --variant "defaults:" \
        --variant "old:B=64;hidden=(500,);dropout=0.0;lr=1e-3;normalize='l2'"

Each variant is `name:key=value;key=value` (Config fields over the defaults of a dataset that has no
preset, which is what a new user gets). Runs preprocess -> train -> evaluate in this one process for
every set and variant, and prints a markdown table of validation P@1/3/5 per set and the mean over sets.
"""

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import common  # the repository on sys.path: the entry scripts live at its root
import numpy as np

import evaluate
import preprocess
import train

REPO = common.REPO

KS = ["P@1", "P@3", "P@5"]


def run_variant(data_dir: Path, name: str, variant: str, sets: list[str], work: Path) -> dict:
    """{set: metrics} for one variant; each script's output goes to work/<variant>/<set>.log."""
    label, _, settings = variant.partition(":")
    results = {}
    for dataset in sets:
        flags = ["--dataset", f"dev_{dataset}", "--work-dir", str(work / label)]
        flags += ["--set", f"train_file={str(data_dir / dataset / 'train.txt')!r}"]
        flags += ["--set", f"test_file={str(data_dir / dataset / 'test.txt')!r}"]
        flags += [arg for s in settings.split(";") if s for arg in ("--set", s)]
        log = work / label / f"{dataset}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        start = time.time()
        with open(log, "w") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
            failed = any(script.main(flags) for script in (preprocess, train, evaluate))
        if failed:
            raise RuntimeError(f"{label} on {dataset} failed; see {log}")
        metrics_path = next((work / label / f"dev_{dataset}").glob("*/metrics.json"))
        metrics = json.loads(metrics_path.read_text())["metrics"]
        results[dataset] = {**{k: metrics[k] for k in KS}, "seconds": time.time() - start}
        print(
            f"variant={label} set={dataset} "
            + " ".join(f"{k}={results[dataset][k]:.2f}" for k in KS)
            + f" seconds={results[dataset]['seconds']:.0f}",
            file=sys.stderr,
            flush=True,
        )
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=REPO / "work" / "devsuite" / "valid")
    parser.add_argument(
        "--sets", help="comma-separated set names (default: every folder in --data)"
    )
    parser.add_argument("--variant", action="append", required=True, help="name:key=value;...")
    parser.add_argument("--work-dir", type=Path, default=REPO / "work" / "tune_suite")
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
        table[variant] = run_variant(args.data, variant, variant, sets, args.work_dir)
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
