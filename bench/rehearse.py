"""Rehearse a paper preset at its true K and D on synthetic rows: does every step fit, and how long would it take?

    python bench/rehearse.py --preset amazon670k                 # 20k train / 2k test rows, R=2, 2 epochs
    python bench/rehearse.py --preset amazon3m --R 1             # the largest piece that fits 24 GiB here
    python bench/rehearse.py --preset wiki10_31k --train-rows 5000 --out /tmp/rehearse

Synthetic data with the preset's exact K and D and its labels and features per row (rows scaled down), then
preprocess, train R repetitions for two epochs with the preset's network (the rate is the second epoch's), and evaluate with the exact merge,
the candidate merge and the official approx_eval. Each step runs in its own process; per step it records
wall time and peak RSS (wait4), plus TFRecord and checkpoint bytes and examples/s per repetition. The
projection of the full run (the preset's rows, epochs and R) on this CPU comes from the measured rate and is
labelled projected; memory is compared with the model 4 bytes x params x 4 (weights, gradient, two Adam
slots) a repetition. Appends one JSON line per run to bench/rehearse.jsonl and prints a markdown row.
"""

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from common import REPO, cpu_name  # also puts the repository root on sys.path, for config

import config
from mach.data.synthetic import SyntheticSpec, write_dataset

# Published shape of each dataset: labels per row, features per row, full train rows. Features per row of
# Amazon-3M and ODP are not in our sources: the values marked "assumed" are guesses of the right order.
SHAPES = {
    "wiki10_31k": dict(labels=18.6, features=670, rows=14_146, note=""),
    "delicious200k": dict(labels=75.5, features=300, rows=196_606, note=""),
    "amazon670k": dict(labels=5.45, features=76, rows=490_449, note=""),
    "amazon3m": dict(labels=36.04, features=40, rows=1_717_899, note="features/row assumed"),
    "odp": dict(labels=1.0, features=100, rows=1_084_320, note="features/row assumed"),
}


def spec_for(name: str, cfg) -> SyntheticSpec:
    """Prototype features (kept with probability 0.8) plus uniform noise give the features per row."""
    shape = SHAPES[name]
    per_label = max(1, round(0.6 * shape["features"] / shape["labels"] / 0.8))
    noise = max(0, round(shape["features"] - 0.8 * per_label * shape["labels"]))
    return SyntheticSpec(
        n_classes=cfg.n_classes,
        n_features=cfg.n_features,
        labels_per_row=shape["labels"],
        multiclass=shape["labels"] == 1.0,
        max_labels_per_row=max(16, int(2.5 * shape["labels"])),
        features_per_label=per_label,
        noise_features=noise,
    )


