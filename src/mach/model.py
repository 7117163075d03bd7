"""One MACH repetition: sparse input -> ReLU hidden layers -> B bucket logits, and its two losses."""

from __future__ import annotations

import math

import tensorflow as tf


def repetition_seed(seed: int, r: int, *salt: int) -> int:
    """A 31-bit seed for (run seed, repetition, salt...), the same whichever process trains r."""
    value = seed
    for part in (r, *salt):
        value = (value * 1_000_003 + part + 1) % (2**31 - 1)
    return value


# sparse_first_layer="auto" turns lazy Adam on above this input width (bench/efficiency.py).
SPARSE_FIRST_LAYER_MIN = 50_000
# First layers wider than this read only the rows of the batch's features, narrower ones all of w.
GATHER_INPUT_MIN = 4096


def use_sparse_first_layer(setting: str, input_dim: int) -> bool:
    """Config.sparse_first_layer ("on", "off", "auto") for an input layer of width input_dim."""
    if setting not in ("on", "off", "auto"):
        raise ValueError(f"sparse_first_layer={setting!r}: expected 'on', 'off' or 'auto'")
    return setting == "on" or (setting == "auto" and input_dim > SPARSE_FIRST_LAYER_MIN)


# The official code: tf.truncated_normal(stddev=0.05) for weights and biases; the precursor: 0.01, zero biases.
OFFICIAL_INIT_STDDEV = 0.05
PRECURSOR_INIT_STDDEV = 0.01


def initial_values(fan_in: int, fan_out: int, seed: list[int], recipe: str):
    """Weights [fan_in, fan_out] and biases [fan_out] of one layer, a function of the seed alone.

    improved: Glorot uniform weights, zero biases; official: truncated normal (stddev 0.05) for both;
    precursor: truncated normal (stddev 0.01) weights, zero biases.
    """
    if recipe in ("official", "precursor"):
        stddev = OFFICIAL_INIT_STDDEV if recipe == "official" else PRECURSOR_INIT_STDDEV
        w = tf.random.stateless_truncated_normal([fan_in, fan_out], seed=seed, stddev=stddev)
        b = (
            tf.random.stateless_truncated_normal(
                [fan_out], seed=[seed[0], seed[1] + 1000], stddev=stddev
            )
            if recipe == "official"
            else tf.zeros([fan_out])
        )
        return w, b
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    w = tf.random.stateless_uniform([fan_in, fan_out], seed=seed, minval=-limit, maxval=limit)
    return w, tf.zeros([fan_out])


def _csr(indices: tf.Tensor, values: tf.Tensor, dense_shape: tf.Tensor) -> tf.Tensor:
    return tf.raw_ops.SparseTensorToCSRSparseMatrix(
        indices=indices, values=values, dense_shape=dense_shape
    )


def _csr_product(matrix: tf.Tensor, dense: tf.Tensor) -> tf.Tensor:
    """CSR matrix [n, k] @ dense [k, H], differentiable with respect to dense."""

    @tf.custom_gradient
    def product(dense):
        def grad(dy):  # dy [n, H] -> [k, H]
            transposed = tf.raw_ops.SparseMatrixTranspose(input=matrix, type=tf.float32)
            return tf.raw_ops.SparseMatrixMatMul(a=transposed, b=dy)

        return tf.raw_ops.SparseMatrixMatMul(a=matrix, b=dense), grad

    return product(dense)


def csr_input(inputs: tf.SparseTensor, gather: bool) -> tuple:
    """inputs [batch, D] as a CSR matrix for first_layer_product: (matrix, None), or with gather
    (matrix over the batch's distinct features, those features [n_distinct] int64).

    inputs' entries must come row by row (as tf.io.parse_example and rows_to_model_input give them);
    within a row any order, and duplicates add up. One conversion serves every network that reads
    the same inputs (evaluation without feature hashing).
    """
    rows, features = inputs.indices[:, 0], inputs.indices[:, 1]
    # The CSR conversion takes rows in order without checking; out of order they would give wrong sums.
    check = tf.debugging.assert_greater_equal(
        rows[1:], rows[:-1], message="sparse inputs must come row by row (tf.sparse.reorder them)"
    )
    with tf.control_dependencies([check]):
        if not gather:
            return _csr(inputs.indices, inputs.values, inputs.dense_shape), None
        distinct, position = tf.unique(features, out_idx=tf.int64)
        compact = _csr(
            tf.stack([rows, position], axis=1),
            inputs.values,
            tf.stack([inputs.dense_shape[0], tf.size(distinct, out_type=tf.int64)]),
        )
        return compact, distinct


def first_layer_product(prepared: tuple, w, differentiable: bool = True) -> tf.Tensor:
    """csr_input(...) @ w [D, H] -> [batch, H] float32. Without gather both read all of w (CSR
    kernels: on CPU ~3x faster than a densified matmul at Delicious' shape, bench/efficiency.py); with
    gather only the rows of the batch's features, so forward and backward cost O(non-zeros x H)
    whatever D, and w's gradient is a tf.IndexedSlices holding each of those rows once.
    differentiable=False: the same product without the gradient's machinery (inference)."""
    matrix, distinct = prepared
    dense = tf.convert_to_tensor(w) if distinct is None else tf.gather(w, distinct)
    # Weights stored as bfloat16 (a serving export) are widened after the gather: only those rows.
    dense = dense if dense.dtype == tf.float32 else tf.cast(dense, tf.float32)
    if not differentiable:
        return tf.raw_ops.SparseMatrixMatMul(a=matrix, b=dense)
    return _csr_product(matrix, dense)


