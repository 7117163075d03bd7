"""Evaluate trained MACH repetitions: merge their bucket scores into class scores and report P@k, nDCG@k, PSP@k.

    python evaluate.py --dataset delicious                  # all R repetitions
    python evaluate.py --dataset delicious --R 8 --sweep-R  # P@k for R = 1, 2, 4, 8, and a plot
    python evaluate.py --dataset delicious --merge-candidates 4  # score only labels of each r's top-4 buckets

Writes metrics.json (metrics-candM-fF.json with --merge-candidates; sweep_R.png with --sweep-R) in
<work_dir>/<dataset>/<hashing>/.
"""

import argparse
import dataclasses
import sys
import time

import config
from mach.cli import add_config_flags, config_from_args, setup_logging
from mach.files import write_json_atomic


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_flags(parser)
    parser.add_argument(
        "--R", type=int, help="merge only the first R repetitions (default: Config.R)"
    )
    parser.add_argument(
        "--sweep-R", action="store_true", help="also report R = 1, 2, 4, ... and plot P@k vs R"
    )
    parser.add_argument(
        "--merge-impl",
        choices=["kernel", "numpy"],
        default="kernel",
        help="compiled OpenMP kernel (default) or the slower NumPy reference",
    )
    parser.add_argument(
        "--merge-candidates",
        type=int,
        metavar="M",
        help="score only the labels in each repetition's top-M buckets (default: exact merge of all K)",
    )
    parser.add_argument(
        "--min-freq",
        type=int,
        default=2,
        help="with --merge-candidates: keep labels found in at least this many repetitions, lowered "
        "until top_k remain (default 2, at most R)",
    )
    args = parser.parse_args(argv)
    log = setup_logging().info
    try:
        cfg = config_from_args(args, config.BASE, config.DATASETS)
        from mach import evaluation
        from mach.prepare import load_data_manifest, with_data_sizes

        data_manifest = load_data_manifest(cfg)
        cfg = with_data_sizes(cfg, data_manifest)
        R = args.R or cfg.R
        if not 1 <= R <= cfg.R:
            raise ValueError(f"--R {R}: expected 1 <= R <= {cfg.R} (Config.R)")
        if cfg.top_k > cfg.n_classes:
            raise ValueError(
                f"top_k={cfg.top_k} is larger than the number of classes {cfg.n_classes}"
            )
        if args.merge_candidates is not None and not (
            1 <= args.merge_candidates <= cfg.B and args.min_freq >= 1
        ):
            raise ValueError(
                f"--merge-candidates {args.merge_candidates} --min-freq {args.min_freq}: expected "
                f"1 <= M <= B={cfg.B} and a min-freq >= 1"
            )
        candidates = (
            None if args.merge_candidates is None else (args.merge_candidates, args.min_freq)
        )
        if args.merge_impl == "kernel":
            from mach.merge import load_kernel

            load_kernel()  # fail now, with the fix, rather than after the forward pass
        reps = evaluation.load_trained(cfg, R, log)
        R_values = evaluation.sweep_sizes(R) if args.sweep_R else [R]
        start = time.time()
        pred = evaluation.predict(
            cfg,
            reps,
            evaluation.test_files(cfg, data_manifest),
            R_values,
            args.merge_impl,
            log,
            candidates,
        )
        seconds = time.time() - start
    except (ValueError, FileNotFoundError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    n_train = data_manifest["train"]["rows"]
    sweep = {
        Rv: evaluation.score(cfg, pred["topk"][Rv], pred["true_labels"], n_train) for Rv in R_values
    }
    results = sweep[R]
    n = results["rows"]
    timings = {
        "forward_s": pred["forward_s"],
        "merge_s": pred["merge_s"],
        "total_s": seconds,
        "samples_per_s": n / seconds,
        "merge_samples_per_s": n * len(R_values) / max(pred["merge_s"], 1e-9),
    }
    merge_name = (
        "exact" if candidates is None else f"candidates m={candidates[0]} min_freq={candidates[1]}"
    )
    print(
        f"\n{cfg.name}: R={R} B={cfg.B} merge={cfg.merge} ({args.merge_impl}, {merge_name}) test_rows={n} "
        f"rows_without_labels={results['rows_without_labels']}"
    )
    print(format_table(results))
    out = {
        "metrics": results,
        "R": R,
        "merge": cfg.merge,
        "merge_impl": args.merge_impl,
        "timings": timings,
        "config": dataclasses.asdict(cfg),
        "merge_candidates": args.merge_candidates,
        "min_freq": None if candidates is None else args.min_freq,
    }
    if args.sweep_R:
        out["sweep_R"] = {str(Rv): m for Rv, m in sweep.items()}
        for Rv in R_values:
            log(
                f"sweep R={Rv} "
                + " ".join(
                    f"{k}={sweep[Rv][k]:.2f}" for k in ["P@1", "P@3", "P@5"] if k in sweep[Rv]
                )
            )
        plot_sweep(sweep, cfg.run_dir() / "sweep_R.png", f"{cfg.name}: B={cfg.B}")
        log(f"plot={cfg.run_dir() / 'sweep_R.png'}")
    # The candidate merge writes beside the exact one rather than over it.
    metrics_path = cfg.run_dir() / (
        "metrics.json"
        if candidates is None
        else f"metrics-cand{candidates[0]}-f{candidates[1]}.json"
    )
    write_json_atomic(metrics_path, out)
    log(f"metrics={metrics_path} " + " ".join(f"{k}={v:.2f}" for k, v in timings.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
