"""Synthetic extreme data: deterministic bytes, valid XC format, power-law labels, multiclass rows."""

import hashlib

import numpy as np
import pytest

from mach.data.formats import iter_rows, read_header
from mach.data.synthetic import (
    SyntheticSpec,
    draw_ranks,
    main,
    prototypes,
    rank_to_label,
    write_split,
)


def read(path, spec):
    return list(iter_rows(path, spec.n_features, spec.n_classes))


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    spec = SyntheticSpec(n_classes=5000, n_features=300, seed=3)
    # 5000 rows span two chunks, so the per-chunk streams are covered too.
    a, b, c = tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "c.txt"
    write_split(spec, "train", 5000, a, log=lambda _: None)
    write_split(spec, "train", 5000, b, log=lambda _: None)
    write_split(
        SyntheticSpec(n_classes=5000, n_features=300, seed=4), "train", 5000, c, log=lambda _: None
    )
    assert digest(a) == digest(b) != digest(c)


def test_rows_are_valid_xc_format(tmp_path):
    spec = SyntheticSpec(n_classes=2000, n_features=500, labels_per_row=3.0)
    path = tmp_path / "train.txt"
    write_split(spec, "train", 300, path, log=lambda _: None)
    header = read_header(path)
    assert (header.n_rows, header.n_features, header.n_labels) == (300, 500, 2000)
    rows = read(path, spec)
    assert len(rows) == 300
    for row in rows:
        assert len(row.labels) >= 1 and np.all(np.diff(row.labels) > 0)
        assert np.all(np.diff(row.feat_idx) > 0) and np.all(row.feat_val > 0)
    assert 2.5 < np.mean([len(row.labels) for row in rows]) < 3.5


def test_rows_show_their_labels_prototypes(tmp_path):
    spec = SyntheticSpec(n_classes=100_000, n_features=50_000, noise_features=2)
    path = tmp_path / "train.txt"
    write_split(spec, "train", 200, path, log=lambda _: None)
    shown = []
    for row in read(path, spec):
        owned = set(prototypes(row.labels, spec).ravel().tolist())
        shown.append(len(owned & set(row.feat_idx.tolist())) / len(owned))
    # keep_prob = 0.8 of each prototype shows (collisions with noise only add).
    assert 0.7 < np.mean(shown) < 0.9


def test_label_frequencies_follow_a_power_law():
    spec = SyntheticSpec(n_classes=10_000, n_features=100, zipf_a=1.0, seed=1)
    ranks = draw_ranks(np.random.default_rng(0), 400_000, spec)
    counts = np.bincount(ranks, minlength=spec.n_classes)
    # Zipf with a = 1: frequency ~ 1 / rank, so log-count falls with slope about -1 over the head.
    r = np.arange(1, 201)
    slope = np.polyfit(np.log(r), np.log(counts[:200]), 1)[0]
    assert -1.2 < slope < -0.8
    assert counts[0] > 20 * np.median(counts)
    # The ranks map to labels by a bijection, so frequent labels are spread over the id range.
    labels = rank_to_label(np.arange(spec.n_classes), spec)
    assert len(np.unique(labels)) == spec.n_classes and labels[0] != 0


def test_multiclass_has_exactly_one_label_per_row(tmp_path):
    spec = SyntheticSpec(n_classes=1_000_000, n_features=1000, multiclass=True)
    path = tmp_path / "train.txt"
    write_split(spec, "train", 500, path, log=lambda _: None)
    rows = read(path, spec)
    assert all(len(row.labels) == 1 for row in rows)
    assert max(int(row.labels[0]) for row in rows) < spec.n_classes


def test_cli_writes_train_and_test(tmp_path, capsys):
    out = tmp_path / "synth"
    assert (
        main(
            [
                "--K",
                "1e4",
                "--D",
                "200",
                "--train-rows",
                "50",
                "--test-rows",
                "20",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert (
        read_header(out / "train.txt").n_rows == 50 and read_header(out / "test.txt").n_rows == 20
    )
    assert "preprocess.py --dataset synth" in capsys.readouterr().out
    assert digest(out / "train.txt") != digest(out / "test.txt")


@pytest.mark.parametrize(
    "kwargs", [{"n_classes": 0}, {"zipf_a": 0.0}, {"keep_prob": 1.5}, {"labels_per_row": 20.0}]
)
def test_bad_spec_raises(tmp_path, kwargs):
    spec = SyntheticSpec(**{"n_classes": 100, "n_features": 10, **kwargs})
    with pytest.raises(ValueError):
        write_split(spec, "train", 10, tmp_path / "x.txt", log=lambda _: None)
