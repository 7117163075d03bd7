"""The candidate merge: kernel == NumPy spec, exact at m = B, always k labels, clear errors."""

import json

import numpy as np
import pytest
from conftest import cli_flags, run_dir_of
from test_merge import make_inputs as make_merge_inputs

from mach._kernels import gather_candidates
from mach.hashing import invert_lookup
from mach.merge import (
    CandidateSearch,
    check_inverse_lookups,
    merge_candidates,
    merge_candidates_numpy,
    merge_scores,
    merge_topk_numpy,
)


def make_inputs(batch, R, B, K, seed=0, dtype=np.int32, integer_logits=False):
    """test_merge's inputs plus the CSR inverse: bucket_offsets [R, B+1], bucket_labels [R, K]."""
    logits, label_to_bucket = make_merge_inputs(batch, R, B, K, seed, dtype, integer_logits)
    inverse = [invert_lookup(label_to_bucket[r], B) for r in range(R)]
    bucket_offsets = np.stack([offsets for offsets, _ in inverse])  # [R, B+1] int64
    bucket_labels = np.stack([labels for _, labels in inverse])  # [R, K] int64
    return logits, label_to_bucket, bucket_offsets, bucket_labels


def assert_same(got, want):
    np.testing.assert_array_equal(got[0], want[0])
    assert got[0].dtype == np.int64 and got[1].dtype == np.float32
    np.testing.assert_array_equal(got[1].view(np.int32), want[1].view(np.int32))


@pytest.mark.parametrize("integer_logits", [False, True])
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
@pytest.mark.parametrize("min_freq", [1, 3])
def test_all_buckets_is_the_exact_merge(integer_logits, dtype, min_freq):
    # B = 200: the kernel prunes 64-logit spans when m <= B / 64; m = B takes its plain path.
    logits, *lookups = make_inputs(
        11, R=3, B=200, K=3000, seed=1, dtype=dtype, integer_logits=integer_logits
    )
    want = merge_topk_numpy(logits, lookups[0], 7)
    assert_same(merge_candidates_numpy(logits, *lookups, 7, m=200, min_freq=min_freq), want)
    assert_same(gather_candidates(logits, *lookups, 7, 200, min_freq, 2), want)


@pytest.mark.parametrize("batch", [1, 7, 16, 33])
@pytest.mark.parametrize(
    "m, min_freq, k", [(1, 1, 5), (2, 2, 5), (3, 4, 13), (5, 2, 1), (40, 3, 13)]
)
@pytest.mark.parametrize("integer_logits", [False, True])
def test_kernel_matches_spec(batch, m, min_freq, k, integer_logits):
    # B = 300: four 64-logit spans and a tail of 44; K = 5000 is not a multiple of B.
    logits, *lookups = make_inputs(
        batch, R=4, B=300, K=5000, seed=batch + m, integer_logits=integer_logits
    )
    want = merge_candidates_numpy(logits, *lookups, k, m, min_freq)
    for threads in (1, 2):
        assert_same(gather_candidates(logits, *lookups, k, m, min_freq, threads), want)


def test_peaked_logits_find_the_planted_labels():
    # Logits that point every repetition at three labels: the candidate merge finds what the exact one does.
    logits, label_to_bucket, *inverse = make_inputs(20, R=6, B=500, K=50_000, seed=2)
    planted = np.random.default_rng(3).integers(0, 50_000, size=(20, 3))
    for r in range(6):
        for j in range(3):
            logits[np.arange(20), r, label_to_bucket[r, planted[:, j]]] += 4.0
    exact = merge_topk_numpy(logits, label_to_bucket, 3)
    got = gather_candidates(logits, label_to_bucket, *inverse, 3, 4, 3, 2)
    assert_same(got, merge_candidates_numpy(logits, label_to_bucket, *inverse, 3, 4, 3))
    assert_same(got, exact)


@pytest.mark.parametrize("m, min_freq, k", [(1, 5, 40), (1, 1, 200), (2, 5, 1000), (1, 3, 1000)])
def test_never_fewer_than_k_labels(m, min_freq, k):
    # m * K / B = 1 label per bucket << k: the search has to lower min_freq, then widen m.
    logits, *lookups = make_inputs(5, R=5, B=1000, K=1000, seed=4, integer_logits=True)
    want = merge_candidates_numpy(logits, *lookups, k, m, min_freq)
    got = gather_candidates(logits, *lookups, k, m, min_freq, 2)
    assert_same(got, want)
    assert got[0].shape == (5, k)
    assert all(len(np.unique(row)) == k for row in got[0])
    assert np.all(np.diff(got[1], axis=1) <= 0)


def test_k_equals_K_returns_every_class():
    logits, *lookups = make_inputs(3, R=3, B=16, K=40, seed=5)
    labels, scores = gather_candidates(logits, *lookups, 40, 1, 3)
    np.testing.assert_array_equal(np.sort(labels, axis=1), np.tile(np.arange(40), (3, 1)))
    assert_same((labels, scores), merge_topk_numpy(logits, lookups[0], 40))


