"""XMC metrics of top-k predictions, as the Extreme Classification Repository defines them.

P@k, nDCG@k, PSP@k and PSnDCG@k follow the repository (and pyxclib): standard P@k divides the hits
by k, and the propensity model is that of Jain, Prabhu & Varma (KDD 2016). The original MACH code
divided by min(|y|, k) instead; that variant lives under its own name,
`precision_at_k_min_denominator`, for comparing with the paper's numbers.

Inputs everywhere: `topk` is [n, kmax] integer label ids per row, best first (a negative id is
padding and never a hit); `true_labels` is a list of n 1-D integer arrays, one per row, possibly
empty. Every score is in percent. NumPy only, so evaluation never needs TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np


class _Matched(NamedTuple):
    """Top-k predictions checked against the true labels, shared by every metric."""

    topk: np.ndarray  # [n, kmax] int64
    hits: np.ndarray  # [n, kmax] bool: topk[i, j] is one of row i's labels
    indptr: np.ndarray  # [n + 1] int64: row i's distinct labels are labels[indptr[i]:indptr[i + 1]]
    labels: np.ndarray  # [nnz] int64, sorted within each row
    n_labels: np.ndarray  # [n] int64: distinct true labels per row


def propensities(
    label_counts: np.ndarray, n_train_rows: int, A: float = 0.55, B: float = 1.5
) -> np.ndarray:
    """Label propensities of Jain, Prabhu & Varma (KDD 2016): rare labels are seen less often.

    p_l = 1 / (1 + C * (N_l + B)^-A), C = (log N - 1) * (B + 1)^A. The repository uses A=0.55,
    B=1.5 by default, A=0.6, B=2.6 for Amazon and A=0.5, B=0.4 for Wikipedia datasets.

    Args:
        label_counts: [K] int, N_l = training rows that carry label l.
        n_train_rows: N, the number of training rows.
    Returns:
        [K] float64 propensities in (0, 1]; PSP takes their inverses.
    """
    counts = np.asarray(label_counts)
    if counts.ndim != 1:
        raise ValueError(f"label_counts must be 1-D [K], got shape {counts.shape}")
    if n_train_rows < 1:
        raise ValueError(f"n_train_rows must be >= 1, got {n_train_rows}")
    C = (np.log(n_train_rows) - 1.0) * (B + 1.0) ** A
    return 1.0 / (1.0 + C * np.exp(-A * np.log(counts.astype(np.float64) + B)))


def label_counts(label_lists: Sequence[np.ndarray], n_classes: int) -> np.ndarray:
    """Training rows per label, each row counted once per label.

    Args:
        label_lists: list of 1-D integer arrays, the labels of each training row.
        n_classes: K.
    Returns:
        [K] int64 counts.
    """
    indptr, labels = _to_csr(label_lists)
    if labels.size and (labels.max() >= n_classes):
        raise ValueError(
            f"label id {labels.max()} >= n_classes={n_classes}; pass the dataset's label count"
        )
    # The unique (row, label) pairs drop a label repeated within one row.
    _, labels, _ = _distinct_per_row(indptr, labels, n_classes)
    return np.bincount(labels, minlength=n_classes).astype(np.int64)


def precision_at_k(topk: np.ndarray, true_labels: Sequence[np.ndarray], k: int) -> float:
    """Standard P@k: mean over all rows of hits@k / k, in percent; a row without labels scores 0."""
    return _precision(_match(topk, true_labels), _check_k(k, topk))


def precision_at_k_min_denominator(
    topk: np.ndarray, true_labels: Sequence[np.ndarray], k: int
) -> float:
    """The original MACH code's precision, NOT standard P@k: hits@k / min(|y|, k), in percent.

    It equals P@k when every row has at least k labels and is higher otherwise (a row with one
    label that is predicted first scores 100 at every k). A row without labels would divide by
    min(0, k) = 0, so such rows are left out of the mean rather than counted as 0 or as a NaN.
    """
    return _precision_min_denominator(_match(topk, true_labels), _check_k(k, topk))


def ndcg_at_k(topk: np.ndarray, true_labels: Sequence[np.ndarray], k: int) -> float:
    """nDCG@k: mean over all rows of DCG@k / IDCG@k, in percent; a row without labels scores 0.

    DCG@k = sum_{i=1..k} [pred_i in y] / log2(i + 1),
    IDCG@k = sum_{i=1..min(k, |y|)} 1 / log2(i + 1).
    """
    return _ndcg(_match(topk, true_labels), _check_k(k, topk))


def psp_at_k(
    topk: np.ndarray, true_labels: Sequence[np.ndarray], k: int, inv_propensity: np.ndarray
) -> float:
    """Propensity-scored P@k, normalised as the repository does, in percent.

    100 * sum_rows sum_{l in top k, l in y} 1/p_l / sum_rows (the k largest 1/p_l among the row's
    labels), so a perfect predictor scores 100. The 1/k of both P@k's cancels.

    Args:
        inv_propensity: [K] float, 1 / propensities(...).
    """
    matched = _match(topk, true_labels)
    inv = _check_inv_propensity(inv_propensity, matched)
    return _psp(matched, _check_k(k, topk), inv, _rank_label_weights(matched, inv))


def psndcg_at_k(
    topk: np.ndarray, true_labels: Sequence[np.ndarray], k: int, inv_propensity: np.ndarray
) -> float:
    """Propensity-scored nDCG@k in percent: summed PS-DCG@k over summed ideal PS-DCG@k."""
    matched = _match(topk, true_labels)
    inv = _check_inv_propensity(inv_propensity, matched)
    return _psndcg(matched, _check_k(k, topk), inv, _rank_label_weights(matched, inv))


def top1_accuracy(topk: np.ndarray, true_labels: Sequence[np.ndarray]) -> float:
    """Percent of rows whose top-1 is their label; for multiclass data (one label per row)."""
    return _top1_accuracy(_match(topk, true_labels))


def evaluate_topk(
    topk: np.ndarray,
    true_labels: Sequence[np.ndarray],
    ks: Sequence[int] = (1, 3, 5),
    inv_propensity: np.ndarray | None = None,
) -> dict:
    """Every metric at every k, matching the predictions to the labels once.

    Args:
        topk: [n, kmax] integer label ids, best first; every k in ks must be <= kmax.
        true_labels: list of n 1-D integer arrays.
        ks: cut-offs.
        inv_propensity: [K] float 1/p_l; adds PSP@k and PSnDCG@k when given.
    Returns:
        {"P@k", "nDCG@k", "P@k_official" (the min(|y|, k) variant), ["PSP@k", "PSnDCG@k"]: percent,
         "rows": n, "rows_without_labels": int,
         ["top1_accuracy": percent, only if every row has exactly one label]}.
    """
    matched = _match(topk, true_labels)
    ks = [_check_k(k, topk) for k in ks]
    if inv_propensity is not None:
        inv_propensity = _check_inv_propensity(inv_propensity, matched)
    out: dict = {}
    for k in ks:
        out[f"P@{k}"] = _precision(matched, k)
    for k in ks:
        out[f"nDCG@{k}"] = _ndcg(matched, k)
    if inv_propensity is not None:
        ranked = _rank_label_weights(matched, inv_propensity)
        for k in ks:
            out[f"PSP@{k}"] = _psp(matched, k, inv_propensity, ranked)
        for k in ks:
            out[f"PSnDCG@{k}"] = _psndcg(matched, k, inv_propensity, ranked)
    for k in ks:
        out[f"P@{k}_official"] = _precision_min_denominator(matched, k)
    out["rows"] = int(matched.topk.shape[0])
    out["rows_without_labels"] = int(np.count_nonzero(matched.n_labels == 0))
    if matched.n_labels.size and np.all(matched.n_labels == 1):
        out["top1_accuracy"] = _top1_accuracy(matched)
    return out


def _precision(m: _Matched, k: int) -> float:
    if m.hits.shape[0] == 0:
        return 0.0
    return float(100.0 * m.hits[:, :k].sum(axis=1).mean() / k)


def _precision_min_denominator(m: _Matched, k: int) -> float:
    has_labels = m.n_labels > 0
    if not has_labels.any():
        return 0.0
    hits = m.hits[has_labels, :k].sum(axis=1)
    return float(100.0 * np.mean(hits / np.minimum(m.n_labels[has_labels], k)))


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2))  # [k] float64: 1/log2(i+1) for rank i = 1..k


def _ndcg(m: _Matched, k: int) -> float:
    n = m.hits.shape[0]
    if n == 0:
        return 0.0
    discounts = _discounts(k)
    dcg = m.hits[:, :k] @ discounts  # [n] float64
    # [k + 1] float64: IDCG for |y| = 0..k; the 1.0 for |y| = 0 only avoids 0/0, as dcg is 0 there.
    ideal_by_count = np.concatenate([[1.0], np.cumsum(discounts)])
    idcg = ideal_by_count[np.minimum(m.n_labels, k)]
    return float(100.0 * np.sum(dcg / idcg) / n)  # rows without labels have dcg = 0


class _RankedWeights(NamedTuple):
    """Each row's true-label 1/p_l, largest first, for the ideal (best achievable) PS scores."""

    weights: np.ndarray  # [nnz] float64, row by row, descending within a row
    ranks: np.ndarray  # [nnz] int64: 0-based position within its row


