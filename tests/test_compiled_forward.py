"""The compiled forward kernel (predict.py's work-directory path): the NumPy spec bit for bit, TensorFlow's
MachNet to float32 rounding, a row's logits independent of its batch, and clear errors for bad input.
"""

import numpy as np
import pytest
import tensorflow as tf

from mach.data.tfrecords import rows_to_model_input
from mach.merge import load_kernel
from mach.model import MachNet
from mach.serving.forward import (
    Networks,
    forward_numpy,
    from_bfloat16,
    normalised_values,
    to_bfloat16,
)

forward_rows = load_kernel("forward_rows")


def random_rows(rng, batch, D, max_nnz):
    """indices, values (with repeats, negatives and empty rows), row_splits of `batch` rows."""
    lengths = rng.integers(0, max_nnz + 1, batch)
    lengths[::4] = 0  # some rows without features
    row_splits = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    indices = rng.integers(0, D, row_splits[-1]).astype(np.int64)
    values = rng.standard_normal(row_splits[-1]).astype(np.float32)
    return indices, values, row_splits


def random_nets(rng, R, sizes):
    weights = [
        rng.standard_normal((R, a, b)).astype(np.float32) for a, b in zip(sizes[:-1], sizes[1:])
    ]
    biases = [rng.standard_normal((R, b)).astype(np.float32) * 0.3 for b in sizes[1:]]
    return weights, biases


@pytest.mark.parametrize("sizes", [[30, 16, 8, 6], [30, 5], [12, 40, 7]])
@pytest.mark.parametrize("threads", [1, 2])
def test_kernel_equals_the_numpy_spec_bit_for_bit(sizes, threads):
    rng = np.random.default_rng(len(sizes) + threads)
    R, batch = 3, 9
    weights, biases = random_nets(rng, R, sizes)
    indices, values, row_splits = random_rows(rng, batch, sizes[0], 6)
    # Feature hashing: each repetition its own first-layer row per entry.
    slots = rng.integers(0, sizes[0], (R, len(indices))).astype(np.int64)
    got = forward_rows(weights, biases, row_splits, slots, values, threads)
    want = forward_numpy(weights, biases, row_splits, slots, values)
    assert got.shape == (batch, R, sizes[-1])
    np.testing.assert_array_equal(got.view(np.int32), want.view(np.int32))


def test_a_rows_logits_do_not_depend_on_its_batch():
    rng = np.random.default_rng(5)
    weights, biases = random_nets(rng, 4, [50, 32, 10])
    indices, values, row_splits = random_rows(rng, 20, 50, 8)
    slots = np.ascontiguousarray(np.broadcast_to(indices, (4, len(indices))))
    together = forward_rows(weights, biases, row_splits, slots, values, 2)
    for row in range(20):
        a, b = row_splits[row], row_splits[row + 1]
        alone = forward_rows(
            weights,
            biases,
            np.array([0, b - a]),
            np.ascontiguousarray(slots[:, a:b]),
            values[a:b],
            1,
        )
        np.testing.assert_array_equal(alone[0], together[row])


def test_an_empty_batch_gives_no_rows():
    rng = np.random.default_rng(0)
    weights, biases = random_nets(rng, 2, [10, 4, 3])
    out = forward_rows(
        weights,
        biases,
        np.zeros(1, np.int64),
        np.zeros((2, 0), np.int64),
        np.zeros(0, np.float32),
    )
    assert out.shape == (0, 2, 3)


