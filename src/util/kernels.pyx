# cython: language_level=3, boundscheck=False, wraparound=False
"""Python entry to the compiled kernels: the merge (merge_kernel.h), the candidate merge
(candidate_kernel.h) and the forward pass (forward_kernel.h). Each checks shapes, dtypes and
contiguity, then makes one nogil call."""

import numpy as np

cimport numpy as cnp
from libc.stdint cimport int32_t, int64_t, uint16_t
from libcpp.vector cimport vector

cnp.import_array()


cdef extern from "merge_kernel.h" namespace "mach" nogil:
    void merge_topk_kernel[Index](const float* logits, int64_t batch, int64_t R, int64_t B,
                                  const Index* label_to_bucket, int64_t K, int64_t k, int threads,
                                  int64_t* out_labels, float* out_scores) except +


def _check_array(name, arr, ndim, dtypes, shape_doc):
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray {shape_doc}, got {type(arr).__name__}")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D {shape_doc}, got shape {arr.shape}")
    if arr.dtype not in dtypes:
        wanted = " or ".join(str(np.dtype(d)) for d in dtypes)
        raise TypeError(f"{name} must have dtype {wanted}, got {arr.dtype}; convert with .astype()")
    if not arr.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous; pass np.ascontiguousarray({name})")


def gather_batch(logits, label_to_bucket, k, threads=0, check_buckets=False):
    """Top-k classes of each row under the MACH merge; see mach.merge.merge_topk_numpy for the spec.

    Args:
        logits: [batch, R, B] float32, C-contiguous.
        label_to_bucket: [R, K] int32 or int64, C-contiguous, values in [0, B). Values outside that
            range read out of bounds; they are checked only when check_buckets is True (one pass).
        k: classes to return per row, 1 <= k <= K.
        threads: OpenMP threads; 0 = the OpenMP default (all cores unless OMP_NUM_THREADS is set).

    Returns:
        labels [batch, k] int64 and scores [batch, k] float32, best first, ties by lower label.
    """
    _check_array("logits", logits, 3, (np.float32,), "[batch, R, B]")
    _check_array("label_to_bucket", label_to_bucket, 2, (np.int32, np.int64), "[R, K]")
    cdef int64_t batch = logits.shape[0]
    cdef int64_t R = logits.shape[1]
    cdef int64_t B = logits.shape[2]
    cdef int64_t K = label_to_bucket.shape[1]
    if label_to_bucket.shape[0] != R:
        raise ValueError(f"label_to_bucket has {label_to_bucket.shape[0]} repetitions but logits "
                         f"has R={R} (shapes {label_to_bucket.shape} and {logits.shape})")
    if R < 1 or B < 1:
        raise ValueError(f"logits needs R >= 1 and B >= 1, got shape {logits.shape}")
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= K:
        raise ValueError(f"k must be an integer in 1..K={K}, got {k!r}")
    if not isinstance(threads, (int, np.integer)) or threads < 0:
        raise ValueError(f"threads must be an integer >= 0 (0 = OpenMP default), got {threads!r}")
    if check_buckets and (label_to_bucket.min() < 0 or label_to_bucket.max() >= B):
        raise ValueError(f"label_to_bucket values must lie in [0, B={B}), found "
                         f"[{label_to_bucket.min()}, {label_to_bucket.max()}]")

    cdef int64_t kk = k
    cdef int n_threads = threads
    cdef cnp.ndarray labels = np.empty((batch, kk), dtype=np.int64)
    cdef cnp.ndarray scores = np.empty((batch, kk), dtype=np.float32)
    cdef const float* logits_ptr = <const float*>cnp.PyArray_DATA(logits)
    cdef void* lookup_ptr = cnp.PyArray_DATA(label_to_bucket)
    cdef int64_t* labels_ptr = <int64_t*>cnp.PyArray_DATA(labels)
    cdef float* scores_ptr = <float*>cnp.PyArray_DATA(scores)
    if label_to_bucket.dtype == np.int32:
        with nogil:
            merge_topk_kernel[int32_t](logits_ptr, batch, R, B, <const int32_t*>lookup_ptr, K, kk,
                                       n_threads, labels_ptr, scores_ptr)
    else:
        with nogil:
            merge_topk_kernel[int64_t](logits_ptr, batch, R, B, <const int64_t*>lookup_ptr, K, kk,
                                       n_threads, labels_ptr, scores_ptr)
    return labels, scores


