// MACH_SIMD_CLONES: a function compiled once per instruction set and picked at load time (GCC/Clang
// on x86-64), so the build stays portable (no -march) and still uses AVX2 or AVX-512 where the CPU
// has them. setup.py compiles with -ffp-contract=off, so no clone fuses a multiply and an add: every
// clone rounds as the plain C++ does, and results are the same bits on every CPU.
#pragma once

#if defined(__x86_64__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define MACH_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#endif
#endif
#ifndef MACH_SIMD_CLONES
#define MACH_SIMD_CLONES
#endif
