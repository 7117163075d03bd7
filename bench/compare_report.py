"""Scoring and reporting for bench/compare.py: one scorer for every method, a markdown table, a bar chart."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mach import metrics

METRICS = ["P@1", "P@3", "P@5", "nDCG@5", "PSP@5"]
LABELS = {
    "mach": "MACH (this repo)",
    "napkinxc_plt": "napkinXC PLT",
    "omikuji_parabel": "omikuji (Parabel-like)",
    "omikuji_bonsai": "omikuji (Bonsai-like)",
    "pecos_xrlinear": "PECOS XR-Linear",
}
# (column header, result key, format); a missing value prints as "–".
COLUMNS = [(m, m, "{:.2f}") for m in METRICS] + [
    ("train s", "train_s", "{:.1f}"),
    ("predict ms/sample", "predict_ms_per_sample", "{:.3f}"),
    ("latency ms (1 row)", "latency_ms_median", "{:.2f}"),
    ("model MB", "model_mb", "{:.1f}"),
    ("peak RSS MB", "peak_rss_mb", "{:.0f}"),
]


def inverse_propensities(
    train_labels: list[np.ndarray], n_classes: int, A: float, B: float
) -> np.ndarray:
    """[K] float64 1/p_l from the training label counts, as evaluate.py computes them."""
    counts = metrics.label_counts(train_labels, n_classes)
    return 1.0 / metrics.propensities(counts, len(train_labels), A, B)


def score(topk: np.ndarray, test_labels: list[np.ndarray], inv_propensity: np.ndarray) -> dict:
    """P@1/3/5, nDCG@1/3/5, PSP@1/3/5 (percent) of [n, k>=5] predictions, via mach.metrics."""
    return metrics.evaluate_topk(topk, test_labels, ks=(1, 3, 5), inv_propensity=inv_propensity)


def format_cell(value, fmt: str) -> str:
    return "–" if value is None else fmt.format(value)


def format_table(results: dict[str, dict]) -> str:
    """Markdown table, one row per method in the given order.

    Each result is either the measured numbers (metric keys plus the COLUMNS keys) or {"error": reason}; a
    method that failed to install or run gets its reason in the first cell instead of numbers.
    """
    lines = [
        "| method | " + " | ".join(c[0] for c in COLUMNS) + " |",
        "|---|" + "---:|" * len(COLUMNS),
    ]
    for method, result in results.items():
        name = LABELS.get(method, method)
        if "error" in result:
            reason = " ".join(str(result["error"]).split()).replace("|", "/")
            lines.append(f"| {name} | {reason} |" + " |" * (len(COLUMNS) - 1))
            continue
        cells = [format_cell(result.get(key), fmt) for _, key, fmt in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_notes(results: dict[str, dict], dropped_train_rows: int = 0) -> str:
    """What each method's numbers include, as a markdown list under the table."""
    every = (
        "Every method: same L2-normalised features, the same training rows (rows without labels or "
        f"without features left out, as usual: {dropped_train_rows} here), every test row; "
        "--threads for training and prediction; "
        "predict ms/sample = one pass over the test rows after a warm-up; latency = median of "
        "single-row calls (OpenMP methods suffer most when the machine is oversubscribed)."
    )
    notes = [every]
    mach = results.get("mach", {})
    if "error" not in mach and mach:
        notes.append(
            f"MACH: {mach['settings']}. train s = train.py's wall clock including TensorFlow start-up "
            f"(training loop alone {format_cell(mach.get('train_loop_s'), '{:.1f}')} s); predictions "
            f"and batch timings from bench/mach_timing.py (same forward + merge as evaluate.py, "
            f"{mach['eval_batch_size']} rows per step); latency through "
            f"{mach.get('latency_path', 'the same forward + merge')}; model MB = model variables + lookups "
            f"(checkpoint with Adam's slots: {mach['checkpoint_bytes_with_optimizer'] / 2**20:.1f} MB)."
        )
    if any(m.startswith("omikuji") and "error" not in r for m, r in results.items()):
        notes.append(
            "omikuji: train s includes reading the text file (its only training input); the Python "
            "binding predicts one row per call, so its batch time is a loop over rows."
        )
    if "error" not in results.get("pecos_xrlinear", {"error": ""}):
        notes.append("PECOS: predictions timed after save + reload with is_predict_only=True.")
    if "error" not in results.get("napkinxc_plt", {"error": ""}):
        notes.append(
            "napkinXC: its default seed is unset, so P@k moves by a few tenths between runs."
        )
    return "\n".join(f"- {note}" for note in notes)


def format_splits(per_split: dict[str, list[dict]]) -> str:
    """Markdown table of mean ± std (over splits) of each metric, one row per method."""
    lines = [
        "| method | splits | " + " | ".join(METRICS) + " |",
        "|---|---:|" + "---:|" * len(METRICS),
    ]
    for method, runs in per_split.items():
        if not runs:
            lines.append(f"| {LABELS.get(method, method)} | 0 |" + " – |" * len(METRICS))
            continue
        cells = []
        for m in METRICS:
            values = np.array([run[m] for run in runs])
            cells.append(
                f"{values.mean():.2f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.2f}"
            )
        lines.append(f"| {LABELS.get(method, method)} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_precision(results: dict[str, dict], path: Path, title: str) -> None:
    """Grouped bars of P@1/3/5 per method that produced numbers."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    done = {m: r for m, r in results.items() if "error" not in r}
    ks = ["P@1", "P@3", "P@5"]
    width = 0.8 / max(len(done), 1)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (method, result) in enumerate(done.items()):
        xs = np.arange(len(ks)) + (i - (len(done) - 1) / 2) * width
        bars = ax.bar(xs, [result[k] for k in ks], width, label=LABELS.get(method, method))
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(np.arange(len(ks)), ks)
    # Methods often differ by a point or two; an axis from 0 would hide that, so it starts near the lowest bar.
    lowest = min((r[k] for r in done.values() for k in ks), default=0.0)
    bottom = max(0.0, 5 * np.floor(lowest / 5) - 5)
    ax.set_ylim(bottom=bottom)
    ax.set_ylabel(f"precision (%), axis from {bottom:.0f}")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
