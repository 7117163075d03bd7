// MACH candidate merge: score only the labels found in each repetition's best buckets.
//
// For each row: in every repetition r take the top-m buckets (ties: lower bucket first); a label's
// count is the number of repetitions whose top-m buckets hold it (found through the CSR inverse,
// bucket_labels[r, bucket_offsets[r, b] : bucket_offsets[r, b + 1]]). The candidates are the labels
// with count >= f, for the largest f <= min_freq that leaves at least k of them. When even f = 1
// leaves fewer than k (m * K / B < k), m is doubled (capped at B) and the search starts again; at
// m = B every label is a candidate, so k labels always come back when K >= k.
//
// Candidates are scored exactly as merge_kernel.h scores every class (float32 adds in the order
// r = 0..R-1) and ranked by the same rule (higher score, then lower label), so with m = B the result
// is the exact merge's, bit for bit; merge_candidates_numpy in merge.py is the specification.
//
// Cost per row: R scans of B logits, then R * m * K / B counter updates (the labels of the chosen
// buckets) and R lookups per candidate; no pass over all K. Memory: per thread, one byte counter per
// class (so R <= 255; calloc'd once per call, so untouched pages stay unmapped), reset only where a
// row touched it, plus the list of touched labels.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <functional>
#include <memory>
#include <new>
#include <stdexcept>
#include <vector>

#include "merge_kernel.h"

namespace mach {

// Labels between a counter's prefetch and its update.
constexpr int64_t kPrefetchAhead = 16;
constexpr int64_t kLabelsPerLine = 64 / sizeof(int64_t);

struct CandidateScratch {
    uint8_t* counts;                 // [K] this thread's counters; zero outside `touched`
    std::vector<int64_t> touched;    // labels with a non-zero counter, in the order found
    std::vector<int64_t> frequent;   // labels whose counter reached min_freq (when min_freq > 1)
    std::vector<Candidate> buckets;  // [R, width] each repetition's chosen buckets (label = bucket)
    std::vector<float> spans;        // [2, B / 64] select_buckets' span maxima
    std::vector<Candidate> best;     // top-k heap of the row
    std::vector<int64_t> at_least;   // [R + 1] at_least[f] = labels with count >= f
};

// 16 logits loaded from any float address (the logits rows are not 64-byte aligned).
typedef float UnalignedLine __attribute__((vector_size(64), aligned(4), may_alias));
typedef float HalfLine __attribute__((vector_size(32)));
typedef float QuarterLine __attribute__((vector_size(16)));
// Logits per span: the unit whose maximum decides whether its logits are looked at one by one.
constexpr int64_t kSpan = 4 * kLanes;

// Largest of the 64 logits at x: vector maxima, then halving (no NaN, as everywhere in the merge).
__attribute__((always_inline)) inline float max_of_span(const float* x) {
    const UnalignedLine* lines = reinterpret_cast<const UnalignedLine*>(x);
    const UnalignedLine a = lines[0] > lines[1] ? lines[0] : lines[1];
    const UnalignedLine b = lines[2] > lines[3] ? lines[2] : lines[3];
    const UnalignedLine v = a > b ? a : b;
    const HalfLine lo = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7);
    const HalfLine hi = __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    const HalfLine h = lo > hi ? lo : hi;
    const QuarterLine q0 = __builtin_shufflevector(h, h, 0, 1, 2, 3);
    const QuarterLine q1 = __builtin_shufflevector(h, h, 4, 5, 6, 7);
    const QuarterLine q = q0 > q1 ? q0 : q1;
    return std::max(std::max(q[0], q[1]), std::max(q[2], q[3]));
}

