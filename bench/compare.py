"""MACH side by side with napkinXC (PLT), omikuji (Parabel-/Bonsai-like) and PECOS XR-Linear on one dataset.

    python bench/compare.py                                  # bundled Delicious, split 1, 2 threads
    python bench/compare.py --splits 1-10                    # plus mean ± std over splits for MACH and the best peer
    python bench/compare.py --dataset eurlex --train /d/train.txt --test /d/test.txt --methods mach,pecos_xrlinear

Every method reads the same feature matrix (rows scaled to unit length, written once by shared_matrix.py), gets
the same --threads, and is scored by the same mach.metrics call. MACH runs through the project's own CLI
(preprocess.py -> train.py -> evaluate.py, then bench/mach_timing.py for timings) on the package's chain
runner (mach.experiments.chain: wall time and peak RSS of each process); MACH's own figures come from the
files its scripts write (train.json, metrics.json, mach_timing's result.json). The peers run in their own
virtualenv (bench/.venv-peers, created here on first use) because libpecos pins numpy < 2 and scipy < 1.14.
Writes <out-dir>/compare_<dataset>.md/.png/.json (default work/bench/compare) and prints the table.
Recorded comparisons: experiments/compare-delicious.
"""

import argparse
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from argparse import RawDescriptionHelpFormatter as RawDescription
from pathlib import Path

import compare_report as report
import numpy as np
import scipy.sparse as sp
import shared_matrix
from common import cpu_name

from mach.cli import add_set_flag, parse_ranges, run_main, setup_logging
from mach.config import apply_overrides
from mach.data import formats as xcformat
from mach.experiments import chain
from mach.presets import load_presets

BENCH = Path(__file__).resolve().parent
OUT = Path("work/bench/compare")
PEER_PACKAGES = {
    "napkinxc_plt": "napkinxc==0.7.2",
    "omikuji_parabel": "omikuji==0.5.2",
    "omikuji_bonsai": "omikuji==0.5.2",
    "pecos_xrlinear": "libpecos==1.2.8",
}
PACKAGE_IMPORTS = {
    "napkinxc==0.7.2": "napkinxc.models",
    "omikuji==0.5.2": "omikuji",
    "libpecos==1.2.8": "pecos.xmc.xlinear.model",
}
# libpecos asks for torch; with none installed pip would fetch a multi-GB CUDA build. The CPU wheel goes first.
CPU_TORCH = {"libpecos==1.2.8": "torch==2.13.0"}
METHODS = ["mach", *PEER_PACKAGES]
TOP_K = 5


def read_xc(path: Path, cfg) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """All rows of one repository-format file as (X [n, D] float32, Y [n, K] 0/1) CSR matrices."""
    n_features, n_classes = xcformat.resolve_sizes(
        path, xcformat.read_header(path), cfg.n_features, cfg.n_classes
    )
    rows = list(xcformat.iter_rows(path, n_features, n_classes))
    indptr = np.concatenate([[0], np.cumsum([r.feat_idx.size for r in rows])]).astype(np.int64)
    X = sp.csr_matrix(
        (
            np.concatenate([r.feat_val for r in rows]),
            np.concatenate([r.feat_idx for r in rows]),
            indptr,
        ),
        shape=(len(rows), n_features),
    )
    return X, shared_matrix.labels_to_csr([r.labels for r in rows], n_classes)


def write_shared_data(cfg, split: int, out_dir: Path) -> dict:
    """Read the dataset (train/test files, or data file + split column), normalise rows, write train/test."""
    if cfg.data_file is not None:
        X, Y = read_xc(cfg.resolve(cfg.data_file), cfg)
        parts = {
            name: xcformat.read_split(cfg.resolve(path), split, X.shape[0])
            for name, path in [("train", cfg.train_split_file), ("test", cfg.test_split_file)]
        }
        parts = {name: (X[ids], Y[ids]) for name, ids in parts.items()}
    else:
        parts = {
            "train": read_xc(cfg.resolve(cfg.train_file), cfg),
            "test": read_xc(cfg.resolve(cfg.test_file), cfg),
        }
    # Training rows without labels or without features teach nothing and some peers refuse them
    # (omikuji: "Failed to load data"), so every method trains without them; test rows all stay.
    X, Y = parts["train"]
    usable = (np.diff(X.indptr) > 0) & (np.diff(Y.indptr) > 0)
    parts["train"] = (X[usable], Y[usable])
    for name, (X, Y) in parts.items():
        shared_matrix.write_split(out_dir, name, shared_matrix.normalize_rows(X), Y)
    labels = {name: shared_matrix.label_lists(Y) for name, (_, Y) in parts.items()}
    return {**labels, "dropped_train_rows": int((~usable).sum())}