cdef extern from "candidate_kernel.h" namespace "mach" nogil:
    void merge_candidates_kernel[Index](const float* logits, int64_t batch, int64_t R, int64_t B,
                                        const Index* label_to_bucket, int64_t K,
                                        const int64_t* bucket_offsets, const int64_t* bucket_labels,
                                        int64_t k, int64_t m, int64_t min_freq, int threads,
                                        int64_t* out_labels, float* out_scores) except +


def gather_candidates(logits, label_to_bucket, bucket_offsets, bucket_labels, k, m, min_freq=1,
                      threads=0):
    """Top-k classes of each row, scoring only the labels in each repetition's top-m buckets.

    See mach.merge.merge_candidates_numpy for the spec; with m = B it equals gather_batch.

    Args:
        logits: [batch, R, B] float32, C-contiguous.
        label_to_bucket: [R, K] int32 or int64, C-contiguous, values in [0, B).
        bucket_offsets: [R, B + 1] int64, C-contiguous: the CSR inverse's offsets per repetition.
        bucket_labels: [R, K] int64, C-contiguous: each repetition's labels grouped by bucket.
        k: classes to return per row, 1 <= k <= K.
        m: buckets taken per repetition, 1 <= m <= B.
        min_freq: repetitions a label must be found in, 1 <= min_freq <= R (relaxed until k remain).
        threads: OpenMP threads; 0 = the OpenMP default.
        The lookups must agree with each other (mach.merge.check_inverse_lookups checks, in one pass
        over [R, K]); inconsistent ones read out of bounds.

    Returns:
        labels [batch, k] int64 and scores [batch, k] float32, best first, ties by lower label.
    """
    _check_array("logits", logits, 3, (np.float32,), "[batch, R, B]")
    _check_array("label_to_bucket", label_to_bucket, 2, (np.int32, np.int64), "[R, K]")
    _check_array("bucket_offsets", bucket_offsets, 2, (np.int64,), "[R, B + 1]")
    _check_array("bucket_labels", bucket_labels, 2, (np.int64,), "[R, K]")
    cdef int64_t batch = logits.shape[0]
    cdef int64_t R = logits.shape[1]
    cdef int64_t B = logits.shape[2]
    cdef int64_t K = label_to_bucket.shape[1]
    if R < 1 or B < 1:
        raise ValueError(f"logits needs R >= 1 and B >= 1, got shape {logits.shape}")
    if label_to_bucket.shape[0] != R:
        raise ValueError(f"label_to_bucket has {label_to_bucket.shape[0]} repetitions but logits "
                         f"has R={R} (shapes {label_to_bucket.shape} and {logits.shape})")
    if bucket_offsets.shape != (R, B + 1):
        raise ValueError(f"bucket_offsets must be [R, B + 1] = ({R}, {B + 1}), got shape "
                         f"{bucket_offsets.shape}")
    if bucket_labels.shape != (R, K):
        raise ValueError(f"bucket_labels must be [R, K] = ({R}, {K}) like label_to_bucket, got "
                         f"shape {bucket_labels.shape}")
    if R > 255:
        raise ValueError(f"the candidate merge counts repetitions in one byte: R={R} > 255")
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= K:
        raise ValueError(f"k must be an integer in 1..K={K}, got {k!r}")
    if not isinstance(m, (int, np.integer)) or not 1 <= m <= B:
        raise ValueError(f"m (buckets per repetition) must be an integer in 1..B={B}, got {m!r}")
    if not isinstance(min_freq, (int, np.integer)) or not 1 <= min_freq <= R:
        raise ValueError(f"min_freq must be an integer in 1..R={R}, got {min_freq!r}")
    if not isinstance(threads, (int, np.integer)) or threads < 0:
        raise ValueError(f"threads must be an integer >= 0 (0 = OpenMP default), got {threads!r}")
    # The ends of each repetition's offsets are cheap to check and catch a wrong K or B.
    if K > 0 and (np.any(bucket_offsets[:, 0] != 0) or np.any(bucket_offsets[:, B] != K)
                  or np.any(np.diff(bucket_offsets, axis=1) < 0)):
        raise ValueError(f"bucket_offsets must rise from 0 to K={K} in every repetition; build "
                         f"them with mach.hashing.invert_lookup")

    cdef int64_t kk = k
    cdef int64_t mm = m
    cdef int64_t freq = min_freq
    cdef int n_threads = threads
    cdef cnp.ndarray labels = np.empty((batch, kk), dtype=np.int64)
    cdef cnp.ndarray scores = np.empty((batch, kk), dtype=np.float32)
    cdef const float* logits_ptr = <const float*>cnp.PyArray_DATA(logits)
    cdef void* lookup_ptr = cnp.PyArray_DATA(label_to_bucket)
    cdef const int64_t* offsets_ptr = <const int64_t*>cnp.PyArray_DATA(bucket_offsets)
    cdef const int64_t* bucket_labels_ptr = <const int64_t*>cnp.PyArray_DATA(bucket_labels)
    cdef int64_t* labels_ptr = <int64_t*>cnp.PyArray_DATA(labels)
    cdef float* scores_ptr = <float*>cnp.PyArray_DATA(scores)
    if label_to_bucket.dtype == np.int32:
        with nogil:
            merge_candidates_kernel[int32_t](logits_ptr, batch, R, B, <const int32_t*>lookup_ptr, K,
                                             offsets_ptr, bucket_labels_ptr, kk, mm, freq,
                                             n_threads, labels_ptr, scores_ptr)
    else:
        with nogil:
            merge_candidates_kernel[int64_t](logits_ptr, batch, R, B, <const int64_t*>lookup_ptr, K,
                                             offsets_ptr, bucket_labels_ptr, kk, mm, freq,
                                             n_threads, labels_ptr, scores_ptr)
    return labels, scores


