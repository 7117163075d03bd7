"""Candidate default settings over the development suite's validation splits, in one process.

    python bench/devsuite_data.py --valid        # the validation splits (test rows never read)
    python bench/defaults_study.py --variant "today:R=16;hidden=(1024,512);epochs=None" \
        --variant "sized:"                       # the sized defaults of mach.sizing

Each variant is `name:key=value;key=value` (Config fields over the defaults of a dataset without a
preset). Every set and variant trains and evaluates through the Python API (mach.MACH: the scripts'
code, without a process start per step), and records validation P@1/3/5 and the training loop's
seconds (train.json: tracing and epochs, no process start). Prints per-variant means and the
per-set table; writes <out>/defaults_study.json (default work/bench/defaults_study), appending to
earlier runs of other variants. Recorded runs: experiments/defaults-sized.
"""

import argparse
import ast
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from devsuite_data import VALID, prepare

from mach.cli import run_main, setup_logging

OUT = Path("work/bench/defaults_study")
SETS = [
    "stackex_chemistry",
    "stackex_cs",
    "stackex_philosophy",
    "stackex_chess",
    *(f"rcv1subset{i}" for i in range(1, 6)),
    "corel16k001",
    "langlog",
    "enron",
    "medical",
    "yeast",
    "scene",
    "cal500",
]
KS = ["P@1", "P@3", "P@5"]


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, body = text.partition(":")
    settings = {}
    for pair in filter(None, body.split(";")):
        key, _, value = pair.partition("=")
        settings[key.strip()] = ast.literal_eval(value.strip())
    return name, settings


def run(name: str, settings: dict, data: Path, threads: int) -> dict:
    """Validation P@k and the training loop's seconds of one variant on one set."""
    from mach import MACH, read_xc
    from mach.files import read_json

    train = read_xc(data / "train.txt")
    valid = read_xc(data / "test.txt", train[0].shape[1], train[1].shape[1])
    with tempfile.TemporaryDirectory() as work:
        model = MACH(work_dir=work, verbose=False, threads=threads, **settings)
        start = time.perf_counter()
        model.fit(*train)
        fit_s = time.perf_counter() - start
        metrics = model.evaluate(*valid)
        cfg = model.config_
        loop_s = max(read_json(cfg.ckpt_dir(r) / "train.json")["wall_s"] for r in range(cfg.R))
        sized = {"R": cfg.R, "B": cfg.B, "hidden": list(cfg.hidden), "epochs": cfg.epochs}
    return {**{k: metrics[k] for k in KS}, "loop_s": loop_s, "fit_s": fit_s, "sized": sized}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variant", action="append", required=True, help="name:key=value;...")
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--data", type=Path, default=VALID)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    log = setup_logging().info
    return run_main(lambda: _study(args, log))


def _study(args, log) -> int:
    path = args.out / "defaults_study.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    sets = args.sets.split(",")
    for text in args.variant:
        name, settings = parse_variant(text)
        results[name] = {"settings": text, "sets": results.get(name, {}).get("sets", {})}
        for dataset in sets:
            if not (args.data / dataset / "test.txt").is_file():
                prepare(dataset, args.data, valid=True)
            got = run(name, settings, args.data / dataset, args.threads)
            results[name]["sets"][dataset] = got
            log(
                f"variant={name} set={dataset} "
                + " ".join(f"{k}={got[k]:.2f}" for k in KS)
                + f" loop_s={got['loop_s']:.1f} sized={got['sized']}"
            )
            args.out.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(results, indent=2) + "\n")
    print(format_results(results, sets))
    return 0


def format_results(results: dict, sets: list[str]) -> str:
    lines = ["| variant | mean P@1 | mean P@3 | mean P@5 | median loop s | max loop s |"]
    lines.append("|---|---:|---:|---:|---:|---:|")
    for name, variant in results.items():
        rows = [variant["sets"][s] for s in sets if s in variant["sets"]]
        if not rows:
            continue
        means = [np.mean([r[k] for r in rows]) for k in KS]
        loops = [r["loop_s"] for r in rows]
        lines.append(
            f"| {name} | "
            + " | ".join(f"{m:.2f}" for m in means)
            + f" | {np.median(loops):.1f} | {max(loops):.1f} |"
        )
    lines += ["", "| set | " + " | ".join(results) + " |", "|---|" + "---|" * len(results)]
    for s in sets:
        cells = []
        for variant in results.values():
            r = variant["sets"].get(s)
            cells.append(
                ""
                if r is None
                else f"{r['P@1']:.1f}/{r['P@3']:.1f}/{r['P@5']:.1f} ({r['loop_s']:.0f}s)"
            )
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
