"""The compiled merge kernel against the NumPy spec: same labels, bit-equal scores, same ties."""

import builtins

import numpy as np
import pytest

from mach._kernels import gather_batch
from mach.merge import (
    merge_scores,
    merge_topk,
    merge_topk_numpy,
    merge_topk_numpy_fast,
    to_probabilities,
)


def make_inputs(batch, R, B, K, seed=0, dtype=np.int32, integer_logits=False):
    rng = np.random.default_rng(seed)
    if integer_logits:
        # Few distinct values: many classes share a score, so the tie rule decides the order.
        logits = rng.integers(-2, 3, size=(batch, R, B)).astype(np.float32)  # [batch, R, B] float32
    else:
        logits = rng.standard_normal((batch, R, B), dtype=np.float32)
    label_to_bucket = rng.integers(0, B, size=(R, K)).astype(dtype)  # [R, K]
    return logits, label_to_bucket


def assert_same(got, want):
    np.testing.assert_array_equal(got[0], want[0])
    assert got[0].dtype == np.int64 and got[1].dtype == np.float32
    np.testing.assert_array_equal(got[1].view(np.int32), want[1].view(np.int32))


@pytest.mark.parametrize("batch", [1, 7, 16, 33])
@pytest.mark.parametrize("k", [1, 5, 13])
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_kernel_matches_spec(batch, k, dtype):
    # K = 1000 is not a multiple of B = 64.
    logits, label_to_bucket = make_inputs(batch, R=4, B=64, K=1000, seed=batch * k, dtype=dtype)
    assert_same(
        gather_batch(logits, label_to_bucket, k, 2), merge_topk_numpy(logits, label_to_bucket, k)
    )


@pytest.mark.parametrize("integer_logits", [False, True])
def test_kernel_matches_spec_many_chunks(integer_logits):
    # K large enough that the classes are split into chunks whose top-ks get merged.
    logits, label_to_bucket = make_inputs(
        19, R=3, B=97, K=70_001, seed=3, integer_logits=integer_logits
    )
    want = merge_topk_numpy(logits, label_to_bucket, 13)
    for threads in (1, 2, 3):
        assert_same(gather_batch(logits, label_to_bucket, 13, threads), want)


def test_kernel_matches_spec_when_chunks_are_shorter_than_k():
    # Two chunks of 5000 classes, k = 6000: the chunks' heaps never fill and are merged with gaps.
    logits, label_to_bucket = make_inputs(3, R=2, B=30, K=10_000, seed=4, integer_logits=True)
    assert_same(
        gather_batch(logits, label_to_bucket, 6000, 2),
        merge_topk_numpy(logits, label_to_bucket, 6000),
    )


def test_fast_numpy_matches_spec():
    logits, label_to_bucket = make_inputs(20, R=4, B=50, K=3000, integer_logits=True)
    assert_same(
        merge_topk_numpy_fast(logits, label_to_bucket, 7),
        merge_topk_numpy(logits, label_to_bucket, 7),
    )


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_ties_rank_lower_label_first(dtype):
    logits, label_to_bucket = make_inputs(
        9, R=5, B=8, K=500, seed=1, dtype=dtype, integer_logits=True
    )
    want = merge_topk_numpy(logits, label_to_bucket, 13)
    assert_same(gather_batch(logits, label_to_bucket, 13, 2), want)
    # The spec itself: scores never increase, and equal scores come with increasing labels.
    labels, scores = want
    assert np.all(np.diff(scores, axis=1) <= 0)
    tied = np.diff(scores, axis=1) == 0
    assert np.all(np.diff(labels, axis=1)[tied] > 0)


def test_constant_logits_return_lowest_labels():
    logits = np.full((3, 4, 10), 0.25, dtype=np.float32)
    label_to_bucket = np.random.default_rng(0).integers(0, 10, size=(4, 100)).astype(np.int32)
    labels, scores = gather_batch(logits, label_to_bucket, 5, 2)
    np.testing.assert_array_equal(labels, np.tile(np.arange(5), (3, 1)))
    np.testing.assert_array_equal(scores, np.full((3, 5), 1.0, dtype=np.float32))
    assert_same((labels, scores), merge_topk_numpy(logits, label_to_bucket, 5))


def test_k_equals_K_returns_every_class():
    logits, label_to_bucket = make_inputs(5, R=2, B=6, K=20, integer_logits=True)
    labels, _ = gather_batch(logits, label_to_bucket, 20, 2)
    np.testing.assert_array_equal(np.sort(labels, axis=1), np.tile(np.arange(20), (5, 1)))
    assert_same((labels, _), merge_topk_numpy(logits, label_to_bucket, 20))


def test_one_and_two_threads_agree():
    logits, label_to_bucket = make_inputs(40, R=6, B=300, K=20_000, seed=5)
    assert_same(
        gather_batch(logits, label_to_bucket, 10, 1), gather_batch(logits, label_to_bucket, 10, 2)
    )
    assert_same(
        gather_batch(logits, label_to_bucket, 10, 0), gather_batch(logits, label_to_bucket, 10, 1)
    )


def test_empty_batch():
    logits, label_to_bucket = make_inputs(0, R=2, B=4, K=10)
    labels, scores = gather_batch(logits, label_to_bucket, 3)
    assert labels.shape == (0, 3) and scores.shape == (0, 3)


