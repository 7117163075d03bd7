"""What evaluate.py prints and draws: the metrics table, the P@k-vs-R plot and the list of runs."""

from __future__ import annotations

import json
from pathlib import Path

from mach.files import read_json


def format_table(results: dict) -> str:
    ks = sorted(
        {int(key.split("@")[1]) for key in results if key.startswith("P@") and "_" not in key}
    )
    rows = [
        ("P", "P@{}"),
        ("nDCG", "nDCG@{}"),
        ("PSP", "PSP@{}"),
        ("P official (÷min(|y|,k))", "P@{}_official"),
    ]
    lines = [f"{'metric':<26}" + "".join(f"{'@' + str(k):>8}" for k in ks)]
    for name, key in rows:
        if key.format(ks[0]) in results:
            lines.append(f"{name:<26}" + "".join(f"{results[key.format(k)]:>8.2f}" for k in ks))
    if "top1_accuracy" in results:
        lines.append(f"{'top-1 accuracy':<26}{results['top1_accuracy']:>8.2f}")
    return "\n".join(lines)


def plot_sweep(sweep: dict, path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    Rs = sorted(sweep)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key in ["P@1", "P@3", "P@5"]:
        if key in sweep[Rs[0]]:
            ax.plot(Rs, [sweep[R][key] for R in Rs], marker="o", label=key)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("R (repetitions merged)")
    ax.set_ylabel("precision (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_rows(dataset_dir: Path) -> list[dict]:
    """One dict per run directory of a dataset: where, repetitions trained, epochs done, metrics."""
    rows = []
    for ckpt in sorted(dataset_dir.glob("*/*/ckpt")):
        run_dir = ckpt.parent
        reps = sorted(p for p in ckpt.glob("r[0-9][0-9]") if (p / "config.json").is_file())
        epochs = []
        for rep in reps:
            try:
                epochs.append(max(map(int, read_json(rep / "weights.json")["epochs"]), default=0))
            except (OSError, ValueError, KeyError):
                epochs.append(0)
        try:
            cfg = read_json(reps[0] / "config.json")["config"] if reps else {}
        except (OSError, ValueError, KeyError):
            cfg = {}
        evaluations = {}
        for path in sorted(run_dir.glob("metrics*.json")):
            try:
                evaluations[path.name] = read_json(path)["metrics"]
            except (OSError, ValueError, KeyError, json.JSONDecodeError):
                evaluations[path.name] = None
        rows.append(
            {
                "run": f"{run_dir.parent.name}/{run_dir.name}",
                "R": cfg.get("R"),
                "trained": len(reps),
                "epochs": (
                    f"{min(epochs, default=0)}-{max(epochs, default=0)}"
                    if len(set(epochs)) > 1
                    else str(epochs[0] if epochs else 0)
                ),
                "of": cfg.get("epochs"),
                "evaluations": evaluations,
            }
        )
    return rows


def format_runs(rows: list[dict], dataset_dir: Path) -> str:
    if not rows:
        return f"no trained runs in {dataset_dir}"
    lines = [f"runs of {dataset_dir} (name = hashing/settings that differ from the preset):"]
    lines.append(f"{'run':<44} {'reps':>9} {'epochs':>8}  metrics (P@1 / P@3 / P@5)")
    for row in rows:
        reps = f"{row['trained']}/{row['R']}"
        epochs = f"{row['epochs']}/{row['of']}"
        shown = []
        for name, m in row["evaluations"].items():
            if m is None:
                shown.append(f"{name} damaged")
            else:
                cells = " / ".join(f"{m[k]:.2f}" for k in ("P@1", "P@3", "P@5") if k in m)
                shown.append(f"{name} {cells}")
        lines.append(f"{row['run']:<44} {reps:>9} {epochs:>8}  {'; '.join(shown) or '-'}")
    return "\n".join(lines)
