"""Synthetic extreme-classification data, K up to 5e7 labels, streamed to the XC-repo text format.

    python -m mach.data.synthetic --K 1000000 --D 20000 --train-rows 200000 --test-rows 10000 --out data/synth1m
    python preprocess.py --dataset synth1m --set train_file=$PWD/data/synth1m/train.txt \\
        --set test_file=$PWD/data/synth1m/test.txt --set B=10000 --set R=8
    python -m mach.data.synthetic --shape amazon670k --train-rows 20000 --test-rows 2000 --out data/a670k

Structure a small MACH can learn: label l owns a prototype of `features_per_label` feature ids,
murmurhash3_32(l, seed=PROTOTYPE_SEED + j) % D, recomputed whenever needed (no K x D table). A row
picks its labels from a power law (the rank-r label has probability ~ (r+1)^-zipf_a, ranks mapped to
label ids by a seeded affine permutation), shows each prototype feature with probability keep_prob,
and adds `noise_features` uniform random features. Nothing K-sized is held: rows are drawn and
written in chunks whose random stream depends only on (seed, split, chunk), so a seed gives the same
bytes on every machine.

Structured mode (n_clusters > 0; `--structured`, or `--shape NAME` for a published dataset's K, D,
rows, labels and features per row, see structured_spec) gives labels the shared structure of real
data. The ranks 0..K-1 are cut into n_clusters contiguous clusters (topics) with power-law sizes
(cluster c ~ (c+1)^-cluster_zipf_a, closed form in cluster_start), so the cluster of a label is
arithmetic on its id: invert the affine permutation, then bisect the cluster starts. Cluster c owns
a pool of `pool_features` ids, murmurhash3_32(c, seed=POOL_SEED + m) % D; the first
`shared_features` prototype features of a label are pool members it picks by hashing (so cluster
mates share features), the rest are its own as above. A row draws a topic cluster (power law,
exponent cluster_zipf_a, so big clusters are also popular), takes a share `in_cluster` of its labels
from it and the rest from clusters drawn the same way, each label a power-law pick (zipf_a) within
its cluster; labels repeated within a row are redrawn, so rows hold the drawn number of labels.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.utils import murmurhash3_32

from mach.datasets import DATASETS

# Prototype hash seeds start here, away from the label-lookup seeds hash_seed + r (0, 1, 2, ...).
PROTOTYPE_SEED = 1_000_003
POOL_SEED = 2_000_003  # + m: member m of a cluster's feature pool
PICK_SEED = 3_000_017  # + j: which pool member is a label's j-th shared feature
CHUNK_ROWS = 4096  # rows drawn together; part of the format: changing it changes the bytes
SPLITS = {"train": 0, "test": 1}
REDRAW_ROUNDS = 8  # redraws of labels repeated within a row; repeats left after them are dropped
# Calibration of structured_spec: the prototypes give this share of a row's features, noise the
# rest; clusters hold CLUSTER_LABELS x labels per row on average (so a row's topic can supply its
# labels); half of a prototype comes from a pool POOL_PER_SHARED times that size, so two labels of
# one cluster share about a quarter of their pool features.
SIGNAL_SHARE = 0.6
CLUSTER_LABELS = 8
POOL_PER_SHARED = 4


@dataclass(frozen=True)
class SyntheticSpec:
    n_classes: int  # K, labels
    n_features: int  # D, input features
    labels_per_row: float = 2.0  # mean labels per row (1 + Poisson); multiclass rows have exactly 1
    multiclass: bool = False  # exactly one label per row
    max_labels_per_row: int = 16  # cap on the Poisson draw
    features_per_label: int = 10  # prototype size
    keep_prob: float = 0.8  # chance that a prototype feature shows in a row
    noise_features: int = 4  # uniform random features added to each row
    zipf_a: float = 1.0  # power-law exponent of the label frequencies
    seed: int = 0  # the whole dataset is a function of the spec
    # Structured mode, on when n_clusters > 0 (see the module docstring).
    n_clusters: int = 0  # label clusters (topics); 0 = unstructured, labels unrelated
    shared_features: int = 0  # of features_per_label, those drawn from the cluster's pool
    pool_features: int = 0  # feature ids in each cluster's pool
    in_cluster: float = 0.8  # share of a row's labels drawn from its topic cluster
    cluster_zipf_a: float = 1.0  # power-law exponent of cluster sizes and cluster popularity

    def check(self) -> None:
        if not 1 <= self.n_classes <= np.iinfo(np.int32).max:
            raise ValueError(
                f"n_classes={self.n_classes}: expected 1..2^31-1 (label ids are hashed as int32)"
            )
        if not 1 <= self.n_features <= np.iinfo(np.int32).max:
            raise ValueError(f"n_features={self.n_features}: expected 1..2^31-1")
        if not self.multiclass and not 1 <= self.labels_per_row <= self.max_labels_per_row:
            raise ValueError(
                f"labels_per_row={self.labels_per_row}: expected 1..max_labels_per_row={self.max_labels_per_row}"
            )
        if not 0 < self.keep_prob <= 1 or self.features_per_label < 1 or self.noise_features < 0:
            raise ValueError(
                "need 0 < keep_prob <= 1, features_per_label >= 1 and noise_features >= 0"
            )
        if self.zipf_a <= 0:
            raise ValueError(f"zipf_a={self.zipf_a}: expected > 0")
        if not 0 <= self.n_clusters <= self.n_classes:
            raise ValueError(
                f"n_clusters={self.n_clusters}: expected 0 (unstructured) to "
                f"n_classes={self.n_classes}"
            )
        if self.n_clusters and not (
            0 <= self.shared_features <= self.features_per_label
            and (self.pool_features >= 1 or self.shared_features == 0)
            and 0 <= self.in_cluster <= 1
            and self.cluster_zipf_a > 0
        ):
            raise ValueError(
                f"shared_features={self.shared_features} pool_features={self.pool_features} "
                f"in_cluster={self.in_cluster} cluster_zipf_a={self.cluster_zipf_a}: need "
                "0 <= shared_features <= features_per_label, pool_features >= 1 when "
                "shared_features > 0, 0 <= in_cluster <= 1 and cluster_zipf_a > 0"
            )


def label_permutation(spec: SyntheticSpec) -> tuple[int, int]:
    """(multiplier, offset) of the bijection rank -> (multiplier * rank + offset) % K."""
    rng = np.random.default_rng([spec.seed, 99])
    K = spec.n_classes
    multiplier = int(rng.integers(K // 3 + 1, max(K // 3 + 2, 2 * K // 3 + 1))) | 1
    while math.gcd(multiplier, K) != 1:
        multiplier += 1
    return multiplier, int(rng.integers(0, K))


def rank_to_label(ranks: np.ndarray, spec: SyntheticSpec) -> np.ndarray:
    multiplier, offset = label_permutation(spec)
    # Python-int-sized products: multiplier * rank < 2^62 for K < 2^31.
    return (ranks.astype(np.int64) * multiplier + offset) % spec.n_classes


def label_to_rank(labels: np.ndarray, spec: SyntheticSpec) -> np.ndarray:
    """Inverse of rank_to_label: [n] int64."""
    multiplier, offset = label_permutation(spec)
    inverse = pow(multiplier, -1, spec.n_classes)
    return (labels.astype(np.int64) - offset) % spec.n_classes * inverse % spec.n_classes


def draw_ranks(rng: np.random.Generator, n: int, spec: SyntheticSpec) -> np.ndarray:
    """n label ranks in [0, K) from a power law: the inverse CDF of density ~ x^-a on [1, K+1), floored."""
    u = rng.random(n)
    K, a = spec.n_classes, spec.zipf_a
    if abs(a - 1.0) < 1e-9:
        x = np.exp(u * math.log(K + 1))
    else:
        x = (1 + u * ((K + 1) ** (1 - a) - 1)) ** (1 / (1 - a))
    return np.minimum(np.floor(x).astype(np.int64) - 1, K - 1)


def draw_power_law(u: np.ndarray, sizes, a: float) -> np.ndarray:
    """draw_ranks with a range per draw: [n] int64 in [0, sizes), from uniforms u [n]."""
    n = np.asarray(sizes, dtype=np.float64)
    if abs(a - 1.0) < 1e-9:
        x = np.exp(u * np.log(n + 1))
    else:
        x = (1 + u * (np.power(n + 1, 1 - a) - 1)) ** (1 / (1 - a))
    return np.minimum(np.floor(x).astype(np.int64) - 1, np.asarray(sizes, dtype=np.int64) - 1)


def cluster_start(clusters, spec: SyntheticSpec) -> np.ndarray:
    """First rank of clusters c in [0, n_clusters]; cluster_start(n_clusters) = K.

    c + floor((K - C) G(c) / G(C)) with G(x) = the integral of (1 + t)^-cluster_zipf_a over [0, x]:
    sizes fall as a power law and every cluster holds at least one label.
    """
    C, K, a = spec.n_clusters, spec.n_classes, spec.cluster_zipf_a
    c = np.asarray(clusters, dtype=np.int64)
    x = c.astype(np.float64)
    if abs(a - 1.0) < 1e-9:
        share = np.log1p(x) / math.log1p(C)
    else:
        share = (np.power(x + 1, 1 - a) - 1) / ((C + 1) ** (1 - a) - 1)
    start = c + np.floor((K - C) * np.minimum(share, 1.0)).astype(np.int64)
    return np.where(c >= C, K, start)


def rank_cluster(ranks: np.ndarray, spec: SyntheticSpec) -> np.ndarray:
    """Cluster of each rank, by bisection on cluster_start: [n] int64."""
    lo = np.zeros(len(ranks), dtype=np.int64)
    hi = np.full(len(ranks), spec.n_clusters, dtype=np.int64)
    # Invariant: cluster_start(lo) <= rank < cluster_start(hi).
    while np.any(hi - lo > 1):
        mid = (lo + hi) // 2
        right = cluster_start(mid, spec) <= ranks
        lo, hi = np.where(right, mid, lo), np.where(right, hi, mid)
    return lo


def label_cluster(labels: np.ndarray, spec: SyntheticSpec) -> np.ndarray:
    """Cluster of each label id: [n] int64."""
    return rank_cluster(label_to_rank(labels, spec), spec)


def cluster_labels(cluster: int, spec: SyntheticSpec) -> np.ndarray:
    """Label ids of one cluster, most frequent first: [size] int64."""
    start, stop = cluster_start([cluster, cluster + 1], spec)
    return rank_to_label(np.arange(start, stop), spec)


def repeated(row: np.ndarray, ranks: np.ndarray, spec: SyntheticSpec) -> np.ndarray:
    """True where a rank already appeared earlier in the same row: [n] bool."""
    key = row * spec.n_classes + ranks  # < 2^43: rows per chunk times K < 2^31
    order = np.argsort(key, kind="stable")
    later = np.zeros(len(key), dtype=bool)
    later[order[1:]] = key[order[1:]] == key[order[:-1]]
    return later


def draw_clustered_labels(
    rng: np.random.Generator, counts: np.ndarray, spec: SyntheticSpec
) -> tuple[np.ndarray, np.ndarray]:
    """Labels of rows of counts [n_rows] labels: [total] int64 row after row, and the counts kept.

    Each row draws a topic cluster and takes about in_cluster of its labels from it (no more than
    the cluster holds), the rest from clusters drawn on their own. Labels repeated within a row are
    redrawn the same way; the few still repeated after REDRAW_ROUNDS are dropped.
    """
    n_rows, C = len(counts), spec.n_clusters
    topic = draw_power_law(rng.random(n_rows), C, spec.cluster_zipf_a)  # [n_rows] int64
    topic_size = cluster_start(topic + 1, spec) - cluster_start(topic, spec)
    from_topic = np.minimum(rng.binomial(counts, spec.in_cluster), topic_size)  # [n_rows] int64
    row = np.repeat(np.arange(n_rows), counts)  # [total] int64
    slot = np.arange(len(row)) - np.repeat(np.cumsum(counts) - counts, counts)
    in_topic = slot < from_topic[row]
    cluster = topic[row]  # [total] int64
    ranks = np.zeros(len(row), dtype=np.int64)
    redraw = np.ones(len(row), dtype=bool)
    for _ in range(1 + REDRAW_ROUNDS):
        elsewhere = redraw & ~in_topic
        cluster[elsewhere] = draw_power_law(rng.random(elsewhere.sum()), C, spec.cluster_zipf_a)
        start = cluster_start(cluster[redraw], spec)
        size = cluster_start(cluster[redraw] + 1, spec) - start
        ranks[redraw] = start + draw_power_law(rng.random(len(start)), size, spec.zipf_a)
        redraw = repeated(row, ranks, spec)
        if not redraw.any():
            break
    kept = ~redraw
    return rank_to_label(ranks[kept], spec), np.bincount(row[kept], minlength=n_rows)


def cluster_pools(clusters: np.ndarray, spec: SyntheticSpec) -> np.ndarray:
    """Feature ids in each cluster's pool: [n, pool_features] int64."""
    keys = clusters.astype(np.int32)
    cols = [
        murmurhash3_32(keys, seed=POOL_SEED + m, positive=True) for m in range(spec.pool_features)
    ]
    return np.stack(cols, axis=1).astype(np.int64) % spec.n_features


