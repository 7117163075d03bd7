"""Synthetic extreme-classification data, K up to 5e7 labels, streamed to the XC-repo text format.

    python -m mach.data.synthetic --K 1000000 --D 20000 --train-rows 200000 --test-rows 10000 --out data/synth1m
    python preprocess.py --dataset synth1m --set train_file=$PWD/data/synth1m/train.txt \\
        --set test_file=$PWD/data/synth1m/test.txt --set B=10000 --set R=8

Structure a small MACH can learn: label l owns a prototype of `features_per_label` feature ids,
murmurhash3_32(l, seed=PROTOTYPE_SEED + j) % D, recomputed whenever needed (no K x D table). A row
picks its labels from a power law (the rank-r label has probability ~ (r+1)^-zipf_a, ranks mapped to
label ids by a seeded affine permutation), shows each prototype feature with probability keep_prob,
and adds `noise_features` uniform random features. Nothing K-sized is held: rows are drawn and
written in chunks whose random stream depends only on (seed, split, chunk), so a seed gives the same
bytes on every machine.
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

# Prototype hash seeds start here, away from the label-lookup seeds hash_seed + r (0, 1, 2, ...).
PROTOTYPE_SEED = 1_000_003
CHUNK_ROWS = 4096  # rows drawn together; part of the format: changing it changes the bytes
SPLITS = {"train": 0, "test": 1}


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


def draw_ranks(rng: np.random.Generator, n: int, spec: SyntheticSpec) -> np.ndarray:
    """n label ranks in [0, K) from a power law: the inverse CDF of density ~ x^-a on [1, K+1), floored."""
    u = rng.random(n)
    K, a = spec.n_classes, spec.zipf_a
    if abs(a - 1.0) < 1e-9:
        x = np.exp(u * math.log(K + 1))
    else:
        x = (1 + u * ((K + 1) ** (1 - a) - 1)) ** (1 / (1 - a))
    return np.minimum(np.floor(x).astype(np.int64) - 1, K - 1)


def prototypes(labels: np.ndarray, spec: SyntheticSpec) -> np.ndarray:
    """Feature ids owned by each label: [n, features_per_label] int64."""
    keys = labels.astype(np.int32)
    cols = [
        murmurhash3_32(keys, seed=PROTOTYPE_SEED + j, positive=True)
        for j in range(spec.features_per_label)
    ]
    return np.stack(cols, axis=1).astype(np.int64) % spec.n_features


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--K", type=float, required=True, help="labels (1e6 is fine)")
    parser.add_argument("--D", type=float, default=20_000, help="features")
    parser.add_argument("--train-rows", type=int, default=100_000)
    parser.add_argument("--test-rows", type=int, default=10_000)
    parser.add_argument(
        "--out", type=Path, required=True, help="directory for train.txt, test.txt, spec.json"
    )
    parser.add_argument("--multiclass", action="store_true", help="exactly one label per row")
    parser.add_argument("--labels-per-row", type=float, default=SyntheticSpec.labels_per_row)
    parser.add_argument("--features-per-label", type=int, default=SyntheticSpec.features_per_label)
    parser.add_argument("--noise-features", type=int, default=SyntheticSpec.noise_features)
    parser.add_argument("--zipf-a", type=float, default=SyntheticSpec.zipf_a)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    spec = SyntheticSpec(
        n_classes=int(args.K),
        n_features=int(args.D),
        labels_per_row=args.labels_per_row,
        multiclass=args.multiclass,
        features_per_label=args.features_per_label,
        noise_features=args.noise_features,
        zipf_a=args.zipf_a,
        seed=args.seed,
    )
    try:
        info = write_dataset(spec, args.out, args.train_rows, args.test_rows)
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
