"""Merge R repetitions of B-bucket logits into the top-k of K classes.

MACH scores class c as score(c) = sum_r logits[r, h_r(c)], with h_r = label_to_bucket[r].
`merge_topk_numpy` is the specification; the compiled kernel (`mach._kernels`, src/util)
returns the same labels and bit-identical float32 scores, ties ranked by lower label id. Logits
must not be NaN (the order is then unspecified); bucket values must lie in [0, B).

The candidate merge scores only the labels found in each repetition's top-m buckets, through the CSR
inverse of the lookups (sublinear in K); `merge_candidates_numpy` is its specification and
`gather_candidates` (src/util/candidate_kernel.h) matches it bit for bit. With m = B it is the exact merge.

`merge_approx_numpy` is the official MACH code's approximate evaluation (approx_eval): the same
candidates, but each scored only by the repetitions that selected it. It has no compiled version.
"""

from dataclasses import dataclass

import numpy as np

_KERNEL_MISSING = (
    "the compiled merge kernel mach._kernels is not built; run `pip install -e .` in the "
    "repository root (needs a C++ compiler with OpenMP), or pass --impl numpy to use the "
    "slower NumPy merge"
)
SCORES = ("logits", "probs")
LOSSES = ("softmax", "bce")
IMPLS = ("compiled", "numpy")
KINDS = ("exact", "candidates", "approx")
# merge_topk_numpy_fast: rows merged together, and classes per np.take (best of 2^11..K at K=1e6).
_FAST_ROWS = 16
_FAST_BLOCK = 1 << 16


def _check_inputs(logits: np.ndarray, label_to_bucket: np.ndarray, k: int) -> None:
    if logits.ndim != 3 or logits.dtype != np.float32:
        raise ValueError(
            f"logits must be [batch, R, B] float32, got shape {logits.shape} {logits.dtype}"
        )
    if label_to_bucket.ndim != 2 or label_to_bucket.dtype not in (np.int32, np.int64):
        raise ValueError(
            f"label_to_bucket must be [R, K] int32 or int64, got shape {label_to_bucket.shape} "
            f"{label_to_bucket.dtype}"
        )
    if label_to_bucket.shape[0] != logits.shape[1]:
        raise ValueError(
            f"label_to_bucket has {label_to_bucket.shape[0]} repetitions but logits has "
            f"R={logits.shape[1]}"
        )
    K = label_to_bucket.shape[1]
    if not 1 <= k <= K:
        raise ValueError(f"k must be an integer in 1..K={K}, got {k!r}")