def n_params(cfg) -> int:
    sizes = [cfg.input_dim(), *cfg.hidden, cfg.B]
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def run_step(cmd: list[str], log_path: Path) -> dict:
    """Run one step in its own process: wall seconds and that process's peak RSS."""
    start = time.time()
    with open(log_path, "w") as log:
        child = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        _, status, usage = os.wait4(child.pid, 0)
    seconds = time.time() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed ({code}); see {log_path}")
    return {"wall_s": round(seconds, 1), "peak_rss_gib": round(usage.ru_maxrss / 2**20, 2)}


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", required=True, choices=sorted(SHAPES))
    parser.add_argument("--train-rows", type=int, default=20_000)
    parser.add_argument("--test-rows", type=int, default=2_000)
    parser.add_argument("--R", type=int, default=2, help="repetitions trained (default 2)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/mach-rehearse"))
    parser.add_argument("--jsonl", type=Path, default=REPO / "bench" / "rehearse.jsonl")
    args = parser.parse_args(argv)
    preset = config.DATASETS[args.preset]
    spec = spec_for(args.preset, preset)
    data_dir, work = args.out / args.preset / "data", args.out / args.preset / "work"
    steps = {}
    start = time.time()
    ext = "vw" if preset.format == "vw" else "txt"
    write_dataset(spec, data_dir, args.train_rows, args.test_rows, log=lambda *_: None)
    if preset.format == "vw":  # the multiclass presets read Vowpal Wabbit text
        for split in ["train", "test"]:
            rows = (data_dir / f"{split}.txt").read_text().splitlines()[1:]
            (data_dir / f"{split}.vw").write_text(
                "".join(f"{r.split(' ', 1)[0]} | {r.split(' ', 1)[1]}\n" for r in rows)
            )
    steps["data"] = {"wall_s": round(time.time() - start, 1)}
    flags = [
        "--dataset", args.preset, "--work-dir", str(work),
        "--set", f"train_file='{data_dir / f'train.{ext}'}'",
        "--set", f"test_file='{data_dir / f'test.{ext}'}'",
        "--set", f"R={args.R}", "--set", "epochs=2", "--set", "threads=0",
    ]  # fmt: skip
    py = sys.executable
    logs = args.out / args.preset
    steps["preprocess"] = run_step([py, "preprocess.py", *flags], logs / "preprocess.log")
    steps["train"] = run_step([py, "train.py", *flags, "--overwrite"], logs / "train.log")
    # The second epoch's rate: the first one also pays for tracing the step.
    rates = [
        float(x) for x in re.findall(r"epoch=2 .*?ex_per_s=(\d+)", (logs / "train.log").read_text())
    ]
    cfg = dataclasses.replace(preset, work_dir=str(work), R=args.R)
    for mode, extra in [
        ("exact", []),
        ("candidates", ["--merge-candidates", str(min(50, cfg.B))]),
        ("approx", ["--merge-approx", str(min(50, cfg.B))]),
    ]:
        steps[f"evaluate_{mode}"] = run_step(
            [py, "evaluate.py", *flags, *extra], logs / f"evaluate_{mode}.log"
        )
    steps["preprocess"]["tfrecord_bytes"] = dir_bytes(cfg.tfrecord_dir())
    steps["train"]["checkpoint_bytes"] = dir_bytes(cfg.run_dir() / "ckpt")
    steps["train"]["ex_per_s_per_rep"] = round(min(rates)) if rates else None
    update = re.search(r"first_layer_update=(\w+)", (logs / "train.log").read_text())
    steps["train"]["first_layer_update"] = update[1] if update else "dense_adam"
    params = n_params(cfg)
    shape = SHAPES[args.preset]
    # Training R repetitions here runs them in one process, so the rate above is per repetition with
    # R sharing the 2 cores; a full run trains preset.R repetitions for preset.epochs epochs.
    rate = steps["train"]["ex_per_s_per_rep"] or 0
    projected_h = shape["rows"] * preset.epochs * preset.R / args.R / max(rate, 1e-9) / 3600
    if args.train_rows < 3 * preset.batch_size:
        print(
            f"note: {args.train_rows} rows are under 3 batches of {preset.batch_size}: a noisy rate"
        )
    record = {
        "preset": args.preset,
        "cpu": cpu_name(),
        "K": cfg.n_classes,
        "D": cfg.n_features,
        "input_dim": cfg.input_dim(),
        "hidden": list(cfg.hidden),
        "B": cfg.B,
        "R_trained": args.R,
        "train_rows": args.train_rows,
        "test_rows": args.test_rows,
        "synthetic": dataclasses.asdict(spec),
        "shape_note": shape["note"],
        "params_per_rep": params,
        "model_gib_per_rep": round(4 * params / 2**30, 2),
        "train_memory_model_gib": round(16 * params * args.R / 2**30, 2),
        "steps": steps,
        "projected_full_run_hours_this_cpu": round(projected_h, 1),
    }
    args.jsonl.parent.mkdir(parents=True, exist_ok=True)
    with open(args.jsonl, "a") as f:
        f.write(json.dumps(record) + "\n")
    print(markdown_row(record))
    return 0


def markdown_row(rec: dict) -> str:
    s = rec["steps"]
    return (
        f"| {rec['preset']} | {rec['K']:,} | {rec['input_dim']:,} | {rec['params_per_rep'] / 1e6:.0f} M | "
        f"{rec['R_trained']} | {s['preprocess']['wall_s']} s / {s['preprocess']['peak_rss_gib']} GiB | "
        f"{s['train']['wall_s']} s / {s['train']['peak_rss_gib']} GiB (model {rec['train_memory_model_gib']} GiB) | "
        f"{s['train']['ex_per_s_per_rep']} | {s['evaluate_exact']['wall_s']} s / {s['evaluate_exact']['peak_rss_gib']} GiB | "
        f"{s['evaluate_candidates']['wall_s']} s | {s['evaluate_approx']['wall_s']} s | "
        f"{s['train']['checkpoint_bytes'] / 2**30:.2f} GiB | {rec['projected_full_run_hours_this_cpu']} h |"
    )


if __name__ == "__main__":
    sys.exit(main())
