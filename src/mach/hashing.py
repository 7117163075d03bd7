"""Label -> bucket and feature -> slot lookups: murmurhash3_32 with seed r, as the official MACH code.

The official code computes `murmurhash3_32(label, seed=r) % B` one Python int at a time, with scikit-learn's
signed output and Python's floor modulo. NumPy's `%` is also a floor modulo, so hashing the whole int32
range at once gives the same buckets, vectorised (K can be 50 million).
"""

import numpy as np

# Hash in chunks so that K = 5e7 needs a few hundred MB of temporaries, not several GB.
_CHUNK = 1 << 22


def hash_range(n: int, seed: int, modulus: int) -> np.ndarray:
    """murmurhash3_32(i, seed) % modulus for i in 0..n-1.  Returns [n] int32."""
    if n > np.iinfo(np.int32).max:
        raise ValueError(
            f"cannot hash {n} ids: murmurhash3_32 keys are int32 (at most 2^31 - 1 ids)"
        )
    # Imported here: predicting from saved lookups needs no hashing, and scikit-learn is slow to load.
    from sklearn.utils import murmurhash3_32

    out = np.empty(n, dtype=np.int32)
    for start in range(0, n, _CHUNK):
        keys = np.arange(start, min(start + _CHUNK, n), dtype=np.int32)
        out[start : start + len(keys)] = np.mod(murmurhash3_32(keys, seed=seed), modulus)
    return out


def build_label_lookup(n_classes: int, B: int, seed: int) -> np.ndarray:
    """label_to_bucket [K] int32 for one repetition."""
    return hash_range(n_classes, seed, B)


def build_feature_lookup(n_features: int, feat_hash_dim: int, seed: int) -> np.ndarray:
    """feature_to_slot [D] int32 for one repetition."""
    return hash_range(n_features, seed, feat_hash_dim)


def invert_lookup(label_to_bucket: np.ndarray, B: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR inverse of a label lookup: the labels of bucket b are bucket_labels[offsets[b]:offsets[b+1]].

    Returns bucket_offsets [B+1] int64 and bucket_labels [K] int64, ascending label within a bucket
    (a stable sort of the buckets keeps the label order).
    """
    bucket_labels = np.argsort(label_to_bucket, kind="stable").astype(np.int64)
    counts = np.bincount(label_to_bucket, minlength=B)
    bucket_offsets = np.zeros(B + 1, dtype=np.int64)
    np.cumsum(counts, out=bucket_offsets[1:])
    return bucket_offsets, bucket_labels
