"""Grouped evaluation at a paper preset's true shape within its disk and memory budget.

    python bench/eval_budget_rehearsal.py                        # amazon670k: 153,025 test rows, R=32
    python bench/eval_budget_rehearsal.py --test-rows 20000 --budget-gb 1
    python bench/eval_budget_rehearsal.py --hidden 64,32    # narrower networks: a faster rehearsal

Synthetic rows with the preset's K, D, labels and features per row (mach.datasets), the full test
split's row count, and R networks of the preset's shape with random weights (what is measured is the
evaluation's disk and memory, not its accuracy: no training). --hidden narrows the networks to make the
forward pass cheaper; the logits spilled, n x R x B, do not depend on it. Then evaluate.py runs as a user runs it,
with eval_group_size and eval_budget_gb, while a watcher samples the size of its spill directory every
--sample-s seconds; the step's peak resident memory comes from wait4. Prints and writes
<out>/eval_budget.json (default work/bench/eval_budget). Recorded runs: experiments/eval-budget.
"""

import argparse
import json
import sys
import threading
from pathlib import Path

import numpy as np
from common import machine
from rehearse import shape_of, spec_for

from mach.cli import run_main, setup_logging
from mach.experiments import chain
from mach.presets import load_presets

OUT = Path("work/bench/eval_budget")


def write_random_run(cfg, manifest: dict, log) -> None:
    """Weights of the preset's shape for every repetition, written as training writes them."""
    from mach import weights
    from mach.data.prepare import load_lookups, prepare_lookups
    from mach.identity import data_fingerprint, write_repetition_config

    prepare_lookups(cfg, log)
    sizes = [cfg.input_dim(), *cfg.hidden, cfg.B]
    rng = np.random.default_rng(0)
    for r in range(cfg.R):
        if weights.saved_epochs(cfg.ckpt_dir(r)) == [cfg.epochs]:
            continue
        arrays = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            scale = np.float32(np.sqrt(2.0 / fan_in))
            arrays.append(rng.standard_normal((fan_in, fan_out), dtype=np.float32) * scale)
            arrays.append(np.zeros(fan_out, np.float32))
        write_repetition_config(
            cfg, load_lookups(cfg, r)[2], data_fingerprint(manifest), cfg.ckpt_dir(r)
        )
        weights.save_epoch(cfg.ckpt_dir(r), cfg.epochs, arrays, "last", "random weights")
        log(f"weights r={r} params={sum(a.size for a in arrays):,}")


class SpillWatcher(threading.Thread):
    """Samples the bytes under the run directory's spill directories until stopped."""

    def __init__(self, run_dir: Path, every_s: float):
        super().__init__(daemon=True)
        self.run_dir, self.every_s, self.peak, self.done = run_dir, every_s, 0, threading.Event()

    def run(self):
        while not self.done.wait(self.every_s):
            size = 0
            for spill in self.run_dir.glob(".eval-logits*"):
                for f in spill.glob("*"):
                    try:
                        size += f.stat().st_size
                    except OSError:
                        pass  # removed meanwhile
            self.peak = max(self.peak, size)


def memory_plan(log_path: Path) -> str | None:
    """evaluate.py's memory plan line (what it counts against the budget besides the logits)."""
    lines = [ln for ln in log_path.read_text().splitlines() if ln.startswith("memory plan:")]
    return lines[-1].removeprefix("memory plan: ") if lines else None  # this run's: the log grows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="amazon670k")
    parser.add_argument("--test-rows", type=int, help="default: the preset's published test rows")
    parser.add_argument("--train-rows", type=int, default=2000, help="rows for preprocess only")
    parser.add_argument("--group", type=int, default=8, help="eval_group_size")
    parser.add_argument("--budget-gb", type=float, default=4.0, help="eval_budget_gb")
    parser.add_argument("--hidden", help="hidden widths, e.g. 64,32 (default: the preset's)")
    parser.add_argument("--sample-s", type=float, default=0.2, help="spill sampling interval")
    parser.add_argument(
        "--merge", default="exact", choices=["exact", "candidates"], help="evaluate.py's --merge"
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    args.out = args.out.resolve()  # the scripts resolve relative data paths against data_dir
    log = setup_logging().info
    return run_main(lambda: _rehearse(args, log))


def _rehearse(args, log) -> int:
    from mach.data.prepare import load_data_manifest, with_data_sizes
    from mach.data.synthetic import write_dataset
    from mach.datasets import DATASETS as FACTS

    preset = load_presets()[1][args.preset]
    test_rows = args.test_rows or FACTS[args.preset].test_rows
    data_dir, work = args.out / "data", args.out / "work"
    files = {split: data_dir / f"{split}.txt" for split in ("train", "test")}
    if not all(p.is_file() for p in files.values()):
        spec = spec_for(shape_of(args.preset), preset)
        write_dataset(spec, data_dir, args.train_rows, test_rows, log=log)
    sets = [f"train_file={str(files['train'])!r}", f"test_file={str(files['test'])!r}"]
    sets += [f"eval_group_size={args.group}", f"eval_budget_gb={args.budget_gb}"]
    if args.hidden:
        sets.append(f"hidden=({args.hidden},)")
    flags = chain.config_flags(args.preset, work, sets)
    chain.run_step("preprocess", [*chain.script("preprocess"), *flags], args.out / "preprocess.log")
    cfg = chain.chain_config(args.preset, work, sets)
    manifest = load_data_manifest(cfg)
    write_random_run(with_data_sizes(cfg, manifest), manifest, log)
    watcher = SpillWatcher(cfg.run_dir(), args.sample_s)
    watcher.start()
    evaluate = [*chain.script("evaluate"), *flags, "--merge", args.merge]
    step = chain.run_step("evaluate", evaluate, args.out / "evaluate.log")
    watcher.done.set()
    watcher.join()
    name = "metrics.json" if args.merge == "exact" else "metrics-candidates-m10-f2.json"
    out = chain.read_metrics(cfg, name)
    budget = args.budget_gb * 2**30
    result = {
        "machine": machine(),
        "preset": args.preset,
        "test_rows": out["metrics"]["rows"],
        "R": cfg.R,
        "B": cfg.B,
        "K": cfg.n_classes,
        "hidden": list(cfg.hidden),
        "eval_group_size": args.group,
        "eval_budget_gb": args.budget_gb,
        "merge": args.merge,
        "logits_of_all_rows_gib": round(test_rows * cfg.R * cfg.B * 4 / 2**30, 1),
        "chunk_rows": out["placement"]["chunk_rows"],
        "spill_bytes_planned": out["placement"]["spill_bytes"],
        "spill_bytes_peak_sampled": watcher.peak,
        "merge_rows": out["placement"]["merge_rows"],
        # The most logits held in memory at once (mach.evaluation.merge_rows): a forward step's
        # [b, g, B] twice, or a merge step's [m, R, B] three times.
        "logits_in_memory_planned_bytes": max(
            2 * cfg.eval_batch_size * args.group * cfg.B * 4,
            3 * out["placement"]["merge_rows"] * cfg.R * cfg.B * 4,
        ),
        "peak_rss_bytes": step.peak_rss_bytes,
        "evaluate_wall_s": step.wall_s,
        "timings": out["timings"],
        "spill_within_budget": watcher.peak <= budget,
        "peak_rss_within_budget": step.peak_rss_bytes <= budget,
        "memory_plan": memory_plan(args.out / "evaluate.log"),
    }
    print(json.dumps(result, indent=2))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "eval_budget.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
