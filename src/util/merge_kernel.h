// MACH merge: score(c) = sum_r logits[row, r, label_to_bucket[r, c]], then each row's top-k
// classes.
//
// Exactness: every score is accumulated in float32 in the order r = 0..R-1, as merge_topk_numpy
// does, and ties rank the lower label first. Nothing is reassociated, so labels and scores match
// the NumPy spec bit for bit.
//
// Speed: rows are merged 16 at a time (a group). Their logits are transposed to table[r, b, 16], so
// one bucket of one repetition is one 64-byte line holding that bucket's logit for all 16 rows: a
// class costs R index loads and R line loads (one AVX-512 add each) for 16 rows, instead of R
// scattered gathers per row, and the lookups are streamed once per group instead of once per row.
//
// Threads: groups run one after another; all threads share the group's table (R * B * 16 floats,
// 10 MB for R = 16, B = 10,000: one copy in the last-level cache, not one per thread) and split the
// classes into chunks (OpenMP, dynamic schedule). Each (chunk, row) keeps its own top-k; the
// chunks' top-ks are merged per row. Memory: the table plus n_chunks * 16 * k candidates (n_chunks
// drops to 1 for a huge k); nothing scales with batch * K.
#pragma once

#include <omp.h>

#include "simd.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <vector>

namespace mach {

constexpr int64_t kLanes = 16;
// Classes summed together before their top-k test: their Line accumulators (16 KB) stay in L1, and
// the R passes over the block read each repetition's lookups as one short sequential run.
constexpr int64_t kBlock = 256;
// Class chunks per thread for dynamic load balancing, and the smallest chunk worth scheduling.
constexpr int64_t kChunksPerThread = 4;
constexpr int64_t kMinChunk = 4096;
// Cap on the candidates kept by all chunks (16 bytes each, 64 MB); only a very large k reaches it.
constexpr int64_t kCandidateBudget = int64_t(1) << 22;

// One bucket of one repetition for the 16 rows of a group. GCC/Clang lower the vector type to the
// target's width (4 SSE, 2 AVX2 or 1 AVX-512 add); lanes never mix, so each row gets the spec's
// adds.
typedef float Line __attribute__((vector_size(64), aligned(64), may_alias));
typedef int32_t LineMask __attribute__((vector_size(64)));

struct Candidate {
    float score;
    int64_t label;
};

// Rank order of the spec: higher score first, then lower label.
inline bool ranks_before(const Candidate& a, const Candidate& b) {
    return a.score > b.score || (a.score == b.score && a.label < b.label);
}

// Top-k of one row over one class chunk: a heap whose front is the worst kept candidate.
struct TopK {
    Candidate* items;
    int64_t size;
    int64_t k;

    void offer(float score, int64_t label) {
        Candidate c{score, label};
        if (size < k) {
            items[size++] = c;
            std::push_heap(items, items + size, ranks_before);
        } else if (ranks_before(c, items[0])) {
            std::pop_heap(items, items + size, ranks_before);
            items[size - 1] = c;
            std::push_heap(items, items + size, ranks_before);
        }
    }
};

// 64-byte aligned float buffer, since the table is read as Lines.
class AlignedBuffer {
  public:
    explicit AlignedBuffer(size_t n) {
        const size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
        data_ = static_cast<float*>(std::aligned_alloc(64, bytes));
        if (data_ == nullptr) throw std::bad_alloc();
    }
    ~AlignedBuffer() { std::free(data_); }
    AlignedBuffer(const AlignedBuffer&) = delete;
    AlignedBuffer& operator=(const AlignedBuffer&) = delete;
    float* data() { return data_; }

