"""Training rows parsed once and held in memory, shared by every repetition a process trains.

Used when the shuffle buffer would hold every training row anyway (rows <= shuffle_buffer): then an
epoch is a full shuffle either way, and one parsed copy replaces a buffer of serialized rows per
repetition and a tf.data pipeline per repetition that parses each row again every epoch. Repetition
r's order in epoch e is a permutation drawn from (seed, r, e) alone, so which repetitions share a
process changes nothing; the batches are gathered inside the training step.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from mach.data.tfrecords import read_batches

READ_BATCH = 8192  # rows parsed per tf.data step while loading


class ResidentRows:
    """All rows of TFRecord files as ragged tensors: labels, feature ids and values per row."""

    def __init__(self, files: list[str]):
        parts = {"labels": [], "feat_idx": [], "feat_val": []}
        for parsed in read_batches(files, READ_BATCH):
            for name, part in parts.items():
                part.append(tf.RaggedTensor.from_sparse(parsed[name]))
        self.ragged = {
            name: tf.concat(part, axis=0) if part else _empty(name) for name, part in parts.items()
        }
        self.rows = int(self.ragged["labels"].nrows())

    def batch(self, index: tf.Tensor) -> dict[str, tf.SparseTensor]:
        """Rows index [b] int64 as parse_batch gives them (SparseTensors [b, longest row])."""
        return {name: tf.gather(r, index).to_sparse() for name, r in self.ragged.items()}

    def nbytes(self) -> int:
        return sum(
            int(np.prod(t.shape)) * t.dtype.size
            for r in self.ragged.values()
            for t in (r.flat_values, r.row_splits)
        )


def _empty(name: str) -> tf.RaggedTensor:
    dtype = tf.float32 if name == "feat_val" else tf.int64
    return tf.RaggedTensor.from_row_lengths(tf.zeros([0], dtype), tf.zeros([0], tf.int64))


def epoch_order(rows: int, seed: int) -> np.ndarray:
    """[rows] int64: the order of one repetition's epoch, a function of the seed alone."""
    return np.random.default_rng(seed).permutation(rows).astype(np.int64)


def index_batches(orders: np.ndarray, batch_size: int):
    """[A, rows] orders of A repetitions -> their [A, b] row numbers for each step; the last batch of
    an epoch keeps the remainder (as the streamed batches do)."""
    for start in range(0, orders.shape[1], batch_size):
        yield orders[:, start : start + batch_size]
