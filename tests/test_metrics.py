"""Metrics on hand-computed cases, and the vectorised matching against a per-row loop."""

import math

import numpy as np
import pytest

from mach import metrics

# Four rows, top-5 predictions best first.
TOPK = np.array(
    [
        [1, 2, 3, 4, 5],  # y = {1, 3, 9}: hits at ranks 1 and 3
        [7, 8, 0, 6, 2],  # y = {2}: one label, hit at rank 5
        [0, 1, 2, 3, 4],  # y = {}: no labels
        [5, 6, 7, 8, 9],  # y = {5..9}: all five correct
    ],
    dtype=np.int64,
)
TRUE = [np.array([1, 3, 9]), np.array([2]), np.array([], dtype=np.int64), np.array([5, 6, 7, 8, 9])]


def d(i):
    """DCG discount of rank i (1-based)."""
    return 1 / math.log2(i + 1)


def test_precision_by_hand():
    # hits@1 per row: 1, 0, 0, 1 -> P@1 = 2/4
    assert metrics.precision_at_k(TOPK, TRUE, 1) == pytest.approx(50.0)
    # hits@3: 2, 0, 0, 3 -> mean(2/3, 0, 0, 1) = (5/3)/4
    assert metrics.precision_at_k(TOPK, TRUE, 3) == pytest.approx(100 * 5 / 12)
    # hits@5: 2, 1, 0, 5 -> mean(2/5, 1/5, 0, 1) = 1.6/4
    assert metrics.precision_at_k(TOPK, TRUE, 5) == pytest.approx(40.0)


def test_official_variant_divides_by_min_labels_and_skips_empty_rows():
    # Rows 0, 1, 3 only. k=1: 1/1, 0/1, 1/1 -> 2/3
    assert metrics.precision_at_k_min_denominator(TOPK, TRUE, 1) == pytest.approx(100 * 2 / 3)
    # k=3: 2/min(3,3), 0/min(1,3), 3/3 -> (2/3 + 0 + 1)/3
    assert metrics.precision_at_k_min_denominator(TOPK, TRUE, 3) == pytest.approx(100 * (5 / 3) / 3)
    # k=5: 2/3, 1/1, 5/5 -> (2/3 + 1 + 1)/3, above the standard 40 because rows 0 and 1 have |y| < 5
    official = metrics.precision_at_k_min_denominator(TOPK, TRUE, 5)
    assert official == pytest.approx(100 * (8 / 3) / 3)
    assert official > metrics.precision_at_k(TOPK, TRUE, 5)


def test_ndcg_by_hand():
    # k=1: rows 0 and 3 score 1, rows 1 and 2 score 0
    assert metrics.ndcg_at_k(TOPK, TRUE, 1) == pytest.approx(50.0)
    # k=3: row 0 DCG = d1 + d3, IDCG = d1 + d2 + d3; row 3 scores 1
    row0 = (d(1) + d(3)) / (d(1) + d(2) + d(3))
    assert metrics.ndcg_at_k(TOPK, TRUE, 3) == pytest.approx(100 * (row0 + 0 + 0 + 1) / 4)
    # k=5: row 0 IDCG stops at |y| = 3; row 1 DCG = d5 over IDCG = d1
    row1 = d(5) / d(1)
    assert metrics.ndcg_at_k(TOPK, TRUE, 5) == pytest.approx(100 * (row0 + row1 + 0 + 1) / 4)


def test_propensities_match_the_formula():
    # N = 100, A = 0.55, B = 1.5: C = (ln 100 - 1) * 2.5^0.55
    counts = np.array([0, 1, 10, 100], dtype=np.int64)
    C = (math.log(100) - 1) * 2.5**0.55
    expected = [1 / (1 + C * (n + 1.5) ** -0.55) for n in counts]
    p = metrics.propensities(counts, 100)
    assert p.dtype == np.float64
    np.testing.assert_allclose(p, expected, rtol=1e-12)
    assert np.all(np.diff(p) > 0)  # frequent labels are more likely observed