def sparse_matmul(inputs: tf.SparseTensor, w: tf.Variable, gather: bool) -> tf.Tensor:
    """inputs [batch, D] @ w [D, H] -> [batch, H] float32 (csr_input, then first_layer_product)."""
    return first_layer_product(csr_input(inputs, gather), w)


class MachNet(tf.Module):
    """Feed-forward net of one repetition.  Initialisation depends only on (seed, r).

    sparse_first_layer: the first layer's gradient is a tf.IndexedSlices over the rows of the batch's
    features (for Adam(lazy=True)) at any width; it always is above GATHER_INPUT_MIN inputs.  The
    logits are the same either way.
    storage: the weights' dtype, float32, or bfloat16 for serving (half the bytes: float32 rounded to
    8 significant bits, to nearest even); they are widened to float32 where used, and the biases and
    all arithmetic stay float32.
    """

    def __init__(
        self,
        input_dim: int,
        hidden: tuple[int, ...],
        B: int,
        dropout: float,
        seed: int,
        r: int,
        recipe: str = "improved",
        sparse_first_layer: bool = False,
        trained: list | None = None,
        storage: tf.DType = tf.float32,
    ):
        """trained: [w0, b0, w1, b1, ...] arrays of a trained network (mach.weights) to start from,
        instead of the initialisation."""
        super().__init__(name=f"mach_r{r:02d}")
        self.sparse_first_layer = sparse_first_layer
        self.dropout, self.dropout_seed = dropout, repetition_seed(seed, r, 7)
        sizes = [input_dim, *hidden, B]
        if trained is not None and [tuple(a.shape) for a in trained[::2]] != list(
            zip(sizes[:-1], sizes[1:])
        ):
            raise ValueError(
                f"trained weights of shapes {[tuple(a.shape) for a in trained[::2]]} do not fit a "
                f"network of sizes {sizes}"
            )
        self.weights_, self.biases = [], []
        for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            if trained is not None:
                w, b = trained[2 * layer], trained[2 * layer + 1]
            else:
                w, b = initial_values(fan_in, fan_out, [repetition_seed(seed, r), layer], recipe)
            w = tf.cast(w, storage)
            self.weights_.append(tf.Variable(w, name=f"w{layer}"))  # [fan_in, fan_out] storage
            self.biases.append(tf.Variable(b, name=f"b{layer}"))  # [fan_out] float32

    def __call__(self, inputs: tf.SparseTensor, step: tf.Tensor | None = None) -> tf.Tensor:
        """Sparse [batch, input_dim] -> logits [batch, B].  A step turns on dropout (seeded by it)."""
        x = self.first_layer(inputs)
        for layer in range(1, len(self.weights_)):
            x = tf.nn.relu(x)
            if step is not None and self.dropout > 0:
                # Stateless dropout: a resumed run draws the same masks as an uninterrupted one.
                seed = tf.stack(
                    [tf.constant(self.dropout_seed + layer, tf.int64), tf.cast(step, tf.int64)]
                )
                x = tf.nn.experimental.stateless_dropout(x, self.dropout, seed=seed)
            x = tf.matmul(x, self.weight(layer)) + self.biases[layer]
        return x

    def weight(self, layer: int):
        """Layer's weights as float32 (the variable itself unless stored as bfloat16)."""
        w = self.weights_[layer]
        return w if w.dtype == tf.float32 else tf.cast(w, tf.float32)

    def gathers(self) -> bool:
        """Whether the first layer reads only the rows of the batch's features."""
        return self.sparse_first_layer or self.weights_[0].shape[0] > GATHER_INPUT_MIN

    def first_layer(self, inputs: tf.SparseTensor) -> tf.Tensor:
        """Sparse [batch, input_dim] -> [batch, hidden[0]] (or B) float32, before the ReLU."""
        return sparse_matmul(inputs, self.weights_[0], self.gathers()) + self.biases[0]

    def infer(self, prepared: tuple) -> tf.Tensor:
        """Logits [batch, B] of csr_input(inputs, self.gathers()), for inference: the same values as
        self(inputs), without dropout or the gradient's machinery."""
        x = first_layer_product(prepared, self.weights_[0], differentiable=False) + self.biases[0]
        for layer in range(1, len(self.weights_)):
            x = tf.matmul(tf.nn.relu(x), self.weight(layer)) + self.biases[layer]
        return x

    def n_params(self) -> int:
        return int(sum(v.shape.num_elements() for v in self.trainable_variables))

    def arrays(self) -> list:
        """[w0, b0, w1, b1, ...] as NumPy float32 arrays (what mach.weights saves)."""
        return [v.numpy() for layer, b in enumerate(self.biases) for v in (self.weight(layer), b)]


