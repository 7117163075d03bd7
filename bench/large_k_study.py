"""MACH against PECOS, napkinXC and omikuji at K >= 100,000 on structured synthetic data, in one run.

    python bench/large_k_study.py                                   # K=100,000 at Amazon-670K's statistics
    python bench/large_k_study.py --K 200000 --train-rows 146000 --epochs 3 --variants official

The data: mach.data.synthetic's structured mode calibrated to a published dataset (--shape, default
amazon670k: its D, labels and features per row) at a smaller K, with the published rows per label
(--train-rows defaults to K x train rows / labels of the shape). The peers run once through
bench/compare.py (same rows, threads and scorer); each MACH variant runs the chain as a user does
(preprocess.py, train.py, evaluate.py --epoch e for every epoch), so the study reads P@k and PSP@k
after each epoch and compares MACH with each peer at equal training time (the last epoch whose share
of the training loop, loop_s x e / epochs, fits the peer's fit time) and at MACH's best epoch.
Writes <out>/large_k.json and large_k.md (default work/bench/large_k). Recorded runs:
experiments/large-k.
"""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from common import cpu_name

from mach.cli import run_main, setup_logging
from mach.experiments import chain

BENCH = Path(__file__).resolve().parent
OUT = Path("work/bench/large_k")
PEERS = "napkinxc_plt,omikuji_parabel,pecos_xrlinear"
KS = ["P@1", "P@3", "P@5", "PSP@1", "PSP@3", "PSP@5"]
# The official code's Amazon-670K recipe (config.py's OFFICIAL preset fields, its batch and widths),
# and this project's recipe with each loss, all at the same R, B, widths and epochs.
OFFICIAL = [
    "recipe='official'",
    "loss='bce'",
    "normalize='none'",
    "dropout=0.0",
    "lr=0.001",
    "adam_epsilon=1e-08",
    "sparse_first_layer='off'",
    "batch_size=1000",
]
VARIANTS = {
    "official": OFFICIAL,
    "improved-bce": ["loss='bce'"],
    "improved-softmax": ["loss='softmax'"],
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", default="amazon670k", help="published statistics to match")
    parser.add_argument("--K", type=int, default=100_000, help="labels")
    parser.add_argument("--train-rows", type=int, help="default: the shape's rows per label x K")
    parser.add_argument("--test-rows", type=int, default=10_000)
    parser.add_argument("--R", type=int, default=4)
    parser.add_argument("--B", type=int, default=2048)
    parser.add_argument("--hidden", default="500,500", help="hidden widths of every variant")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--skip-peers", action="store_true", help="keep the peers' last results")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    log = setup_logging().info
    return run_main(lambda: _study(args, log))


def _study(args, log) -> int:
    from mach.data.synthetic import shape_spec, write_dataset
    from mach.datasets import DATASETS

    facts = DATASETS[args.shape]
    train_rows = args.train_rows or round(args.K * facts.train_rows / facts.n_classes)
    out = args.out.resolve()
    data = out / "data"
    spec = shape_spec(args.shape, n_classes=args.K)
    if not (data / "spec.json").is_file():
        data.mkdir(parents=True, exist_ok=True)
        write_dataset(spec, data, train_rows, args.test_rows, log=log)
    stats = json.loads((data / "spec.json").read_text())["stats"]
    psp_A, psp_B = facts.psp or (0.55, 1.5)
    common = [
        f"train_file={str(data / 'train.txt')!r}",
        f"test_file={str(data / 'test.txt')!r}",
        f"psp_A={psp_A}",
        f"psp_B={psp_B}",
        f"threads={args.threads}",
    ]
    path = out / "large_k.json"
    result = json.loads(path.read_text()) if path.is_file() else {}
    result.update(
        machine=cpu_name(),
        shape=args.shape,
        K=args.K,
        D=spec.n_features,
        data=stats,
        settings={"R": args.R, "B": args.B, "hidden": args.hidden, "epochs": args.epochs},
    )
    if not args.skip_peers:
        result["peers"] = run_peers(args, data, common, out, log)
    result.setdefault("mach", {})
    for name in args.variants.split(","):
        sets = [*common, *VARIANTS[name], f"R={args.R}", f"B={args.B}"]
        sets += [f"hidden=({args.hidden},)", f"epochs={args.epochs}", "keep_epoch_weights='all'"]
        result["mach"][name] = run_variant(
            name, sets, len(common), out / "runs" / name, args.epochs, log
        )
        path.write_text(json.dumps(result, indent=2) + "\n")
    path.write_text(json.dumps(result, indent=2) + "\n")
    (out / "large_k.md").write_text(format_tables(result) + "\n")
    print(format_tables(result))
    return 0


def run_peers(args, data: Path, common: list[str], out: Path, log) -> dict:
    """bench/compare.py with the peers on the same rows: {method: its result}."""
    cmd = [sys.executable, str(BENCH / "compare.py"), "--dataset", "large_k"]
    cmd += ["--train", str(data / "train.txt"), "--test", str(data / "test.txt")]
    cmd += ["--methods", PEERS, "--threads", str(args.threads), "--latency-rows", "20"]
    cmd += ["--work-dir", str(out / "peers"), "--out-dir", str(out / "peers" / "out")]
    for pair in common[2:4]:  # the propensity constants: the same PSP scorer as MACH's
        cmd += ["--mach-set", pair]
    chain.run_step("compare peers", cmd, out / "logs" / "peers.log")
    results = json.loads((out / "peers" / "out" / "compare_large_k.json").read_text())["results"]
    log("peers " + " ".join(f"{m}={r.get('P@1', 'error')}" for m, r in results.items()))
    return {
        m: {k: r.get(k) for k in [*KS, "train_s", "predict_ms_per_sample"]}
        for m, r in results.items()
    }


def run_variant(name: str, sets: list[str], shared: int, work: Path, epochs: int, log) -> dict:
    """The chain for one variant (sets: the first `shared` common to every variant); P@k after
    every epoch, then its epoch weights are removed."""
    flags = chain.config_flags("large_k", work, sets)
    logs = work.parent.parent / "logs"
    steps = {}
    for step in ("preprocess", "train"):
        extra = ["--overwrite"] if step == "train" else []
        steps[step] = chain.run_step(
            f"{name} {step}", [*chain.script(step), *flags, *extra], logs / f"{name}-{step}.log"
        )
    cfg = chain.chain_config("large_k", work, sets)
    loop_s = max(s["wall_s"] for s in chain.train_summaries(cfg))
    per_epoch = {}
    for e in range(1, epochs + 1):
        start = time.time()
        chain.run_step(
            f"{name} evaluate epoch {e}",
            [*chain.script("evaluate"), *flags, "--epoch", str(e)],
            logs / f"{name}-evaluate.log",
        )
        metrics_file = "metrics.json" if e == epochs else f"metrics-epoch{e}.json"
        metrics = chain.read_metrics(cfg, metrics_file)["metrics"]
        per_epoch[e] = {k: round(metrics[k], 2) for k in KS}
        per_epoch[e]["train_s"] = round(loop_s * e / epochs, 1)
        log(f"variant={name} epoch={e} {per_epoch[e]} evaluate_s={time.time() - start:.0f}")
    shutil.rmtree(cfg.run_dir() / "ckpt", ignore_errors=True)  # gigabytes of epoch weights
    return {
        "settings": sets[shared:],
        "loop_s": round(loop_s, 1),
        "train_process_s": round(steps["train"].wall_s, 1),
        "peak_rss_gib": round(steps["train"].peak_rss_bytes / 2**30, 2),
        "epochs": per_epoch,
    }


def format_tables(result: dict) -> str:
    """Every method's P@k and PSP@k with its training seconds; MACH at each peer's time and at its best."""
    lines = ["| method | epochs | train s | " + " | ".join(KS) + " |"]
    lines.append("|---|---:|---:|" + "---:|" * len(KS))
    for method, r in result.get("peers", {}).items():
        cells = " | ".join("–" if r.get(k) is None else f"{r[k]:.2f}" for k in KS)
        lines.append(f"| {method} | | {r['train_s']:.1f} | {cells} |")
    for name, variant in result.get("mach", {}).items():
        for e, m in variant["epochs"].items():
            cells = " | ".join(f"{m[k]:.2f}" for k in KS)
            lines.append(f"| MACH {name} | {e} | {m['train_s']:.1f} | {cells} |")
    lines += ["", "| MACH variant | at the time of | epochs that fit | P@1 / P@3 / P@5 | peer's |"]
    lines.append("|---|---|---:|---|---|")
    for name, variant in result.get("mach", {}).items():
        epochs = {int(e): m for e, m in variant["epochs"].items()}
        best = max(epochs, key=lambda e: epochs[e]["P@1"])
        targets = [(f"its best epoch ({best})", None, best)]
        for method, r in result.get("peers", {}).items():
            fit = [e for e, m in epochs.items() if m["train_s"] <= r["train_s"]]
            targets.append((method, r, max(fit) if fit else None))
        for label, peer, e in targets:
            ours = "–" if e is None else "/".join(f"{epochs[e][k]:.2f}" for k in KS[:3])
            theirs = "" if peer is None else "/".join(f"{peer[k]:.2f}" for k in KS[:3])
            lines.append(f"| {name} | {label} | {e or 0} | {ours} | {theirs} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
