"""The R trained networks' forward pass for prediction, without TensorFlow (mach.serving.forward.Networks).

The compiled kernel (src/util/forward_kernel.h) takes a row through each network as a sum of weight
rows: those of its features in the first layer, those of the units the ReLU left positive in every
later one. It reads only those rows, where a matmul reads every weight, so a single row costs a
fraction of reading the whole model (docs/serving.md has the figures). Every (repetition, row) is
computed on its own, so a row's logits do not depend on its batch; the price is that a large batch
reads the weights once per row, where a matmul reads them once per batch (Networks.logits_matmul).

forward_numpy is the spec: the kernel gives the same bits. Against TensorFlow (evaluate.py) the
logits agree to float32 rounding, as the two add the same products in another order.

precision "bfloat16" stores the weights as bfloat16 (float32 rounded to 8 significant bits): half the
bytes to read, so a row no longer depends on most of the weights staying in the cache, at the cost of
logits that differ from float32's by about 0.4% of each product (docs/serving.md gives P@k for both).
"""

from __future__ import annotations

import numpy as np

from mach.merge import load_kernel


def normalised_values(values: np.ndarray, row_splits: np.ndarray, normalize: str) -> np.ndarray:
    """values [nnz] float32 scaled per row as mach.data.rows_to_model_input scales them."""
    values = values.astype(np.float32, copy=False)
    if normalize == "none":
        return values
    rows = np.repeat(np.arange(len(row_splits) - 1), np.diff(row_splits))
    scale = np.zeros(len(row_splits) - 1, dtype=np.float32)
    if normalize == "max":
        np.maximum.at(scale, rows, np.abs(values))
    elif normalize == "l2":
        np.add.at(scale, rows, values * values)
        scale = np.sqrt(scale)
    else:
        raise ValueError(f"normalize={normalize!r}: expected 'l2', 'max' or 'none'")
    return values / np.maximum(scale[rows], np.float32(1e-12))


PRECISIONS = ("float32", "bfloat16")


def to_bfloat16(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits (uint16), rounded to nearest, ties to even (finite values)."""
    out = np.empty(np.shape(x), dtype=np.uint16)
    flat_in = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    flat_out = out.reshape(-1)
    step = 1 << 24  # in pieces: the temporaries stay small for multi-GB layers
    for i in range(0, flat_in.size, step):
        bits = flat_in[i : i + step].view(np.uint32)
        # No overflow: the largest finite float32 pattern, 0xFF7FFFFF, plus 0x8000 fits in 32 bits.
        flat_out[i : i + step] = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return out


def from_bfloat16(x: np.ndarray) -> np.ndarray:
    """bfloat16 bits (uint16) -> float32, exactly."""
    return (x.astype(np.uint32) << 16).view(np.float32)


def forward_numpy(weights, biases, row_splits, slots, values) -> np.ndarray:
    """The kernel's spec, one (repetition, row) at a time: logits [batch, R, B] float32.

    weights[l] [R, fan_in, fan_out] float32 (or bfloat16 bits, widened first) and biases[l] [R, fan_out]
    float32; slots [R, nnz] int64 (each
    entry's first-layer row per repetition); values [nnz] float32; row_splits [batch + 1] int64.
    """
    weights = [from_bfloat16(w) if w.dtype == np.uint16 else w for w in weights]
    R, batch = weights[0].shape[0], len(row_splits) - 1
    out = np.empty((batch, R, weights[-1].shape[2]), dtype=np.float32)
    for r in range(R):
        for row in range(batch):
            entries = range(row_splits[row], row_splits[row + 1])
            h = np.zeros(weights[0].shape[2], dtype=np.float32)
            for e in entries:
                h = h + values[e] * weights[0][r, slots[r, e]]
            h = h + biases[0][r]
            for w, b in zip(weights[1:], biases[1:]):
                y = np.zeros(w.shape[2], dtype=np.float32)
                for i in np.flatnonzero(h > 0):
                    y = y + h[i] * w[r, i]
                h = y + b[r]
            out[row, r] = h
    return out


class Networks:
    """R trained networks as stacked NumPy weights, for prediction without TensorFlow.

    arrays: per repetition [w0, b0, w1, b1, ...] float32 (mach.weights); feature_to_slot: [R, D] int32
    lookups with feature hashing, else None; normalize: cfg.normalize; precision: the weights'
    storage for the compiled kernel, "float32" or "bfloat16" (biases and sums stay float32).

    Two forward passes: `logits` by the compiled kernel (rows read only the weights they use: the
    fastest for single rows and small batches, a row's logits independent of its batch) and
    `logits_matmul` by sparse x dense products and BLAS matmuls (the weights read once per batch:
    the faster for large batches). Both agree with TensorFlow's forward to float32 rounding.
    """

    def __init__(
        self,
        arrays: list[list[np.ndarray]],
        feature_to_slot: np.ndarray | None,
        normalize: str,
        precision: str = "float32",
    ):
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
        layers = range(len(arrays[0]) // 2)
        # [R, fan_in, fan_out] and [R, fan_out] float32 per layer.
        self.weights = [np.stack([a[2 * i] for a in arrays]) for i in layers]
        self.biases = [np.stack([a[2 * i + 1] for a in arrays]) for i in layers]
        self.kernel_weights = (
            [to_bfloat16(w) for w in self.weights] if precision == "bfloat16" else self.weights
        )
        self.feature_to_slot = (
            None if feature_to_slot is None else np.asarray(feature_to_slot, dtype=np.int64)
        )
        self.normalize = normalize
        self.R = len(arrays)
        self.input_dim = self.weights[0].shape[1]

    def inputs(self, indices: np.ndarray, values: np.ndarray, row_splits: np.ndarray):
        """(slots [R, nnz] int64, normalised values [nnz] float32) of raw rows."""
        indices = np.asarray(indices, dtype=np.int64)
        if self.feature_to_slot is None:
            slots = np.ascontiguousarray(np.broadcast_to(indices, (self.R, len(indices))))
        else:
            slots = np.ascontiguousarray(self.feature_to_slot[:, indices])
        return slots, normalised_values(np.asarray(values), row_splits, self.normalize)

    def logits(self, indices, values, row_splits, threads: int = 0) -> np.ndarray:
        """[batch, R, B] float32 logits of raw rows (indices [nnz], values [nnz], row_splits), by the
        compiled kernel."""
        row_splits = np.asarray(row_splits, dtype=np.int64)
        slots, values = self.inputs(indices, values, row_splits)
        kernel = load_kernel("forward_rows")
        return kernel(self.kernel_weights, self.biases, row_splits, slots, values, threads)

    def logits_matmul(self, indices, values, row_splits) -> np.ndarray:
        """[batch, R, B] float32 logits of raw rows by matrix products (float32 weights)."""
        from scipy.sparse import csr_matrix

        row_splits = np.asarray(row_splits, dtype=np.int64)
        batch = len(row_splits) - 1
        slots, values = self.inputs(indices, values, row_splits)
        out = np.empty((batch, self.R, self.weights[-1].shape[2]), dtype=np.float32)
        for r in range(self.R):
            # Duplicate slots (feature hashing) add up, as in training's sparse matmul.
            x = csr_matrix((values, slots[r], row_splits), shape=(batch, self.input_dim))
            h = np.asarray(x @ self.weights[0][r], dtype=np.float32) + self.biases[0][r]
            for w, b in zip(self.weights[1:], self.biases[1:]):
                h = np.maximum(h, 0.0) @ w[r] + b[r]
            out[:, r] = h
        return out