def test_empty_batch_and_wrapper_dispatch():
    logits, *lookups = make_inputs(0, R=2, B=8, K=30)
    labels, scores = gather_candidates(logits, *lookups, 3, 2)
    assert labels.shape == (0, 3) and scores.shape == (0, 3)
    logits, *lookups = make_inputs(6, R=3, B=20, K=200)
    want = merge_candidates_numpy(logits, *lookups, 4, 3, 2)
    assert_same(merge_candidates(logits, *lookups, 4, 3, 2, threads=1), want)
    assert_same(merge_candidates(logits, *lookups, 4, 3, 2, impl="numpy"), want)
    with pytest.raises(ValueError, match="impl must be one of"):
        merge_candidates(logits, *lookups, 4, 3, 2, impl="cuda")


@pytest.mark.parametrize("mode", ["logits", "probs"])
def test_merge_scores_with_all_buckets_equals_exact(mode):
    logits, label_to_bucket, offsets, labels = make_inputs(5, R=3, B=12, K=100, seed=6)
    search = CandidateSearch(offsets, labels, m=12, min_freq=2)
    assert_same(
        merge_scores(logits, label_to_bucket, 5, score=mode, candidates=search),
        merge_scores(logits, label_to_bucket, 5, score=mode),
    )


@pytest.mark.parametrize(
    "change, error, message",
    [
        (
            lambda x, t, o, b: (x, t, o.astype(np.int32), b),
            TypeError,
            "bucket_offsets must have dtype int64",
        ),
        (
            lambda x, t, o, b: (x, t, o, b.astype(np.int32)),
            TypeError,
            "bucket_labels must have dtype int64",
        ),
        (
            lambda x, t, o, b: (x, t, o[:, :-1].copy(), b),
            ValueError,
            r"bucket_offsets must be \[R, B \+ 1\] = \(3, 9\)",
        ),
        (
            lambda x, t, o, b: (x, t, o, b[:, :-1].copy()),
            ValueError,
            r"bucket_labels must be \[R, K\] = \(3, 30\)",
        ),
        (
            lambda x, t, o, b: (x, t, o[:2], b[:2]),
            ValueError,
            r"bucket_offsets must be \[R, B \+ 1\]",
        ),
        (lambda x, t, o, b: (x, t, o[:, ::-1].copy(), b), ValueError, "must rise from 0 to K=30"),
        (lambda x, t, o, b: (x[:, :, ::2], t, o, b), ValueError, "logits must be C-contiguous"),
    ],
)
def test_bad_inputs_raise(change, error, message):
    args = change(*make_inputs(2, R=3, B=8, K=30))
    with pytest.raises(error, match=message):
        gather_candidates(*args, 5, 2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"k": 0}, r"k must be an integer in 1..K=30"),
        ({"k": 31}, r"k must be an integer in 1..K=30"),
        ({"m": 0}, r"m \(buckets per repetition\) must be an integer in 1..B=8"),
        ({"m": 9}, r"m \(buckets per repetition\) must be an integer in 1..B=8"),
        ({"min_freq": 0}, r"min_freq must be an integer in 1..R=3"),
        ({"min_freq": 4}, r"min_freq must be an integer in 1..R=3"),
    ],
)
def test_out_of_range_arguments_raise(kwargs, message):
    logits, *lookups = make_inputs(2, R=3, B=8, K=30)
    args = {"k": 5, "m": 2, "min_freq": 1, **kwargs}
    for merge in (gather_candidates, merge_candidates_numpy):
        with pytest.raises(ValueError, match=message):
            merge(logits, *lookups, args["k"], args["m"], args["min_freq"])


def test_inconsistent_inverse_is_caught():
    logits, label_to_bucket, offsets, labels = make_inputs(2, R=3, B=8, K=30)
    check_inverse_lookups(label_to_bucket, offsets, labels)
    swapped = labels.copy()
    swapped[1, [0, -1]] = swapped[1, [-1, 0]]
    with pytest.raises(
        ValueError, match=r"bucket_labels\[1\] does not list each label once, in its bucket"
    ):
        check_inverse_lookups(label_to_bucket, offsets, swapped)
    out_of_range = labels.copy()
    out_of_range[2, 3] = 30
    with pytest.raises(ValueError, match=r"bucket_labels\[2\] must hold labels in \[0, K=30\)"):
        check_inverse_lookups(label_to_bucket, offsets, out_of_range)


def test_evaluate_cli_with_all_buckets_matches_exact(tiny_files, tmp_path, capsys):
    """preprocess -> train -> evaluate (in process), exact and the candidate merge of all B: same metrics."""
    import evaluate
    import preprocess
    import train

    work = tmp_path / "work"
    flags = cli_flags(tiny_files, "tinycand", work, threads=1)
    assert preprocess.main(flags) == 0 and train.main(flags) == 0
    assert evaluate.main(flags) == 0
    candidates = ["--merge", "candidates", "--merge-buckets", "8", "--min-freq", "2"]
    assert evaluate.main([*flags, *candidates]) == 0
    assert "merge=candidates-m8-f2" in capsys.readouterr().out
    run_dir = run_dir_of(work, "tinycand")
    exact = json.loads((run_dir / "metrics.json").read_text())
    cand = json.loads((run_dir / "metrics-candidates-m8-f2.json").read_text())
    assert cand["metrics"] == exact["metrics"] and cand["merge"]["buckets"] == 8
    assert evaluate.main([*flags, "--merge-candidates", "1", "--sweep-R"]) == 0  # the old spelling
    assert (run_dir / "metrics-candidates-m1-f2.json").is_file()
    assert evaluate.main([*flags, "--merge", "candidates", "--merge-buckets", "9"]) == 2
    assert "--merge-buckets 9: expected at most B=8" in capsys.readouterr().err
