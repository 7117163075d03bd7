"""The merge kinds side by side on one trained model: exact, candidates and approx (the official approx_eval).

    python bench/merge_kinds_bench.py --dataset delicious --candidates 5:2,10:2 --approx 50:2,10:1
    python bench/merge_kinds_bench.py --dataset synth1m --work-dir work/scale --set B=10000 ...

Takes the same --dataset/--set/--work-dir flags as evaluate.py (any trained run). The test rows' logits
are computed once; every merge then runs on the same [rows, R, B] array in eval_batch_size calls,
alternating over --repeats rounds (the best round counts), so load from other jobs hits them alike.
Reports samples/s, P@1/3/5 and agreement with the exact merge: the share of rows whose top-1 and whole
ordered top-5 equal it, and the mean share of the exact top-5 each merge also returns. approx runs as
its NumPy spec (it has no kernel); the others use the compiled kernels. m is capped at B, min_freq at R.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from mach.cli import add_config_flags, config_from_args, setup_logging
from mach.presets import load_presets


def settings(text: str, B: int, R: int) -> list[tuple[int, int]]:
    """'50:2,10:1' -> [(50, 2), (10, 1)], m capped at B and min_freq at R."""
    pairs = [tuple(int(v) for v in item.split(":")) for item in text.split(",") if item]
    return [(min(m, B), min(f, R)) for m, f in pairs]


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
    parser.add_argument("--candidates", default="10:2", help="m:min_freq settings of candidates")
    parser.add_argument("--approx", default="50:2,20:2,10:2,10:1", help="m:min_freq of approx")
    parser.add_argument("--rows", type=int, default=0, help="test rows merged (0 = all)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; each merge's best counts")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    log = setup_logging().info
    cfg = config_from_args(args, *load_presets())

    from mach import devices, evaluation, metrics
    from mach.data.prepare import load_data_manifest, load_inverse_lookups, with_data_sizes
    from mach.identity import data_fingerprint
    from mach.merge import merge_approx_numpy, merge_candidates, merge_topk

    cfg = with_data_sizes(cfg, data_manifest := load_data_manifest(cfg))
    devices.configure_devices(cfg, log)
    data = data_fingerprint(data_manifest)
    reps = evaluation.load_repetitions(cfg, range(cfg.R), cfg.epochs, data, log)
    rows = args.rows or data_manifest["test"]["rows"]
    logits, true_labels = evaluation.collect_logits(cfg, reps, data_manifest, rows)
    label_to_bucket = np.stack([rep.label_to_bucket for rep in reps])  # [R, K] int32
    inverse = load_inverse_lookups(cfg, label_to_bucket)
    k = max(5, cfg.top_k)

    merges = {"exact": lambda x: merge_topk(x, label_to_bucket, k, cfg.threads)}
    for m, f in settings(args.candidates, cfg.B, cfg.R):
        merges[f"candidates-m{m}-f{f}"] = lambda x, m=m, f=f: (
            merge_candidates(x, label_to_bucket, *inverse, k, m, f, cfg.threads)
        )
    for m, f in settings(args.approx, cfg.B, cfg.R):
        merges[f"approx-m{m}-f{f}"] = lambda x, m=m, f=f: (
            merge_approx_numpy(x, label_to_bucket, *inverse, k, m, f)
        )
    seconds = {name: float("inf") for name in merges}
    topk = {}
    for _ in range(args.repeats):
        for name, merge in merges.items():
            topk[name], s = timed_merge(merge, logits, cfg.eval_batch_size)
            seconds[name] = min(seconds[name], s)

    exact5 = topk["exact"][:, :5]
    results = []
    for name in merges:
        scores = metrics.evaluate_topk(topk[name], true_labels, ks=(1, 3, 5))
        top5 = topk[name][:, :5]
        overlap = [len(np.intersect1d(a, b)) / 5 for a, b in zip(top5, exact5)]
        results.append(
            {
                "merge": name,
                "samples_per_s": len(logits) / seconds[name],
                "x_exact": seconds["exact"] / seconds[name],
                **{key: scores[key] for key in ("P@1", "P@3", "P@5")},
                "top1_equal_exact": 100 * float(np.mean(topk[name][:, 0] == exact5[:, 0])),
                "top5_equal_exact": 100 * float(np.mean(np.all(top5 == exact5, axis=1))),
                "top5_overlap_exact": 100 * float(np.mean(overlap)),
            }
        )
    print(
        f"\n{cfg.name}: K={cfg.n_classes:,} B={cfg.B} R={cfg.R} rows={len(logits)} "
        f"threads={cfg.threads or 'all'} batch={cfg.eval_batch_size}"
    )
    print(
        "| merge | samples/s | x exact | P@1 | P@3 | P@5 | top-1 = exact | top-5 = exact | top-5 overlap |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in results:
        print(
            f"| {row['merge']} | {row['samples_per_s']:,.0f} | {row['x_exact']:.2f} | "
            f"{row['P@1']:.2f} | {row['P@3']:.2f} | {row['P@5']:.2f} | "
            f"{row['top1_equal_exact']:.1f} | {row['top5_equal_exact']:.1f} | "
            f"{row['top5_overlap_exact']:.1f} |"
        )
    if args.json:
        summary = {"dataset": cfg.name, "K": cfg.n_classes, "B": cfg.B, "R": cfg.R}
        summary.update(rows=len(logits), threads=cfg.threads, results=results)
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