def _rank_label_weights(m: _Matched, inv_propensity: np.ndarray) -> _RankedWeights:
    n_classes = inv_propensity.size
    # Ranking the K labels by weight once turns the per-row float sort into one integer sort of
    # (row, rank) keys, several times faster than np.lexsort at millions of labels.
    by_weight = np.argsort(-inv_propensity, kind="stable")  # [K] label ids, heaviest first
    rank_of_label = np.empty(n_classes, dtype=np.int64)
    rank_of_label[by_weight] = np.arange(n_classes)
    rows = np.repeat(np.arange(m.n_labels.size, dtype=np.int64), m.n_labels)  # [nnz] int64
    keys = np.sort(rows * n_classes + rank_of_label[m.labels])
    weights = inv_propensity[by_weight[keys % n_classes]]
    return _RankedWeights(weights, np.arange(rows.size) - m.indptr[rows])


def _predicted_weights(m: _Matched, k: int, inv_propensity: np.ndarray) -> np.ndarray:
    """[n, k] float64: 1/p_l of each correct prediction, 0 elsewhere."""
    labels = np.maximum(m.topk[:, :k], 0)  # padding (-1) is never a hit; clip it to a valid index
    return np.where(m.hits[:, :k], inv_propensity[labels], 0.0)


def _psp(m: _Matched, k: int, inv_propensity: np.ndarray, ranked: _RankedWeights) -> float:
    ideal = ranked.weights[ranked.ranks < k].sum()
    if ideal == 0:
        return 0.0
    return float(100.0 * _predicted_weights(m, k, inv_propensity).sum() / ideal)


