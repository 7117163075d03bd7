"""MACH's defaults against the peers on every set of the development suite (../shared/data).

    python bench/devsuite.py                              # every set, every method: <out>/devsuite.md
    python bench/devsuite.py --methods mach               # re-run MACH only; the peers' results are kept
    python bench/devsuite.py --sets enron,medical --set epochs=20

Each set runs through bench/compare.py (same L2-normalised rows for every method, same threads, one
scorer), as a dataset without a preset: MACH gets exactly what a new user's first run gets. The data
come from bench/devsuite_data.py (splits recorded there). Results accumulate in --out (default
work/bench/devsuite/devsuite.json, the tables beside it as devsuite.md), so one method can be re-run
without the others; the table marks where MACH is at or above the best peer, or within 1 point, on P@1,
P@3 and P@5, with the training cost of every method beside it (devsuite.png: P@1 against training
seconds, every method, every set). Recorded runs: experiments/defaults-devsuite.
"""

import argparse
import json
import re
import sys
import time
from pathlib import Path

import devsuite_data
import numpy as np
from common import matmul_peak_gflops

from mach.cli import add_set_flag
from mach.experiments import chain

BENCH = Path(__file__).resolve().parent
OUT = Path("work/bench/devsuite")
KS = ["P@1", "P@3", "P@5"]
TOLERANCE = 1.0  # points of precision MACH may trail the best peer by
PEERS = ["napkinxc_plt", "omikuji_parabel", "omikuji_bonsai", "pecos_xrlinear"]
LABELS = {
    "napkinxc_plt": "napkinXC",
    "omikuji_parabel": "omikuji-P",
    "omikuji_bonsai": "omikuji-B",
    "pecos_xrlinear": "PECOS",
}


def run_set(name: str, args) -> dict:
    """compare.py on one set; {method: result} as compare.py wrote it."""
    folder = args.data / name
    if not (folder / "test.txt").exists():
        devsuite_data.prepare(name, args.data, valid=False)
    cmd = [sys.executable, str(BENCH / "compare.py"), "--dataset", f"dev_{name}"]
    cmd += ["--train", str(folder / "train.txt"), "--test", str(folder / "test.txt")]
    cmd += ["--methods", args.methods, "--threads", str(args.threads), "--latency-rows", "20"]
    cmd += ["--work-dir", str(args.work_dir), "--out-dir", str(args.work_dir / "out")]
    cmd += [arg for pair in args.overrides for arg in ("--set", pair)]
    log_path = args.work_dir / "logs" / f"{name}.log"
    done = chain.run_step(f"compare {name}", cmd, log_path, check=False)
    if done.returncode != 0:
        return {
            m: {"error": f"compare.py exit {done.returncode}; see {log_path}"}
            for m in args.methods.split(",")
        }
    out = json.loads((args.work_dir / "out" / f"compare_dev_{name}.json").read_text())
    info = json.loads((folder / "split.json").read_text())
    results = out["results"]
    nnz = features_per_row(folder / "train.txt")
    return {
        m: {**r, "_data": info, "_dropped": out.get("dropped_train_rows", 0), "_nnz": nnz}
        for m, r in results.items()
    }


def features_per_row(path: Path) -> float:
    """Mean non-zeros per row of a repository-format file."""
    lines = path.read_text().splitlines()[1:]
    return sum(line.count(":") for line in lines) / max(len(lines), 1)


def training_flop(mach: dict) -> float:
    """The arithmetic of MACH's training run: per row, repetition and epoch, 4 nnz x hidden[0] for the
    first layer (forward, weight gradient) and 6 fan_in x fan_out for every other layer (forward,
    input and weight gradients); Adam's updates (memory-bound) not counted."""
    settings = mach["settings"]
    R, epochs = (int(re.search(rf"\b{k}=(\d+)", settings).group(1)) for k in ("R", "epochs"))
    hidden = [int(h) for h in re.search(r"hidden=\(([^)]*)\)", settings).group(1).split(",") if h]
    sizes = [*hidden, mach["B"]]
    per_row = 4 * mach["_nnz"] * sizes[0] + 6 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    return per_row * mach["_data"]["train_rows"] * R * epochs


