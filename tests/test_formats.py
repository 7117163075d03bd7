"""The libsvm and vw readers, and preprocessing with --set format=libsvm/vw."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
from conftest import N_CLASSES, N_FEATURES, make_rows, quiet

from mach.data.formats import DataFormatError, count_rows, iter_rows, read_header, scan_sizes
from mach.data.prepare import prepare_tfrecords
from mach.data.tfrecords import read_batches, tfrecord_files


def write(tmp_path, text, name="data.txt"):
    path = tmp_path / name
    path.write_text(text)
    return path


def parsed(rows):
    return [(r.labels.tolist(), r.feat_idx.tolist(), r.feat_val.tolist()) for r in rows]


def test_libsvm_indices_are_one_based_labels_zero_based(tmp_path):
    path = write(tmp_path, "1,3 1:0.5 4:2\n\n 2:1\n0\n")
    assert read_header(path, "libsvm") is None and count_rows(path, "libsvm") == 3
    assert parsed(iter_rows(path, 4, 4, "libsvm")) == [
        ([1, 3], [0, 3], [0.5, 2.0]),
        ([], [1], [1.0]),
        ([0], [], []),
    ]
    assert [r.line_no for r in iter_rows(path, 4, 4, "libsvm")] == [1, 3, 4]
    assert scan_sizes([path], "libsvm") == (4, 4)  # largest index 4 -> D=4; label 3 -> K=4


def test_vw_labels_before_the_bar_features_after(tmp_path):
    path = write(tmp_path, "1,2 | 0:0.5 3\n| 2:1\n\n3 1 |a 1 |b 2:3\n0 |\n")
    assert read_header(path, "vw") is None and count_rows(path, "vw") == 4
    assert parsed(iter_rows(path, 4, 4, "vw")) == [
        ([1, 2], [0, 3], [0.5, 1.0]),  # `3` alone has value 1
        ([], [2], [1.0]),
        ([3], [1, 2], [1.0, 3.0]),  # weight 1 accepted; namespace names are not features
        ([0], [], []),
    ]
    assert scan_sizes([path, write(tmp_path, "7 | 9\n", "more.txt")], "vw") == (10, 8)


def test_headers_are_only_read_in_the_xc_format(tmp_path):
    path = write(tmp_path, "3 10 10\n1 2:1\n")
    assert read_header(path, "xc").n_rows == 3
    with pytest.raises(DataFormatError, match=r"data.txt:1: malformed feature '10'"):
        list(iter_rows(path, 10, 10, "libsvm"))


@pytest.mark.parametrize(
    "fmt, text, message",
    [
        (
            "libsvm",
            "1 1:1\n2 0:1\n",
            "data.txt:2: feature index 0 is out of range; expected 1 <= index <= 10 "
            "(the number of features; libsvm indices are 1-based)",
        ),
        ("libsvm", "1 11:1\n", "data.txt:1: feature index 11 is out of range"),
        ("libsvm", "-1 1:1\n", "data.txt:1: label '-1' is not an integer"),
        ("libsvm", "+1 1:1\n", "data.txt:1: label '+1' is not an integer"),
        ("libsvm", "1.0 1:1\n", "data.txt:1: label '1.0' is not an integer"),
        ("libsvm", "1 qid:3 1:1\n", "data.txt:1: feature index 'qid' is not an integer"),
        ("libsvm", "1 1:x\n", "data.txt:1: feature value 'x' is not a number"),
        ("libsvm", "1 1:1\n\n12 1:1\n", "data.txt:3: label 12 is out of range"),
        ("libsvm", "", "data.txt: the file is empty"),
        ("vw", "1 0:1\n", "data.txt:1: no `|` in the line; expected `labels [weight] | i:v i ...`"),
        (
            "vw",
            "1 | 0:1\n1 2 | 0:1\n",
            "data.txt:2: importance weight '2'; expected no weight or 1 (MACH weighs every row "
            "the same)",
        ),
        ("vw", "1 1 'tag | 0:1\n", "data.txt:1: 3 fields before `|`"),
        ("vw", "1 |ns:2 0:1\n", "data.txt:1: namespace 'ns:2' has a weight"),
        ("vw", "1 | word\n", "data.txt:1: feature index 'word' is not an integer"),
        (
            "vw",
            "1 | 10\n",
            "data.txt:1: feature index 10 is out of range; expected 0 <= index < 10",
        ),
        ("vw", "1 | 3:\n", "data.txt:1: feature value '' is not a number"),
        ("vw", "1:0.5 | 3\n", "data.txt:1: label '1:0.5' is not an integer"),
        ("vw", "1,,2 | 3\n", "data.txt:1: empty label in '1,,2'"),
    ],
)
def test_bad_lines_name_file_line_and_expectation(tmp_path, fmt, text, message):
    with pytest.raises(DataFormatError) as err:
        list(iter_rows(write(tmp_path, text), 10, 10, fmt))
    assert message in str(err.value)


def test_scan_refuses_ids_beyond_int32(tmp_path):
    path = write(tmp_path, "1 2147483648:1\n")
    with pytest.raises(DataFormatError) as err:
        scan_sizes([path], "libsvm")
    assert str(err.value) == (
        f"{path}:1: feature index 2147483648 is out of range; "
        "expected 1 <= index <= 2147483647 (ids are hashed as int32)"
    )


def format_rows(rows, fmt: str) -> str:
    """The conftest rows (0-based ids) in libsvm or vw syntax, with a blank line in between."""
    lines = []
    for labels, feats in rows:
        labels_text, feats = ",".join(map(str, labels)), sorted(feats.items())
        if fmt == "libsvm":
            lines.append(labels_text + " " + " ".join(f"{i + 1}:{v:g}" for i, v in feats))
        else:
            lines.append(labels_text + " | " + " ".join(f"{i}:{v:g}" for i, v in feats))
    lines.insert(len(lines) // 2, "")
    return "\n".join(lines) + "\n"


def tfrecord_rows(cfg, manifest, split):
    """(labels, feature ids, values) of each row in the TFRecords, in file order."""
    got = []
    for batch in read_batches(tfrecord_files(cfg.tfrecord_dir(), manifest[split]), batch_size=16):
        columns = ["labels", "feat_idx", "feat_val"]
        got += zip(*[tf.RaggedTensor.from_sparse(batch[c]).to_list() for c in columns])
    return got


@pytest.mark.parametrize("fmt", ["libsvm", "vw"])
def test_preprocess_round_trip(tiny_cfg, tmp_path, fmt):
    rows = {"train": make_rows(64, seed=1), "test": make_rows(32, seed=2)}
    paths = {
        split: write(tmp_path, format_rows(rows[split], fmt), f"{split}.{fmt}") for split in rows
    }
    cfg = dataclasses.replace(
        tiny_cfg, format=fmt, train_file=str(paths["train"]), test_file=str(paths["test"])
    )
    messages = []
    manifest = prepare_tfrecords(cfg, messages.append)
    # No header: the sizes come from a scan of both files (largest id + 1).
    all_rows = rows["train"] + rows["test"]
    expected_d = 1 + max(i for _, feats in all_rows for i in feats)
    expected_k = 1 + max(label for labels, _ in all_rows for label in labels)
    assert (manifest["inputs"]["n_features"], manifest["inputs"]["n_classes"]) == (
        expected_d,
        expected_k,
    )
    assert manifest["inputs"]["format"] == fmt
    assert any(m.startswith(f"sizes=scanned format={fmt} files=2") for m in messages)
    for split in ["train", "test"]:
        got = tfrecord_rows(cfg, manifest, split)
        assert len(got) == len(rows[split])
        for (labels, idx, val), (want_labels, want_feats) in zip(got, rows[split]):
            assert labels == want_labels and idx == sorted(want_feats)
            assert np.allclose(val, [v for _, v in sorted(want_feats.items())])
    # A re-run neither scans nor writes; configured sizes that agree keep the TFRecords too.
    messages.clear()
    prepare_tfrecords(cfg, messages.append)
    assert not any("sizes=scanned" in m for m in messages)
    assert any("tfrecords=up_to_date" in m for m in messages)
    again = dataclasses.replace(cfg, n_features=expected_d, n_classes=expected_k)
    assert prepare_tfrecords(again, quiet)["inputs"] == manifest["inputs"]
    # Wider configured sizes are a different dataset: rewritten.
    wider = dataclasses.replace(cfg, n_features=N_FEATURES + 5, n_classes=N_CLASSES)
    assert prepare_tfrecords(wider, quiet)["inputs"]["n_features"] == N_FEATURES + 5


def test_changing_the_format_rewrites_the_tfrecords(tiny_cfg, tmp_path):
    # This libsvm file is also valid xc (indices >= 1), read with every feature one higher.
    rows = make_rows(64, seed=1)
    path = write(tmp_path, format_rows(rows, "libsvm"), "train.libsvm")
    cfg = dataclasses.replace(
        tiny_cfg,
        train_file=str(path),
        test_file=str(path),
        n_features=N_FEATURES + 1,
        n_classes=N_CLASSES,
    )
    libsvm = prepare_tfrecords(dataclasses.replace(cfg, format="libsvm"), quiet)
    messages = []
    xc = prepare_tfrecords(dataclasses.replace(cfg, format="xc"), messages.append)
    assert any("tfrecords=stale" in m for m in messages)
    assert (libsvm["inputs"]["format"], xc["inputs"]["format"]) == ("libsvm", "xc")
    first_idx = tfrecord_rows(cfg, xc, "train")[0][1]
    assert first_idx == [i + 1 for i in sorted(rows[0][1])]


def test_tuning_mode_scans_only_the_training_file(tiny_cfg, tmp_path):
    path = write(tmp_path, format_rows(make_rows(64, seed=1), "vw"), "train.vw")
    (tmp_path / "test.vw").write_bytes(b"\xff not even text")
    cfg = dataclasses.replace(
        tiny_cfg,
        format="vw",
        train_file=str(path),
        test_file=str(tmp_path / "test.vw"),
        valid_fraction=0.25,
    )
    manifest = prepare_tfrecords(cfg, quiet)
    assert manifest["train"]["rows"] + manifest["test"]["rows"] == 64


def test_a_directory_is_not_a_data_file(tiny_cfg, tmp_path):
    with pytest.raises(ValueError, match=r"train_file is a directory: .*; expected a data file"):
        prepare_tfrecords(dataclasses.replace(tiny_cfg, train_file=str(tmp_path)), quiet)