def run_logged(name: str, cmd: list, log_path: Path, threads: int, timeout_s: float) -> chain.Step:
    """One process of a method on the chain runner, its pools capped at `threads`; a failure is
    returned (check it with failure()), not raised, so the other methods still run."""
    cmd = [str(c) for c in cmd]
    return chain.run_step(name, cmd, log_path, thread_env(threads), timeout_s, check=False)


def failure(step: chain.Step) -> dict | None:
    """{"error": what failed, its exit code and the last line of its log}, or None if it ran."""
    if step.returncode == 0:
        return None
    lines = Path(step.log).read_text(errors="replace").strip().splitlines()
    tail = (lines[-1] if lines else "")[-300:]
    return {
        "error": f"{step.name} failed (exit {step.returncode}, {step.wall_s:.0f} s): {tail} "
        f"[log: {step.log}]"
    }


def peak_rss_mb(step: chain.Step) -> float:
    return step.peak_rss_bytes / 2**20


def thread_env(threads: int) -> dict:
    """Environment that caps the BLAS/OpenMP/Rayon pools too, so no method uses more cores than --threads."""
    pools = ["OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS"]
    caps = {name: str(threads) for name in pools}
    return {**os.environ, **caps, "TF_CPP_MIN_LOG_LEVEL": "2"}


def run_mach(args, data_dir: Path, out_dir: Path, log) -> dict:
    """preprocess.py -> train.py -> evaluate.py -> mach_timing.py on the shared files; train_s is
    train.py's wall clock, train_loop_s the training loop's own (train.json)."""
    # MACH reads the shared text files instead of the preset's data file, so it sees the same rows.
    sets = [
        f"train_file={str(data_dir / 'train.txt')!r}",
        f"test_file={str(data_dir / 'test.txt')!r}",
    ]
    sets += ["data_file=None", "train_split_file=None", "test_split_file=None"]
    sets += [f"threads={args.threads}", *args.mach_pinned]
    flags = chain.config_flags(args.dataset, out_dir / "work", sets)
    timing = [sys.executable, BENCH / "mach_timing.py", "--out", out_dir]
    timing += ["--latency-rows", args.latency_rows]
    # A compare run always trains afresh: --overwrite replaces the model of an earlier run.
    commands = {
        "preprocess": chain.script("preprocess"),
        "train": [*chain.script("train"), "--overwrite"],
        "evaluate": chain.script("evaluate"),
        "timing": timing,
    }
    steps = {}
    for name, cmd in commands.items():
        log_path = out_dir / "logs" / f"{name}.log"
        steps[name] = run_logged(
            f"mach {name}", [*cmd, *flags], log_path, args.threads, args.timeout
        )
        log(
            f"method=mach step={name} exit={steps[name].returncode} wall_s={steps[name].wall_s:.1f}"
        )
        if failure(steps[name]):
            return failure(steps[name])
    result = json.loads((out_dir / "result.json").read_text())
    # The config exactly as the scripts resolved it (B and epochs left open are chosen from the data).
    mach_cfg = chain.chain_config(args.dataset, out_dir / "work", sets)
    result.update(
        train_s=steps["train"].wall_s,
        # train.py's own loop time leaves out TF's import and start-up, which the process wall includes.
        train_loop_s=max(s["wall_s"] for s in chain.train_summaries(mach_cfg)),
        preprocess_s=steps["preprocess"].wall_s,
        peak_rss_mb=max(peak_rss_mb(step) for step in steps.values()),
        peak_rss_mb_by_step={name: peak_rss_mb(step) for name, step in steps.items()},
        evaluate_metrics=chain.read_metrics(mach_cfg)["metrics"],
    )
    return result