def test_label_counts_count_each_row_once():
    counts = metrics.label_counts(
        [np.array([0, 2]), np.array([2, 2]), np.array([], dtype=np.int64)], 4
    )
    np.testing.assert_array_equal(counts, [1, 0, 2, 0])
    assert counts.dtype == np.int64
    with pytest.raises(ValueError, match="n_classes"):
        metrics.label_counts([np.array([5])], 4)


def test_psp_equals_precision_over_its_ideal_when_propensities_are_equal():
    inv = np.full(10, 3.0)
    # With equal weights PSP@k = hits / ideal hits, summed over rows.
    # k=1: hits 1+0+0+1 over ideal 1+1+0+1 -> 2/3; k=5: hits 2+1+0+5 over ideal 3+1+0+5 -> 8/9
    assert metrics.psp_at_k(TOPK, TRUE, 1, inv) == pytest.approx(100 * 2 / 3)
    assert metrics.psp_at_k(TOPK, TRUE, 5, inv) == pytest.approx(100 * 8 / 9)
    # Every row with k or more labels: the ideal is k per row and PSP@k is P@k.
    full = [np.array([1, 3, 9]), np.array([7, 8, 0]), np.array([0, 1, 2]), np.array([5, 6, 7])]
    for k in (1, 2, 3):
        assert metrics.psp_at_k(TOPK, full, k, inv) == pytest.approx(
            metrics.precision_at_k(TOPK, full, k)
        )


def test_psp_weights_by_hand():
    inv = np.arange(1, 11, dtype=np.float64)  # 1/p_l = l + 1
    # k=1: predicted hits row0 label 1 (2), row3 label 5 (6) -> 8
    # ideal: best 1/p per row: row0 max(2,4,10)=10, row1 3, row3 max(6..10)=10 -> 23
    assert metrics.psp_at_k(TOPK, TRUE, 1, inv) == pytest.approx(100 * 8 / 23)
    # k=3: hits row0 labels 1,3 (2+4), row3 labels 5,6,7 (6+7+8) -> 27
    # ideal: row0 10+4+2, row1 3, row3 10+9+8 -> 46
    assert metrics.psp_at_k(TOPK, TRUE, 3, inv) == pytest.approx(100 * 27 / 46)
    # PSnDCG@3: hits row0 2*d1 + 4*d3, row3 6*d1 + 7*d2 + 8*d3;
    # ideal row0 10*d1 + 4*d2 + 2*d3, row1 3*d1, row3 10*d1 + 9*d2 + 8*d3
    num = 2 * d(1) + 4 * d(3) + 6 * d(1) + 7 * d(2) + 8 * d(3)
    den = 10 * d(1) + 4 * d(2) + 2 * d(3) + 3 * d(1) + 10 * d(1) + 9 * d(2) + 8 * d(3)
    assert metrics.psndcg_at_k(TOPK, TRUE, 3, inv) == pytest.approx(100 * num / den)


def test_top1_accuracy():
    topk = np.array([[3, 1], [0, 2], [4, 4]])
    assert metrics.top1_accuracy(
        topk, [np.array([3]), np.array([2]), np.array([4])]
    ) == pytest.approx(100 * 2 / 3)
    with pytest.raises(ValueError, match="exactly one label"):
        metrics.top1_accuracy(topk, [np.array([3]), np.array([2, 0]), np.array([4])])


def test_evaluate_topk_keys_and_values():
    inv = np.ones(10)
    out = metrics.evaluate_topk(TOPK, TRUE, ks=(1, 3, 5), inv_propensity=inv)
    for k in (1, 3, 5):
        assert out[f"P@{k}"] == pytest.approx(metrics.precision_at_k(TOPK, TRUE, k))
        assert out[f"nDCG@{k}"] == pytest.approx(metrics.ndcg_at_k(TOPK, TRUE, k))
        assert out[f"PSP@{k}"] == pytest.approx(metrics.psp_at_k(TOPK, TRUE, k, inv))
        assert out[f"P@{k}_official"] == pytest.approx(
            metrics.precision_at_k_min_denominator(TOPK, TRUE, k)
        )
    assert out["rows"] == 4 and out["rows_without_labels"] == 1
    assert "top1_accuracy" not in out
    plain = metrics.evaluate_topk(
        TOPK[:, :2], [np.array([1]), np.array([8]), np.array([0]), np.array([0])], ks=(1, 2)
    )
    assert "PSP@1" not in plain
    assert plain["top1_accuracy"] == pytest.approx(50.0)
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, 5\]"):
        metrics.evaluate_topk(TOPK, TRUE, ks=(1, 6))


