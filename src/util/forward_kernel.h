// MACH forward pass for prediction: the logits of sparse rows through R feed-forward ReLU networks.
//
// Each (repetition, row) is computed on its own as a sum of weight rows: the first layer adds the
// rows of the row's features (value x W[slot]), every later layer the rows of the units the ReLU
// left positive. So a row reads only those weight rows: a Delicious row (18 features, 75% of the
// first layer's units at zero) reads ~11 MB of the 16 networks' 70 MB. TensorFlow's matmul reads
// them all, which bounds a single row at the memory's speed (experiments/efficiency).
//
// Exactness: h = sum_k x_k * W[i_k, :] in order of k (features in row order; units in index order),
// accumulated from zero in float32, then + bias, then ReLU: mach.compiled_forward.forward_numpy
// gives the same bits (no multiply-add is fused, see simd.h). TensorFlow's matmul adds in another
// order, so its logits agree to float32 rounding, not bit for bit.
//
// Threads: tasks (repetition, row) in repetition-major order, split in contiguous ranges, so a
// thread walks many rows through one repetition's weights while they are in its caches.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "simd.h"

namespace mach {

// out[0:n] += x * w[0:n]. Elementwise, so every SIMD width rounds alike.
MACH_SIMD_CLONES static void add_scaled(float* out, const float* w, float x, int64_t n) {
    for (int64_t j = 0; j < n; ++j) out[j] = out[j] + x * w[j];
}

// The same with bfloat16 weights (the high 16 bits of a float32): each is widened exactly, so the
// sums are those of float32 weights rounded to bfloat16. Half the bytes to read.
MACH_SIMD_CLONES static void add_scaled(float* out, const uint16_t* w, float x, int64_t n) {
    for (int64_t j = 0; j < n; ++j) {
        const uint32_t bits = uint32_t(w[j]) << 16;
        float weight;
        std::memcpy(&weight, &bits, sizeof weight);
        out[j] = out[j] + x * weight;
    }
}

// sizes: [n_layers + 1] widths (input, hidden..., B). weights[l]: [R, sizes[l], sizes[l+1]] Weight
// (float, or uint16_t holding bfloat16) and biases[l]: [R, sizes[l+1]] float32, C-contiguous.
// Rows: row_splits [batch + 1]; entry e of row i (row_splits[i] <= e < row_splits[i+1]) has value
// values[e] and, in repetition r, first-layer row slots[r * nnz + e] (in [0, sizes[0])).
// out: [batch, R, sizes[n_layers]] float32.
template <typename Weight>
void forward_rows_kernel(int64_t batch, int64_t R, int64_t n_layers, const int64_t* sizes,
                         const Weight* const* weights, const float* const* biases,
                         const int64_t* row_splits, const int64_t* slots, const float* values,
                         int64_t nnz, int threads, float* out) {
    const int64_t B = sizes[n_layers];
    const int64_t width = *std::max_element(sizes + 1, sizes + n_layers + 1);
    const int n_threads = threads > 0 ? threads : omp_get_max_threads();
#pragma omp parallel num_threads(n_threads)
    {
        std::vector<float> current(width), next(width);
        std::vector<int64_t> active(width);
#pragma omp for schedule(static)
        for (int64_t task = 0; task < batch * R; ++task) {
            const int64_t r = task / batch, row = task % batch;
            float* h = current.data();
            int64_t n_out = sizes[1];
            const Weight* w = weights[0] + r * sizes[0] * n_out;
            std::fill(h, h + n_out, 0.0f);
            for (int64_t e = row_splits[row]; e < row_splits[row + 1]; ++e) {
                add_scaled(h, w + slots[r * nnz + e] * n_out, values[e], n_out);
            }
            const float* b = biases[0] + r * n_out;
            for (int64_t j = 0; j < n_out; ++j) h[j] = h[j] + b[j];
            for (int64_t layer = 1; layer < n_layers; ++layer) {
                const int64_t n_in = n_out;
                n_out = sizes[layer + 1];
                int64_t n_active = 0;
                for (int64_t i = 0; i < n_in; ++i) {
                    if (h[i] > 0.0f) active[n_active++] = i;  // ReLU: the rest add nothing
                }
                float* y = next.data();
                w = weights[layer] + r * n_in * n_out;
                std::fill(y, y + n_out, 0.0f);
                for (int64_t a = 0; a < n_active; ++a) {
                    add_scaled(y, w + active[a] * n_out, h[active[a]], n_out);
                }
                b = biases[layer] + r * n_out;
                for (int64_t j = 0; j < n_out; ++j) y[j] = y[j] + b[j];
                std::swap(current, next);
                h = current.data();
            }
            std::memcpy(out + (row * R + r) * B, h, B * sizeof(float));
        }
    }
}

}  // namespace mach
