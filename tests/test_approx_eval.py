"""approx_eval (the official code's approximate evaluation): hand-computed rows, threshold lowering,
padding, m = B is the exact merge, the evaluate.py mode and bench/approx_bench.py."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import cli_flags, run_dir_of
from test_candidates import assert_same, make_inputs

from mach.hashing import invert_lookup
from mach.merge import (
    ApproxSearch,
    CandidateSearch,
    merge_approx_numpy,
    merge_candidates_numpy,
    merge_scores,
    merge_topk_numpy,
)

REPO = Path(__file__).resolve().parents[1]


def hand_inputs():
    """R=2, B=3, K=6; one row.  r=0 buckets: {0,1} {2,3} {4,5}; r=1 buckets: {0,3} {1,4} {2,5}."""
    label_to_bucket = np.array([[0, 0, 1, 1, 2, 2], [0, 1, 2, 0, 1, 2]], dtype=np.int32)
    inverse = [invert_lookup(label_to_bucket[r], 3) for r in range(2)]
    offsets = np.stack([o for o, _ in inverse])
    labels = np.stack([b for _, b in inverse])
    logits = np.array([[[3.0, 2.0, -1.0], [1.0, 0.5, 4.0]]], dtype=np.float32)  # [1, R, B]
    return logits, label_to_bucket, offsets, labels


def test_hand_computed_rows():
    logits, *lookups = hand_inputs()
    # m=1: r=0 selects bucket 0 (labels 0, 1; logit 3), r=1 bucket 2 (labels 2, 5; logit 4). No label
    # is selected twice, so min_freq 2 falls to 1; each label scores its one selecting logit.
    labels, scores = merge_approx_numpy(logits, *lookups, k=3, m=1, min_freq=2)
    assert labels.tolist() == [[2, 5, 0]] and scores.tolist() == [[4.0, 4.0, 3.0]]
    # The candidate merge finds the same labels but adds all R: 2 -> 2 + 4, 0 -> 3 + 1, 1 -> 3 + 0.5.
    labels, scores = merge_candidates_numpy(logits, *lookups, k=3, m=1, min_freq=2)
    assert labels.tolist() == [[2, 0, 1]] and scores.tolist() == [[6.0, 4.0, 3.5]]
    # m=2: r=0 selects {0,1,2,3}, r=1 {2,5,0,3}; labels 0, 2, 3 are selected twice and are enough.
    labels, scores = merge_approx_numpy(logits, *lookups, k=3, m=2, min_freq=2)
    assert labels.tolist() == [[2, 0, 3]] and scores.tolist() == [[6.0, 4.0, 3.0]]


def test_threshold_is_lowered_until_k_remain():
    logits, *lookups = hand_inputs()
    # k=4 > the three labels selected twice: min_freq 1 adds 1 (r=0 only, 3) and 5 (r=1 only, 4).
    labels, scores = merge_approx_numpy(logits, *lookups, k=4, m=2, min_freq=2)
    assert labels.tolist() == [[2, 0, 5, 1]] and scores.tolist() == [[6.0, 4.0, 4.0, 3.0]]
    # min_freq=1 from the start gives the same four.
    assert_same(merge_approx_numpy(logits, *lookups, 4, 2, 1), (labels, scores))


def test_fewer_selected_labels_than_k_are_padded():
    logits, *lookups = hand_inputs()
    # m=1 selects four labels; k=6 pads with the unselected 3 and 4, lowest id first, scored -inf.
    labels, scores = merge_approx_numpy(logits, *lookups, k=6, m=1, min_freq=2)
    assert labels.tolist() == [[2, 5, 0, 1, 3, 4]]
    assert scores.tolist() == [[4.0, 4.0, 3.0, 3.0, -np.inf, -np.inf]]


def test_buckets_tie_to_the_lower_id_and_empty_buckets_select_nothing():
    label_to_bucket = np.array([[1, 1, 2, 2], [0, 0, 1, 1]], dtype=np.int64)  # r=0 bucket 0 empty
    inverse = [invert_lookup(label_to_bucket[r], 3) for r in range(2)]
    lookups = (
        label_to_bucket,
        np.stack([o for o, _ in inverse]),
        np.stack([b for _, b in inverse]),
    )
    logits = np.array([[[5.0, 1.0, 1.0], [2.0, 2.0, 0.0]]], dtype=np.float32)
    # r=0 selects the empty bucket 0; r=1 ties buckets 0 and 1 and takes 0: labels 0 and 1.
    labels, scores = merge_approx_numpy(logits, *lookups, k=3, m=1, min_freq=1)
    assert labels.tolist() == [[0, 1, 2]] and scores.tolist() == [[2.0, 2.0, -np.inf]]


@pytest.mark.parametrize("integer_logits", [False, True])
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
@pytest.mark.parametrize("min_freq", [1, 2, 4])
def test_all_buckets_is_the_exact_merge(integer_logits, dtype, min_freq):
    # m = B: every repetition selects every label, so each score is the full R-sum in r order.
    logits, *lookups = make_inputs(
        9, R=4, B=30, K=500, seed=7, dtype=dtype, integer_logits=integer_logits
    )
    logits[0, :, 3] = -0.0  # the first term is copied, not added to 0.0: signed zeros survive
    for k in (1, 7, 500):
        want = merge_topk_numpy(logits, lookups[0], k)
        assert_same(merge_approx_numpy(logits, *lookups, k, m=30, min_freq=min_freq), want)


@pytest.mark.parametrize("m, min_freq, k", [(1, 2, 5), (3, 3, 13), (10, 2, 40), (2, 1, 300)])
def test_always_k_distinct_labels_best_first(m, min_freq, k):
    logits, *lookups = make_inputs(12, R=3, B=40, K=300, seed=m + k, integer_logits=True)
    labels, scores = merge_approx_numpy(logits, *lookups, k, m, min_freq)
    assert labels.shape == (12, k) and scores.dtype == np.float32
    assert all(len(np.unique(row)) == k for row in labels)
    assert np.all(scores[:, :-1] >= scores[:, 1:])  # k=300 pads with -inf
    # Within equal scores, lower labels first.
    for row_labels, row_scores in zip(labels, scores):
        for a in range(k - 1):
            if row_scores[a] == row_scores[a + 1]:
                assert row_labels[a] < row_labels[a + 1]


def test_out_of_range_arguments_raise():
    logits, *lookups = make_inputs(2, R=3, B=8, K=30)
    for m, min_freq, message in [
        (0, 1, "m \\(buckets"),
        (9, 1, "m \\(buckets"),
        (2, 4, "min_freq"),
    ]:
        with pytest.raises(ValueError, match=message):
            merge_approx_numpy(logits, *lookups, 5, m, min_freq)


def test_merge_scores_dispatch():
    logits, label_to_bucket, offsets, labels = make_inputs(4, R=3, B=12, K=100, seed=8)
    search = ApproxSearch(offsets, labels, m=3, min_freq=2)
    want = merge_approx_numpy(logits, label_to_bucket, offsets, labels, 5, 3, 2)
    for impl in ("compiled", "numpy"):
        assert_same(merge_scores(logits, label_to_bucket, 5, impl=impl, approx=search), want)
    with pytest.raises(ValueError, match="score='logits'"):
        merge_scores(logits, label_to_bucket, 5, score="probs", approx=search)
    with pytest.raises(ValueError, match="without candidates"):
        merge_scores(
            logits,
            label_to_bucket,
            5,
            approx=search,
            candidates=CandidateSearch(offsets, labels, 3, 2),
        )


@pytest.fixture
def trained(tiny_files, tmp_path):
    import preprocess
    import train

    work = tmp_path / "work"
    flags = cli_flags(tiny_files, "tinyapprox", work, threads=1)
    assert preprocess.main(flags) == 0 and train.main(flags) == 0
    return flags, run_dir_of(work, "tinyapprox")


@pytest.mark.slow
def test_evaluate_merge_approx_and_bench(trained, capsys, tmp_path):
    """evaluate.py --merge approx with B buckets and --min-freq 1 is the exact merge, in its own file;
    the older --merge-approx M still works; the bench runs."""
    import evaluate

    flags, run_dir = trained
    assert evaluate.main(flags) == 0
    approx_flags = ["--merge", "approx", "--merge-buckets", "8", "--min-freq", "1"]
    assert evaluate.main([*flags, *approx_flags]) == 0
    assert "merge=approx-m8-f1 (numpy)" in capsys.readouterr().out
    exact = json.loads((run_dir / "metrics.json").read_text())
    approx = json.loads((run_dir / "metrics-approx-m8-f1.json").read_text())
    assert approx["metrics"] == exact["metrics"]
    assert approx["merge"]["buckets"] == 8 and approx["impl"] == "numpy"
    assert evaluate.main([*flags, "--merge-approx", "2", "--sweep-R"]) == 0
    assert "--merge-approx M is now --merge approx" in capsys.readouterr().err
    assert (run_dir / "metrics-approx-m2-f2.json").is_file()
    assert evaluate.main([*flags, "--merge", "approx", "--merge-buckets", "9"]) == 2
    assert "--merge-buckets 9: expected at most B=8" in capsys.readouterr().err
    assert evaluate.main([*flags, "--merge", "approx", "--set", "score=probs"]) == 2
    assert "needs --set score=logits" in capsys.readouterr().err

    out = tmp_path / "bench.json"
    bench = [sys.executable, str(REPO / "bench" / "merge_kinds_bench.py"), *flags, "--repeats", "1"]
    bench += ["--approx", "8:1,2:2", "--json", str(out)]
    done = subprocess.run(bench, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    results = {row["merge"]: row for row in json.loads(out.read_text())["results"]}
    assert set(results) == {"exact", "candidates-m8-f2", "approx-m8-f1", "approx-m2-f2"}
    assert results["approx-m8-f1"]["top5_equal_exact"] == 100.0
    assert results["exact"]["P@1"] == exact["metrics"]["P@1"]