def best_peer(results: dict, k: str) -> tuple[str | None, float | None]:
    scored = [(r[k], m) for m, r in results.items() if m in PEERS and "error" not in r]
    if not scored:
        return None, None
    value, method = max(scored)
    return method, value


def format_table(table: dict) -> str:
    lines = [
        "| set | train / test rows | D | K | B | MACH P@1 / P@3 / P@5 | best peer P@1 / P@3 / P@5 | "
        "MACH - best | within 1 point |",
        "|---|---:|---:|---:|---:|---|---|---|:-:|",
    ]
    gaps_all = []
    for name, results in table.items():
        mach = results.get("mach", {"error": "not run"})
        info = next(iter(results.values())).get("_data", {})
        rows = f"{info.get('train_rows', '?')} / {info.get('test_rows', '?')}"
        head = f"| {name} | {rows} | {info.get('n_features', '?')} | {info.get('n_classes', '?')} |"
        if "error" in mach:
            lines.append(f"{head} | – | {mach['error']} | | | |")
            continue
        bests = [best_peer(results, k) for k in KS]
        peer_cells = " / ".join(f"{v:.2f} ({LABELS[m]})" if m else "–" for m, v in bests)
        gaps = [mach[k] - v for k, (_, v) in zip(KS, bests) if v is not None]
        gaps_all.append(gaps)
        ok = "yes" if gaps and min(gaps) >= -TOLERANCE else "no"
        lines.append(
            f"{head} {mach.get('B', '?')} | "
            + " / ".join(f"{mach[k]:.2f}" for k in KS)
            + f" | {peer_cells} | "
            + " / ".join(f"{g:+.2f}" for g in gaps)
            + f" | {ok} |"
        )
    complete = [g for g in gaps_all if len(g) == len(KS)]
    if complete:
        mean = [sum(g[i] for g in complete) / len(complete) for i in range(len(KS))]
        lines.append(
            f"| mean over {len(complete)} sets | | | | | | | "
            + " / ".join(f"{m:+.2f}" for m in mean)
            + f" | {sum(min(g) >= -TOLERANCE for g in complete)} of {len(complete)} |"
        )
    return "\n".join(lines)


def format_methods(table: dict) -> str:
    """Every method's P@1/3/5 on every set (the detail behind the summary)."""
    methods = ["mach", *PEERS]
    lines = ["| set | " + " | ".join(["MACH", *(LABELS[m] for m in PEERS)]) + " |"]
    lines.append("|---|" + "---|" * len(methods))
    for name, results in table.items():
        cells = []
        for m in methods:
            r = results.get(m, {"error": "not run"})
            cells.append("error" if "error" in r else " / ".join(f"{r[k]:.1f}" for k in KS))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_cost(table: dict, peak_gflops: float | None = None) -> str:
    """Training seconds of every method, and MACH's over the fastest peer's: train.py's process wall
    (TensorFlow's start-up included) and its training loop (tracing and epochs), beside the peers'
    fit time (their runner's clock around fit). With the matmul peak: MACH's arithmetic alone at that
    peak (the floor no input pipeline or start-up can go below) and its ratio to the fastest peer.
    """
    floors = peak_gflops is not None
    lines = [
        "| set | MACH R / hidden | MACH process s | MACH loop s | "
        + " | ".join(LABELS[m] + " s" for m in PEERS)
        + " | process / fastest | loop / fastest |"
        + (" arithmetic floor s | floor / fastest |" if floors else ""),
        "|---|---|---:|---:|"
        + "---:|" * len(PEERS)
        + "---:|---:|"
        + ("---:|---:|" if floors else ""),
    ]
    ratios = []
    for name, results in table.items():
        mach = results.get("mach", {})
        peers = [results.get(m, {}).get("train_s") for m in PEERS]
        fastest = min((t for t in peers if t), default=None)
        if "train_s" not in mach or not fastest:
            continue
        ratio = (mach["train_s"] / fastest, mach["train_loop_s"] / fastest)
        floor = training_flop(mach) / (peak_gflops * 1e9) if floors and "_nnz" in mach else None
        ratio += (floor / fastest,) if floor is not None else ()
        ratios.append(ratio)
        size = re.search(r"R=(\d+) hidden=(\([^)]*\))", mach.get("settings", ""))
        lines.append(
            f"| {name} | {' / '.join(size.groups()) if size else '?'} | {mach['train_s']:.1f} | "
            f"{mach['train_loop_s']:.1f} | "
            + " | ".join("–" if t is None else f"{t:.2f}" for t in peers)
            + f" | {ratio[0]:.0f}x | {ratio[1]:.0f}x |"
            + (f" {floor:.1f} | {ratio[2]:.0f}x |" if floor is not None else "")
        )
    if ratios:
        for label, pick in (("median", np.median), ("max", np.max)):
            columns = range(len(min(ratios, key=len)))
            cells = [f"{pick([r[i] for r in ratios]):.0f}x" for i in columns]
            if len(cells) == 3:
                cells.insert(2, "")
            lines.append(f"| {label} | | | | " + " | " * len(PEERS) + " | ".join(cells) + " |")
    if floors:
        lines.append(f"\nArithmetic floor at the measured matmul peak, {peak_gflops:.0f} GFLOP/s.")
    return "\n".join(lines)