  private:
    float* data_;
};

// table[(r * B + b) * 16 + l] = logits[row0 + l, r, b] for one repetition r; lanes past the batch
// are 0.
inline void transpose_repetition(const float* logits, int64_t batch, int64_t R, int64_t B,
                                 int64_t row0, int64_t r, float* table) {
    const int64_t n = std::min(kLanes, batch - row0);
    float* dst = table + r * B * kLanes;
    if (n < kLanes) std::memset(dst, 0, sizeof(float) * B * kLanes);
    for (int64_t l = 0; l < n; ++l) {
        const float* src = logits + ((row0 + l) * R + r) * B;
        for (int64_t b = 0; b < B; ++b) dst[b * kLanes + l] = src[b];
    }
}

// Scores classes [begin, end) for the group's rows and offers them to the rows' heaps. Classes
// ascend, so a later class whose score equals a row's k-th best never displaces it: the test is a
// strict >.
template <typename Index>
__attribute__((always_inline)) inline void score_chunk(const float* lanes,
                                                       const Index* label_to_bucket, int64_t R,
                                                       int64_t B, int64_t K, int64_t begin,
                                                       int64_t end, int64_t n_rows, TopK* heaps) {
    const Line* table = reinterpret_cast<const Line*>(lanes);
    // Padded lanes keep +inf and never pass; real lanes are filled by the first k classes.
    Line threshold;
    for (int64_t l = 0; l < kLanes; ++l) threshold[l] = std::numeric_limits<float>::infinity();
    // Every class is offered until each heap holds k candidates, which takes exactly k classes.
    const int64_t fill_end = std::min(end, begin + heaps[0].k);
    Line acc[kBlock];
    for (int64_t c0 = begin; c0 < end; c0 += kBlock) {
        const int64_t n = std::min(kBlock, end - c0);
        const Index* lookup = label_to_bucket + c0;
        for (int64_t i = 0; i < n; ++i) acc[i] = table[lookup[i]];
        for (int64_t r = 1; r < R; ++r) {
            const Line* table_r = table + r * B;
            const Index* lookup_r = lookup + r * K;
            // The table lives in the last-level cache; asking for the next repetition's lines now
            // keeps more misses in flight than the out-of-order window alone would.
            if (r + 1 < R) {
                for (int64_t i = 0; i < n; ++i) {
                    __builtin_prefetch(table_r + B + lookup_r[K + i], 0, 2);
                }
            }
            for (int64_t i = 0; i < n; ++i) acc[i] += table_r[lookup_r[i]];
        }
        for (int64_t i = 0; i < n; ++i) {
            const int64_t c = c0 + i;
            const LineMask above = acc[i] > threshold;
            int32_t any = 0;
            for (int64_t l = 0; l < kLanes; ++l) any |= above[l];
            if (any == 0 && c >= fill_end) continue;
            for (int64_t l = 0; l < n_rows; ++l) {
                if (c < fill_end || acc[i][l] > threshold[l]) {
                    heaps[l].offer(acc[i][l], c);
                    if (heaps[l].size == heaps[l].k) threshold[l] = heaps[l].items[0].score;
                }
            }
        }
    }
}

MACH_SIMD_CLONES static void score_chunk_simd(const float* lanes, const int32_t* label_to_bucket,
                                              int64_t R, int64_t B, int64_t K, int64_t begin,
                                              int64_t end, int64_t n_rows, TopK* heaps) {
    score_chunk(lanes, label_to_bucket, R, B, K, begin, end, n_rows, heaps);
}

MACH_SIMD_CLONES static void score_chunk_simd(const float* lanes, const int64_t* label_to_bucket,
                                              int64_t R, int64_t B, int64_t K, int64_t begin,
                                              int64_t end, int64_t n_rows, TopK* heaps) {
    score_chunk(lanes, label_to_bucket, R, B, K, begin, end, n_rows, heaps);
}

// Writes every row's top-k labels and scores, best first, to out_labels / out_scores [batch, k].
// Requires 1 <= k <= K and label_to_bucket values in [0, B); the Cython wrapper checks the rest.
template <typename Index>
void merge_topk_kernel(const float* logits, int64_t batch, int64_t R, int64_t B,
                       const Index* label_to_bucket, int64_t K, int64_t k, int threads,
                       int64_t* out_labels, float* out_scores) {
    if (batch == 0) return;
    const int n_threads = threads > 0 ? threads : omp_get_max_threads();
    const int64_t by_size = std::max<int64_t>(1, K / kMinChunk);
    const int64_t by_memory = std::max<int64_t>(1, kCandidateBudget / (kLanes * k));
    const int64_t n_chunks = std::min({kChunksPerThread * n_threads, by_size, by_memory});
    const int64_t chunk_len = (K + n_chunks - 1) / n_chunks;

    AlignedBuffer table(size_t(R * B * kLanes));
    // candidates[(l * n_chunks + j) * k + i]: slot i of row l's heap in chunk j (current group), so
    // each row's candidates are contiguous for the final merge.
    const int64_t group_rows = std::min(kLanes, batch);
    std::vector<Candidate> candidates(size_t(group_rows * n_chunks * k));
    std::vector<int64_t> sizes(size_t(group_rows * n_chunks));

    // One chunk of one group is one thread's work: waking a team for it costs more than it does
    // (a Delicious row: 33 vs 77 us). Threads never change the result.
    const int team = (n_chunks == 1 && batch <= kLanes) ? 1 : n_threads;
#pragma omp parallel num_threads(team)
    for (int64_t row0 = 0; row0 < batch; row0 += kLanes) {
        const int64_t n_rows = std::min(kLanes, batch - row0);
#pragma omp for schedule(static)
        for (int64_t r = 0; r < R; ++r) {
            transpose_repetition(logits, batch, R, B, row0, r, table.data());
        }

#pragma omp for schedule(dynamic, 1)
        for (int64_t j = 0; j < n_chunks; ++j) {
            const int64_t begin = j * chunk_len;
            const int64_t end = std::min(K, begin + chunk_len);
            TopK heaps[kLanes];
            for (int64_t l = 0; l < n_rows; ++l) {
                heaps[l] = TopK{&candidates[size_t((l * n_chunks + j) * k)], 0, k};
            }
            if (begin < end) {
                score_chunk_simd(table.data(), label_to_bucket, R, B, K, begin, end, n_rows, heaps);
            }
            for (int64_t l = 0; l < n_rows; ++l) sizes[size_t(l * n_chunks + j)] = heaps[l].size;
        }

        // A row's top-k is the top-k of its chunks' top-ks. Chunks shorter than k leave gaps: close
        // them.
#pragma omp for schedule(static)
        for (int64_t l = 0; l < n_rows; ++l) {
            Candidate* row = &candidates[size_t(l * n_chunks * k)];
            int64_t n = 0;
            for (int64_t j = 0; j < n_chunks; ++j) {
                const int64_t size = sizes[size_t(l * n_chunks + j)];
                if (n != j * k) std::copy_n(row + j * k, size, row + n);
                n += size;
            }
            std::partial_sort(row, row + k, row + n, ranks_before);
            for (int64_t i = 0; i < k; ++i) {
                out_labels[(row0 + l) * k + i] = row[i].label;
                out_scores[(row0 + l) * k + i] = row[i].score;
            }
        }
    }
}

}  // namespace mach
