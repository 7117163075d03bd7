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


def fake_run(work: Path, R: int = 2, epochs: int = 2, dropout: float = 0.5, **settings):
    """A run whose repetitions have random weights (non-zero biases) for every epoch, written as
    training writes them, without training: (cfg, {(r, epoch): arrays}). For fast tests."""
    from mach import weights
    from mach.config import Config
    from mach.data.prepare import load_lookups, prepare_lookups
    from mach.identity import write_repetition_config

    cfg = Config(
        name="fake",
        work_dir=str(work),
        n_features=N_FEATURES,
        n_classes=N_CLASSES,
        B=8,
        R=R,
        hidden=(16,),
        epochs=epochs,
        dropout=dropout,
        **settings,
    )
    prepare_lookups(cfg, quiet)
    rng = np.random.default_rng(0)
    sizes = [cfg.input_dim(), *cfg.hidden, cfg.B]
    saved = {}
    for r in range(R):
        write_repetition_config(cfg, load_lookups(cfg, r)[2], "DATA", cfg.ckpt_dir(r))
        for epoch in range(1, epochs + 1):
            arrays = []
            for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
                arrays.append((rng.standard_normal((fan_in, fan_out)) * 0.3).astype(np.float32))
                arrays.append(rng.standard_normal(fan_out).astype(np.float32))
            weights.save_epoch(cfg.ckpt_dir(r), epoch, arrays, "all", "fake run")
            saved[r, epoch] = arrays
    return cfg, saved


def random_rows(seed: int, n: int, D: int = N_FEATURES, nnz: int = 5):
    """indices [nnz] int64, values [nnz] float32, row_splits [n + 1] int64 of random rows."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, nnz + 1, n)
    row_splits = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    indices = rng.integers(0, D, row_splits[-1]).astype(np.int64)
    values = rng.uniform(0.1, 2.0, row_splits[-1]).astype(np.float32)
    return indices, values, row_splits


def parsed_rows(indices, values, row_splits) -> dict:
    """The parsed-batch dict mach.data.tfrecords gives for raw rows (no labels)."""
    import tensorflow as tf

    batch = len(row_splits) - 1
    rows = np.repeat(np.arange(batch), np.diff(row_splits))
    where = np.stack([rows, np.arange(len(indices)) - row_splits[rows]], axis=1)
    width = int(np.diff(row_splits).max(initial=0))
    return {
        "feat_idx": tf.SparseTensor(where, indices, [batch, width]),
        "feat_val": tf.SparseTensor(where, values, [batch, width]),
        "labels": tf.SparseTensor(tf.zeros([0, 2], tf.int64), tf.zeros([0], tf.int64), [batch, 0]),
    }
