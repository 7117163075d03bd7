"""Pick MACH settings on a validation split carved from the training rows (the test rows are never read).

    python bench/tune.py --dataset delicious --valid-fraction 0.2 \
        --variant "base:" --variant "bce:loss=bce" --variant "wide:hidden=(1024,);dropout=0.3"

Each variant is `name:key=value;key=value` (Config fields).  Runs preprocess -> train -> evaluate for each,
with every --seed, and prints a markdown table of validation P@1/3/5 (mean over seeds) and train time.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import REPO


def run(script: str, flags: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / script), *flags], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"{script} {' '.join(flags)} failed:\n{done.stderr[-3000:]}")


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
    parser.add_argument("--work-dir", default=str(REPO / "work" / "tune"))
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
            flags = [
                "--dataset",
                args.dataset,
                "--work-dir",
                args.work_dir,
                "--set",
                f"valid_fraction={args.valid_fraction}",
                "--set",
                f"seed={seed}",
                "--set",
                f"tag='{name}-s{seed}'",
            ]
            for s in sets:
                flags += ["--set", s]
            run("preprocess.py", flags)
            start = time.time()
            run("train.py", flags)
            seconds.append(time.time() - start)
            run("evaluate.py", flags)
            metrics_path = next(
                Path(args.work_dir, args.dataset).glob(f"*-{name}-s{seed}/metrics.json")
            )
            results.append(json.loads(metrics_path.read_text())["metrics"])
        mean = {k: np.mean([r[k] for r in results]) for k in ["P@1", "P@3", "P@5"]}
        row = f"| {name} | {'; '.join(sets) or 'defaults'} | {mean['P@1']:.2f} | {mean['P@3']:.2f} | {mean['P@5']:.2f} | {np.mean(seconds):.0f} |"
        print(row, flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(row + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