def test_wrapper_dispatches_both_impls():
    logits, label_to_bucket = make_inputs(6, R=3, B=20, K=200)
    want = merge_topk_numpy(logits, label_to_bucket, 4)
    assert_same(merge_topk(logits, label_to_bucket, 4, threads=1), want)
    assert_same(merge_topk(logits, label_to_bucket, 4, impl="numpy"), want)
    with pytest.raises(ValueError, match="impl must be one of"):
        merge_topk(logits, label_to_bucket, 4, impl="cuda")


@pytest.mark.parametrize(
    "change, error, message",
    [
        (
            lambda x, t: (x.astype(np.float64), t),
            TypeError,
            "logits must have dtype float32, got float64",
        ),
        (lambda x, t: (x, t.astype(np.int16)), TypeError, "int32 or int64, got int16"),
        (lambda x, t: (x.tolist(), t), TypeError, "logits must be a numpy.ndarray"),
        (lambda x, t: (x[:, :, ::2], t), ValueError, "logits must be C-contiguous"),
        (
            lambda x, t: (x, np.asfortranarray(t)),
            ValueError,
            "label_to_bucket must be C-contiguous",
        ),
        (
            lambda x, t: (x[0], t),
            ValueError,
            r"logits must be 3-D \[batch, R, B\], got shape \(3, 8\)",
        ),
        (lambda x, t: (x, t[0]), ValueError, r"label_to_bucket must be 2-D \[R, K\]"),
        (
            lambda x, t: (x, t[:2]),
            ValueError,
            "label_to_bucket has 2 repetitions but logits has R=3",
        ),
    ],
)
def test_bad_inputs_raise(change, error, message):
    logits, label_to_bucket = make_inputs(2, R=3, B=8, K=30)
    bad_logits, bad_lookup = change(logits, label_to_bucket)
    with pytest.raises(error, match=message):
        gather_batch(bad_logits, bad_lookup, 5)


@pytest.mark.parametrize("k", [0, -1, 31, 2.5])
def test_k_out_of_range_raises(k):
    logits, label_to_bucket = make_inputs(2, R=3, B=8, K=30)
    with pytest.raises(ValueError, match=r"k must be an integer in 1..K=30"):
        gather_batch(logits, label_to_bucket, k)
    if isinstance(k, int):
        with pytest.raises(ValueError, match=r"k must be an integer in 1..K=30"):
            merge_topk_numpy(logits, label_to_bucket, k)


def test_bucket_check_is_opt_in():
    logits, label_to_bucket = make_inputs(2, R=3, B=8, K=30)
    label_to_bucket[1, 4] = 8
    with pytest.raises(ValueError, match=r"values must lie in \[0, B=8\), found \[0, 8\]"):
        gather_batch(logits, label_to_bucket, 5, check_buckets=True)


def test_missing_kernel_raises_import_error(monkeypatch):
    real_import = builtins.__import__

    def fail_kernel_import(name, *args, **kwargs):
        if name == "mach._kernels":
            raise ImportError("No module named 'mach._kernels'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fail_kernel_import)
    logits, label_to_bucket = make_inputs(2, R=3, B=8, K=30)
    with pytest.raises(ImportError, match=r"run `pip install -e .`.*--impl numpy"):
        merge_topk(logits, label_to_bucket, 5)


@pytest.mark.parametrize("loss", ["softmax", "bce"])
@pytest.mark.parametrize("impl", ["compiled", "numpy"])
def test_probs_score_is_the_paper_estimator(loss, impl):
    R, B, K, k = 3, 6, 40, 5
    logits, label_to_bucket = make_inputs(4, R=R, B=B, K=K, seed=2)
    if loss == "softmax":
        probs = np.exp(logits.astype(np.float64))
        probs /= probs.sum(axis=-1, keepdims=True)
    else:
        probs = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    # Dense [batch, K] estimate B/(B-1) * (mean_r p_r[h_r(c)] - 1/B), straight from the paper.
    mean_p = np.mean([probs[:, r, label_to_bucket[r]] for r in range(R)], axis=0)
    dense = B / (B - 1) * (mean_p - 1.0 / B)
    want_labels = np.argsort(-dense, axis=1, kind="stable")[:, :k]

    labels, scores = merge_scores(logits, label_to_bucket, k, score="probs", loss=loss, impl=impl)
    np.testing.assert_array_equal(labels, want_labels)
    np.testing.assert_allclose(
        scores, np.take_along_axis(dense, want_labels, axis=1), rtol=1e-5, atol=1e-6
    )
    assert scores.dtype == np.float32


def test_to_probabilities_rows_sum_to_one():
    logits, _ = make_inputs(3, R=2, B=7, K=10)
    probs = to_probabilities(logits * 50, "softmax")
    assert probs.dtype == np.float32 and np.all(np.isfinite(probs))
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=1e-5)


def test_merge_scores_of_logits_is_merge_topk():
    logits, label_to_bucket = make_inputs(3, R=2, B=7, K=50)
    assert_same(
        merge_scores(logits, label_to_bucket, 4), merge_topk_numpy(logits, label_to_bucket, 4)
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"score": "prob"}, "score must be one of"),
        ({"score": "probs", "loss": "mse"}, "loss must be one of"),
    ],
)
def test_merge_scores_rejects_unknown_score_and_loss(kwargs, message):
    logits, label_to_bucket = make_inputs(2, R=2, B=7, K=50)
    with pytest.raises(ValueError, match=message):
        merge_scores(logits, label_to_bucket, 4, **kwargs)
