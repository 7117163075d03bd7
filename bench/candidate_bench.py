"""Candidate merge against the exact merge on trained MACH repetitions: samples/s and P@1/3/5 of both.

    python bench/candidate_bench.py --dataset synth1m --work-dir work/scale --set B=10000 --set R=8 \\
        --set "hidden=(256,)" --set train_file=... --set test_file=... --candidates 5:2,10:2,10:1

Takes the same --dataset/--set flags as evaluate.py. The test rows' logits are computed once; every
merge then runs on the same [rows, R, B] array in eval_batch_size calls, the merges alternating over
--repeats rounds (the best round counts), so load from other jobs hits them alike.
"""

import argparse
import json
import sys
import time

import common  # noqa: F401  (puts the repository root on sys.path, for config)
import numpy as np

import config
from mach.cli import add_config_flags, config_from_args, setup_logging


def timed_merge(merge, logits: np.ndarray, batch: int) -> tuple[np.ndarray, float]:
    """Top-k labels of all rows, merged batch rows per call as evaluate.py does, and the seconds taken."""
    start = time.perf_counter()
    labels = np.concatenate([merge(logits[i : i + batch])[0] for i in range(0, len(logits), batch)])
    return labels, time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_flags(parser)
    parser.add_argument(
        "--candidates",
        default="5:2,10:2,10:1,20:2",
        help="comma-separated m:min_freq settings of the candidate merge",
    )
    parser.add_argument(
        "--rows", type=int, default=4000, help="test rows merged (their logits are held in memory)"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="rounds; the best time of each merge counts"
    )
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    log = setup_logging().info
    cfg = config_from_args(args, config.BASE, config.DATASETS)

    from mach import evaluation, metrics
    from mach.merge import merge_candidates, merge_topk
    from mach.prepare import load_data_manifest, with_data_sizes

    cfg = with_data_sizes(cfg, data_manifest := load_data_manifest(cfg))
    reps = evaluation.load_trained(cfg, cfg.R, log)
    logits, true_labels = evaluation.forward_rows(
        cfg, reps, evaluation.test_files(cfg, data_manifest), args.rows
    )
    label_to_bucket = np.stack([rep.label_to_bucket for rep in reps])  # [R, K] int32
    bucket_offsets, bucket_labels = evaluation.load_inverse_lookups(cfg, label_to_bucket)
    log(
        f"logits rows={len(logits)} R={cfg.R} B={cfg.B} K={cfg.n_classes} gib={logits.nbytes / 2**30:.2f}"
    )

    k = max(5, cfg.top_k)
    merges = {"exact": lambda x: merge_topk(x, label_to_bucket, k, cfg.threads)}
    for setting in args.candidates.split(","):
        m, min_freq = (int(v) for v in setting.split(":"))
        f = min(min_freq, cfg.R)
        merges[f"candidates m={m} min_freq={min_freq}"] = lambda x, m=m, f=f: merge_candidates(
            x, label_to_bucket, bucket_offsets, bucket_labels, k, m, f, cfg.threads
        )
    seconds = {name: float("inf") for name in merges}
    topk = {}
    for _ in range(args.repeats):
        for name, merge in merges.items():
            topk[name], s = timed_merge(merge, logits, cfg.eval_batch_size)
            seconds[name] = min(seconds[name], s)

    rows = []
    for name in merges:
        scores = metrics.evaluate_topk(topk[name], true_labels, ks=(1, 3, 5))
        rows.append(
            {
                "merge": name,
                "samples_per_s": len(logits) / seconds[name],
                "speedup": seconds["exact"] / seconds[name],
                "P@1": scores["P@1"],
                "P@3": scores["P@3"],
                "P@5": scores["P@5"],
                "top1_equal_exact": 100 * float(np.mean(topk[name][:, 0] == topk["exact"][:, 0])),
                "top5_equal_exact": 100
                * float(np.mean(np.all(topk[name] == topk["exact"], axis=1))),
            }
        )
    print(
        f"\n{cfg.name}: K={cfg.n_classes:,} B={cfg.B} R={cfg.R} rows={len(logits)} "
        f"threads={cfg.threads or 'all'} batch={cfg.eval_batch_size}"
    )
    print(
        "| merge | samples/s | x exact | P@1 | P@3 | P@5 | top-1 = exact (%) | top-5 = exact (%) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['merge']} | {row['samples_per_s']:,.0f} | {row['speedup']:.1f} | {row['P@1']:.2f} | "
            f"{row['P@3']:.2f} | {row['P@5']:.2f} | {row['top1_equal_exact']:.1f} | {row['top5_equal_exact']:.1f} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "dataset": cfg.name,
                    "K": cfg.n_classes,
                    "B": cfg.B,
                    "R": cfg.R,
                    "rows": len(logits),
                    "threads": cfg.threads,
                    "results": rows,
                },
                f,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