// The top-`width` buckets of one repetition, unordered, into heap[0 .. width). `spans` is scratch
// of 2 * (B / 64) floats.
//
// The width-th largest span maximum is a floor: `width` spans each hold a logit at or above it, so
// no logit below it can be among the top width. Only logits at or above the floor are offered to
// the heap, in ascending bucket order, so the heap's tie rule (lower bucket first) still decides.
MACH_SIMD_CLONES static void select_buckets(const float* logits_r, int64_t B, int64_t width,
                                            Candidate* heap, float* spans) {
    TopK top{heap, 0, width};
    const int64_t n_spans = B / kSpan;
    if (width > n_spans) {
        for (int64_t b = 0; b < B; ++b) top.offer(logits_r[b], b);
        return;
    }
    float* span_max = spans;
    float* ranked = spans + n_spans;
    for (int64_t j = 0; j < n_spans; ++j) span_max[j] = max_of_span(logits_r + j * kSpan);
    std::copy_n(span_max, n_spans, ranked);
    std::nth_element(ranked, ranked + width - 1, ranked + n_spans, std::greater<float>());
    const float floor = ranked[width - 1];
    for (int64_t j = 0; j < n_spans; ++j) {
        if (span_max[j] < floor) continue;
        for (int64_t b = j * kSpan; b < (j + 1) * kSpan; ++b) {
            if (logits_r[b] >= floor) top.offer(logits_r[b], b);
        }
    }
    for (int64_t b = n_spans * kSpan; b < B; ++b) {
        if (logits_r[b] >= floor) top.offer(logits_r[b], b);
    }
}

// Counts, for every label, the repetitions whose top-`width` buckets hold it, and keeps at_least
// and the list of labels that reach min_freq up to date as it goes (one pass over the counters).
inline void count_candidates(const float* row, int64_t R, int64_t B, int64_t K,
                             const int64_t* bucket_offsets, const int64_t* bucket_labels,
                             int64_t width, int64_t min_freq, CandidateScratch& s) {
    if (int64_t(s.buckets.size()) < R * width) s.buckets.resize(size_t(R * width));
    if (int64_t(s.spans.size()) < 2 * (B / kSpan)) s.spans.resize(size_t(2 * (B / kSpan)));
    // All buckets are chosen first and their label lists requested at once: each list is a few
    // cache lines somewhere in [R, K], and fetching them one after another would wait on each.
    for (int64_t r = 0; r < R; ++r) {
        Candidate* chosen = s.buckets.data() + r * width;
        select_buckets(row + r * B, B, width, chosen, s.spans.data());
        const int64_t* offsets_r = bucket_offsets + r * (B + 1);
        const int64_t* labels_r = bucket_labels + r * K;
        for (int64_t i = 0; i < width; ++i) {
            const int64_t b = chosen[i].label;
            for (int64_t j = offsets_r[b]; j < offsets_r[b + 1]; j += kLabelsPerLine) {
                __builtin_prefetch(labels_r + j, 0, 3);
            }
        }
    }
    for (int64_t r = 0; r < R; ++r) {
        const Candidate* chosen = s.buckets.data() + r * width;
        const int64_t* offsets_r = bucket_offsets + r * (B + 1);
        const int64_t* labels_r = bucket_labels + r * K;
        for (int64_t i = 0; i < width; ++i) {
            const int64_t b = chosen[i].label;
            const int64_t end = offsets_r[b + 1];
            for (int64_t j = offsets_r[b]; j < end; ++j) {
                // The counters are scattered over K bytes; ask for the ones a few labels ahead.
                if (j + kPrefetchAhead < end) __builtin_prefetch(s.counts + labels_r[j + kPrefetchAhead], 1, 3);
                const int64_t c = labels_r[j];
                const int64_t count = ++s.counts[c];
                if (count == 1) s.touched.push_back(c);
                if (count == min_freq && min_freq > 1) s.frequent.push_back(c);
                // A label listed twice in one repetition's inverse could count past R.
                if (count <= R) ++s.at_least[size_t(count)];
            }
        }
    }
}

inline void reset_counts(CandidateScratch& s, int64_t R) {
    for (const int64_t c : s.touched) s.counts[c] = 0;
    s.touched.clear();
    s.frequent.clear();
    s.at_least.assign(size_t(R + 1), 0);
}