def _psndcg(m: _Matched, k: int, inv_propensity: np.ndarray, ranked: _RankedWeights) -> float:
    discounts = _discounts(k)
    top = ranked.ranks < k
    ideal = np.sum(ranked.weights[top] * discounts[ranked.ranks[top]])
    if ideal == 0:
        return 0.0
    return float(100.0 * np.sum(_predicted_weights(m, k, inv_propensity) @ discounts) / ideal)


def _top1_accuracy(m: _Matched) -> float:
    bad = np.flatnonzero(m.n_labels != 1)
    if bad.size:
        raise ValueError(
            f"top1_accuracy needs exactly one label per row (multiclass data), but row {bad[0]} "
            f"has {m.n_labels[bad[0]]} ({bad.size} such rows); use precision_at_k(..., k=1) instead"
        )
    if m.hits.shape[0] == 0:
        return 0.0
    return float(100.0 * m.hits[:, 0].mean())


def _check_k(k: int, topk: np.ndarray) -> int:
    kmax = np.shape(topk)[1] if np.ndim(topk) == 2 else 0
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= kmax:
        raise ValueError(
            f"k must be an integer in [1, {kmax}] (the top-k width of the predictions), got {k!r}"
        )
    return int(k)


def _check_inv_propensity(inv_propensity: np.ndarray, m: _Matched) -> np.ndarray:
    inv = np.asarray(inv_propensity, dtype=np.float64)
    if inv.ndim != 1:
        raise ValueError(f"inv_propensity must be 1-D [K], got shape {inv.shape}")
    largest = max(m.topk.max(initial=-1), m.labels.max(initial=-1))
    if largest >= inv.size:
        raise ValueError(
            f"label id {largest} has no inverse propensity: inv_propensity has only K={inv.size} "
            "entries; build it from the training label counts of all classes"
        )
    if m.n_labels.size * inv.size >= np.iinfo(np.int64).max:
        raise ValueError(
            f"{m.n_labels.size} rows x K={inv.size} overflow the int64 (row, label) key; "
            "evaluate in chunks"
        )
    return inv