def bucket_loss(
    logits: tf.Tensor, targets: tf.Tensor, loss: str, recipe: str = "improved"
) -> tf.Tensor:
    """Mean loss over rows with at least one label.  targets: bucket multi-hot [batch, B], 0/1.

    softmax: cross-entropy against the multi-hot normalised to sum 1 (the paper).
    bce: sigmoid cross-entropy, summed over buckets; the official recipe averages it over buckets
    too (tf.reduce_mean over batch x B, as the official code does), i.e. the same loss divided by B.
    Rows without labels stay in the batch with weight 0.
    """
    n_pos = tf.reduce_sum(targets, axis=1)  # [batch]
    weight = tf.cast(n_pos > 0, tf.float32)
    if loss == "softmax":
        per_row = tf.nn.softmax_cross_entropy_with_logits(
            labels=targets / tf.maximum(n_pos, 1.0)[:, None], logits=logits
        )
    elif loss == "bce":
        reduce = tf.reduce_mean if recipe == "official" else tf.reduce_sum
        per_row = reduce(
            tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits), axis=1
        )
    else:
        raise ValueError(f"loss={loss!r}: expected 'softmax' or 'bce'")
    return tf.reduce_sum(per_row * weight) / tf.maximum(tf.reduce_sum(weight), 1.0)


class _RowScratch:
    """Rows of a variable and of its two moments, gathered for a lazy update ([None, width] float32).

    A plain object rather than a tf.Module, so checkpoints hold exactly what dense Adam's hold.
    """

    def __init__(self, width: int):
        self.var, self.m, self.v = (
            tf.Variable(tf.zeros([0, width]), shape=[None, width], trainable=False)
            for _ in range(3)
        )


class Adam(tf.Module):
    """Adam (Kingma & Ba 2015) over one repetition's variables; its state lives in tf.Variables so that
    tf.train.Checkpoint saves and restores it with the model.

    lazy: a sparse gradient (tf.IndexedSlices, as MachNet's wide or sparse first layer gives) gets the
    update of TF1's LazyAdamOptimizer: only the rows it names change, in the weights and in both
    moments; without lazy it is made dense and applied as any other gradient.  Dense Adam (lazy off)
    also decays m and v of every other row and moves those rows by lr_t * m / (sqrt(v) + epsilon)
    while their moments are non-zero.  The two agree when every row is in every gradient; otherwise a
    row that is absent from a step keeps its weights and moments, and is bias-corrected with the global
    step when it next appears.
    """

    def __init__(
        self,
        variables: list[tf.Variable],
        lr: float,
        beta1=0.9,
        beta2=0.999,
        epsilon=1e-7,
        lazy: bool = False,
    ):
        super().__init__(name="adam")
        self.lr, self.beta1, self.beta2, self.epsilon = lr, beta1, beta2, epsilon
        self.lazy = lazy
        self.iterations = tf.Variable(0, dtype=tf.int64, name="iterations")
        self.m = [tf.Variable(tf.zeros_like(v), name="m") for v in variables]
        self.v = [tf.Variable(tf.zeros_like(v), name="v") for v in variables]
        # Empty until a sparse gradient comes; made here so no tf.function creates variables.
        self._scratch = [
            _RowScratch(v.shape[1]) if lazy and v.shape.rank == 2 else None for v in variables
        ]

    def apply(self, grads: list[tf.Tensor], variables: list[tf.Variable]) -> None:
        self.iterations.assign_add(1)
        t = tf.cast(self.iterations, tf.float32)
        for i, (g, var, m, v) in enumerate(zip(grads, variables, self.m, self.v)):
            rows = None
            if isinstance(g, tf.IndexedSlices) and not self.lazy:
                # [D, H]: zeros where the batch has no feature (tf.convert_to_tensor would do the
                # same, with a warning about the size).
                g = tf.scatter_nd(g.indices[:, None], g.values, tf.shape(var, out_type=tf.int64))
            if isinstance(g, tf.IndexedSlices):
                # Lazy: the fused kernel updates gathered copies of the rows, which go back in place.
                rows, g, scratch = g.indices, g.values, self._scratch[i]
                for full, part in ((var, scratch.var), (m, scratch.m), (v, scratch.v)):
                    part.assign(tf.gather(full, rows))
                var, m, v = scratch.var, scratch.m, scratch.v
            # The fused kernel does the whole update in one op (the plain formula costs ~8 ops per variable).
            tf.raw_ops.ResourceApplyAdam(
                var=var.handle,
                m=m.handle,
                v=v.handle,
                beta1_power=self.beta1**t,
                beta2_power=self.beta2**t,
                lr=tf.constant(self.lr, tf.float32),
                beta1=tf.constant(self.beta1, tf.float32),
                beta2=tf.constant(self.beta2, tf.float32),
                epsilon=tf.constant(self.epsilon, tf.float32),
                grad=g,
            )
            if rows is not None:
                # The rows are distinct (MachNet's gradient holds each feature once), so no write is lost.
                for full, part in ((variables[i], var), (self.m[i], m), (self.v[i], v)):
                    full.scatter_update(tf.IndexedSlices(part.read_value(), rows))
