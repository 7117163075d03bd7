"""The merge as TensorFlow ops, run in a graph on any device: the SavedModel's merge, and evaluation's
when the logits are on a GPU (only [rows, k] then come back to the host).

exact_topk equals mach.merge.merge_topk_numpy (float32 sums added in the order r = 0..R-1, ties by
lower label id: tf.math.top_k puts the lower index first among equal values), candidate_topk equals
merge_candidates_numpy; the tests check both against the NumPy specification.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def exact_topk(logits: list[tf.Tensor], lookups: list[tf.Tensor], k: int):
    """Top-k of all K classes. logits: R x [batch, B] float32; lookups: R x [K] int32.

    Returns labels [batch, k] int64 and scores [batch, k] float32, ties by lower label id.
    """
    scores = tf.gather(logits[0], lookups[0], axis=1)  # [batch, K] float32
    for r in range(1, len(logits)):
        # One add per repetition, in r order: the same float32 sums as the kernel.
        scores = scores + tf.gather(logits[r], lookups[r], axis=1)
    top = tf.math.top_k(scores, k)
    return tf.cast(top.indices, tf.int64), top.values


def _candidate_keys(logits, width, bucket_offsets, bucket_labels, K: int):
    """The labels of each row's top-width[row] buckets of every repetition, with repeats.

    logits: [batch, R, B]; width: [batch] int32; bucket_offsets: [R*B+1] int64 and bucket_labels:
    [R*K] int64, the R CSR inverses end to end. Returns keys row*K + label [n] int64, sorted.
    """
    R, B = logits.shape[1], logits.shape[2]
    top = tf.math.top_k(logits, tf.reduce_max(width)).indices  # [batch, R, w] int32, ties: lower id
    rank = tf.range(tf.shape(top)[2])
    chosen = tf.broadcast_to(rank[None, None, :] < width[:, None, None], tf.shape(top))  # bool
    buckets = tf.cast(top, tf.int64) + B * tf.range(R, dtype=tf.int64)[None, :, None]
    rows = tf.broadcast_to(
        tf.range(tf.shape(top, out_type=tf.int64)[0])[:, None, None], tf.shape(top)
    )
    buckets, rows = tf.boolean_mask(buckets, chosen), tf.boolean_mask(rows, chosen)
    starts, ends = tf.gather(bucket_offsets, buckets), tf.gather(bucket_offsets, buckets + 1)
    labels = tf.gather(bucket_labels, tf.ragged.range(starts, ends).flat_values)
    return tf.sort(tf.repeat(rows, ends - starts) * K + labels)


def _distinct(keys):
    """Sorted keys [n] -> the distinct ones and how often each occurs (2x faster than tf.unique)."""
    n = tf.size(keys, out_type=tf.int64)
    first = tf.where(tf.concat([[True], keys[1:] != keys[:-1]], axis=0))[:, 0]  # [n_distinct]
    return tf.gather(keys, first), tf.experimental.numpy.diff(tf.concat([first, [n]], axis=0))


def candidate_topk(logits, lookups, bucket_offsets, bucket_labels, k: int, m: int, min_freq: int):
    """Top-k among the labels of each repetition's top-m buckets (mach.merge.merge_candidates_numpy).

    logits: [batch, R, B] float32; lookups: R x [K] int32; bucket_offsets [R*B+1] int64 and
    bucket_labels [R*K] int64: repetition r's CSR inverse shifted by r*K (offsets) and r*B (buckets).
    A row whose buckets hold fewer than k labels doubles its m until they do, as the spec does.
    Returns labels [batch, k] int64 and scores [batch, k] float32, ties by lower label id.
    """
    R, B = logits.shape[1], logits.shape[2]
    K = int(lookups[0].shape[0])
    batch = tf.shape(logits, out_type=tf.int64)[0]

    def found(width):
        """[batch] distinct labels in the top-width buckets."""
        keys, _ = _distinct(_candidate_keys(logits, width, bucket_offsets, bucket_labels, K))
        return tf.math.unsorted_segment_sum(tf.ones_like(keys), keys // K, batch)

    def widen(width, n):
        width = tf.where(n < k, tf.minimum(2 * width, B), width)
        return width, found(width)

    width = tf.fill([batch], m)
    # Each label sits in one bucket per repetition, so one repetition whose top-m buckets hold k
    # labels proves that nothing widens; only otherwise are the distinct labels counted.
    sizes = bucket_offsets[1:] - bucket_offsets[:-1]  # [R*B] labels per bucket
    top_m = tf.math.top_k(logits, m).indices + B * tf.range(R)[None, :, None]
    enough = tf.reduce_max(tf.reduce_sum(tf.gather(sizes, top_m), axis=2), axis=1) >= k
    n = tf.cond(
        tf.reduce_all(enough), lambda: tf.fill([batch], tf.cast(k, tf.int64)), lambda: found(width)
    )
    width, _ = tf.while_loop(
        lambda width, n: tf.reduce_any((n < k) & (width < B)),
        widen,
        [width, n],
        shape_invariants=[tf.TensorShape([None]), tf.TensorShape([None])],
    )
    keys, counts = _distinct(_candidate_keys(logits, width, bucket_offsets, bucket_labels, K))
    # The largest f <= min_freq leaving at least k labels: the number of f in 1..min_freq that do.
    reach = tf.cast(counts[:, None] >= tf.range(1, min_freq + 1, dtype=tf.int64)[None, :], tf.int64)
    per_f = tf.math.unsorted_segment_sum(reach, keys // K, batch)  # [batch, min_freq]
    f = tf.reduce_sum(tf.cast(per_f >= k, tf.int64), axis=1)  # [batch], >= 1 once widened
    kept = tf.boolean_mask(keys, counts >= tf.gather(f, keys // K))  # by row, then label
    rows, labels = kept // K, kept % K
    flat = tf.reshape(logits, [-1])
    base = rows * (R * B)
    scores = tf.gather(flat, base + tf.cast(tf.gather(lookups[0], labels), tf.int64))
    for r in range(1, R):
        bucket = tf.cast(tf.gather(lookups[r], labels), tf.int64)
        scores = scores + tf.gather(flat, base + r * B + bucket)
    # Each row's candidates are in label order, so top_k's lower index is the lower label. Padding
    # is -inf and every row has at least k finite candidates.
    padded = tf.RaggedTensor.from_value_rowids(scores, rows, nrows=batch)
    top = tf.math.top_k(padded.to_tensor(default_value=-np.inf), k)
    ranked = tf.RaggedTensor.from_value_rowids(labels, rows, nrows=batch).to_tensor()
    return tf.gather(ranked, top.indices, batch_dims=1), top.values


def bucket_scores(logits: tf.Tensor, score: str, loss: str) -> tf.Tensor:
    """What the merge adds up: the logits, or the per-repetition probabilities (score "probs")."""
    if score == "logits":
        return logits
    if loss == "bce":
        return 1.0 / (1.0 + tf.exp(-logits))
    # As mach.merge.to_probabilities: subtract the max, then normalise.
    shifted = tf.exp(logits - tf.reduce_max(logits, axis=-1, keepdims=True))
    return shifted / tf.reduce_sum(shifted, axis=-1, keepdims=True)


def probs_estimate(sums: tf.Tensor, R: int, B: int) -> tf.Tensor:
    """The paper's estimate of P(c) from summed probabilities, B/(B-1) (sum/R - 1/B), as mach.merge
    computes it (in float64, stored as float32): an increasing map, so the ranking is the sums'."""
    return tf.cast(B / (B - 1) * (tf.cast(sums, tf.float64) / R - 1.0 / B), tf.float32)


def merged_topk(logits: list[tf.Tensor], lookups: list[tf.Tensor], k: int, score: str, loss: str):
    """Exact merge of R x [batch, B] logits into the top-k of K classes, with the score mode's
    transform: labels [batch, k] int64 and scores [batch, k] float32, as mach.merge.merge_scores."""
    labels, scores = exact_topk([bucket_scores(x, score, loss) for x in logits], lookups, k)
    if score == "probs":
        scores = probs_estimate(scores, len(logits), int(logits[0].shape[-1]))
    return labels, scores