def ensure_peers(venv: Path, packages: set[str], install: bool, log) -> dict[str, str | None]:
    """Install what is missing into the peers venv; {package: None if importable, else why not}."""
    python = venv / "bin" / "python"
    install_log = venv / "install.log"  # inside the venv: pip runs only once it exists

    def importable(package: str) -> str | None:
        done = subprocess.run(
            [str(python), "-c", f"import {PACKAGE_IMPORTS[package]}"],
            check=False,
            capture_output=True,
            text=True,
        )
        return (
            None
            if done.returncode == 0
            else (done.stderr.strip().splitlines() or ["import failed"])[-1]
        )

    def pip(*requirements: str) -> str | None:
        cmd = [str(python), "-m", "pip", "install", "--disable-pip-version-check", *requirements]
        done = chain.run_step("pip install", cmd, install_log, timeout_s=3600, check=False)
        if done.returncode == 0:
            return None
        lines = [ln for ln in install_log.read_text(errors="replace").splitlines() if "ERROR" in ln]
        return f"pip install {' '.join(requirements)}: " + (
            lines[-1] if lines else f"exit {done.returncode}"
        )

    if not python.exists():
        if not install:
            return {p: f"no peers venv at {venv} (run without --no-install)" for p in packages}
        log(f"peers_venv=create path={venv} install_log={install_log}")
        base_python = shutil.which("python3") or sys.executable
        done = subprocess.run(
            [base_python, "-m", "venv", str(venv)], check=False, capture_output=True, text=True
        )
        if done.returncode != 0:
            return {p: f"python3 -m venv failed: {done.stderr.strip()[-200:]}" for p in packages}
    status = {}
    for package in sorted(packages):
        status[package] = importable(package)
        if status[package] is not None and install:
            log(f"peers_install={package} (first run only; may take minutes)")
            status[package] = (
                (CPU_TORCH.get(package) and pip(CPU_TORCH[package]))
                or pip(package)
                or importable(package)
            )
    return status


def run_peer(method: str, args, data_dir: Path, out_dir: Path, python: Path) -> dict:
    cmd = [python, BENCH / "peers_runner.py", "--method", method, "--data", data_dir]
    cmd += ["--out", out_dir, "--threads", args.threads, "--top-k", TOP_K]
    cmd += ["--latency-rows", args.latency_rows]
    step = run_logged(method, cmd, out_dir / "run.log", args.threads, args.timeout)
    if failure(step):
        return failure(step)
    # The runner's own wall clock times train and predict; the process peak RSS comes from wait4.
    return {**json.loads((out_dir / "result.json").read_text()), "peak_rss_mb": peak_rss_mb(step)}


def run_methods(
    args, methods: list[str], cfg, split: int, split_dir: Path, peer_status: dict, log
) -> dict:
    """Write the shared data for one split, run each method on it, score every prediction file the same way."""
    start = time.perf_counter()
    labels = write_shared_data(cfg, split, split_dir)
    inv_propensity = report.inverse_propensities(
        labels["train"], cfg.n_classes or _n_classes(split_dir), cfg.psp_A, cfg.psp_B
    )
    log(
        f"shared_data={split_dir} train_rows={len(labels['train'])} test_rows={len(labels['test'])} "
        f"dropped_train_rows={labels['dropped_train_rows']} (no labels or no features) "
        f"seconds={time.perf_counter() - start:.1f}"
    )
    results = {}
    for method in methods:
        out_dir = split_dir / method
        if method == "mach":
            result = run_mach(args, split_dir, out_dir, log)
        elif peer_status[PEER_PACKAGES[method]] is not None:
            result = {"error": f"not installed: {peer_status[PEER_PACKAGES[method]]}"}
        else:
            result = run_peer(method, args, split_dir, out_dir, args.peers_venv / "bin" / "python")
        if "error" not in result:
            result.update(
                report.score(np.load(out_dir / "topk.npy"), labels["test"], inv_propensity)
            )
            result["model_mb"] = result["model_bytes"] / 2**20
        results[method] = result
        log(
            f"method={method} "
            + (
                f"error={result['error']!r}"
                if "error" in result
                else " ".join(f"{m}={result[m]:.2f}" for m in report.METRICS)
                + f" train_s={result['train_s']:.1f}"
            )
        )
    if "evaluate_metrics" in results.get("mach", {}):
        gap = abs(results["mach"]["evaluate_metrics"]["P@1"] - results["mach"]["P@1"])
        assert gap < 1e-6, f"MACH P@1 from evaluate.py and from the shared scorer differ by {gap}"
    return results, labels["dropped_train_rows"]


