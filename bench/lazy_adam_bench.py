"""Dense Adam (the official code's, every paper preset's) against lazy Adam on the first layer, at a paper
preset's true shape: accuracy and training speed side by side in one run.

    python bench/lazy_adam_bench.py                              # wiki10_31k: its D, K, B and network
    python bench/lazy_adam_bench.py --preset amazon670k --train-rows 20000 --test-rows 5000

Synthetic rows with the preset's K, D, labels and features per row (bench/rehearse.py's stand-in, rows
as published unless given), then the preset trained twice through the Python API (the scripts' code),
sparse_first_layer off (dense Adam) and on (lazy Adam: only the rows of a batch's features change),
with the same R, epochs and seed. Reports test P@1/3/5 and the training loop's seconds (train.json).
Writes <out>/lazy_adam.json (default work/bench/lazy_adam). Recorded runs: experiments/lazy-adam.
"""

import argparse
import json
import sys
from pathlib import Path

from common import machine
from rehearse import shape_of, spec_for

from mach.cli import run_main, setup_logging
from mach.presets import load_presets

OUT = Path("work/bench/lazy_adam")
KS = ["P@1", "P@3", "P@5"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="wiki10_31k")
    parser.add_argument("--train-rows", type=int, help="default: the preset's published rows")
    parser.add_argument("--test-rows", type=int, help="default: the preset's published rows")
    parser.add_argument("--R", type=int, default=2, help="repetitions (each trained alike)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    log = setup_logging().info
    return run_main(lambda: _bench(args, log))


def _bench(args, log) -> int:
    from mach import MACH, read_xc
    from mach.data.synthetic import write_dataset
    from mach.datasets import DATASETS as FACTS
    from mach.files import read_json

    preset, facts = load_presets()[1][args.preset], FACTS[args.preset]
    rows = (args.train_rows or facts.train_rows, args.test_rows or facts.test_rows)
    data = args.out / "data" / args.preset
    if not (data / "test.txt").is_file():
        write_dataset(spec_for(shape_of(args.preset), preset), data, *rows, log=log)
    train = read_xc(data / "train.txt", preset.n_features, preset.n_classes)
    test = read_xc(data / "test.txt", preset.n_features, preset.n_classes)
    results = {}
    for first_layer in ("off", "on"):
        work = args.out / "work" / first_layer
        model = MACH(
            preset=args.preset,
            work_dir=work,
            R=args.R,
            epochs=args.epochs,
            sparse_first_layer=first_layer,
            verbose=True,
        ).fit(*train)
        cfg = model.config_
        loop_s = max(read_json(cfg.ckpt_dir(r) / "train.json")["wall_s"] for r in range(cfg.R))
        metrics = model.evaluate(*test)
        results[first_layer] = {
            **{k: round(metrics[k], 2) for k in KS},
            "loop_s": loop_s,
            "examples_per_s": round(rows[0] * args.epochs / loop_s),
        }
    off, on = results["off"], results["on"]
    out = {
        "machine": machine(),
        "preset": args.preset,
        "train_rows": rows[0],
        "test_rows": rows[1],
        "R": args.R,
        "epochs": args.epochs,
        "dense_adam": off,
        "lazy_adam": on,
        "lazy_minus_dense": {k: round(on[k] - off[k], 2) for k in KS},
        "lazy_speedup": round(off["loop_s"] / on["loop_s"], 2),
    }
    print(
        f"\n{args.preset} shape, synthetic rows {rows[0]:,} / {rows[1]:,}, R={args.R}, {args.epochs} epochs"
    )
    print("| first layer | P@1 | P@3 | P@5 | training loop s | rows/s per repetition |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in [("dense Adam (official, presets)", off), ("lazy Adam (opt-in)", on)]:
        print(
            f"| {name} | {r['P@1']} | {r['P@3']} | {r['P@5']} | {r['loop_s']} | {r['examples_per_s']:,} |"
        )
    print(f"lazy - dense: {out['lazy_minus_dense']}; lazy speed-up {out['lazy_speedup']}x")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "lazy_adam.json").write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