@pytest.mark.parametrize("normalize", ["max", "l2", "none"])
@pytest.mark.parametrize("hashed", [False, True])
def test_networks_agree_with_machnet(normalize, hashed):
    """The same rows through TensorFlow (MachNet, as evaluate.py), the kernel and the matmul path.

    Biases are random, so a path that skipped one could not pass."""
    rng = np.random.default_rng(3)
    R, D, hash_dim = 3, 60, 16
    input_dim = hash_dim if hashed else D
    sizes = [input_dim, 32, 24, 10]
    arrays = [
        [
            rng.standard_normal(shape).astype(np.float32) * scale
            for a, b in zip(sizes[:-1], sizes[1:])
            for shape, scale in (((a, b), 0.3), ((b,), 1.0))
        ]
        for _ in range(R)
    ]
    nets = [MachNet(input_dim, (32, 24), 10, 0.0, 7, r, trained=arrays[r]) for r in range(R)]
    feature_to_slot = rng.integers(0, hash_dim, (R, D)).astype(np.int32) if hashed else None
    indices, values, row_splits = random_rows(rng, 12, D, 7)
    compiled_nets = Networks(arrays, feature_to_slot, normalize)
    compiled = compiled_nets.logits(indices, values, row_splits)
    matmul = compiled_nets.logits_matmul(indices, values, row_splits)
    np.testing.assert_allclose(matmul, compiled, rtol=1e-5, atol=1e-4)
    for row in range(len(row_splits) - 1):  # normalised per row: the same bits alone
        a, b = row_splits[row], row_splits[row + 1]
        alone = compiled_nets.logits(indices[a:b], values[a:b], np.array([0, b - a]))
        np.testing.assert_array_equal(alone[0], compiled[row])

    batch = len(row_splits) - 1
    rows = np.repeat(np.arange(batch), np.diff(row_splits))
    positions = np.arange(len(indices)) - row_splits[rows]
    where = np.stack([rows, positions], axis=1)
    parsed = {
        "feat_idx": tf.SparseTensor(where, indices, [batch, 8]),
        "feat_val": tf.SparseTensor(where, values, [batch, 8]),
        "labels": tf.SparseTensor(tf.zeros([0, 2], tf.int64), tf.zeros([0], tf.int64), [batch, 0]),
    }
    for r, net in enumerate(nets):
        inputs, _ = rows_to_model_input(
            parsed,
            tf.zeros([1], tf.int32),
            10,
            input_dim,
            None if feature_to_slot is None else tf.constant(feature_to_slot[r]),
            normalize,
        )
        np.testing.assert_allclose(compiled[:, r], net(inputs).numpy(), rtol=1e-5, atol=1e-4)


def test_normalised_values_follow_training():
    values = np.array([2.0, -4.0, 1.0, 0.5, 3.0], np.float32)
    splits = np.array([0, 2, 2, 5])  # the middle row has no features
    scale = np.array([4, 4, 3, 3, 3], np.float32)  # each row's largest |value|
    np.testing.assert_array_equal(normalised_values(values, splits, "max"), values / scale)
    l2 = normalised_values(values, splits, "l2")
    np.testing.assert_allclose(l2[:2], [2 / np.sqrt(20), -4 / np.sqrt(20)], rtol=1e-6)
    with pytest.raises(ValueError, match="normalize='z'"):
        normalised_values(values, splits, "z")


def test_bad_inputs_are_refused_before_the_kernel_runs():
    rng = np.random.default_rng(0)
    weights, biases = random_nets(rng, 2, [10, 4, 3])
    splits, values = np.array([0, 2], np.int64), np.ones(2, np.float32)
    with pytest.raises(ValueError, match=r"slots must lie in \[0, 10\)"):
        forward_rows(weights, biases, splits, np.full((2, 2), 10, np.int64), values)
    with pytest.raises(ValueError, match="do not chain"):
        forward_rows([weights[0], weights[0]], biases, splits, np.zeros((2, 2), np.int64), values)
    with pytest.raises(ValueError, match="row_splits must rise"):
        forward_rows(
            weights, biases, np.array([0, 3], np.int64), np.zeros((2, 2), np.int64), values
        )
    with pytest.raises(TypeError, match="float32"):
        forward_rows(
            [w.astype(np.float64) for w in weights],
            biases,
            splits,
            np.zeros((2, 2), np.int64),
            values,
        )


def test_bfloat16_weights_are_the_spec_with_rounded_weights():
    rng = np.random.default_rng(11)
    weights, biases = random_nets(rng, 3, [40, 24, 9])
    indices, values, row_splits = random_rows(rng, 10, 40, 6)
    slots = np.ascontiguousarray(np.broadcast_to(indices, (3, len(indices))))
    half = [to_bfloat16(w) for w in weights]
    got = forward_rows(half, biases, row_splits, slots, values, 2)
    want = forward_numpy(half, biases, row_splits, slots, values)
    np.testing.assert_array_equal(got.view(np.int32), want.view(np.int32))
    # Rounded to 8 significant bits: each weight within 2^-9 of its float32 value, relatively.
    back = from_bfloat16(half[0])
    np.testing.assert_array_less(np.abs(back - weights[0]), np.abs(weights[0]) * 2.0**-8 + 1e-30)
    assert to_bfloat16(np.array([1.0, 1.00390625, 1.01171875], np.float32)).tolist() == [
        0x3F80,
        0x3F80,  # a tie goes to the even neighbour
        0x3F82,  # the other tie, up to the even one
    ]
