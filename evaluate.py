"""Evaluate trained MACH repetitions: merge their bucket scores into class scores and report P@k, nDCG@k, PSP@k.

    python evaluate.py --dataset delicious                  # all R repetitions
    python evaluate.py --dataset delicious --R 8 --sweep-R  # P@k for R = 1, 2, 4, 8, and a plot
    python evaluate.py --dataset delicious --merge-candidates 4  # score only labels of each r's top-4 buckets
    python evaluate.py --dataset delicious --merge-approx 50     # the official code's approx_eval
    python evaluate.py --dataset delicious --epoch 3             # the models after epoch 3
    python evaluate.py --dataset delicious --set eval_group_size=4 --set R_per_device=2  # 4 at once
    python evaluate.py --dataset delicious --ray auto --set eval_group_size=4  # groups on a Ray cluster

Writes metrics.json in <work_dir>/<dataset>/<hashing>/; --merge-candidates M, --merge-approx M and
--epoch N write metrics-candM-fF.json, metrics-approxM-fF.json and metrics-epochN.json (combined:
metrics-candM-fF-epochN.json) beside it instead; --sweep-R adds sweep_R.png.
"""

import argparse
import dataclasses
import functools
import sys
import time

import config
from mach.cli import add_config_flags, config_from_args, run_main, setup_logging
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
    merge = parser.add_mutually_exclusive_group()
    merge.add_argument(
        "--merge-candidates",
        type=int,
        metavar="M",
        help="score only the labels in each repetition's top-M buckets, by the sum of all R logits "
        "(default: exact merge of all K)",
    )
    merge.add_argument(
        "--merge-approx",
        type=int,
        nargs="?",
        const=50,
        metavar="M",
        help="approx_eval of the official MACH code: labels in each repetition's top-M buckets "
        "(default M 50), each scored by the logits of the repetitions that selected it only",
    )
    parser.add_argument(
        "--min-freq",
        type=int,
        default=2,
        help="with --merge-candidates or --merge-approx: keep labels found in at least this many "
        "repetitions, lowered until top_k remain (default 2, at most R)",
    )
    parser.add_argument(
        "--epoch",
        type=int,
        metavar="N",
        help="evaluate checkpoint ckpt-N (after epoch N) of every repetition instead of the latest; "
        "earlier epochs exist only when training kept them (keep_checkpoints: the last K, 0 = all)",
    )
    parser.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="run each repetition group's forward pass as a Ray actor on the cluster at HOST:PORT "
        "('auto': this node's); the logits come back in chunks and are merged here",
    )
    args = parser.parse_args(argv)
    log = setup_logging().info
    return run_main(lambda: _evaluate(args, log))


