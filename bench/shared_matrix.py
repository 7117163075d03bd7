"""The one feature matrix every method in bench/compare.py reads: rows scaled to unit length, written once.

Each split is written twice with the same float32 values: `<split>.npz` (CSR arrays, for methods that take
matrices) and `<split>.txt` (the Extreme Classification Repository text format, for MACH's preprocess.py and
omikuji, which read files). Values are printed with 9 significant digits, which round-trips float32 exactly,
so both files hold bit-identical features.

Needs only NumPy and SciPy: it is imported by compare.py (project venv) and by peers_runner.py (peers venv).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp


def normalize_rows(X: sp.csr_matrix) -> sp.csr_matrix:
    """Rows scaled to unit L2 length (all-zero rows stay zero); float32 CSR with sorted indices."""
    X = sp.csr_matrix(X, dtype=np.float32, copy=True)
    X.sum_duplicates()
    X.sort_indices()
    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1), dtype=np.float64).ravel())  # [n] float64
    scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    X.data = (X.data * np.repeat(scale, np.diff(X.indptr))).astype(np.float32)
    return X


def labels_to_csr(label_lists: list[np.ndarray], n_classes: int) -> sp.csr_matrix:
    """Per-row label ids -> [n, K] float32 0/1 CSR (the label matrix PECOS and scipy users expect)."""
    indptr = np.concatenate([[0], np.cumsum([len(y) for y in label_lists])]).astype(np.int64)
    indices = (
        np.concatenate([np.asarray(y, dtype=np.int64) for y in label_lists])
        if indptr[-1]
        else np.zeros(0, np.int64)
    )
    Y = sp.csr_matrix(
        (np.ones(indices.size, np.float32), indices, indptr), shape=(len(label_lists), n_classes)
    )
    Y.sum_duplicates()
    return Y


def write_split(out_dir: Path, name: str, X: sp.csr_matrix, Y: sp.csr_matrix) -> dict[str, Path]:
    """Write one split as <name>.npz and <name>.txt; X must already be normalised.  Returns both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    assert X.shape[0] == Y.shape[0], "features and labels must describe the same rows"
    npz = out_dir / f"{name}.npz"
    np.savez(
        npz,
        X_data=X.data,
        X_indices=X.indices,
        X_indptr=X.indptr,
        Y_indices=Y.indices,
        Y_indptr=Y.indptr,
        shape=np.array([X.shape[0], X.shape[1], Y.shape[1]], dtype=np.int64),
    )
    txt = out_dir / f"{name}.txt"
    with open(txt, "w") as f:
        f.write(f"{X.shape[0]} {X.shape[1]} {Y.shape[1]}\n")
        for i in range(X.shape[0]):
            labels = ",".join(map(str, Y.indices[Y.indptr[i] : Y.indptr[i + 1]]))
            feats = " ".join(
                f"{j}:{v:.9g}"
                for j, v in zip(
                    X.indices[X.indptr[i] : X.indptr[i + 1]],
                    X.data[X.indptr[i] : X.indptr[i + 1]].tolist(),
                )
            )
            # The repository marks a row without labels by a leading space.
            f.write(f"{labels} {feats}".rstrip() + "\n" if labels else f" {feats}\n")
    return {"npz": npz, "txt": txt}


def load_split(npz: Path) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """(X [n, D] float32 CSR, Y [n, K] float32 0/1 CSR) from a file written by write_split."""
    with np.load(npz) as z:
        n, D, K = (int(v) for v in z["shape"])
        X = sp.csr_matrix((z["X_data"], z["X_indices"], z["X_indptr"]), shape=(n, D))
        Y = sp.csr_matrix(
            (np.ones(z["Y_indices"].size, np.float32), z["Y_indices"], z["Y_indptr"]), shape=(n, K)
        )
    return X, Y


def label_lists(Y: sp.csr_matrix) -> list[np.ndarray]:
    """[n, K] CSR -> list of n int64 arrays of label ids, the form mach.metrics takes."""
    return np.split(Y.indices.astype(np.int64), Y.indptr[1:-1])