def _to_csr(label_lists: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-row label arrays -> (indptr [n + 1] int64, labels [nnz] int64); checks dtype and sign."""
    lengths = np.fromiter((len(y) for y in label_lists), dtype=np.int64, count=len(label_lists))
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    if len(label_lists) == 0 or indptr[-1] == 0:
        return indptr, np.zeros(0, dtype=np.int64)
    labels = np.concatenate([np.asarray(y) for y in label_lists])
    if labels.ndim != 1:
        raise ValueError(
            f"each row's true labels must be a 1-D array; the rows concatenate to {labels.shape}"
        )
    if labels.dtype.kind not in "iu":
        # np.array([]) is float64; such empty rows are fine, non-integer labels are not.
        for i, y in enumerate(label_lists):
            if len(y) and np.asarray(y).dtype.kind not in "iu":
                raise ValueError(
                    f"true labels must be integer ids, row {i} has dtype {np.asarray(y).dtype}"
                )
    labels = labels.astype(np.int64)
    if labels.min() < 0:
        raise ValueError(f"true label ids must be >= 0, found {labels.min()}")
    return indptr, labels


def _distinct_per_row(indptr: np.ndarray, labels: np.ndarray, n_classes: int):
    """Sort each row's labels and drop repeats.

    Returns (keys, labels, rows), each [nnz'] int64, with keys = rows * n_classes + labels sorted.
    """
    n = indptr.size - 1
    if n * n_classes >= np.iinfo(np.int64).max:
        raise ValueError(
            f"{n} rows x {n_classes} label ids overflow the int64 (row, label) key; "
            "evaluate in chunks"
        )
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))
    keys = rows * n_classes + labels  # [nnz] int64: orders by row, then label
    # Sort only if needed (rows often arrive with sorted labels), and dedupe by hand: np.unique
    # hashes first, which is several times slower than one sort at a few million keys.
    if keys.size > 1 and not np.all(keys[1:] > keys[:-1]):
        keys.sort()
        keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]
    return keys, keys % n_classes, keys // n_classes


def _match(topk: np.ndarray, true_labels: Sequence[np.ndarray]) -> _Matched:
    """Check inputs and mark which predictions are true labels, for all rows at once."""
    topk = np.asarray(topk)
    if topk.ndim != 2 or topk.dtype.kind not in "iu":
        raise ValueError(
            f"topk must be a 2-D integer array [n, kmax], got shape {topk.shape} dtype {topk.dtype}"
        )
    if len(true_labels) != topk.shape[0]:
        raise ValueError(
            f"true_labels has {len(true_labels)} rows but topk has {topk.shape[0]}; "
            "they must describe the same rows"
        )
    topk = topk.astype(np.int64, copy=False)
    n, kmax = topk.shape
    indptr, labels = _to_csr(true_labels)
    n_classes = int(max(topk.max(initial=-1), labels.max(initial=-1))) + 1
    keys, labels, rows = _distinct_per_row(indptr, labels, max(n_classes, 1))
    n_labels = np.bincount(rows, minlength=n).astype(np.int64)
    indptr = np.concatenate([[0], np.cumsum(n_labels)]).astype(np.int64)

    # A prediction is a hit when its (row, label) key is among the sorted true keys.
    pred_keys = np.arange(n, dtype=np.int64)[:, None] * n_classes + topk  # [n, kmax] int64
    if keys.size:
        pos = np.minimum(np.searchsorted(keys, pred_keys), keys.size - 1)
        hits = (keys[pos] == pred_keys) & (topk >= 0)  # [n, kmax] bool
    else:
        hits = np.zeros((n, kmax), dtype=bool)
    return _Matched(topk, hits, indptr, labels, n_labels)