cdef extern from "forward_kernel.h" namespace "mach" nogil:
    void forward_rows_kernel[Weight](int64_t batch, int64_t R, int64_t n_layers,
                             const int64_t* sizes, const Weight* const* weights,
                             const float* const* biases,
                             const int64_t* row_splits, const int64_t* slots, const float* values,
                             int64_t nnz, int threads, float* out) except +


def forward_rows(weights, biases, row_splits, slots, values, threads=0):
    """Logits [batch, R, B] float32 of sparse rows through R ReLU networks; see
    mach.serving.forward.forward_numpy for the spec (the same bits).

    Args:
        weights: per layer [R, fan_in, fan_out], C-contiguous, all float32 or all uint16 (bfloat16:
            a float32's high 16 bits); fan_in of layer l + 1 is fan_out of layer l.
        biases: per layer [R, fan_out] float32, C-contiguous.
        row_splits: [batch + 1] int64, non-decreasing from 0 to nnz.
        slots: [R, nnz] int64, C-contiguous: each entry's first-layer row per repetition, in
            [0, fan_in of layer 0).
        values: [nnz] float32.
        threads: OpenMP threads; 0 = the OpenMP default.
    """
    if not isinstance(weights, (list, tuple)) or not weights or len(weights) != len(biases):
        raise ValueError("weights and biases must be equally long, non-empty lists (one per layer)")
    _check_array("weights[0]", weights[0], 3, (np.float32, np.uint16), "[R, fan_in, fan_out]")
    for l, (w, b) in enumerate(zip(weights, biases)):
        _check_array(f"weights[{l}]", w, 3, (weights[0].dtype,), "[R, fan_in, fan_out]")
        _check_array(f"biases[{l}]", b, 2, (np.float32,), "[R, fan_out]")
    _check_array("row_splits", row_splits, 1, (np.int64,), "[batch + 1]")
    _check_array("slots", slots, 2, (np.int64,), "[R, nnz]")
    _check_array("values", values, 1, (np.float32,), "[nnz]")
    cdef int64_t R = weights[0].shape[0]
    cdef int64_t n_layers = len(weights)
    sizes = np.array([weights[0].shape[1]] + [w.shape[2] for w in weights], dtype=np.int64)
    for l, (w, b) in enumerate(zip(weights, biases)):
        if w.shape[0] != R or w.shape[1] != sizes[l] or b.shape != (R, sizes[l + 1]):
            raise ValueError(f"layer {l}: weights {w.shape} and biases {b.shape} do not chain "
                             f"([R={R}, {sizes[l]}, n] and [R, n])")
    cdef int64_t nnz = values.shape[0]
    cdef int64_t batch = row_splits.shape[0] - 1
    if batch < 0 or row_splits[0] != 0 or row_splits[batch] != nnz or np.any(np.diff(row_splits) < 0):
        raise ValueError(f"row_splits must rise from 0 to nnz={nnz}, got {row_splits}")
    if slots.shape != (R, nnz):
        raise ValueError(f"slots must be [R, nnz] = ({R}, {nnz}), got {slots.shape}")
    if nnz and (slots.min() < 0 or slots.max() >= sizes[0]):
        raise ValueError(f"slots must lie in [0, {sizes[0]}), found [{slots.min()}, {slots.max()}]")
    if not isinstance(threads, (int, np.integer)) or threads < 0:
        raise ValueError(f"threads must be an integer >= 0 (0 = OpenMP default), got {threads!r}")

    cdef vector[const float*] w_ptrs
    cdef vector[const uint16_t*] w16_ptrs
    cdef vector[const float*] b_ptrs
    cdef cnp.ndarray arr
    for w, b in zip(weights, biases):
        arr = w
        w_ptrs.push_back(<const float*>cnp.PyArray_DATA(arr))
        w16_ptrs.push_back(<const uint16_t*>cnp.PyArray_DATA(arr))
        arr = b
        b_ptrs.push_back(<const float*>cnp.PyArray_DATA(arr))
    cdef cnp.ndarray out = np.empty((batch, R, sizes[n_layers]), dtype=np.float32)
    cdef cnp.ndarray sizes_arr = sizes
    cdef int n_threads = threads
    cdef const int64_t* sizes_ptr = <const int64_t*>cnp.PyArray_DATA(sizes_arr)
    cdef const int64_t* splits_ptr = <const int64_t*>cnp.PyArray_DATA(row_splits)
    cdef const int64_t* slots_ptr = <const int64_t*>cnp.PyArray_DATA(slots)
    cdef const float* values_ptr = <const float*>cnp.PyArray_DATA(values)
    cdef float* out_ptr = <float*>cnp.PyArray_DATA(out)
    if weights[0].dtype == np.float32:
        with nogil:
            forward_rows_kernel[float](batch, R, n_layers, sizes_ptr, w_ptrs.data(), b_ptrs.data(),
                                       splits_ptr, slots_ptr, values_ptr, nnz, n_threads, out_ptr)
    else:
        with nogil:
            forward_rows_kernel[uint16_t](batch, R, n_layers, sizes_ptr, w16_ptrs.data(),
                                          b_ptrs.data(), splits_ptr, slots_ptr, values_ptr, nnz,
                                          n_threads, out_ptr)
    return out
