import dataclasses

import numpy as np
import pytest
import tensorflow as tf
from conftest import N_CLASSES, N_FEATURES, make_rows, quiet

from mach.data.formats import DataFormatError, iter_rows
from mach.data.prepare import (
    load_data_manifest,
    load_lookups,
    prepare_lookups,
    prepare_tfrecords,
    with_data_sizes,
)
from mach.data.tfrecords import SCHEMA, parse_batch, read_batches, tfrecord_files


def preprocess(cfg):
    manifest = prepare_tfrecords(cfg, quiet)
    cfg = with_data_sizes(cfg, manifest)
    prepare_lookups(cfg, quiet)
    return cfg, manifest


def test_tfrecord_round_trip_through_tf_data(tiny_cfg, tiny_files):
    cfg, manifest = preprocess(tiny_cfg)
    expected = list(iter_rows(tiny_files["train"], N_FEATURES, N_CLASSES))
    files = tfrecord_files(cfg.tfrecord_dir(), manifest["train"])
    # Inside tf.data.map (graph mode) ...
    got = []
    for parsed in read_batches(files, batch_size=10):
        labels = tf.RaggedTensor.from_sparse(parsed["labels"]).to_list()
        idx = tf.RaggedTensor.from_sparse(parsed["feat_idx"]).to_list()
        val = tf.RaggedTensor.from_sparse(parsed["feat_val"]).to_list()
        got += list(zip(labels, idx, val))
    assert len(got) == len(expected) == manifest["train"]["rows"] == 64
    for (labels, idx, val), row in zip(got, expected):
        assert labels == row.labels.tolist() and idx == row.feat_idx.tolist()
        assert np.array_equal(np.float32(val), row.feat_val)
    # ... and eagerly on raw records.
    raw = next(iter(tf.data.TFRecordDataset(files).batch(2)))
    eager = parse_batch(raw)
    assert set(eager) == set(SCHEMA)
    assert (
        tf.sparse.to_dense(eager["labels"])[0, : len(expected[0].labels)].numpy().tolist()
        == expected[0].labels.tolist()
    )


def test_sizes_come_from_the_header_when_not_configured(tiny_cfg):
    cfg, _ = preprocess(tiny_cfg)
    assert (cfg.n_features, cfg.n_classes) == (N_FEATURES, N_CLASSES)


def test_rerun_is_a_no_op(tiny_cfg):
    cfg, _ = preprocess(tiny_cfg)
    tracked = list(cfg.tfrecord_dir().iterdir()) + list(cfg.lookup_dir().iterdir())
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in tracked}
    messages = []
    prepare_tfrecords(cfg, messages.append)
    prepare_lookups(cfg, messages.append)
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in tracked} == before
    assert "tfrecords=up_to_date" in messages[0] and "repetitions=0 up_to_date=2" in messages[1]


def test_lookups_reproduce_the_same_bytes(tiny_cfg, tmp_path):
    cfg, _ = preprocess(tiny_cfg)
    other, _ = preprocess(dataclasses.replace(tiny_cfg, work_dir=str(tmp_path / "other")))
    for name in ["label_r00.npy", "label_r01.npy", "inverse_r01.npz", "manifest.json"]:
        assert (cfg.lookup_dir() / name).read_bytes() == (other.lookup_dir() / name).read_bytes()


def test_another_B_or_seed_writes_elsewhere(tiny_cfg):
    cfg, _ = preprocess(tiny_cfg)
    for change in [{"B": 16}, {"hash_seed": 5}, {"feat_hash_dim": 10}]:
        other, _ = preprocess(dataclasses.replace(tiny_cfg, **change))
        assert other.lookup_dir() != cfg.lookup_dir()
    assert dataclasses.replace(cfg, B=16).label_lookup_path(0).is_file()
    assert dataclasses.replace(cfg, feat_hash_dim=10).feature_lookup_path(1).is_file()


def test_mismatched_or_changed_lookups_are_refused(tiny_cfg):
    cfg, _ = preprocess(tiny_cfg)
    with pytest.raises(ValueError, match="were built for"):
        load_lookups(dataclasses.replace(cfg, n_classes=N_CLASSES + 1), 0)
    with pytest.raises(FileNotFoundError, match="no lookup for r=5"):
        load_lookups(cfg, 5)
    np.save(cfg.label_lookup_path(1), np.zeros(N_CLASSES, dtype=np.int32))
    with pytest.raises(ValueError, match="does not match its checksum"):
        load_lookups(cfg, 1)
    with pytest.raises(ValueError, match="were built for"):
        prepare_lookups(dataclasses.replace(cfg, n_features=N_FEATURES + 3), quiet)


def test_stale_sizes_are_refused(tiny_cfg):
    _, manifest = preprocess(tiny_cfg)
    with pytest.raises(ValueError, match="was built with n_classes=50 but the config says 60"):
        with_data_sizes(dataclasses.replace(tiny_cfg, n_classes=60), manifest)


def test_bad_input_leaves_nothing_half_written(tiny_cfg, tiny_files):
    text = tiny_files["train"].read_text().splitlines()
    text[40] = "3,77 1:1"  # label 77 >= 50
    tiny_files["train"].write_text("\n".join(text) + "\n")
    with pytest.raises(DataFormatError, match=r"tiny_train.txt:41: label 77 is out of range"):
        prepare_tfrecords(tiny_cfg, quiet)
    leftovers = list(tiny_cfg.dataset_dir().iterdir()) if tiny_cfg.dataset_dir().exists() else []
    assert leftovers == []