def _evaluate(args, log) -> int:
    cfg = config_from_args(args, config.BASE, config.DATASETS)
    if args.ray:
        from mach.ray_launch import import_ray

        import_ray()  # fail now, with the fix, rather than after loading the data
    from mach import evaluation
    from mach.prepare import load_data_manifest, with_data_sizes

    data_manifest = load_data_manifest(cfg)
    cfg = with_data_sizes(cfg, data_manifest)
    R = cfg.R if args.R is None else args.R
    if not 1 <= R <= cfg.R:
        raise ValueError(f"--R {R}: expected 1 <= R <= {cfg.R} (Config.R)")
    if cfg.top_k > cfg.n_classes:
        raise ValueError(f"top_k={cfg.top_k} is larger than the number of classes {cfg.n_classes}")
    m = args.merge_candidates if args.merge_approx is None else args.merge_approx
    if m is not None and not (1 <= m <= cfg.B and args.min_freq >= 1):
        flag = "--merge-candidates" if args.merge_approx is None else "--merge-approx"
        raise ValueError(
            f"{flag} {m} --min-freq {args.min_freq}: expected 1 <= M <= B={cfg.B} and a "
            "min-freq >= 1"
        )
    if args.merge_approx is not None and cfg.merge != "logits":
        raise ValueError("--merge-approx sums raw logits; it needs --set merge=logits")
    candidates = None if args.merge_candidates is None else (m, args.min_freq)
    approx = None if args.merge_approx is None else (m, args.min_freq)
    if args.merge_impl == "kernel" and approx is None:
        from mach.merge import load_kernel

        load_kernel()  # fail now, with the fix, rather than after the forward pass
    from mach import devices

    devices.configure_devices(cfg, log)  # before TensorFlow starts: threads, GPU memory
    R_values = evaluation.sweep_sizes(R) if args.sweep_R else [R]
    start = time.time()
    predict = evaluation.predict_grouped
    if args.ray:
        from mach.ray_launch import predict_on_ray

        predict = functools.partial(predict_on_ray, address=args.ray)
    pred = predict(
        cfg,
        R,
        evaluation.test_files(cfg, data_manifest),
        R_values,
        args.merge_impl,
        log,
        candidates,
        approx,
        epoch=args.epoch,
        n_rows=data_manifest["test"].get("rows"),
    )
    seconds = time.time() - start
    if len(pred["true_labels"]) != data_manifest["test"]["rows"]:
        # A shard cut on a record boundary reads without error; the manifest's count catches it.
        raise ValueError(
            f"read {len(pred['true_labels'])} test rows but {cfg.tfrecord_dir()} should hold "
            f"{data_manifest['test']['rows']}: a TFRecord shard is damaged; re-run preprocess.py"
        )
    resources = {
        "n_params": pred["n_params"],
        "model_bytes": 4 * pred["n_params"],  # float32 weights of the R networks
        **devices.peak_memory(),
    }
    sweep = {
        Rv: evaluation.score(cfg, pred["topk"][Rv], pred["true_labels"], data_manifest)
        for Rv in R_values
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
    # approx_eval exists only as the NumPy spec, whatever --merge-impl says.
    merge_impl = "numpy" if approx else args.merge_impl
    merge_name, file_tag = "exact", ""
    if candidates:
        merge_name = f"candidates m={candidates[0]} min_freq={candidates[1]}"
        file_tag = f"-cand{candidates[0]}-f{candidates[1]}"
    elif approx:
        merge_name = f"approx_eval m={approx[0]} min_freq={approx[1]}"
        file_tag = f"-approx{approx[0]}-f{approx[1]}"
    epoch = "latest" if args.epoch is None else f"epoch {args.epoch}"
    print(
        f"\n{cfg.name}: R={R} B={cfg.B} merge={cfg.merge} ({merge_impl}, {merge_name}) {epoch} "
        f"test_rows={n} rows_without_labels={results['rows_without_labels']}"
    )
    print(format_table(results))
    out = {
        "metrics": results,
        "R": R,
        "epoch": args.epoch,
        "merge": cfg.merge,
        "merge_impl": merge_impl,
        "timings": timings,
        "resources": resources,
        "placement": {
            "eval_group_size": cfg.eval_group_size,
            "groups": pred["groups"],
            "R_per_device": cfg.R_per_device,
            "devices": pred["devices"],
        },
        "config": dataclasses.asdict(cfg),
        "merge_candidates": args.merge_candidates,
        "merge_approx": args.merge_approx,
        "min_freq": None if candidates is None and approx is None else args.min_freq,
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
    # Other merges and epochs write beside the exact merge of the latest models rather than over it.
    epoch_tag = "" if args.epoch is None else f"-epoch{args.epoch}"
    metrics_path = cfg.run_dir() / f"metrics{file_tag}{epoch_tag}.json"
    write_json_atomic(metrics_path, out)
    log(f"metrics={metrics_path} " + " ".join(f"{k}={v:.2f}" for k, v in timings.items()))
    log(" ".join(f"{k}={v}".replace(" ", "") for k, v in resources.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
