"""The first layer over non-zeros (CSR) and lazy Adam: what they compute, and how lazy Adam differs."""

import numpy as np
import pytest
import tensorflow as tf

from mach.cli import apply_overrides
from mach.model import (
    GATHER_INPUT_MIN,
    SPARSE_FIRST_LAYER_MIN,
    Adam,
    MachNet,
    bucket_loss,
    sparse_matmul,
    use_sparse_first_layer,
)


def random_rows(rng, batch: int, D: int, per_row: int, every_feature: bool = False):
    """Rows in order, features unordered within a row, some repeated (hash collisions add up)."""
    indices = []
    for row in range(batch):
        features = list(rng.integers(0, D, per_row)) + (
            [] if row % 3 else [int(rng.integers(D))] * 2
        )
        if every_feature and row == 0:
            features += list(range(D))
        indices += [[row, f] for f in rng.permutation(features)]
    values = rng.normal(size=len(indices)).astype(np.float32)
    return tf.SparseTensor(np.array(indices, np.int64), values, [batch, D])


def dense_of(x: tf.SparseTensor) -> tf.Tensor:
    return tf.scatter_nd(x.indices, x.values, x.dense_shape)  # adds duplicates up


@pytest.mark.parametrize("gather", [False, True])
def test_first_layer_equals_a_dense_matmul_and_so_does_its_gradient(gather):
    rng = np.random.default_rng(0)
    x = random_rows(rng, batch=7, D=40, per_row=5)
    x = tf.SparseTensor(x.indices, x.values, [8, 40])  # the last row has no features
    w = tf.Variable(rng.normal(size=(40, 6)).astype(np.float32))
    dy = tf.constant(rng.normal(size=(8, 6)).astype(np.float32))
    with tf.GradientTape() as tape:
        out = sparse_matmul(x, w, gather)
        loss = tf.reduce_sum(out * dy)
    grad = tape.gradient(loss, w)
    np.testing.assert_allclose(out.numpy(), dense_of(x).numpy() @ w.numpy(), rtol=1e-5, atol=1e-5)
    expected = dense_of(x).numpy().T @ dy.numpy()  # [40, 6]
    assert isinstance(grad, tf.IndexedSlices) == gather
    if gather:
        present = np.unique(x.indices[:, 1].numpy())
        # Each feature of the batch once; the absent ones have no row (their dense gradient is 0).
        assert sorted(grad.indices.numpy().tolist()) == present.tolist()
        np.testing.assert_array_equal(np.delete(expected, present, axis=0), 0)
    np.testing.assert_allclose(tf.convert_to_tensor(grad).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_rows_out_of_order_are_refused():
    x = tf.SparseTensor([[1, 0], [0, 2]], [1.0, 2.0], [2, 3])
    with pytest.raises(tf.errors.InvalidArgumentError, match="row by row"):
        sparse_matmul(x, tf.Variable(tf.ones([3, 2])), False)


def train(net: MachNet, batches, lazy: bool, lr=0.05) -> Adam:
    opt = Adam(net.trainable_variables, lr, lazy=lazy)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = bucket_loss(net(x), y, "softmax")
        opt.apply(tape.gradient(loss, net.trainable_variables), net.trainable_variables)

    for x, y in batches:
        step(x, y)
    return opt


def first_layer_state(net: MachNet, opt: Adam) -> list[np.ndarray]:
    i = next(i for i, v in enumerate(net.trainable_variables) if v is net.weights_[0])
    return [net.weights_[0].numpy(), opt.m[i].numpy(), opt.v[i].numpy()]


def test_lazy_adam_equals_dense_adam_when_every_row_is_in_every_batch():
    rng = np.random.default_rng(1)
    batches = [
        (random_rows(rng, 6, 20, 4, every_feature=True), tf.one_hot(rng.integers(0, 5, 6), 5))
        for _ in range(6)
    ]
    nets = [MachNet(20, (8,), 5, 0.0, 0, 0, sparse_first_layer=s) for s in (False, True)]
    opts = [train(net, batches, lazy=s) for net, s in zip(nets, (False, True))]
    for dense, lazy in zip(nets[0].trainable_variables, nets[1].trainable_variables):
        np.testing.assert_allclose(lazy.numpy(), dense.numpy(), rtol=1e-5, atol=1e-7)
    for dense, lazy in zip(
        first_layer_state(nets[0], opts[0]), first_layer_state(nets[1], opts[1])
    ):
        np.testing.assert_allclose(lazy, dense, rtol=1e-5, atol=1e-9)


def test_lazy_adam_leaves_rows_absent_from_a_batch_alone_where_dense_adam_moves_them():
    rng = np.random.default_rng(2)
    warm = [
        (random_rows(rng, 6, 20, 4, every_feature=True), tf.one_hot(rng.integers(0, 5, 6), 5))
        for _ in range(3)
    ]
    # The last batch lacks features 0..9.
    x = random_rows(rng, 6, 10, 4)
    last = (
        tf.SparseTensor(x.indices + [0, 10], x.values, [6, 20]),
        tf.one_hot(rng.integers(0, 5, 6), 5),
    )
    results = {}
    for sparse in (False, True):
        net = MachNet(20, (8,), 5, 0.0, 0, 0, sparse_first_layer=sparse)
        opt = train(net, warm, lazy=sparse)
        before = first_layer_state(net, opt)
        with tf.GradientTape() as tape:
            loss = bucket_loss(net(last[0]), last[1], "softmax")
        opt.apply(tape.gradient(loss, net.trainable_variables), net.trainable_variables)
        after = first_layer_state(net, opt)
        results[sparse] = [np.abs(a - b)[:10].max() for a, b in zip(after, before)]
        assert all(np.abs(a - b)[10:].max() > 0 for a, b in zip(after, before))
    assert results[True] == [0.0, 0.0, 0.0]  # lazy: weights, m and v of rows 0..9 unchanged
    assert all(change > 0 for change in results[False])  # dense: decayed moments still move them


def test_wide_first_layers_gather_and_without_lazy_adam_train_as_dense_ones(monkeypatch):
    rng = np.random.default_rng(4)
    D = GATHER_INPUT_MIN + 1
    x = random_rows(rng, 4, 50, 3)  # features 0..49 of D: most rows of w are absent
    batches = [(tf.SparseTensor(x.indices, x.values, [4, D]), tf.one_hot([0, 1, 2, 0], 3))] * 3
    wide, forced_dense = (MachNet(D, (4,), 3, 0.0, 0, 0) for _ in range(2))
    with tf.GradientTape() as tape:
        loss = bucket_loss(wide(batches[0][0]), batches[0][1], "softmax")
    assert isinstance(tape.gradient(loss, wide.weights_[0]), tf.IndexedSlices)
    train(wide, batches, lazy=False)
    # The same net made to read all of w (a dense gradient) trains to the same weights.
    import mach.model

    monkeypatch.setattr(mach.model, "GATHER_INPUT_MIN", D)
    train(forced_dense, batches, lazy=False)
    for a, b in zip(wide.trainable_variables, forced_dense.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7)


def test_checkpoints_hold_the_same_variables_with_lazy_adam(tmp_path):
    rng = np.random.default_rng(3)
    batches = [(random_rows(rng, 4, 12, 3), tf.one_hot(rng.integers(0, 3, 4), 3))]
    names = {}
    for sparse in (False, True):
        net = MachNet(12, (5,), 3, 0.0, 0, 0, sparse_first_layer=sparse)
        opt = train(net, batches, lazy=sparse)
        path = tf.train.Checkpoint(model=net, optimizer=opt).save(str(tmp_path / f"s{sparse}"))
        names[sparse] = [name for name, _ in tf.train.list_variables(path)]
        # As evaluation restores one repetition: the model alone.
        restored = MachNet(12, (5,), 3, 0.0, 0, 0)
        tf.train.Checkpoint(model=restored).restore(
            path
        ).expect_partial().assert_existing_objects_matched()
        np.testing.assert_array_equal(restored.weights_[0].numpy(), net.weights_[0].numpy())
    assert names[True] == names[False]


def test_sparse_first_layer_setting():
    assert not use_sparse_first_layer("auto", SPARSE_FIRST_LAYER_MIN)
    assert use_sparse_first_layer("auto", SPARSE_FIRST_LAYER_MIN + 1)
    assert use_sparse_first_layer("on", 10) and not use_sparse_first_layer("off", 10**6)
    import config

    assert config.DATASETS["delicious"].sparse_first_layer == "auto"
    assert not use_sparse_first_layer("auto", config.DATASETS["delicious"].n_features)
    assert use_sparse_first_layer("auto", config.DATASETS["amazon670k"].input_dim())
    with pytest.raises(ValueError, match="sparse_first_layer='yes': expected one of auto, on, off"):
        apply_overrides(config.BASE, ["sparse_first_layer=yes"])