// The row's top-k labels and scores, best first, into out_labels / out_scores [k].
template <typename Index>
void merge_candidates_row(const float* row, int64_t R, int64_t B, const Index* label_to_bucket,
                          int64_t K, const int64_t* bucket_offsets, const int64_t* bucket_labels,
                          int64_t k, int64_t m, int64_t min_freq, CandidateScratch& s,
                          int64_t* out_labels, float* out_scores) {
    int64_t freq = 0;
    for (int64_t width = m; freq == 0; width = std::min(B, 2 * width)) {
        reset_counts(s, R);
        count_candidates(row, R, B, K, bucket_offsets, bucket_labels, width, min_freq, s);
        for (int64_t f = min_freq; f >= 1 && freq == 0; --f) {
            if (s.at_least[f] >= k) freq = f;
        }
        // Every label sits in one of the B buckets, so width = B always ends the search when K >= k.
        if (freq == 0 && width == B) {
            throw std::invalid_argument("the inverse lookup lists fewer than k labels in all B buckets");
        }
    }

    if (int64_t(s.best.size()) < k) s.best.resize(size_t(k));
    TopK best{s.best.data(), 0, k};
    // Usually min_freq itself leaves k labels, and they are already listed; otherwise filter.
    const bool listed = freq == min_freq;
    const std::vector<int64_t>& pool = listed && min_freq > 1 ? s.frequent : s.touched;
    const int64_t n_pool = int64_t(pool.size());
    for (int64_t i = 0; i < n_pool; ++i) {
        const int64_t c = pool[size_t(i)];
        if (!listed && s.counts[c] < freq) continue;
        // Each candidate costs R scattered lookups: ask for a later candidate's while this one adds.
        if (i + kPrefetchAhead < n_pool) {
            const int64_t ahead = pool[size_t(i + kPrefetchAhead)];
            for (int64_t r = 0; r < R; ++r) __builtin_prefetch(label_to_bucket + r * K + ahead, 0, 0);
        }
        float score = row[label_to_bucket[c]];
        for (int64_t r = 1; r < R; ++r) score += row[r * B + label_to_bucket[r * K + c]];
        best.offer(score, c);
    }
    reset_counts(s, R);
    std::sort(best.items, best.items + best.size, ranks_before);
    for (int64_t i = 0; i < k; ++i) {
        out_labels[i] = best.items[i].label;
        out_scores[i] = best.items[i].score;
    }
}

// Writes every row's top-k to out_labels / out_scores [batch, k]. Requires 1 <= k <= K,
// 1 <= m <= B, 1 <= min_freq <= R <= 255, bucket values in [0, B), and an inverse that lists every
// label of [0, K) once per repetition with offsets in [0, K]; the Cython wrapper checks the rest.
template <typename Index>
void merge_candidates_kernel(const float* logits, int64_t batch, int64_t R, int64_t B,
                             const Index* label_to_bucket, int64_t K,
                             const int64_t* bucket_offsets, const int64_t* bucket_labels,
                             int64_t k, int64_t m, int64_t min_freq, int threads,
                             int64_t* out_labels, float* out_scores) {
    if (batch == 0) return;
    const int n_threads = threads > 0 ? threads : omp_get_max_threads();
    std::unique_ptr<uint8_t, decltype(&std::free)> counts(
        static_cast<uint8_t*>(std::calloc(size_t(n_threads) * size_t(K), sizeof(uint8_t))),
        &std::free);
    if (!counts) throw std::bad_alloc();
    // An exception may not leave an OpenMP region: the first one is kept and rethrown after it.
    std::exception_ptr error = nullptr;

#pragma omp parallel num_threads(n_threads)
    {
        CandidateScratch scratch;
        scratch.counts = counts.get() + size_t(omp_get_thread_num()) * size_t(K);
        scratch.at_least.assign(size_t(R + 1), 0);
#pragma omp for schedule(dynamic, 4)
        for (int64_t i = 0; i < batch; ++i) {
            try {
                merge_candidates_row(logits + i * R * B, R, B, label_to_bucket, K, bucket_offsets,
                                     bucket_labels, k, m, min_freq, scratch, out_labels + i * k,
                                     out_scores + i * k);
            } catch (...) {
#pragma omp critical(mach_candidate_error)
                if (!error) error = std::current_exception();
                reset_counts(scratch, R);
            }
        }
    }
    if (error) std::rethrow_exception(error);
}

}  // namespace mach
