import dataclasses
import math

import numpy as np
import pytest
import tensorflow as tf
from conftest import quiet

from mach import weights
from mach.data.prepare import prepare_lookups, prepare_tfrecords, with_data_sizes
from mach.data.tfrecords import rows_to_model_input, tfrecord_files
from mach.model import MachNet, bucket_loss
from mach.training import Repetition, train_repetitions

# Tests that train are marked slow (left out by `make test-fast`); the others run in both.


def preprocess(cfg):
    manifest = prepare_tfrecords(cfg, quiet)
    cfg = with_data_sizes(cfg, manifest)
    prepare_lookups(cfg, quiet)
    return cfg, manifest


def test_softmax_loss_by_hand():
    # Row 0: labels in buckets {0, 2} -> target [0.5, 0, 0.5]; row 1 has no labels and must not count.
    logits = tf.constant([[1.0, 0.0, 1.0], [5.0, -5.0, 0.0]])
    targets = tf.constant([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    log_z = math.log(2 * math.e + 1)
    expected = -(0.5 * (1 - log_z) + 0.5 * (1 - log_z))
    assert float(bucket_loss(logits, targets, "softmax")) == pytest.approx(expected, rel=1e-6)


def test_bce_loss_by_hand():
    logits = tf.constant([[0.0, 2.0], [1.0, 1.0]])
    targets = tf.constant([[1.0, 0.0], [0.0, 0.0]])  # second row unlabeled: weight 0
    expected = math.log(2) + math.log(1 + math.exp(2))  # -log(sigmoid(0)) - log(1 - sigmoid(2))
    assert float(bucket_loss(logits, targets, "bce")) == pytest.approx(expected, rel=1e-6)


def test_pipeline_maps_labels_to_buckets_and_clips_shared_buckets():
    parsed = {
        "labels": tf.sparse.from_dense(tf.constant([[1, 3, 4], [0, 0, 0]], tf.int64)),
        "feat_idx": tf.SparseTensor(
            [[0, 0], [0, 1], [1, 0]], tf.constant([2, 5, 5], tf.int64), [2, 2]
        ),
        "feat_val": tf.SparseTensor([[0, 0], [0, 1], [1, 0]], [3.0, 4.0, 2.0], [2, 2]),
    }
    lookup = tf.constant([0, 2, 1, 2, 0], tf.int32)  # labels 1 and 3 share bucket 2
    inputs, targets = rows_to_model_input(parsed, lookup, 3, 6, None, "l2")
    assert targets.numpy().tolist() == [[1, 0, 1], [0, 0, 0]]
    dense = tf.sparse.to_dense(tf.sparse.reorder(inputs)).numpy()
    assert (
        dense[0, 2] == pytest.approx(0.6)
        and dense[0, 5] == pytest.approx(0.8)
        and dense[1, 5] == 1.0
    )


def test_feature_hashing_adds_colliding_features():
    parsed = {
        "labels": tf.sparse.from_dense(tf.constant([[1]], tf.int64)),
        "feat_idx": tf.SparseTensor(
            [[0, 0], [0, 1], [0, 2]], tf.constant([0, 1, 2], tf.int64), [1, 3]
        ),
        "feat_val": tf.SparseTensor([[0, 0], [0, 1], [0, 2]], [1.0, 2.0, 4.0], [1, 3]),
    }
    slot = tf.constant([1, 1, 0], tf.int32)  # features 0 and 1 collide in slot 1
    inputs, _ = rows_to_model_input(parsed, tf.constant([0, 1]), 2, 2, slot, "none")
    weights = tf.constant([[10.0], [100.0]])
    assert tf.sparse.sparse_dense_matmul(inputs, weights).numpy().tolist() == [
        [(1 + 2) * 100 + 4 * 10]
    ]


def test_partial_last_batch_is_kept_and_unlabeled_rows_weigh_nothing(tiny_cfg, tiny_files):
    text = tiny_files["train"].read_text().splitlines()
    text[5] = " 1:1"  # a row without labels
    tiny_files["train"].write_text("\n".join(text) + "\n")
    cfg, manifest = preprocess(tiny_cfg)
    rep = Repetition(dataclasses.replace(cfg, batch_size=10), 0)
    batches = list(
        rep.dataset(
            dataclasses.replace(cfg, batch_size=10),
            tfrecord_files(cfg.tfrecord_dir(), manifest["train"]),
            0,
            1,
        )
    )
    assert [int(y.shape[0]) for _, y in batches] == [10] * 6 + [4]  # 64 rows: no zero-padding
    assert manifest["train"]["rows_without_labels"] == 1
    assert (
        sum(int(tf.reduce_sum(tf.cast(tf.reduce_sum(y, 1) == 0, tf.int32))) for _, y in batches)
        == 1
    )
    # The unlabeled row changes neither the loss nor its gradient.
    x, y = next((x, y) for x, y in batches if bool(tf.reduce_any(tf.reduce_sum(y, 1) == 0)))
    keep = tf.reduce_sum(y, 1) > 0
    logits = rep.model(x)
    assert float(bucket_loss(logits, y, "softmax")) == pytest.approx(
        float(bucket_loss(logits[keep], y[keep], "softmax"))
    )


def trained_weights(cfg, manifest, groups):
    """Train the groups of repetitions; each one's last weights, from its NumPy file (checked
    against its TensorFlow checkpoint)."""
    for reps in groups:
        train_repetitions(cfg, reps, manifest, quiet)
    out = {}
    for r in range(cfg.R):
        out[r] = weights.load_epoch(cfg.ckpt_dir(r), cfg.epochs, "")
        model = MachNet(cfg.input_dim(), cfg.hidden, cfg.B, 0.0, cfg.seed, r)
        tf.train.Checkpoint(model=model).restore(
            tf.train.latest_checkpoint(str(cfg.ckpt_dir(r)))
        ).expect_partial()
        for a, b in zip(out[r], model.arrays()):
            np.testing.assert_array_equal(a, b)
    return out


@pytest.mark.slow
def test_training_lowers_the_loss_with_one_line_per_epoch(tiny_cfg):
    cfg, manifest = preprocess(dataclasses.replace(tiny_cfg, epochs=8, lr=0.01))
    messages = []
    summaries = train_repetitions(cfg, [0, 1], manifest, messages.append)
    epochs = [m for m in messages if m.startswith("epoch=")]
    assert (
        len(epochs) == 8 and epochs[-1].startswith("epoch=8/8 loss=") and "ex_per_s=" in epochs[-1]
    )
    first = float(epochs[0].split("loss=")[1].split()[0])
    assert (
        summaries[0]["final_loss"] < 0.9 * first
    )  # 2.12 -> 1.75 here; unchanged weights stay at 2.1
    assert summaries[0]["epochs"] == 8 and (cfg.ckpt_dir(0) / "train.json").is_file()
    assert summaries[1]["epoch_weights"] == list(range(1, 9))  # every epoch kept: it fits
    assert list((cfg.log_dir() / "tensorboard" / "r01").iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("sparse_first_layer", ["off", "on"])
def test_grouping_does_not_change_results(tiny_cfg, tmp_path, sparse_first_layer):
    cfg, manifest = preprocess(
        dataclasses.replace(tiny_cfg, dropout=0.2, sparse_first_layer=sparse_first_layer)
    )
    together = trained_weights(cfg, manifest, [[0, 1]])
    cfg2, manifest2 = preprocess(dataclasses.replace(cfg, work_dir=str(tmp_path / "apart")))
    apart = trained_weights(cfg2, manifest2, [[1], [0]])
    for r in range(cfg.R):
        for a, b in zip(together[r], apart[r]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(together[0][-1], together[1][-1])  # but the repetitions differ


@pytest.mark.slow
@pytest.mark.parametrize("sparse_first_layer", ["off", "on"])
def test_resume_after_a_kill_equals_an_uninterrupted_run(
    tiny_cfg, tmp_path, monkeypatch, sparse_first_layer
):
    cfg, manifest = preprocess(
        dataclasses.replace(tiny_cfg, epochs=3, dropout=0.1, sparse_first_layer=sparse_first_layer)
    )
    uninterrupted = trained_weights(cfg, manifest, [[0, 1]])

    cfg2, manifest2 = preprocess(dataclasses.replace(cfg, work_dir=str(tmp_path / "killed")))
    import mach.training

    real_step, calls = mach.training._make_train_step, {"n": 0}

    def dying_step(*args):
        step = real_step(*args)

        def wrapped(batch):
            calls["n"] += 1
            if calls["n"] == 6:  # the second epoch has 4 steps of 16: die in its middle
                raise KeyboardInterrupt("killed")
            return step(batch)

        return wrapped

    monkeypatch.setattr(mach.training, "_make_train_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        train_repetitions(cfg2, [0, 1], manifest2, quiet)
    monkeypatch.setattr(mach.training, "_make_train_step", real_step)
    assert tf.train.latest_checkpoint(str(cfg2.ckpt_dir(0))).endswith("ckpt-1")
    messages = []
    train_repetitions(cfg2, [0, 1], manifest2, messages.append)
    assert "resumed_from_epochs=r0:1,r1:1 (the last full checkpoints)" in messages
    resumed = trained_weights(cfg2, manifest2, [])
    for r in range(cfg.R):
        for a, b in zip(uninterrupted[r], resumed[r]):
            np.testing.assert_array_equal(a, b)


def test_one_pipeline_over_epochs_replays_each_epochs_own_order(tiny_cfg):
    cfg, manifest = preprocess(tiny_cfg)
    files = tfrecord_files(cfg.tfrecord_dir(), manifest["train"])
    rep = Repetition(cfg, 0)

    def bucket_rows(first, last):
        return [y.numpy() for _, y in rep.dataset(cfg, files, first, last)]

    run, apart = bucket_rows(0, 3), bucket_rows(0, 1) + bucket_rows(1, 2) + bucket_rows(2, 3)
    assert len(run) == len(apart) == 12 and all(np.array_equal(a, b) for a, b in zip(run, apart))
    assert not np.array_equal(run[0], run[4])  # each epoch has its own order


@pytest.mark.slow
def test_short_epochs_are_saved_once_per_interval_with_the_same_result(tiny_cfg, tmp_path):
    cfg, manifest = preprocess(dataclasses.replace(tiny_cfg, epochs=3, dropout=0.1))
    every_epoch = trained_weights(cfg, manifest, [[0, 1]])
    assert [p.name for p in sorted(cfg.ckpt_dir(0).glob("ckpt-*.index"))] == [
        "ckpt-2.index",
        "ckpt-3.index",
    ]  # keep_checkpoints=2
    cfg2 = dataclasses.replace(cfg, work_dir=str(tmp_path / "hourly"), checkpoint_interval_s=3600)
    cfg2, manifest2 = preprocess(cfg2)
    last_only = trained_weights(cfg2, manifest2, [[0, 1]])
    assert [p.name for p in cfg2.ckpt_dir(0).glob("ckpt-*.index")] == ["ckpt-3.index"]
    assert weights.saved_epochs(cfg2.ckpt_dir(0)) == [
        1,
        2,
        3,
    ]  # weights of every epoch all the same
    for r in range(cfg.R):
        for a, b in zip(every_epoch[r], last_only[r]):
            np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_keeping_every_epoch_is_refused_up_front_when_the_disk_is_too_small(tiny_cfg, monkeypatch):
    import shutil as shutil_module

    cfg, manifest = preprocess(dataclasses.replace(tiny_cfg, keep_checkpoints=0, epochs=1000))
    real = shutil_module.disk_usage
    monkeypatch.setattr(shutil_module, "disk_usage", lambda p: real(p)._replace(free=10_000_000))
    with pytest.raises(ValueError, match=r"keep_checkpoints=0 keeps all 1000 epochs .* GiB free"):
        train_repetitions(cfg, [0, 1], manifest, quiet)
    assert not list(cfg.ckpt_dir(0).glob("ckpt-*"))  # refused before anything was written


def kept(policy: str, epochs: int) -> list[int]:
    return [e for e in range(1, epochs + 1) if weights.is_kept(policy, e, epochs)]


def test_auto_keeps_at_most_ten_epochs_of_weights_within_the_budget():
    gib = 2**30
    assert weights.keep_policy("auto", gib // 100, 10, 100 * gib)[0] == "all"
    policy, why = weights.keep_policy("auto", gib // 100, 50, 100 * gib)
    assert policy == "every 5" and "10 of 50 epochs" in why
    assert kept(policy, 50) == [5, 10, 15, 20, 25, 30, 35, 40, 45, 50]
    assert kept(weights.keep_policy("auto", gib // 100, 25, 100 * gib)[0], 25) == [
        *range(3, 25, 3),
        25,  # the last epoch is always kept
    ]
    # Over the budget (4 GiB here) only the last is kept, as before: 10 of 50 epochs or 9 of 9.
    assert weights.keep_policy("auto", gib // 2, 50, 100 * gib)[0] == "last"
    assert weights.keep_policy("auto", gib // 2, 9, 100 * gib)[0] == "last"
    assert weights.keep_policy("all", gib // 100, 50, 100 * gib)[0] == "all"
    assert kept("all", 12) == kept("last", 12) == list(range(1, 13))


@pytest.mark.slow
def test_many_short_epochs_keep_every_nth_epochs_weights_and_say_so(tiny_cfg):
    cfg, manifest = preprocess(dataclasses.replace(tiny_cfg, epochs=12))
    summaries = train_repetitions(cfg, [0, 1], manifest, quiet)
    assert summaries[0]["epoch_weights"] == [2, 4, 6, 8, 10, 12]
    assert not weights.epoch_file(cfg.ckpt_dir(1), 3).exists()
    with pytest.raises(FileNotFoundError, match=r"kept epochs 2, 4, .* every 2 and the last"):
        weights.resolve_epoch(cfg, 2, 3)
    assert weights.resolve_epoch(cfg, 2, 4) == (4, "epoch 4 of 12")


@pytest.mark.slow
def test_resume_refuses_a_checkpoint_of_another_model(tiny_cfg):
    cfg, manifest = preprocess(dataclasses.replace(tiny_cfg, epochs=1))
    train_repetitions(cfg, [0], manifest, quiet)
    with pytest.raises(ValueError, match=r"cannot resume .*hidden: trained with \[16\], now \[8\]"):
        train_repetitions(dataclasses.replace(cfg, hidden=(8,)), [0], manifest, quiet)


def test_max_normalisation_makes_binary_rows_binary_again():
    parsed = {
        "labels": tf.sparse.from_dense(tf.constant([[1], [0]], tf.int64)),
        "feat_idx": tf.SparseTensor(
            [[0, 0], [0, 1], [1, 0]], tf.constant([0, 3, 2], tf.int64), [2, 2]
        ),
        "feat_val": tf.SparseTensor([[0, 0], [0, 1], [1, 0]], [0.5**0.5, 0.5**0.5, -4.0], [2, 2]),
    }
    inputs, _ = rows_to_model_input(parsed, tf.constant([0, 1]), 2, 4, None, "max")
    assert inputs.values.numpy().tolist() == [1.0, 1.0, -1.0]


def test_rows_held_in_memory_are_the_streamed_rows(tiny_cfg):
    """ResidentRows.batch(index) gives the rows the TFRecords hold at those positions."""
    from mach.data.resident import ResidentRows, epoch_order, index_batches
    from mach.data.tfrecords import read_batches

    cfg, manifest = preprocess(tiny_cfg)
    files = tfrecord_files(cfg.tfrecord_dir(), manifest["train"])
    resident = ResidentRows(files)
    assert resident.rows == manifest["train"]["rows"] == 64
    streamed = next(iter(read_batches(files, 1000)))
    dense = {k: tf.sparse.to_dense(v).numpy() for k, v in streamed.items()}
    lengths = {k: tf.RaggedTensor.from_sparse(v).row_lengths().numpy() for k, v in streamed.items()}
    index = np.array([5, 0, 63, 17, 5], np.int64)
    for name, got in resident.batch(tf.constant(index)).items():
        got_dense, got_lengths = tf.sparse.to_dense(got).numpy(), got.indices[:, 0].numpy()
        np.testing.assert_array_equal(np.bincount(got_lengths, minlength=5), lengths[name][index])
        width = got_dense.shape[1]
        np.testing.assert_array_equal(got_dense, dense[name][index][:, :width])
    # An epoch's order is a permutation drawn from its seed alone, cut into batches of the rest.
    order = epoch_order(64, 7)
    assert sorted(order) == list(range(64)) and (order == epoch_order(64, 7)).all()
    assert (order != epoch_order(64, 8)).any()
    cuts = [b.shape for b in index_batches(np.stack([order, order]), 24)]
    assert cuts == [(2, 24), (2, 24), (2, 16)]