def plot_pareto(table: dict, path: Path) -> None:
    """P@1 against training seconds (log scale), every method, a panel per set."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    names = list(table)
    cols = 4
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    markers = {"mach": "*", **dict(zip(PEERS, "osD^"))}
    for ax, name in zip(axes.flat, names):
        for method, marker in markers.items():
            r = table[name].get(method, {})
            if "error" in r or "train_s" not in r:
                continue
            label = "MACH" if method == "mach" else LABELS[method]
            ax.scatter(
                r["train_s"], r["P@1"], marker=marker, s=80 if method == "mach" else 40, label=label
            )
            if method == "mach":
                ax.scatter(
                    r["train_loop_s"],
                    r["P@1"],
                    marker="*",
                    s=80,
                    facecolors="none",
                    edgecolors="C0",
                    label="MACH (loop only)",
                )
        ax.set_xscale("log")
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels))
    fig.supxlabel("training seconds (log scale)")
    fig.supylabel("P@1 (%)")
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=devsuite_data.DATA)
    parser.add_argument("--sets", default=",".join(devsuite_data.SOURCES))
    parser.add_argument("--methods", default=",".join(["mach", *PEERS]))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work-dir", type=Path, default=OUT / "runs")
    parser.add_argument("--out", type=Path, default=OUT / "devsuite.json")
    add_set_flag(
        parser, "a Config override for MACH (repeatable); the table then shows those settings"
    )
    args = parser.parse_args(argv)
    args.data, args.work_dir = args.data.resolve(), args.work_dir.resolve()
    unknown = set(args.sets.split(",")) - set(devsuite_data.SOURCES)
    if unknown:
        print(f"error: unknown sets {sorted(unknown)}", file=sys.stderr)
        return 2
    table = json.loads(args.out.read_text()) if args.out.exists() else {}
    table["_matmul_peak_gflops"] = round(matmul_peak_gflops(), 1)
    start = time.time()
    for name in args.sets.split(","):
        results = run_set(name, args)
        table[name] = {**table.get(name, {}), **results}
        mach = results.get("mach", {})
        print(
            f"set={name} "
            + " ".join(
                f"{m}={'/'.join(f'{r[k]:.1f}' for k in KS) if 'error' not in r else 'error'}"
                for m, r in results.items()
            )
            + (f" B={mach.get('B')}" if mach else "")
            + f" elapsed_s={time.time() - start:.0f}",
            flush=True,
        )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(table, indent=1, default=str) + "\n")
    ordered = {n: table[n] for n in devsuite_data.SOURCES if n in table}
    text = (
        "\n\n".join(
            [
                format_table(ordered),
                format_methods(ordered),
                format_cost(ordered, table["_matmul_peak_gflops"]),
            ]
        )
        + "\n"
    )
    args.out.with_suffix(".md").write_text(text)
    plot_pareto(ordered, args.out.with_suffix(".png"))
    print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
