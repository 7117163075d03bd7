"""Synthetic extreme data: deterministic bytes, valid XC format, power-law labels, multiclass rows,
and the structured mode: clusters of labels that share features and co-occur, calibrated shapes."""

import dataclasses
import hashlib
import itertools
import json

import numpy as np
import pytest

from mach.data.formats import iter_rows, read_header
from mach.data.synthetic import (
    SyntheticSpec,
    cluster_labels,
    cluster_start,
    draw_chunk,
    draw_ranks,
    label_cluster,
    main,
    prototypes,
    rank_to_label,
    shape_spec,
    structured_spec,
    write_split,
)
from mach.datasets import DATASETS

QUIET = {"log": lambda _: None}
# sha256 of structured_spec(3000, 500, 3.0, 20.0, seed=7), 200 train rows.
STRUCTURED_SHA256 = "47314dea10410ab153d7c9bf98357147484b877bbab301fb8a6661edb7aa783e"


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


@pytest.mark.parametrize(
    "spec, rows, sha256",
    [
        (
            SyntheticSpec(n_classes=5000, n_features=300, seed=3),
            5000,
            "81a4a1dc63b012f5596adc7296528affe445ac5db0d5007c47f837627ef83fa7",
        ),
        (
            SyntheticSpec(n_classes=1_000_000, n_features=1000, multiclass=True, seed=2),
            500,
            "7ace0908c4bc4893532be801df4197ee6d0a210e931dd1034e43602565e90b6c",
        ),
        (
            SyntheticSpec(
                n_classes=30_000,
                n_features=2000,
                labels_per_row=6.0,
                zipf_a=0.7,
                noise_features=0,
                seed=5,
            ),
            300,
            "67b834c138d76d6f2b71248264230ed3813502041b0ceef104db00e983bd42f2",
        ),
    ],
)
def test_unstructured_bytes_are_pinned(tmp_path, spec, rows, sha256):
    # Digests of files written before the structured mode existed: unstructured specs keep them.
    write_split(spec, "test", rows, tmp_path / "x.txt", **QUIET)
    assert digest(tmp_path / "x.txt") == sha256


def amazon_like():
    """The amazon670k shape at 20k labels: the published D and labels and features per row."""
    return shape_spec("amazon670k", n_classes=20_000)


def test_structured_same_seed_same_bytes_other_seed_or_split_other_bytes(tmp_path):
    spec = structured_spec(5000, 2000, 4.0, 30.0, seed=3)
    a, b, c = (tmp_path / f"{name}.txt" for name in "abc")
    write_split(spec, "train", 5000, a, **QUIET)  # two chunks
    write_split(spec, "train", 5000, b, **QUIET)
    write_split(dataclasses.replace(spec, seed=4), "train", 5000, c, **QUIET)
    assert digest(a) == digest(b) != digest(c)
    write_split(spec, "test", 5000, c, **QUIET)
    assert digest(a) != digest(c)


def test_structured_bytes_are_pinned(tmp_path):
    # A seed's bytes are part of the format: the same on every machine and in every version.
    write_split(
        structured_spec(3000, 500, 3.0, 20.0, seed=7), "train", 200, tmp_path / "x.txt", **QUIET
    )
    assert digest(tmp_path / "x.txt") == STRUCTURED_SHA256


@pytest.mark.parametrize(
    "name, n_classes, rows", [("amazon670k", 20_000, 3000), ("wiki10_31k", 5000, 600)]
)
def test_shape_matches_published_labels_and_features_per_row(tmp_path, name, n_classes, rows):
    spec = shape_spec(name, n_classes=n_classes)
    facts = DATASETS[name]
    assert (spec.n_classes, spec.n_features) == (n_classes, facts.n_features)
    assert spec.n_clusters > 1 and spec.shared_features >= 1
    stats = write_split(spec, "train", rows, tmp_path / "train.txt", **QUIET)
    got = [(len(row.labels), len(row.feat_idx)) for row in read(tmp_path / "train.txt", spec)]
    labels, features = np.mean(got, axis=0)
    assert (labels, features) == pytest.approx((stats["labels_per_row"], stats["features_per_row"]))
    assert labels == pytest.approx(facts.labels_per_row, rel=0.1)
    assert features == pytest.approx(facts.features_per_row, rel=0.1)


