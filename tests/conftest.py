"""Shared fixtures: a tiny synthetic dataset in the repository format, and a config pointing at it."""

import dataclasses
import gzip
from pathlib import Path

import numpy as np
import pytest

import config

N_FEATURES, N_CLASSES = 30, 50


def make_rows(n_rows: int, seed: int) -> list[tuple[list[int], dict[int, float]]]:
    """Learnable rows: label l lights up features l % 30 and (3l+1) % 30, plus one noise feature."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n_rows):
        labels = sorted(set(rng.choice(N_CLASSES, size=rng.integers(1, 4), replace=False).tolist()))
        feats: dict[int, float] = {}
        for label in labels:
            for f in (label % N_FEATURES, (3 * label + 1) % N_FEATURES):
                feats[f] = feats.get(f, 0.0) + 1.0
        feats[int(rng.integers(N_FEATURES))] = 0.5
        rows.append((labels, feats))
    return rows


def format_rows(rows, header: bool = True) -> str:
    lines = [f"{len(rows)} {N_FEATURES} {N_CLASSES}"] if header else []
    for labels, feats in rows:
        lines.append(
            ",".join(map(str, labels))
            + " "
            + " ".join(f"{i}:{v:g}" for i, v in sorted(feats.items()))
        )
    return "\n".join(lines) + "\n"


@pytest.fixture
def tiny_files(tmp_path: Path) -> dict[str, Path]:
    """64 training rows and 32 test rows; the test file is gzipped."""
    train, test = tmp_path / "tiny_train.txt", tmp_path / "tiny_test.txt.gz"
    train.write_text(format_rows(make_rows(64, seed=1)))
    with gzip.open(test, "wt") as f:
        f.write(format_rows(make_rows(32, seed=2)))
    return {"train": train, "test": test}


@pytest.fixture
def tiny_cfg(tiny_files, tmp_path: Path) -> config.Config:
    return dataclasses.replace(
        config.BASE,
        name="tiny",
        train_file=str(tiny_files["train"]),
        test_file=str(tiny_files["test"]),
        work_dir=str(tmp_path / "work"),
        B=8,
        R=2,
        hidden=(16,),
        batch_size=16,
        epochs=2,
        top_k=5,
        eval_batch_size=16,
        threads=1,
        checkpoint_interval_s=0.0,  # tests look at every epoch's checkpoint
    )


def cli_flags(files: dict[str, Path], dataset: str, work: Path, **overrides) -> list[str]:
    """Script flags that point at the tiny files, with a small model (R=2, 1 epoch) unless overridden."""
    sets = {"B": 8, "R": 2, "hidden": (16,), "epochs": 1, "batch_size": 16}
    sets = {**sets, "checkpoint_interval_s": 0.0, **overrides}
    flags = ["--dataset", dataset, "--work-dir", str(work)]
    flags += [
        "--set",
        f"train_file={str(files['train'])!r}",
        "--set",
        f"test_file={str(files['test'])!r}",
    ]
    for key, value in sets.items():
        flags += ["--set", f"{key}={value!r}"]
    return flags


def quiet(*_args) -> None:
    """A log function that drops messages."""


def run_dir_of(work: Path, dataset: str) -> Path:
    """The one run directory (<hashing>/<run>/) that the scripts trained for dataset under work."""
    runs = sorted({p.parent for p in (work / dataset).glob("*/*/ckpt")})
    assert len(runs) == 1, f"expected one run of {dataset} in {work}, found {runs}"
    return runs[0]


def evaluate_topk(cfg, merge=None, R=None) -> dict:
    """evaluate.py's top-k of cfg's test split (its forward pass and compiled merge), R_values [R]."""
    from mach import evaluation
    from mach.data.prepare import load_data_manifest
    from mach.merge import Merge

    R = cfg.R if R is None else R
    manifest = load_data_manifest(cfg)
    merge = Merge() if merge is None else merge
    return evaluation.grouped_topk(cfg, R, manifest, [R], "compiled", quiet, merge, cfg.epochs)


def load_trained(cfg, R=None) -> list:
    """Repetitions 0..R-1 of cfg's run after its last epoch, as evaluation loads them."""
    from mach import evaluation
    from mach.data.prepare import load_data_manifest
    from mach.identity import data_fingerprint

    R = cfg.R if R is None else R
    data = data_fingerprint(load_data_manifest(cfg))
    return evaluation.load_repetitions(cfg, range(R), cfg.epochs, data, quiet)