def _topk_of_scores(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of [K] scores, best first, ties by lower label: argpartition, then the tie rule."""
    if k == len(scores):
        top = np.arange(len(scores))
    else:
        kth = scores[np.argpartition(scores, len(scores) - k)[len(scores) - k]]
        above = np.flatnonzero(scores > kth)
        # Among classes equal to the k-th best score, the lowest labels fill the remaining slots.
        tied = np.flatnonzero(scores == kth)[: k - len(above)]
        top = np.concatenate([above, tied])
    order = np.lexsort((top, -scores[top]))
    return top[order].astype(np.int64), scores[top[order]]


def merge_topk_numpy(
    logits: np.ndarray, label_to_bucket: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The specification of the MACH merge, one row at a time.

    Each score is accumulated in float32 in the order r = 0..R-1; the kernel adds in the same order.

    Args:
        logits: [batch, R, B] float32.
        label_to_bucket: [R, K] int32 or int64, values in [0, B).
        k: classes per row, 1 <= k <= K.

    Returns:
        labels [batch, k] int64 and scores [batch, k] float32, best first, ties by lower label id.
    """
    _check_inputs(logits, label_to_bucket, k)
    batch, R, _ = logits.shape
    labels = np.empty((batch, k), dtype=np.int64)
    scores = np.empty((batch, k), dtype=np.float32)
    for i in range(batch):
        row_scores = logits[i, 0][label_to_bucket[0]]  # [K] float32
        for r in range(1, R):
            row_scores += logits[i, r][label_to_bucket[r]]
        labels[i], scores[i] = _topk_of_scores(row_scores, k)
    return labels, scores


def merge_topk_numpy_fast(
    logits: np.ndarray, label_to_bucket: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """merge_topk_numpy, 16 rows at a time: the same float32 adds in the same order, same results.

    The rows' logits are transposed to [R, B, rows], so one np.take per repetition and class block
    copies a bucket's 16 logits at once instead of gathering them one row at a time. Bucket values
    are assumed in [0, B) (mode="clip" skips the bounds check). Holds a [K, 16] float32 buffer.
    """
    _check_inputs(logits, label_to_bucket, k)
    batch, R, _ = logits.shape
    K = label_to_bucket.shape[1]
    labels = np.empty((batch, k), dtype=np.int64)
    scores = np.empty((batch, k), dtype=np.float32)
    for start in range(0, batch, _FAST_ROWS):
        rows = logits[start : start + _FAST_ROWS]
        n = len(rows)
        table = np.ascontiguousarray(rows.transpose(1, 2, 0))  # [R, B, n] float32
        total = np.empty((K, n), dtype=np.float32)
        term = np.empty((min(K, _FAST_BLOCK), n), dtype=np.float32)
        for c0 in range(0, K, _FAST_BLOCK):
            block = total[c0 : c0 + _FAST_BLOCK]
            m = len(block)
            np.take(table[0], label_to_bucket[0, c0 : c0 + m], axis=0, out=block, mode="clip")
            for r in range(1, R):
                np.take(
                    table[r], label_to_bucket[r, c0 : c0 + m], axis=0, out=term[:m], mode="clip"
                )
                np.add(block, term[:m], out=block)
        for i in range(n):
            row_scores = np.ascontiguousarray(total[:, i])
            labels[start + i], scores[start + i] = _topk_of_scores(row_scores, k)
    return labels, scores


def load_kernel(function: str = "gather_batch"):
    """A compiled kernel function, or an ImportError that says how to build it (never a silent fallback)."""
    try:
        import mach._kernels as kernel
    except ImportError as err:
        raise ImportError(_KERNEL_MISSING) from err
    return getattr(kernel, function)


def merge_topk(
    logits: np.ndarray,
    label_to_bucket: np.ndarray,
    k: int,
    threads: int = 0,
    impl: str = "compiled",
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k classes per row by the compiled kernel (impl="compiled") or the NumPy spec ("numpy").

    Args:
        logits: [batch, R, B] float32, C-contiguous for the kernel.
        label_to_bucket: [R, K] int32 or int64, C-contiguous for the kernel, values in [0, B).
        k: classes per row, 1 <= k <= K.
        threads: kernel OpenMP threads; 0 = OpenMP default (all cores).
        impl: "compiled" or "numpy". A missing kernel raises ImportError; there is no silent fallback.

    Returns:
        labels [batch, k] int64 and scores [batch, k] float32, best first, ties by lower label id.
    """
    if impl == "numpy":
        return merge_topk_numpy(logits, label_to_bucket, k)
    if impl != "compiled":
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    return load_kernel()(logits, label_to_bucket, k, threads)


def _check_candidate_inputs(logits, label_to_bucket, bucket_offsets, bucket_labels, k, m, min_freq):
    _check_inputs(logits, label_to_bucket, k)
    _, R, B = logits.shape
    K = label_to_bucket.shape[1]
    if bucket_offsets.shape != (R, B + 1) or bucket_offsets.dtype != np.int64:
        raise ValueError(
            f"bucket_offsets must be [R, B + 1] = ({R}, {B + 1}) int64, got shape "
            f"{bucket_offsets.shape} {bucket_offsets.dtype}"
        )
    if bucket_labels.shape != (R, K) or bucket_labels.dtype != np.int64:
        raise ValueError(
            f"bucket_labels must be [R, K] = ({R}, {K}) int64, got shape {bucket_labels.shape} "
            f"{bucket_labels.dtype}"
        )
    if not isinstance(m, (int, np.integer)) or not 1 <= m <= B:
        raise ValueError(f"m (buckets per repetition) must be an integer in 1..B={B}, got {m!r}")
    if not isinstance(min_freq, (int, np.integer)) or not 1 <= min_freq <= R:
        raise ValueError(f"min_freq must be an integer in 1..R={R}, got {min_freq!r}")


def check_inverse_lookups(
    label_to_bucket: np.ndarray, bucket_offsets: np.ndarray, bucket_labels: np.ndarray
) -> None:
    """Raise ValueError unless bucket_offsets/bucket_labels [R, B+1]/[R, K] invert label_to_bucket [R, K].

    One pass over [R, K]; the kernel trusts the lookups (a wrong inverse reads out of bounds).
    """
    R, B = bucket_offsets.shape[0], bucket_offsets.shape[1] - 1
    K = label_to_bucket.shape[1]
    for r in range(R):
        offsets, labels = bucket_offsets[r], bucket_labels[r]
        fix = f"rebuild repetition {r} with mach.hashing.invert_lookup(label_to_bucket[{r}], B)"
        if offsets[0] != 0 or offsets[-1] != K or np.any(np.diff(offsets) < 0):
            raise ValueError(f"bucket_offsets[{r}] must rise from 0 to K={K}; {fix}")
        if labels.size and (labels.min() < 0 or labels.max() >= K):
            raise ValueError(f"bucket_labels[{r}] must hold labels in [0, K={K}); {fix}")
        buckets = np.repeat(np.arange(B), np.diff(offsets))
        if np.any(label_to_bucket[r, labels] != buckets) or np.any(
            np.bincount(labels, minlength=K) != 1
        ):
            raise ValueError(
                f"bucket_labels[{r}] does not list each label once, in its bucket; {fix}"
            )


def merge_candidates_numpy(
    logits: np.ndarray,
    label_to_bucket: np.ndarray,
    bucket_offsets: np.ndarray,
    bucket_labels: np.ndarray,
    k: int,
    m: int,
    min_freq: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """The specification of the candidate merge: score only labels found in the top-m buckets.

    Per row and repetition r, the top-m buckets of logits[row, r] (ties: lower bucket id). A label's
    count is the number of repetitions whose top-m buckets hold it. Candidates are the labels with
    count >= f for the largest f <= min_freq leaving at least k; if even f = 1 leaves fewer than k,
    m doubles (capped at B) and the search restarts, so k labels come back whenever K >= k. The
    candidates get merge_topk_numpy's exact scores and ranking, so m = B gives the exact merge.

    Args:
        logits: [batch, R, B] float32.
        label_to_bucket: [R, K] int32 or int64, values in [0, B).
        bucket_offsets: [R, B+1] int64 and bucket_labels: [R, K] int64, the CSR inverse of each
            repetition (mach.hashing.invert_lookup; preprocess saves it as inverse_rNN.npz).
        k: classes per row, 1 <= k <= K.
        m: buckets taken per repetition, 1 <= m <= B.
        min_freq: repetitions a candidate must be found in, 1 <= min_freq <= R.

    Returns:
        labels [batch, k] int64 and scores [batch, k] float32, best first, ties by lower label id.
    """
    _check_candidate_inputs(logits, label_to_bucket, bucket_offsets, bucket_labels, k, m, min_freq)
    batch, R, B = logits.shape
    labels = np.empty((batch, k), dtype=np.int64)
    scores = np.empty((batch, k), dtype=np.float32)
    for i in range(batch):
        width, kept = m, None
        while kept is None:
            found = []
            for r in range(R):
                # A stable sort of the negated logits puts the lower bucket first among equals.
                top = np.argsort(-logits[i, r], kind="stable")[:width]
                found += [
                    bucket_labels[r, bucket_offsets[r, b] : bucket_offsets[r, b + 1]] for b in top
                ]
            found_labels, counts = np.unique(np.concatenate(found), return_counts=True)
            for f in range(min_freq, 0, -1):
                if np.count_nonzero(counts >= f) >= k:
                    kept = found_labels[counts >= f]
                    break
            if kept is None and width == B:
                raise ValueError("the inverse lookup lists fewer than k labels in all B buckets")
            width = min(B, 2 * width)
        row_scores = logits[i, 0][label_to_bucket[0, kept]]  # [n_candidates] float32
        for r in range(1, R):
            row_scores += logits[i, r][label_to_bucket[r, kept]]
        order = np.lexsort((kept, -row_scores))[:k]
        labels[i], scores[i] = kept[order], row_scores[order]
    return labels, scores


def merge_candidates(
    logits: np.ndarray,
    label_to_bucket: np.ndarray,
    bucket_offsets: np.ndarray,
    bucket_labels: np.ndarray,
    k: int,
    m: int,
    min_freq: int = 1,
    threads: int = 0,
    impl: str = "compiled",
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k classes per row by the candidate merge: compiled kernel or the NumPy spec.

    Args and Returns as merge_candidates_numpy, plus threads and impl as merge_topk. The kernel
    needs C-contiguous arrays.
    """
    if impl == "numpy":
        return merge_candidates_numpy(
            logits, label_to_bucket, bucket_offsets, bucket_labels, k, m, min_freq
        )
    if impl != "compiled":
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    return load_kernel("gather_candidates")(
        logits, label_to_bucket, bucket_offsets, bucket_labels, k, m, min_freq, threads
    )


def _selected_labels(bucket_offsets: np.ndarray, bucket_labels: np.ndarray, buckets: np.ndarray):
    """The labels [n] int64 in the given buckets of one repetition's CSR inverse, bucket by bucket."""
    starts, ends = bucket_offsets[buckets], bucket_offsets[buckets + 1]
    sizes = ends - starts
    # Position j of bucket i's run reads bucket_labels[starts[i] + j]: one gather, no Python loop.
    first = np.repeat(starts - np.cumsum(sizes) + sizes, sizes)
    return bucket_labels[first + np.arange(sizes.sum())]


def merge_approx_numpy(
    logits: np.ndarray,
    label_to_bucket: np.ndarray,
    bucket_offsets: np.ndarray,
    bucket_labels: np.ndarray,
    k: int,
    m: int,
    min_freq: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """The specification of approx_eval, the official MACH code's approximate evaluation.

    Per row, each repetition r selects its top-m buckets (ties: lower bucket id), and so the labels
    in them. A label's count is the number of repetitions that select it; its score is the float32
    sum, in the order r = 0..R-1, of logits[row, r, h_r(label)] over those repetitions only (the
    others add nothing; the candidate merge adds all R). The labels with count >= f are ranked, for
    the largest f <= min_freq that leaves at least k; at f = 1 every selected label counts. Ranking:
    score, ties by lower label id. If fewer than k labels are selected at all (the chosen buckets
    hold fewer than k), the free slots get the lowest label ids not selected, scored -inf, so k
    labels always come back. With m = B all R select every label: the exact merge, bit for bit.

    Args:
        logits: [batch, R, B] float32.
        label_to_bucket: [R, K] int32 or int64, values in [0, B).
        bucket_offsets: [R, B+1] int64 and bucket_labels: [R, K] int64, the CSR inverse of each
            repetition (mach.hashing.invert_lookup; preprocess saves it as inverse_rNN.npz).
        k: classes per row, 1 <= k <= K.
        m: buckets selected per repetition, 1 <= m <= B.
        min_freq: repetitions that must select a label, 1 <= min_freq <= R (lowered until k remain).

    Returns:
        labels [batch, k] int64 and scores [batch, k] float32, best first, ties by lower label id.
    """
    _check_candidate_inputs(logits, label_to_bucket, bucket_offsets, bucket_labels, k, m, min_freq)
    batch, R, _ = logits.shape
    K = label_to_bucket.shape[1]
    labels = np.empty((batch, k), dtype=np.int64)
    scores = np.empty((batch, k), dtype=np.float32)
    total = np.zeros(K, dtype=np.float32)  # [K] float32, reset where a row touched it
    count = np.zeros(K, dtype=np.int64)  # [K] repetitions that selected each label
    for i in range(batch):
        for r in range(R):
            top, _ = _topk_of_scores(logits[i, r], m)
            chosen = _selected_labels(bucket_offsets[r], bucket_labels[r], top)
            values = logits[i, r][label_to_bucket[r, chosen]]  # [n_chosen] float32
            # The first repetition to select a label sets its score, as the exact merge starts at r=0.
            total[chosen] = np.where(count[chosen] == 0, values, total[chosen] + values)
            count[chosen] += 1
        selected = np.flatnonzero(count)  # ascending label ids
        for f in range(min_freq, 0, -1):
            kept = selected[count[selected] >= f]
            if len(kept) >= k:
                break
        order = np.lexsort((kept, -total[kept]))[:k]
        top_labels, top_scores = kept[order], total[kept[order]]
        if len(top_labels) < k:
            pad = np.setdiff1d(np.arange(K), selected)[: k - len(top_labels)]
            top_labels = np.concatenate([top_labels, pad])
            top_scores = np.concatenate([top_scores, np.full(len(pad), -np.inf, np.float32)])
        labels[i], scores[i] = top_labels, top_scores
        total[selected] = 0.0
        count[selected] = 0
    return labels, scores


def to_probabilities(logits: np.ndarray, loss: str) -> np.ndarray:
    """Per-repetition bucket probabilities [batch, R, B] float32: softmax over B, or sigmoid."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    logits = np.asarray(logits, dtype=np.float32)
    if loss == "bce":
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
    # Subtracting the max keeps exp() finite for large logits.
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (shifted / shifted.sum(axis=-1, keepdims=True)).astype(np.float32)


@dataclass(frozen=True)
class CandidateSearch:
    """What the candidate merge needs besides the logits (see merge_candidates_numpy)."""

    bucket_offsets: np.ndarray  # [R, B+1] int64, CSR inverse of each repetition's label lookup
    bucket_labels: np.ndarray  # [R, K] int64
    m: int  # buckets taken per repetition
    min_freq: int = 1  # repetitions a candidate must be found in (relaxed until k remain)


@dataclass(frozen=True)
class ApproxSearch:
    """What approx_eval needs besides the logits (see merge_approx_numpy)."""

    bucket_offsets: np.ndarray  # [R, B+1] int64, CSR inverse of each repetition's label lookup
    bucket_labels: np.ndarray  # [R, K] int64
    m: int  # buckets selected per repetition
    min_freq: int = 2  # repetitions that must select a label (lowered until k remain)


# Buckets per repetition when none are given: the candidate merge's top-5 equal the exact merge's on
# 98.9% of Delicious' test rows at m = 10 (experiments/candidate-merge); approx_eval's official default.
DEFAULT_BUCKETS = {"candidates": 10, "approx": 50}


@dataclass(frozen=True)
class Merge:
    """Which labels the merge scores: every label (exact), the labels of each repetition's top-m
    buckets scored by all R repetitions (candidates), or scored only by the repetitions that chose
    them (approx: the official code's approx_eval)."""

    kind: str = "exact"  # exact, candidates or approx
    buckets: int | None = None  # m, buckets per repetition; None = DEFAULT_BUCKETS[kind]
    min_freq: int = 2  # repetitions a label must be found in (lowered until k labels remain)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"merge {self.kind!r}: expected one of {', '.join(KINDS)}")
        if self.buckets is not None and self.buckets < 1 or self.min_freq < 1:
            raise ValueError(
                f"merge {self.kind} with {self.buckets} buckets and min_freq {self.min_freq}: "
                "expected at least 1 of each"
            )

    def m(self, B: int) -> int:
        """Buckets per repetition for B buckets (all B for the exact merge)."""
        if self.kind == "exact":
            return B
        m = self.buckets or DEFAULT_BUCKETS[self.kind]
        if self.buckets is not None and m > B:
            raise ValueError(f"--merge-buckets {m}: expected at most B={B}")
        return min(m, B)

    def name(self, B: int) -> str:
        """'exact', or e.g. 'candidates-m10-f2' (metrics files are named by it)."""
        return "exact" if self.kind == "exact" else f"{self.kind}-m{self.m(B)}-f{self.min_freq}"

    def search(self, inverse: tuple[np.ndarray, np.ndarray] | None, R: int) -> dict:
        """merge_scores' candidates= or approx= argument for the first R repetitions."""
        if self.kind == "exact":
            return {}
        offsets, labels = inverse
        B = offsets.shape[1] - 1
        Search = CandidateSearch if self.kind == "candidates" else ApproxSearch
        return {self.kind: Search(offsets[:R], labels[:R], self.m(B), min(self.min_freq, R))}


def merge_scores(
    logits: np.ndarray,
    label_to_bucket: np.ndarray,
    k: int,
    score: str = "logits",
    loss: str = "softmax",
    threads: int = 0,
    impl: str = "compiled",
    candidates: CandidateSearch | None = None,
    approx: ApproxSearch | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k classes per row, scored by summed logits or by the paper's probability estimator.

    score="logits": score(c) = sum_r logits[r, h_r(c)].
    score="probs": p_r = to_probabilities(logits, loss) and
    score(c) = B/(B-1) * (mean_r p_r[h_r(c)] - 1/B), the paper's unbiased estimate of P(c). It is an
    increasing affine map of sum_r p_r[h_r(c)], so the kernel ranks by that sum and only the k
    returned scores are transformed (in float64, stored as float32).

    Args and Returns as merge_topk; `loss` is the loss the logits were trained with. With
    `candidates`, only the labels of the top-m buckets are scored (merge_candidates); probabilities
    rank a repetition's buckets as its logits do, so both modes pick the same buckets. With
    `approx`, approx_eval (merge_approx_numpy, NumPy whatever `impl` says) sums the logits of the
    selecting repetitions only, so it needs score="logits".
    """
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if approx is not None:
        if candidates is not None or score != "logits":
            raise ValueError(
                "approx_eval sums the raw logits of the selecting repetitions: use it with "
                "score='logits' (--set score=logits) and without candidates"
            )
        a = approx
        return merge_approx_numpy(
            logits, label_to_bucket, a.bucket_offsets, a.bucket_labels, k, a.m, a.min_freq
        )

    def top(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if candidates is None:
            return merge_topk(scores, label_to_bucket, k, threads, impl)
        c = candidates
        return merge_candidates(
            scores,
            label_to_bucket,
            c.bucket_offsets,
            c.bucket_labels,
            k,
            c.m,
            c.min_freq,
            threads,
            impl,
        )

    if score == "logits":
        return top(logits)
    _, R, B = logits.shape
    if B < 2:
        raise ValueError(f"score='probs' needs B >= 2 buckets, got B={B}")
    labels, prob_sums = top(to_probabilities(logits, loss))
    estimates = B / (B - 1) * (prob_sums.astype(np.float64) / R - 1.0 / B)
    return labels, estimates.astype(np.float32)


def check_request(cfg, R: int, merge: Merge, impl: str) -> None:
    """A ValueError (or the kernel's ImportError) now for an evaluation or prediction that cannot
    run, rather than after the models are loaded: R, top_k, the merge and its buckets, the kernel.
    """
    if not 1 <= R <= cfg.R:
        raise ValueError(f"--R {R}: expected 1 <= R <= {cfg.R} (Config.R)")
    if not 1 <= cfg.top_k <= cfg.n_classes:
        raise ValueError(f"top_k={cfg.top_k}: expected 1 <= top_k <= {cfg.n_classes} (the classes)")
    merge.m(cfg.B)  # checks the buckets against B
    if merge.kind == "approx" and cfg.score != "logits":
        raise ValueError("--merge approx sums raw logits; it needs --set score=logits")
    if impl not in IMPLS:
        raise ValueError(f"impl {impl!r}: expected one of {', '.join(IMPLS)}")
    if impl == "compiled" and merge.kind != "approx":
        load_kernel()