def naive_scores(topk, true_labels, k, inv):
    """Per-row reference straight from the definitions."""
    p = nd = official = psp_num = psp_den = 0.0
    n_official = 0
    for row, y in zip(topk, true_labels, strict=True):
        y = {int(v) for v in y}
        hit = [int(v) in y for v in row[:k]]
        p += sum(hit) / k
        if y:
            nd += sum(h * d(i + 1) for i, h in enumerate(hit)) / sum(
                d(i + 1) for i in range(min(k, len(y)))
            )
            official += sum(hit) / min(len(y), k)
            n_official += 1
        psp_num += sum(inv[v] for v, h in zip(row[:k], hit, strict=True) if h)
        psp_den += sum(sorted((inv[v] for v in y), reverse=True)[:k])
    n = len(true_labels)
    return 100 * p / n, 100 * nd / n, 100 * official / n_official, 100 * psp_num / psp_den


def test_vectorised_matches_naive_loop():
    rng = np.random.default_rng(0)
    n, K, kmax = 300, 40, 5
    topk = np.stack([rng.choice(K, kmax, replace=False) for _ in range(n)])
    # 0..8 labels per row, some repeated within a row (counted once), some rows empty
    true_labels = [rng.integers(0, K, rng.integers(0, 9)) for _ in range(n)]
    inv = 1 / metrics.propensities(rng.integers(0, 50, K), 1000)
    for k in (1, 3, 5):
        got = (
            metrics.precision_at_k(topk, true_labels, k),
            metrics.ndcg_at_k(topk, true_labels, k),
            metrics.precision_at_k_min_denominator(topk, true_labels, k),
            metrics.psp_at_k(topk, true_labels, k, inv),
        )
        np.testing.assert_allclose(got, naive_scores(topk, true_labels, k, inv), rtol=1e-10)


def test_padding_never_hits():
    # -1 pads rows with fewer than kmax candidates; it must not match the previous row's last label.
    topk = np.array([[4, 2], [-1, -1]])
    assert metrics.precision_at_k(topk, [np.array([4]), np.array([3])], 2) == pytest.approx(25.0)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="2-D integer"):
        metrics.precision_at_k(np.array([1, 2, 3]), [np.array([1])] * 3, 1)
    with pytest.raises(ValueError, match="2-D integer"):
        metrics.precision_at_k(np.ones((2, 3)), [np.array([1])] * 2, 1)
    with pytest.raises(ValueError, match="true_labels has 3 rows but topk has 4"):
        metrics.precision_at_k(TOPK, TRUE[:3], 1)
    with pytest.raises(ValueError, match="k must be"):
        metrics.ndcg_at_k(TOPK, TRUE, 0)
    with pytest.raises(ValueError, match="integer ids"):
        metrics.precision_at_k(TOPK, [np.array([1.5])] + TRUE[1:], 1)
    with pytest.raises(ValueError, match=">= 0"):
        metrics.precision_at_k(TOPK, [np.array([-2])] + TRUE[1:], 1)
    with pytest.raises(ValueError, match="inverse propensity"):
        metrics.psp_at_k(TOPK, TRUE, 1, np.ones(5))


def test_metrics_are_reported_at_1_3_5_and_top_k():
    from mach.evaluation import metric_ks

    assert metric_ks(5) == (1, 3, 5) and metric_ks(10) == (1, 3, 5, 10)
    assert metric_ks(4) == (1, 3, 4) and metric_ks(1) == (1,)