def test_clusters_partition_the_labels_with_power_law_sizes():
    for a in (1.0, 0.7):
        spec = SyntheticSpec(n_classes=3000, n_features=100, n_clusters=60, cluster_zipf_a=a)
        starts = cluster_start(np.arange(spec.n_clusters + 1), spec)
        sizes = np.diff(starts)
        assert starts[0] == 0 and starts[-1] == spec.n_classes and sizes.min() >= 1
        assert sizes[0] > 5 * np.median(sizes) and np.all(np.diff(sizes) <= 1)
        members = [cluster_labels(c, spec) for c in range(spec.n_clusters)]
        assert np.array_equal(np.sort(np.concatenate(members)), np.arange(spec.n_classes))
        for c, labels in enumerate(members):
            assert np.all(label_cluster(labels, spec) == c)


def cluster_pull(rows, spec):
    """How much likelier two labels of one row share a cluster than two independent labels do."""
    labels = np.concatenate([row[0] for row in rows])
    row = np.repeat(np.arange(len(rows)), [len(r[0]) for r in rows])
    clusters = label_cluster(labels, spec)
    _, per_row_cluster = np.unique(row * spec.n_clusters + clusters, return_counts=True)
    _, per_row = np.unique(row, return_counts=True)
    same = np.sum(per_row_cluster * (per_row_cluster - 1)) / np.sum(per_row * (per_row - 1))
    share = np.bincount(clusters, minlength=spec.n_clusters) / len(clusters)
    return same / np.sum(share**2)


def test_labels_of_one_cluster_co_occur():
    spec = amazon_like()
    assert cluster_pull(draw_chunk(spec, "train", 0, 2000), spec) > 10
    # The unstructured rows of the same shape, seen through the same clusters, show no such pull.
    flat = draw_chunk(dataclasses.replace(spec, n_clusters=0), "train", 0, 2000)
    assert cluster_pull(flat, spec) < 2


def test_cluster_mates_share_prototype_features():
    spec = amazon_like()

    def overlap(labels):
        owned = [set(p) for p in prototypes(labels, spec).tolist()]
        return np.mean([len(a & b) for a, b in itertools.combinations(owned, 2)])

    mates = [overlap(cluster_labels(c, spec)[:20]) for c in range(0, 200, 20)]
    strangers = np.array([cluster_labels(c, spec)[0] for c in range(0, 400, 4)])
    # shared_features^2 / pool_features of a prototype's features are common to two cluster mates.
    assert np.mean(mates) > 0.5 * spec.shared_features**2 / spec.pool_features
    assert overlap(strangers) < 0.1


def test_cli_shape_writes_a_structured_stand_in(tmp_path, capsys):
    out = tmp_path / "a670k"
    flags = ["--shape", "amazon670k", "--K", "5000", "--train-rows", "40", "--test-rows", "10"]
    assert main([*flags, "--out", str(out)]) == 0
    info = json.loads((out / "spec.json").read_text())
    assert info["spec"]["n_classes"] == 5000 and info["spec"]["n_clusters"] > 0
    assert info["spec"]["n_features"] == DATASETS["amazon670k"].n_features
    assert read_header(out / "test.txt").n_rows == 10
    with pytest.raises(SystemExit):
        main([*flags, "--noise-features", "3", "--out", str(out)])
    capsys.readouterr()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_clusters": 101},
        {"n_clusters": 5, "shared_features": 11},
        {"n_clusters": 5, "shared_features": 2, "pool_features": 0},
        {"n_clusters": 5, "in_cluster": 1.5},
    ],
)
def test_bad_structured_spec_raises(tmp_path, kwargs):
    spec = SyntheticSpec(**{"n_classes": 100, "n_features": 10, **kwargs})
    with pytest.raises(ValueError):
        write_split(spec, "train", 10, tmp_path / "x.txt", **QUIET)


def test_shape_without_published_features_per_row_raises():
    with pytest.raises(ValueError, match="features per row"):
        shape_spec("amazon3m")