def _n_classes(split_dir: Path) -> int:
    with np.load(split_dir / "train.npz") as z:
        return int(z["shape"][2])


def machine_line(threads: int) -> str:
    model = cpu_name()
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{model}, {os.cpu_count()} cores visible, {memory_gib:.0f} GiB RAM, {platform.system()} "
        f"{platform.release()}; every method limited to {threads} thread(s); load average at start "
        f"{os.getloadavg()[0]:.2f}"
    )


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=RawDescription)
    add = parser.add_argument
    add("--dataset", default="delicious", help="config.py preset (PSP constants, MACH settings)")
    add("--train", type=Path, help="train file in the repository format; with --test")
    add("--test", type=Path)
    add("--data", type=Path, help="single data file; with --train-split and --test-split")
    add("--train-split", type=Path)
    add("--test-split", type=Path)
    add("--split", type=int, default=1, help="split column (1-based) of the split files")
    add("--methods", default=",".join(METHODS), help=f"subset of {','.join(METHODS)}")
    add("--threads", type=int, default=2, help="threads for every method")
    add_set_flag(
        parser, "a Config override for MACH, as the scripts' --set (repeatable)", "--mach-set"
    )
    add("--splits", help="also run MACH and the best peer on these split columns, e.g. 1-10")
    add("--latency-rows", type=int, default=300, help="test rows predicted one at a time")
    add("--timeout", type=float, default=3600, help="seconds allowed per subprocess")
    add("--work-dir", type=Path, default=OUT, help=f"shared data and runs (default {OUT})")
    add("--out-dir", type=Path, default=OUT, help=f"tables, chart and JSON (default {OUT})")
    add("--peers-venv", type=Path, default=BENCH / ".venv-peers")
    add("--no-install", action="store_true", help="never pip install; report missing peers")
    args = parser.parse_args(argv)
    # Absolute: MACH's scripts resolve relative data paths against Config.data_dir, not here.
    args.work_dir = args.work_dir.resolve()
    return args


def dataset_config(args):
    """The preset (or a new dataset on the base config) with the data paths given on the command line."""
    unknown = sorted(set(args.methods.split(",")) - set(METHODS))
    if unknown:
        raise ValueError(
            f"--methods: unknown {', '.join(unknown)}; choose from {', '.join(METHODS)}"
        )
    if bool(args.train) != bool(args.test) or (
        args.data and not (args.train_split and args.test_split)
    ):
        raise ValueError("give --train with --test, or --data with --train-split and --test-split")
    base, presets = load_presets()
    cfg = presets.get(args.dataset) or dataclasses.replace(base, name=args.dataset)
    if args.train:
        cfg = dataclasses.replace(cfg, train_file=str(args.train), test_file=str(args.test))
        cfg = dataclasses.replace(cfg, data_file=None)
    if args.data:
        cfg = dataclasses.replace(cfg, data_file=str(args.data), train_file=None, test_file=None)
        cfg = dataclasses.replace(
            cfg, train_split_file=str(args.train_split), test_split_file=str(args.test_split)
        )
    if cfg.data_file is None and cfg.train_file is None:
        raise ValueError(f"{args.dataset!r} is not a preset in config.py; give --train and --test")
    if args.splits and cfg.data_file is None:
        raise ValueError("--splits needs split files: a preset such as delicious, or --data")
    return cfg


# Fields that compare.py sets per run; every other Config field is pinned once per compare run.
PER_RUN_FIELDS = {
    "name",
    "train_file",
    "test_file",
    "data_file",
    "train_split_file",
    "test_split_file",
}
PER_RUN_FIELDS |= {"split", "work_dir", "data_dir", "threads"}


def pin_mach_settings(args) -> list[str]:
    """The preset with --mach-set applied, as explicit key=value pairs for every MACH subprocess.

    config.py is read again by each script; pinning it here keeps one compare run (and all its splits) on
    one MACH setting even when someone edits the preset meanwhile.
    """
    base, presets = load_presets()
    preset = presets.get(args.dataset) or dataclasses.replace(base, name=args.dataset)
    resolved = dataclasses.asdict(apply_overrides(preset, args.overrides))
    return [f"{key}={value!r}" for key, value in resolved.items() if key not in PER_RUN_FIELDS]


