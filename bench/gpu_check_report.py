"""The tables of bench/gpu_check.sh: examples/s per job and in total, GPU memory per job, evaluation.

    python bench/gpu_check_report.py --out DIR --report-dir work/bench/gpu_check --tiny 0 --device "NVIDIA H200"

Each pack of jobs trained its own run (R = the jobs, one repetition a job): the rates come from each
repetition's train.json (rows x epochs / its training loop's seconds), the evaluation from the
metrics.json of the run evaluate.py scored, the pack's wall clock from gpu_check.sh's runs.tsv.
"""

import argparse
import csv
import sys
from collections import defaultdict
from pathlib import Path

from mach.experiments import chain
from mach.files import read_json, write_json_atomic, write_text_atomic
from mach.serving.predictors import run_config


def gpu_memory_mb(path: Path) -> dict:
    """Peak MiB per process and of all processes together, from `nvidia-smi` samples (pid, MiB)."""
    if not path.is_file():
        return {}
    peak: dict[str, int] = defaultdict(int)
    for row in csv.reader(path.read_text().splitlines()):
        if len(row) == 2 and row[1].strip().isdigit():
            peak[row[0].strip()] = max(peak[row[0].strip()], int(row[1]))
    return {"per_job_max_mb": max(peak.values(), default=0), "jobs_seen": len(peak)}


def trained_runs(work: Path) -> dict[int, list[dict]]:
    """{R: train.json of each repetition} of every run trained under the work directory."""
    runs = {}
    for first in sorted(work.glob("gpucheck/*/*/ckpt/r00/train.json")):
        cfg = run_config(first.parents[2])
        runs[cfg.R] = chain.train_summaries(cfg)
    return runs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--report-dir", type=Path, required=True)
    parser.add_argument("--tiny", type=int, default=0)
    parser.add_argument("--device", default="unknown")
    args = parser.parse_args(argv)
    wall = {
        int(pack): float(seconds)
        for pack, seconds in csv.reader(
            (args.out / "runs.tsv").read_text().splitlines(), delimiter="\t"
        )
    }
    runs = trained_runs(args.out / "work")
    merges = {where: read_json(args.out / f"metrics_{where}.json") for where in ("host", "device")}
    metrics = merges["host"]
    table = []
    for pack, seconds in sorted(wall.items()):
        rates = [chain.examples_per_s(summary) for summary in runs[pack]]
        table.append(
            {
                "jobs_on_one_device": pack,
                "examples_per_s_per_job": round(sum(rates) / len(rates)),
                "examples_per_s_total": round(sum(rates)),
                "wall_s": seconds,
                **gpu_memory_mb(args.out / f"gpu_mem_{pack}.csv"),
            }
        )
    report = {
        "device": args.device,
        "tiny": bool(args.tiny),
        "train": table,
        "evaluate": {
            where: {
                "R": m["R"],
                "timings": m["timings"],
                "P@1": m["metrics"].get("P@1"),
                **{k: v for k, v in m.items() if k in ("resources", "model")},
            }
            for where, m in merges.items()
        },
    }
    name = "gpu_check_tiny" if args.tiny else "gpu_check"
    args.report_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.report_dir / f"{name}.json", report)
    lines = [
        f"Device: {args.device}" + (" (tiny shapes)" if args.tiny else ""),
        "",
        "| jobs on one device | ex/s per job | ex/s total | wall s (incl. start-up) | peak GPU MiB per job |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in table:
        lines.append(
            f"| {row['jobs_on_one_device']} | {row['examples_per_s_per_job']:,} | "
            f"{row['examples_per_s_total']:,} | {row['wall_s']} | {row.get('per_job_max_mb', 'n/a')} |"
        )
    lines += [
        "",
        f"Evaluation of R={metrics['R']}, the exact merge on the host and on the device:",
        "",
    ]
    lines += [
        "| merge | total s | rows/s | forward s | merge s (host) | P@1 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for where, m in merges.items():
        t = m["timings"]
        lines.append(
            f"| {where} ({t.get('merged_on', 'host')}) | {t['total_s']:.2f} | {t['samples_per_s']:.0f} | "
            f"{t['forward_s']:.2f} | {t['merge_s']:.2f} | {m['metrics'].get('P@1', 0):.2f} |"
        )
    write_text_atomic(args.report_dir / f"{name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
