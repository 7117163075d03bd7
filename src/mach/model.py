"""One MACH repetition: sparse input -> ReLU hidden layers -> B bucket logits, and its two losses."""

from __future__ import annotations

import math

import tensorflow as tf


def repetition_seed(seed: int, r: int, *salt: int) -> int:
    """A 31-bit seed for (run seed, repetition, salt...), the same whichever process trains r."""
    value = seed
    for part in (r, *salt):
        value = (value * 1_000_003 + part + 1) % (2**31 - 1)
    return value


DENSE_INPUT_MAX = 4096  # input widths up to this are densified per batch before the first matmul


# The official code: tf.truncated_normal(stddev=0.05) for weights and biases; the precursor: 0.01, zero biases.
OFFICIAL_INIT_STDDEV = 0.05
PRECURSOR_INIT_STDDEV = 0.01


def initial_values(fan_in: int, fan_out: int, seed: list[int], recipe: str):
    """Weights [fan_in, fan_out] and biases [fan_out] of one layer, a function of the seed alone.

    improved: Glorot uniform weights, zero biases; official: truncated normal (stddev 0.05) for both;
    precursor: truncated normal (stddev 0.01) weights, zero biases.
    """
    if recipe in ("official", "precursor"):
        stddev = OFFICIAL_INIT_STDDEV if recipe == "official" else PRECURSOR_INIT_STDDEV
        w = tf.random.stateless_truncated_normal([fan_in, fan_out], seed=seed, stddev=stddev)
        b = (
            tf.random.stateless_truncated_normal(
                [fan_out], seed=[seed[0], seed[1] + 1000], stddev=stddev
            )
            if recipe == "official"
            else tf.zeros([fan_out])
        )
        return w, b
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    w = tf.random.stateless_uniform([fan_in, fan_out], seed=seed, minval=-limit, maxval=limit)
    return w, tf.zeros([fan_out])


class MachNet(tf.Module):
    """Feed-forward net of one repetition.  Initialisation depends only on (seed, r)."""

    def __init__(
        self,
        input_dim: int,
        hidden: tuple[int, ...],
        B: int,
        dropout: float,
        seed: int,
        r: int,
        recipe: str = "improved",
    ):
        super().__init__(name=f"mach_r{r:02d}")
        self.dropout, self.dropout_seed = dropout, repetition_seed(seed, r, 7)
        sizes = [input_dim, *hidden, B]
        self.weights_, self.biases = [], []
        for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            w, b = initial_values(fan_in, fan_out, [repetition_seed(seed, r), layer], recipe)
            self.weights_.append(tf.Variable(w, name=f"w{layer}"))  # [fan_in, fan_out] float32
            self.biases.append(tf.Variable(b, name=f"b{layer}"))  # [fan_out] float32

    def __call__(self, inputs: tf.SparseTensor, step: tf.Tensor | None = None) -> tf.Tensor:
        """Sparse [batch, input_dim] -> logits [batch, B].  A step turns on dropout (seeded by it)."""
        if self.weights_[0].shape[0] <= DENSE_INPUT_MAX:
            # Narrow inputs: a dense matmul (and its gradient) is ~2x faster than the sparse one on CPU;
            # scatter_nd adds up duplicate (row, feature) entries just as the sparse matmul does.
            dense = tf.scatter_nd(inputs.indices, inputs.values, inputs.dense_shape)
            x = tf.matmul(dense, self.weights_[0]) + self.biases[0]
        else:
            x = tf.sparse.sparse_dense_matmul(inputs, self.weights_[0]) + self.biases[0]
        for layer in range(1, len(self.weights_)):
            x = tf.nn.relu(x)
            if step is not None and self.dropout > 0:
                # Stateless dropout: a resumed run draws the same masks as an uninterrupted one.
                seed = tf.stack(
                    [tf.constant(self.dropout_seed + layer, tf.int64), tf.cast(step, tf.int64)]
                )
                x = tf.nn.experimental.stateless_dropout(x, self.dropout, seed=seed)
            x = tf.matmul(x, self.weights_[layer]) + self.biases[layer]
        return x

    def n_params(self) -> int:
        return int(sum(v.shape.num_elements() for v in self.trainable_variables))


def bucket_loss(
    logits: tf.Tensor, targets: tf.Tensor, loss: str, recipe: str = "improved"
) -> tf.Tensor:
    """Mean loss over rows with at least one label.  targets: bucket multi-hot [batch, B], 0/1.

    softmax: cross-entropy against the multi-hot normalised to sum 1 (the paper).
    bce: sigmoid cross-entropy, summed over buckets; the official recipe averages it over buckets
    too (tf.reduce_mean over batch x B, as the official code does), i.e. the same loss divided by B.
    Rows without labels stay in the batch with weight 0.
    """
    n_pos = tf.reduce_sum(targets, axis=1)  # [batch]
    weight = tf.cast(n_pos > 0, tf.float32)
    if loss == "softmax":
        per_row = tf.nn.softmax_cross_entropy_with_logits(
            labels=targets / tf.maximum(n_pos, 1.0)[:, None], logits=logits
        )
    elif loss == "bce":
        reduce = tf.reduce_mean if recipe == "official" else tf.reduce_sum
        per_row = reduce(
            tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits), axis=1
        )
    else:
        raise ValueError(f"loss={loss!r}: expected 'softmax' or 'bce'")
    return tf.reduce_sum(per_row * weight) / tf.maximum(tf.reduce_sum(weight), 1.0)


class Adam(tf.Module):
    """Adam (Kingma & Ba 2015) over one repetition's variables; its state lives in tf.Variables so that
    tf.train.Checkpoint saves and restores it with the model."""

    def __init__(
        self, variables: list[tf.Variable], lr: float, beta1=0.9, beta2=0.999, epsilon=1e-7
    ):
        super().__init__(name="adam")
        self.lr, self.beta1, self.beta2, self.epsilon = lr, beta1, beta2, epsilon
        self.iterations = tf.Variable(0, dtype=tf.int64, name="iterations")
        self.m = [tf.Variable(tf.zeros_like(v), name="m") for v in variables]
        self.v = [tf.Variable(tf.zeros_like(v), name="v") for v in variables]

    def apply(self, grads: list[tf.Tensor], variables: list[tf.Variable]) -> None:
        self.iterations.assign_add(1)
        t = tf.cast(self.iterations, tf.float32)
        for g, var, m, v in zip(grads, variables, self.m, self.v):
            # The fused kernel does the whole update in one op (the plain formula costs ~8 ops per variable).
            tf.raw_ops.ResourceApplyAdam(
                var=var.handle,
                m=m.handle,
                v=v.handle,
                beta1_power=self.beta1**t,
                beta2_power=self.beta2**t,
                lr=tf.constant(self.lr, tf.float32),
                beta1=tf.constant(self.beta1, tf.float32),
                beta2=tf.constant(self.beta2, tf.float32),
                epsilon=tf.constant(self.epsilon, tf.float32),
                grad=g,
            )