def test_changed_source_rewrites_the_tfrecords(tiny_cfg, tiny_files):
    preprocess(tiny_cfg)
    from conftest import format_rows

    tiny_files["train"].write_text(format_rows(make_rows(40, seed=9)))
    manifest = prepare_tfrecords(tiny_cfg, quiet)
    assert manifest["train"]["rows"] == 40
    assert not [p for p in tiny_cfg.dataset_dir().iterdir() if p.name.startswith(".")]


def test_data_file_with_split_files(tmp_path):
    import config

    data = tmp_path / "all.txt"
    data.write_text("4 5 6\n0 0:1\n1 1:1\n2 2:1\n3 3:1\n")
    (tmp_path / "tr.txt").write_text("4 1\n2 2\n")
    (tmp_path / "ts.txt").write_text("1 3\n")
    base = dataclasses.replace(
        config.BASE,
        name="split",
        data_dir=str(tmp_path),
        data_file="all.txt",
        train_split_file="tr.txt",
        test_split_file="ts.txt",
        work_dir=str(tmp_path / "work"),
        rows_per_shard=1,
    )
    for split, train_labels, test_labels in [(1, [1, 3], [0]), (2, [0, 1], [2])]:
        cfg = dataclasses.replace(base, split=split)
        manifest = prepare_tfrecords(cfg, quiet)
        assert len(manifest["train"]["shards"]) == 2  # rows_per_shard=1
        for name, expected in [("train", train_labels), ("test", test_labels)]:
            files = tfrecord_files(cfg.tfrecord_dir(), manifest[name])
            got = [
                int(label)
                for batch in read_batches(files, 8)
                for label in batch["labels"].values.numpy()
            ]
            assert got == expected  # rows keep the data file's order
        assert np.load(cfg.tfrecord_dir() / "train_label_counts.npy").tolist() == [
            int(i in train_labels) for i in range(6)
        ]
    (tmp_path / "ts.txt").write_text("1 3\n2 3\n")
    with pytest.raises(DataFormatError, match="row 2 is in both the train and the test split"):
        prepare_tfrecords(base, quiet)


def test_missing_files_say_what_to_do(tiny_cfg):
    with pytest.raises(FileNotFoundError, match="train_file not found"):
        prepare_tfrecords(dataclasses.replace(tiny_cfg, train_file="nope.txt"), quiet)
    with pytest.raises(FileNotFoundError, match="run `python preprocess.py --dataset tiny`"):
        load_data_manifest(tiny_cfg)


def test_tuning_mode_holds_out_training_rows_and_never_reads_test(tiny_cfg, tiny_files):
    tiny_files["test"].write_bytes(b"not even gzip")  # tuning must not read the test file
    cfg = dataclasses.replace(tiny_cfg, valid_fraction=0.25)
    manifest = prepare_tfrecords(cfg, quiet)
    assert manifest["train"]["rows"] + manifest["test"]["rows"] == 64
    assert 8 <= manifest["test"]["rows"] <= 24
    assert "valid0.25-s0" in cfg.tfrecord_dir().name and cfg.hashing_dir().name.startswith(
        "valid0.25-s0-"
    )
    again = prepare_tfrecords(
        dataclasses.replace(cfg, work_dir=str(cfg.dataset_dir()) + "2"), quiet
    )
    assert again["test"]["rows"] == manifest["test"]["rows"]  # the same rows every time


def test_b_and_epochs_left_open_are_chosen_from_the_data(tiny_cfg):
    cfg, _ = preprocess(dataclasses.replace(tiny_cfg, B=None, epochs=None))
    assert cfg.B == N_CLASSES  # K=50 <= 128: a bucket per class
    assert cfg.epochs == 25  # 64 rows in batches of 16: 4 steps an epoch
    assert cfg.label_lookup_path(0).exists() and f"/B{N_CLASSES}-" in str(cfg.run_dir())


def test_epochs_left_open_give_small_data_enough_steps():
    from mach.sizing import default_epochs

    # 10 epochs where that is already 100+ steps (Delicious: 12,920 rows, 51 steps an epoch) ...
    assert default_epochs(12_920, 256) == 10 and default_epochs(10**7, 256) == 10
    # ... more passes over small data (at most 100: one step an epoch).
    assert default_epochs(1_000, 256) == 25 and default_epochs(266, 256) == 50
    assert default_epochs(20, 256) == 100 and default_epochs(1, 1) == 100


def test_each_repetition_hashes_with_its_own_seed(tiny_cfg):
    """Labels and features of repetition r hash with seed hash_seed + r: no two alike."""
    from mach.hashing import hash_range

    cfg = dataclasses.replace(
        tiny_cfg, n_features=N_FEATURES, n_classes=N_CLASSES, feat_hash_dim=7, hash_seed=3, R=3
    )
    prepare_lookups(cfg, quiet)
    for r in range(cfg.R):
        label_to_bucket, feature_to_slot, _ = load_lookups(cfg, r)
        np.testing.assert_array_equal(label_to_bucket, hash_range(N_CLASSES, 3 + r, cfg.B))
        np.testing.assert_array_equal(feature_to_slot, hash_range(N_FEATURES, 3 + r, 7))
    features = [load_lookups(cfg, r)[1] for r in range(cfg.R)]
    labels = [load_lookups(cfg, r)[0] for r in range(cfg.R)]
    for a in range(cfg.R):
        for b in range(a + 1, cfg.R):
            assert not np.array_equal(features[a], features[b])
            assert not np.array_equal(labels[a], labels[b])