def run_splits(args, cfg, results: dict, peer_status: dict, log) -> dict:
    """MACH and the best peer (by P@1 in `results`) on every split in --splits; reuses `results`."""
    scored = {m: r for m, r in results.items() if m != "mach" and "error" not in r}
    best = max(scored, key=lambda m: scored[m]["P@1"]) if scored else None
    chosen = [m for m in ["mach", best] if m in results and "error" not in results[m]]
    per_split, failed = {m: [] for m in chosen}, {}
    for split in parse_ranges(args.splits, "--splits"):
        if split == args.split:
            split_results = results
        else:
            split_dir = args.work_dir / cfg.name / f"split{split:02d}"
            split_results, _ = run_methods(args, chosen, cfg, split, split_dir, peer_status, log)
        # A split counts only when every chosen method ran on it, so the means cover the same splits.
        errors = {m: split_results[m]["error"] for m in chosen if "error" in split_results[m]}
        if errors:
            failed[split] = errors
            continue
        for m in chosen:
            per_split[m].append(
                {"split": split, **{k: split_results[m][k] for k in report.METRICS}}
            )
    return {"best_peer": best, "per_split": per_split, "failed": failed}


def main(argv=None) -> int:
    args = parse_args(argv)
    log = setup_logging().info
    # A bad data file or setting is one `error:` line (file, line, fix) and exit 2, as in the scripts.
    return run_main(lambda: _compare(args, log))


def _compare(args, log) -> int:
    cfg = dataset_config(args)
    args.mach_pinned = pin_mach_settings(args)
    machine = machine_line(args.threads)
    methods = args.methods.split(",")
    peers = {PEER_PACKAGES[m] for m in methods if m != "mach"}
    peer_status = ensure_peers(args.peers_venv, peers, not args.no_install, log) if peers else {}
    start = time.perf_counter()
    split_dir = args.work_dir / cfg.name / f"split{args.split:02d}"
    results, dropped = run_methods(args, methods, cfg, args.split, split_dir, peer_status, log)
    title = f"{cfg.name} ({f'split {args.split}' if cfg.data_file else 'given train/test files'})"
    text = f"## {title}\n\nMachine: {machine}.\n\n{report.format_table(results)}\n\n"
    text += report.format_notes(results, dropped) + "\n"
    out = {"dataset": cfg.name, "split": args.split, "machine": machine, "results": results}
    out["dropped_train_rows"] = dropped
    out["mach_settings"] = args.mach_pinned
    # Written now too, so a long --splits run that fails later still leaves the main table.
    write_outputs(args, cfg.name, text, out, title, lambda _message: None)
    if args.splits:
        out["splits"] = run_splits(args, cfg, results, peer_status, log)
        best = report.LABELS.get(out["splits"]["best_peer"], "none")
        text += f"\nMean ± std over splits {args.splits} (best peer by P@1 on split {args.split}: "
        text += f"{best}):\n\n{report.format_splits(out['splits']['per_split'])}\n"
        for split, errors in out["splits"]["failed"].items():
            text += f"\nSplit {split} left out: " + "; ".join(
                f"{m}: {e}" for m, e in errors.items()
            )
    text += (
        f"\nTotal {time.perf_counter() - start:.0f} s; load average at end {os.getloadavg()[0]:.2f} "
        "(timings are wall clock on a shared machine).\n"
    )
    write_outputs(args, cfg.name, text, out, title, log)
    print("\n" + text)
    return 0


def write_outputs(args, name: str, text: str, out: dict, title: str, log) -> None:
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.out_dir / f"compare_{name}"
    Path(f"{stem}.md").write_text(text)
    Path(f"{stem}.json").write_text(json.dumps(out, indent=2, default=str) + "\n")
    if any("error" not in r for r in out["results"].values()):
        title = f"{title}, {args.threads} threads"
        report.plot_precision(out["results"], Path(f"{stem}.png"), title)
    log(f"table={stem}.md chart={stem}.png json={stem}.json")


if __name__ == "__main__":
    sys.exit(main())
