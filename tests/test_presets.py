"""The paper presets carry the official settings; the official recipe is what it says."""

import math

import numpy as np
import pytest
import tensorflow as tf

import config
from mach.datasets import DATASETS as FACTS
from mach.model import Adam, MachNet, bucket_loss

# The settings of the official code, as read from the sources named in config.py.
PAPER = {
    "wiki10_31k": dict(
        B=2000,
        R=32,
        hidden=(500, 500),
        batch_size=100,
        epochs=60,
    ),
    "delicious200k": dict(
        B=5000,
        R=32,
        hidden=(500, 500),
        batch_size=1000,
        epochs=20,
        feat_hash_dim=None,
    ),
    "amazon670k": dict(
        B=10_000,
        R=32,
        hidden=(500, 500),
        batch_size=1000,
        epochs=40,
    ),
    "amazon3m": dict(
        B=10_000,
        R=16,
        feat_hash_dim=100_000,
        hidden=(4096,),
        batch_size=2000,
        epochs=10,
    ),
    "odp": dict(
        hidden=(),
        loss="softmax",
        B=32,
        R=50,
        batch_size=64,
        epochs=5,
        feature_base=1001,  # ODP's features start at 1001 (src/odp/util.py)
    ),
    "imagenet22k": dict(
        hidden=(),
        loss="softmax",
        B=512,
        R=20,
        batch_size=256,
        epochs=3,
        adam_epsilon=1.0,
    ),
}
MULTILABEL_OFFICIAL = dict(
    recipe="official",
    loss="bce",
    lr=1e-3,
    adam_epsilon=1e-8,
    normalize="none",
    dropout=0.0,
    sparse_first_layer="off",  # dense Adam on every layer, as the official code
)


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_presets_equal_the_official_settings(name):
    cfg = config.DATASETS[name]
    expected = dict(PAPER[name])
    if name not in ("odp", "imagenet22k"):
        expected.update(MULTILABEL_OFFICIAL)
    else:
        expected.update(
            recipe="precursor",
            normalize="none",
            dropout=0.0,
            lr=1e-3,
            sparse_first_layer="off",
            score="probs",  # the precursor predicts by the mean of the R softmax probabilities
            label_base=1,  # recall_tree files number classes from 1
        )
    # D, K and the propensity model come from the one table of dataset facts.
    facts = FACTS[name]
    expected.update(n_features=facts.n_features, n_classes=facts.n_classes, psp_A=facts.psp[0])
    assert {k: getattr(cfg, k) for k in expected} == expected
    assert facts.code and facts.download


def test_official_initialisation_is_a_truncated_normal_of_stddev_0_05_for_weights_and_biases():
    net = MachNet(2000, (500,), 1000, 0.0, seed=0, r=0, recipe="official")
    for v in [net.weights_[0], net.biases[0], net.weights_[1]]:
        x = v.numpy().ravel()
        assert np.abs(x).max() <= 2 * 0.05 + 1e-7  # truncated at two standard deviations
        # A normal truncated at +-2 sigma has standard deviation 0.8796 sigma.
        assert x.std() == pytest.approx(0.05 * 0.8796, rel=0.05 if x.size < 2000 else 0.01)
        assert abs(x.mean()) < 0.05 * 4 / math.sqrt(x.size)
    assert not np.allclose(net.biases[0].numpy(), 0)
    improved = MachNet(2000, (500,), 1000, 0.0, seed=0, r=0)
    assert np.all(improved.biases[0].numpy() == 0)
    precursor = MachNet(200, (), 50, 0.0, seed=0, r=0, recipe="precursor")
    assert precursor.weights_[0].numpy().std() == pytest.approx(0.01 * 0.8796, rel=0.05)
    assert np.all(precursor.biases[0].numpy() == 0) and len(precursor.weights_) == 1


def test_official_bce_is_averaged_over_batch_and_buckets():
    logits = tf.constant([[0.0, 2.0, -1.0], [1.0, 1.0, 0.5]])
    targets = tf.constant([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    official = float(bucket_loss(logits, targets, "bce", "official"))
    expected = float(tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(targets, logits)))
    assert official == pytest.approx(expected, rel=1e-6)
    assert float(bucket_loss(logits, targets, "bce")) == pytest.approx(3 * expected, rel=1e-6)


@pytest.mark.parametrize("epsilon", [1e-8, 1.0])
def test_adam_epsilon_is_honoured(epsilon):
    var = tf.Variable([0.0])
    Adam([var], lr=0.1, epsilon=epsilon).apply([tf.constant([1.0])], [var])
    # First step from zero state: lr * sqrt(1-b2) * g / (sqrt(1-b2) |g| + epsilon).
    root = math.sqrt(1 - 0.999)
    assert float(var[0]) == pytest.approx(-0.1 * root / (root + epsilon), rel=1e-5)


@pytest.mark.slow
def test_training_uses_the_configured_epsilon(tiny_cfg):
    import dataclasses

    from mach.data.prepare import prepare_lookups, prepare_tfrecords, with_data_sizes
    from mach.training import Repetition

    cfg = with_data_sizes(tiny_cfg, prepare_tfrecords(tiny_cfg, print))
    cfg = dataclasses.replace(cfg, adam_epsilon=1.0, recipe="official")
    prepare_lookups(cfg, print)
    rep = Repetition(cfg, 0)
    assert rep.optimizer.epsilon == 1.0 and not np.allclose(rep.model.biases[0].numpy(), 0)