def prototypes(labels: np.ndarray, spec: SyntheticSpec) -> np.ndarray:
    """Feature ids owned by each label: [n, features_per_label] int64.

    In structured mode the first shared_features columns are members of the label's cluster pool.
    """
    keys = labels.astype(np.int32)
    shared = spec.shared_features if spec.n_clusters else 0
    cols = [
        murmurhash3_32(keys, seed=PROTOTYPE_SEED + j, positive=True).astype(np.int64)
        % spec.n_features
        for j in range(shared, spec.features_per_label)
    ]
    if shared:
        clusters, inverse = np.unique(label_cluster(labels, spec), return_inverse=True)
        pools = cluster_pools(clusters, spec)  # [clusters here, pool_features] int64
        picks = [
            pools[
                inverse,
                murmurhash3_32(keys, seed=PICK_SEED + j, positive=True) % spec.pool_features,
            ]
            for j in range(shared)
        ]
        cols = picks + cols
    return np.stack(cols, axis=1)


def draw_chunk(
    spec: SyntheticSpec, split: str, chunk: int, n_rows: int
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Rows of one chunk: (labels [n] int64 ascending, feat_idx [nnz] int64 ascending, feat_val [nnz] float32)."""
    rng = np.random.default_rng([spec.seed, SPLITS[split], chunk])
    if spec.multiclass:
        counts = np.ones(n_rows, dtype=np.int64)
    else:
        counts = 1 + np.minimum(
            rng.poisson(spec.labels_per_row - 1, n_rows), spec.max_labels_per_row - 1
        )
    if spec.n_clusters:
        labels, counts = draw_clustered_labels(rng, counts, spec)  # [total] int64
    else:
        labels = rank_to_label(draw_ranks(rng, int(counts.sum()), spec), spec)  # [total] int64
    proto = prototypes(labels, spec)  # [total, P] int64
    shown = rng.random(proto.shape) < spec.keep_prob
    weight = rng.uniform(0.5, 1.5, proto.shape)
    noise_idx = rng.integers(0, spec.n_features, (n_rows, spec.noise_features))
    noise_val = rng.uniform(0.0, 0.5, (n_rows, spec.noise_features))
    rows = []
    starts = np.concatenate([[0], np.cumsum(counts)])
    for i in range(n_rows):
        lo, hi = starts[i], starts[i + 1]
        mask = shown[lo:hi]
        idx = np.concatenate([proto[lo:hi][mask], noise_idx[i]])
        val = np.concatenate([weight[lo:hi][mask], noise_val[i]])
        # Labels sharing a feature, or noise on a prototype feature, add up (as word counts would).
        feat_idx, inverse = np.unique(idx, return_inverse=True)
        feat_val = np.bincount(inverse, weights=val, minlength=len(feat_idx)).astype(np.float32)
        rows.append((np.unique(labels[lo:hi]), feat_idx, feat_val))
    return rows


def label_count_pmf(spec: SyntheticSpec) -> np.ndarray:
    """P(a row draws n labels) for n = 0..max_labels_per_row: [max + 1] float64."""
    pmf = np.zeros(spec.max_labels_per_row + 1)
    if spec.multiclass:
        pmf[1] = 1.0
        return pmf
    mu = spec.labels_per_row - 1
    poisson = [
        math.exp(k * math.log(mu) - mu - math.lgamma(k + 1)) if mu else float(k == 0)
        for k in range(spec.max_labels_per_row - 1)
    ]
    pmf[1:-1] = poisson
    pmf[-1] = max(0.0, 1.0 - sum(poisson))  # the capped tail
    return pmf


def expected_signal(spec: SyntheticSpec) -> float:
    """Expected distinct prototype features shown in a row of a structured spec.

    The m labels from the topic show its pool members like m x shared_features throws, each shown
    with keep_prob, at pool_features slots; the other labels' features count once each.
    """
    keep, S, F = spec.keep_prob, spec.shared_features, spec.features_per_label
    P = max(spec.pool_features, 1)
    total = 0.0
    for n, p_n in enumerate(label_count_pmf(spec)):
        m = np.arange(n + 1)  # labels from the topic
        p_m = (
            np.array([math.comb(n, k) for k in m])
            * spec.in_cluster**m
            * (1 - spec.in_cluster) ** (n - m)
        )
        pool = P * (1 - (1 - keep / P) ** (m * S)) + (n - m) * P * (1 - (1 - keep / P) ** S)
        total += p_n * (float(p_m @ pool) + n * (F - S) * keep)
    return total


def structured_spec(
    n_classes: int, n_features: int, labels_per_row: float, features_per_row: float, seed: int = 0
) -> SyntheticSpec:
    """A structured spec whose rows hold about labels_per_row labels and features_per_row features.

    Clusters hold CLUSTER_LABELS x labels_per_row labels on average. The prototypes give
    SIGNAL_SHARE of the features (the smallest prototype that does; half of it, rounded up, from a
    cluster pool POOL_PER_SHARED times that size) and uniform noise the rest. labels_per_row = 1 is
    multiclass.
    """
    if labels_per_row < 1 or not 0 < features_per_row <= n_features / 2:
        raise ValueError(
            f"labels_per_row={labels_per_row} features_per_row={features_per_row}: expected >= 1 "
            f"and 0 < features_per_row <= D/2 = {n_features / 2} (denser rows collide too often "
            "to calibrate)"
        )
    base = SyntheticSpec(
        n_classes=n_classes,
        n_features=n_features,
        labels_per_row=labels_per_row,
        multiclass=labels_per_row == 1.0,
        max_labels_per_row=max(16, math.ceil(2.5 * labels_per_row)),
        seed=seed,
        n_clusters=max(
            1, min(n_classes, round(n_classes / max(16, CLUSTER_LABELS * labels_per_row)))
        ),
    )
    target = SIGNAL_SHARE * features_per_row
    for per_label in range(1, math.ceil(features_per_row) + 2):
        spec = dataclasses.replace(
            base,
            features_per_label=per_label,
            shared_features=(per_label + 1) // 2,
            pool_features=POOL_PER_SHARED * ((per_label + 1) // 2),
        )
        signal = expected_signal(spec)
        if signal >= target:
            break
    return dataclasses.replace(spec, noise_features=max(0, round(features_per_row - signal)))


def shape_spec(
    name: str, n_classes: int | None = None, n_features: int | None = None, seed: int = 0
) -> SyntheticSpec:
    """structured_spec with the K, D, labels and features per row that mach.datasets publishes.

    n_classes and n_features override K and D (a smaller stand-in with the same rows); the CLI takes
    the published train and test rows as its defaults.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    facts = DATASETS[name]
    if facts.features_per_row is None:
        raise ValueError(
            f"mach.datasets publishes no features per row for {name}; call "
            "structured_spec(K, D, labels_per_row, features_per_row) with an assumed value"
        )
    return structured_spec(
        facts.n_classes if n_classes is None else n_classes,
        facts.n_features if n_features is None else n_features,
        facts.labels_per_row,
        facts.features_per_row,
        seed=seed,
    )


def format_row(labels: np.ndarray, feat_idx: np.ndarray, feat_val: np.ndarray) -> str:
    features = " ".join(f"{i}:{v:.3f}" for i, v in zip(feat_idx.tolist(), feat_val.tolist()))
    return ",".join(map(str, labels.tolist())) + " " + features


def write_split(spec: SyntheticSpec, split: str, n_rows: int, path: Path, log=print) -> dict:
    """Stream n_rows rows of one split to an XC-repo text file.  Returns row/label/feature counts."""
    spec.check()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    n_labels = n_features = 0
    start = time.time()
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(f"{n_rows} {spec.n_features} {spec.n_classes}\n")
        for chunk, row0 in enumerate(range(0, n_rows, CHUNK_ROWS)):
            rows = draw_chunk(spec, split, chunk, min(CHUNK_ROWS, n_rows - row0))
            f.write("\n".join(format_row(*row) for row in rows) + "\n")
            n_labels += sum(len(r[0]) for r in rows)
            n_features += sum(len(r[1]) for r in rows)
            if chunk % 10 == 9:
                log(
                    f"progress=synthetic split={split} rows={row0 + len(rows)} seconds={time.time() - start:.1f}"
                )
    tmp.replace(path)
    return {
        "rows": n_rows,
        "labels_per_row": n_labels / max(n_rows, 1),
        "features_per_row": n_features / max(n_rows, 1),
        "seconds": round(time.time() - start, 1),
    }


def write_dataset(
    spec: SyntheticSpec, out_dir: Path, train_rows: int, test_rows: int, log=print
) -> dict:
    """train.txt, test.txt and spec.json in out_dir."""
    stats = {
        split: write_split(spec, split, n, out_dir / f"{split}.txt", log)
        for split, n in [("train", train_rows), ("test", test_rows)]
    }
    info = {"spec": dataclasses.asdict(spec), "stats": stats}
    (out_dir / "spec.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def spec_and_rows(args) -> tuple[SyntheticSpec, tuple[int, int]]:
    """The spec and (train, test) rows of the flags: flags given, else the shape's, else defaults."""
    facts = DATASETS[args.shape] if args.shape else None
    K = None if args.K is None else int(args.K)
    D = None if args.D is None else int(args.D)
    train, test = (facts.train_rows, facts.test_rows) if facts else (None, None)
    train = args.train_rows if args.train_rows is not None else train or 100_000
    test = args.test_rows if args.test_rows is not None else test or 10_000
    if facts:
        spec = shape_spec(args.shape, K, D, seed=args.seed)
    elif args.structured:
        labels = 1.0 if args.multiclass else args.labels_per_row
        spec = structured_spec(
            K, 20_000 if D is None else D, labels, args.features_per_row, args.seed
        )
    else:
        spec = SyntheticSpec(
            n_classes=K,
            n_features=20_000 if D is None else D,
            labels_per_row=args.labels_per_row,
            multiclass=args.multiclass,
            seed=args.seed,
        )
        if args.features_per_label is not None:
            spec = dataclasses.replace(spec, features_per_label=args.features_per_label)
        if args.noise_features is not None:
            spec = dataclasses.replace(spec, noise_features=args.noise_features)
    return dataclasses.replace(spec, zipf_a=args.zipf_a), (train, test)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    shapes = sorted(name for name, facts in DATASETS.items() if facts.features_per_row)
    parser.add_argument("--K", type=float, help="labels (1e6 is fine); required unless --shape")
    parser.add_argument("--D", type=float, help="features (default 20000, or the shape's)")
    parser.add_argument("--train-rows", type=int, help="default 100000, or the shape's")
    parser.add_argument("--test-rows", type=int, help="default 10000, or the shape's")
    parser.add_argument(
        "--out", type=Path, required=True, help="directory for train.txt, test.txt, spec.json"
    )
    parser.add_argument(
        "--shape",
        choices=shapes,
        help="structured rows shaped like a published dataset (mach.datasets): its K, D, rows, "
        "labels and features per row; --K, --D and the rows flags override",
    )
    parser.add_argument(
        "--structured",
        action="store_true",
        help="labels in clusters that share features and co-occur, calibrated to "
        "--labels-per-row and --features-per-row",
    )
    parser.add_argument("--multiclass", action="store_true", help="exactly one label per row")
    parser.add_argument("--labels-per-row", type=float, default=SyntheticSpec.labels_per_row)
    parser.add_argument(
        "--features-per-row", type=float, default=40.0, help="with --structured (default 40)"
    )
    parser.add_argument(
        "--features-per-label", type=int, help=f"default {SyntheticSpec.features_per_label}"
    )
    parser.add_argument(
        "--noise-features", type=int, help=f"default {SyntheticSpec.noise_features}"
    )
    parser.add_argument("--zipf-a", type=float, default=SyntheticSpec.zipf_a)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if (args.structured or args.shape) and (
        args.features_per_label is not None or args.noise_features is not None
    ):
        parser.error(
            "structured rows calibrate --features-per-label and --noise-features; "
            "set --features-per-row instead"
        )
    if args.K is None and args.shape is None:
        parser.error("give --K (labels) or --shape NAME")
    try:
        spec, rows = spec_and_rows(args)
        info = write_dataset(spec, args.out, *rows)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = args.out.resolve()
    print(f"wrote {out}/train.txt {out}/test.txt " + json.dumps(info["stats"]))
    print(
        f"next: python preprocess.py --dataset {out.name} --set train_file={out}/train.txt --set test_file={out}/test.txt"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
