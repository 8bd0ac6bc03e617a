// Runs an element loop in a copy compiled for AVX2 where the CPU has it, else in the baseline build.
//
// The extension is built for baseline x86-64 (4 floats per SSE instruction). Element loops that are bound by
// arithmetic on cache-resident tensors run about 2-3x faster with AVX2 (8 floats). run_vectorized(fn) calls fn
// inside a function compiled with target("avx2"), so fn's body (a lambda marked C10_ALWAYS_INLINE_ATTRIBUTE, with
// its callees always-inline too) is compiled into that copy. Same IEEE operations, never contracted
// (-ffp-contract=off): both copies give identical results.
#pragma once

#include <c10/macros/Macros.h>

namespace pytorch_quantization {

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
inline bool cpu_has_avx2() {
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
}

template <typename Fn>
__attribute__((target("avx2"))) auto run_avx2(const Fn& fn) {
  return fn();
}

template <typename Fn>
auto run_vectorized(const Fn& fn) {
  if (cpu_has_avx2()) {
    return run_avx2(fn);
  }
  return fn();
}
#else
template <typename Fn>
auto run_vectorized(const Fn& fn) {
  return fn();
}
#endif

}  // namespace pytorch_quantization
