"""Data as arrays, for the Python API: scipy CSR features and label indicators (or label lists).

read_xc and read_dataset read the repository's text formats into arrays with the same readers as
preprocess.py, so a row goes into the TFRecords the same way from a file and from its arrays.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from mach.data.formats import MAX_SIZE, iter_rows, read_header, read_split, resolve_sizes


def rows_to_arrays(rows, n_features: int, n_classes: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """(X [n, D] float32 CSR, Y [n, K] float32 indicator CSR) of parsed rows, features in file order."""
    feat_idx, feat_val, labels, x_ptr, y_ptr = [], [], [], [0], [0]
    for row in rows:
        feat_idx.append(row.feat_idx)
        feat_val.append(row.feat_val)
        labels.append(row.labels)
        x_ptr.append(x_ptr[-1] + len(row.feat_idx))
        y_ptr.append(y_ptr[-1] + len(row.labels))
    n = len(x_ptr) - 1

    def joined(parts, dtype):
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

    X = sp.csr_matrix(
        (joined(feat_val, np.float32), joined(feat_idx, np.int64), np.asarray(x_ptr)),
        shape=(n, n_features),
    )
    y_idx = joined(labels, np.int64)
    Y = sp.csr_matrix(
        (np.ones(len(y_idx), np.float32), y_idx, np.asarray(y_ptr)), shape=(n, n_classes)
    )
    return X, Y


def read_xc(
    path, n_features: int | None = None, n_classes: int | None = None, fmt: str = "xc", bases=None
):
    """(X, Y) of one text file (xc, libsvm or vw; .gz is fine): CSR features [n, D] float32 and a
    label indicator [n, K]. D and K come from the arguments, else the xc header; bases: the first
    label and feature ids of the file (default: the format's)."""
    path = Path(path)
    header = read_header(path, fmt)
    if fmt != "xc" and None in (n_features, n_classes):
        n_features = n_features or MAX_SIZE
        n_classes = n_classes or MAX_SIZE
        rows = list(iter_rows(path, n_features, n_classes, fmt, bases))
        n_features = max((int(r.feat_idx.max()) + 1 for r in rows if r.feat_idx.size), default=1)
        n_classes = max((int(r.labels.max()) + 1 for r in rows if r.labels.size), default=1)
        return rows_to_arrays(rows, n_features, n_classes)
    n_features, n_classes = resolve_sizes(path, header, n_features, n_classes)
    rows = iter_rows(path, n_features, n_classes, fmt, bases)
    return rows_to_arrays(rows, n_features, n_classes)


def read_dataset(cfg) -> tuple[tuple, tuple]:
    """((X_train, Y_train), (X_test, Y_test)) of a config's data files: the train and test files, or
    the data file cut by its split files (the config's split column)."""
    if cfg.data_file is None:
        bases = cfg.id_bases()
        train = read_xc(
            cfg.resolve(cfg.train_file), cfg.n_features, cfg.n_classes, cfg.format, bases
        )
        D, K = train[0].shape[1], train[1].shape[1]
        return train, read_xc(cfg.resolve(cfg.test_file), D, K, cfg.format, bases)
    X, Y = read_xc(
        cfg.resolve(cfg.data_file), cfg.n_features, cfg.n_classes, cfg.format, cfg.id_bases()
    )
    parts = []
    for name in ["train_split_file", "test_split_file"]:
        # Rows in file order, as preprocess.py writes them (the order shapes the shuffling).
        ids = np.sort(read_split(cfg.resolve(getattr(cfg, name)), cfg.split, X.shape[0]))
        parts.append((X[ids], Y[ids]))
    return parts[0], parts[1]


def label_lists(Y, n_rows: int, n_classes: int | None) -> tuple[list[np.ndarray], int]:
    """Y as one int64 array of label ids per row, and K; Y is a sparse or dense [n, K] indicator or a
    list of label-id lists. Errors name what was wrong."""
    if sp.issparse(Y) or isinstance(Y, np.ndarray):
        if Y.ndim != 2 or Y.shape[0] != n_rows:
            raise ValueError(f"Y has shape {Y.shape}; expected [n_rows={n_rows}, K] (an indicator)")
        if n_classes is not None and Y.shape[1] != n_classes:
            raise ValueError(f"Y has {Y.shape[1]} columns; expected K={n_classes} labels")
        Y = sp.csr_matrix(Y)
        Y.sum_duplicates()
        lists = [Y.indices[Y.indptr[i] : Y.indptr[i + 1]].astype(np.int64) for i in range(n_rows)]
        return lists, Y.shape[1]
    try:
        lists = [np.asarray(labels, dtype=np.int64).reshape(-1) for labels in Y]
    except (TypeError, ValueError):
        raise ValueError(
            "Y must be a [n, K] label indicator (scipy sparse or NumPy) or a list of label-id lists"
        ) from None
    if len(lists) != n_rows:
        raise ValueError(f"Y has {len(lists)} rows of labels; X has {n_rows} rows")
    found = max((int(labels.max()) + 1 for labels in lists if labels.size), default=1)
    low = min((int(labels.min()) for labels in lists if labels.size), default=0)
    K = found if n_classes is None else n_classes
    if low < 0 or found > K:
        bad = low if low < 0 else found - 1
        raise ValueError(f"label id {bad} in Y is out of range; expected 0 <= label < K={K}")
    return lists, K


def check_features(X, n_features: int | None) -> sp.csr_matrix:
    """X as a float32 CSR matrix [n, D], or a ValueError saying what is wrong with it."""
    if not (sp.issparse(X) or isinstance(X, np.ndarray)) or X.ndim != 2:
        raise ValueError(
            f"X must be a 2-D [n_rows, D] matrix (scipy sparse CSR or NumPy), got {type(X).__name__}"
        )
    numeric = np.issubdtype(X.dtype, np.number) or X.dtype == np.bool_
    if not numeric or np.issubdtype(X.dtype, np.complexfloating):
        raise ValueError(f"X has dtype {X.dtype}; expected real numbers (float32)")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(
            f"X has {X.shape[1]} columns; the model's input has D={n_features} features"
        )
    X = sp.csr_matrix(X, dtype=np.float32)
    if not np.all(np.isfinite(X.data)):
        raise ValueError("X holds NaN or infinite values; expected finite feature values")
    return X


def fingerprint(X: sp.csr_matrix, labels: list[np.ndarray]) -> str:
    """sha256 of the rows' features and labels (what the TFRecords are written from)."""
    digest = hashlib.sha256()
    for part in (
        X.indptr.astype(np.int64),
        X.indices.astype(np.int64),
        X.data,
        np.asarray(X.shape),
    ):
        digest.update(np.ascontiguousarray(part).tobytes())
    lengths = np.asarray([len(labels_of_row) for labels_of_row in labels], np.int64)
    digest.update(lengths.tobytes())
    digest.update(np.concatenate([*labels, np.zeros(0, np.int64)]).tobytes())
    return digest.hexdigest()
