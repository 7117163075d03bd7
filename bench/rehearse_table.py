"""The README's rehearsal table from bench/rehearse.jsonl (one row per preset, the last run of each).

python bench/rehearse_table.py
"""

import json
import sys
from pathlib import Path

ORDER = ["wiki10_31k", "delicious200k", "amazon670k", "amazon3m", "odp"]


def row(r: dict) -> str:
    s = r["steps"]
    return (
        f"| {r['preset']} | {r['K']:,} | {r['input_dim']:,} | {tuple(r['hidden'])} | "
        f"{r['params_per_rep'] / 1e6:.0f} M | {r['R_trained']} | {r['train_rows']:,} | "
        f"{s['preprocess']['wall_s']} s, {s['preprocess']['peak_rss_gib']} GiB | "
        f"{s['train']['wall_s']} s, {s['train']['peak_rss_gib']} GiB ({r['train_memory_model_gib']}) | "
        f"{s['train']['ex_per_s_per_rep']} | "
        f"{s['evaluate_exact']['wall_s']} s, {s['evaluate_exact']['peak_rss_gib']} GiB | "
        f"{s['evaluate_candidates']['wall_s']} s | {s['evaluate_approx']['wall_s']} s | "
        f"{s['train']['checkpoint_bytes'] / 2**30:.2f} GiB | "
        f"{r['projected_full_run_hours_this_cpu']:,} h |"
    )


def main() -> int:
    path = Path(__file__).resolve().parent / "rehearse.jsonl"
    last = {}
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            last[record["preset"]] = record
    print("\n".join(row(last[name]) for name in ORDER if name in last))
    return 0


if __name__ == "__main__":
    sys.exit(main())
