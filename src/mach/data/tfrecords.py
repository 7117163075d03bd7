"""TFRecords of sparse rows: the writer, and the tf.data reader that feeds one or more repetitions.

One `tf.train.Example` per row: `labels` int64[], `feat_idx` int64[], `feat_val` float32[] (raw ids; the
per-repetition hashing happens when reading, so every B/R/seed shares the same files).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

SCHEMA = {
    "labels": tf.io.VarLenFeature(tf.int64),
    "feat_idx": tf.io.VarLenFeature(tf.int64),
    "feat_val": tf.io.VarLenFeature(tf.float32),
}


def encode_row(labels: np.ndarray, feat_idx: np.ndarray, feat_val: np.ndarray) -> bytes:
    feature = {
        "labels": tf.train.Feature(int64_list=tf.train.Int64List(value=labels)),
        "feat_idx": tf.train.Feature(int64_list=tf.train.Int64List(value=feat_idx)),
        "feat_val": tf.train.Feature(float_list=tf.train.FloatList(value=feat_val)),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def parse_batch(serialized: tf.Tensor) -> dict[str, tf.SparseTensor]:
    """[batch] serialized Examples -> SparseTensors [batch, max_len] (labels, feat_idx, feat_val)."""
    return tf.io.parse_example(serialized, SCHEMA)


class ShardedWriter:
    """Writes rows to `<prefix>-00000.tfrecord`, ... with at most rows_per_shard rows each, and keeps stats."""

    def __init__(self, directory: Path, prefix: str, rows_per_shard: int, n_classes: int):
        self.directory, self.prefix, self.rows_per_shard = directory, prefix, rows_per_shard
        self.label_counts = np.zeros(
            n_classes, dtype=np.int64
        )  # [K] rows per label, for propensities
        self.shards: list[str] = []
        self.rows = self.label_count = self.feature_count = self.rows_without_labels = 0
        self._writer = None

    def write(self, labels: np.ndarray, feat_idx: np.ndarray, feat_val: np.ndarray) -> None:
        if self._writer is None or self.rows % self.rows_per_shard == 0 and self.rows > 0:
            self._open_next()
        self._writer.write(encode_row(labels, feat_idx, feat_val))
        self.rows += 1
        self.label_count += len(labels)
        self.feature_count += len(feat_idx)
        self.rows_without_labels += len(labels) == 0
        self.label_counts[
            labels
        ] += 1  # labels within a row are distinct in XC data; duplicates count once

    def _open_next(self) -> None:
        if self._writer is not None:
            self._writer.close()
        name = f"{self.prefix}-{len(self.shards):05d}.tfrecord"
        self.shards.append(name)
        self._writer = tf.io.TFRecordWriter(str(self.directory / name))

    def close(self) -> dict:
        if self._writer is not None:
            self._writer.close()
        return {
            "rows": self.rows,
            "shards": self.shards,
            "labels_per_row": self.label_count / max(self.rows, 1),
            "features_per_row": self.feature_count / max(self.rows, 1),
            "rows_without_labels": self.rows_without_labels,
        }


def tfrecord_files(tfrecord_dir: Path, split_manifest: dict) -> list[str]:
    """The split's shards, each checked against the size the manifest recorded when it was written."""
    files = []
    for name in split_manifest["shards"]:
        path = tfrecord_dir / name
        expected = split_manifest.get("sizes", {}).get(name)
        found = path.stat().st_size if path.is_file() else None
        if found is None or (expected is not None and found != expected):
            # A shard cut on a record boundary would otherwise read as a shorter, valid file.
            what = "is missing" if found is None else f"has {found} bytes, not {expected}"
            raise ValueError(
                f"{path} {what}: the TFRecords are damaged; re-run preprocess.py with the same "
                "options (it rewrites them)"
            )
        files.append(str(path))
    return files


def rows_to_model_input(
    parsed: dict[str, tf.SparseTensor],
    label_to_bucket: tf.Tensor,
    B: int,
    input_dim: int,
    feature_to_slot: tf.Tensor | None,
    normalize: str,
    with_targets: bool = True,
) -> tuple[tf.SparseTensor, tf.Tensor | None]:
    """Parsed rows -> (sparse inputs [batch, input_dim] float32, bucket multi-hot [batch, B] float32;
    None without with_targets).

    The multi-hot is clipped to 1 where two labels of a row share a bucket.  Feature hashing maps ids
    through feature_to_slot; colliding features stay separate entries, which the sparse matmul adds up.
    """
    feat_idx, feat_val, labels = parsed["feat_idx"], parsed["feat_val"], parsed["labels"]
    batch = tf.shape(labels, out_type=tf.int64)[0]
    values = feat_val.values
    rows = feat_val.indices[:, 0]
    # Rows are scaled in the original feature space, before any hashing.
    if normalize == "l2":
        row_scale = tf.sqrt(tf.math.unsorted_segment_sum(values * values, rows, batch))
    elif normalize == "max":
        # Largest |value| becomes 1: binary rows stay binary even when the file holds them L2-normalised.
        row_scale = tf.math.unsorted_segment_max(tf.abs(values), rows, batch)
    if normalize != "none":
        values = values / tf.maximum(tf.gather(row_scale, rows), 1e-12)
    cols = (
        feat_idx.values
        if feature_to_slot is None
        else tf.cast(tf.gather(feature_to_slot, feat_idx.values), tf.int64)
    )
    inputs = tf.SparseTensor(
        indices=tf.stack([feat_idx.indices[:, 0], cols], axis=1),
        values=values,
        dense_shape=tf.stack([batch, tf.constant(input_dim, tf.int64)]),
    )
    if not with_targets:
        return inputs, None  # inference: the labels are not needed
    buckets = tf.cast(tf.gather(label_to_bucket, labels.values), tf.int64)
    targets = tf.tensor_scatter_nd_max(
        tf.zeros(tf.stack([batch, tf.constant(B, tf.int64)]), tf.float32),
        tf.stack([labels.indices[:, 0], buckets], axis=1),
        tf.ones_like(buckets, tf.float32),
    )
    return inputs, targets


# The parsed batch of parse_batch, with its shapes relaxed: one trace serves every batch.
PARSED_SPEC = {name: tf.SparseTensorSpec([None, None], spec.dtype) for name, spec in SCHEMA.items()}


def read_batches(
    files: list[str],
    batch_size: int,
    *,
    shuffle_seed: int | None = None,
    shuffle_buffer: int = 0,
    rows: tuple[int, int] | None = None,
) -> tf.data.Dataset:
    """Batches of parsed rows.  With a shuffle seed, rows (not batches) are shuffled before batching.
    rows=(first, stop): only those rows, in file order; the rows before are skipped unparsed."""
    ds = tf.data.TFRecordDataset(files)
    if rows is not None:
        ds = ds.skip(rows[0]).take(rows[1] - rows[0])
    if shuffle_seed is not None:
        ds = ds.shuffle(shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=False)
    # The last partial batch is kept: it trains as a smaller batch rather than padding.
    return ds.batch(batch_size, drop_remainder=False).map(
        parse_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
