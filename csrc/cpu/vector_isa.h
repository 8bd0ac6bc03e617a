// Runs element loops in the widest vector instruction set the CPU has: AVX-512 (F, BW, DQ, VL), AVX2, or the
// baseline build.
//
// The extension is built for baseline x86-64 (4 floats per SSE instruction). Element loops bound by arithmetic on
// cache-resident tensors (activations) run about 2-3x faster with AVX2 (8 floats) and about 1.6x faster again with
// AVX-512 (16 floats; measured on the 2-core AMD EPYC CI machine). run_vectorized(fn) calls fn inside a function
// compiled for the chosen set (a target attribute), so fn's body (a lambda marked C10_ALWAYS_INLINE_ATTRIBUTE, with
// its callees always-inline too) is compiled into each copy. Same IEEE operations, never contracted
// (-ffp-contract=off): every copy gives identical results.
//
// The environment variable PYTORCH_QUANTIZATION_CPU_ISA=baseline|avx2|avx512, read once, caps the set, so that
// tests can compare the copies and benchmarks measure them; pytorch_quantization._C.cpu_vector_isa() names the
// set in use.
#pragma once

#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>

namespace pytorch_quantization {

enum class VectorIsa { kBaseline = 0, kAvx2 = 1, kAvx512 = 2 };

inline const char* vector_isa_name(VectorIsa isa) {
  return isa == VectorIsa::kAvx512 ? "avx512" : isa == VectorIsa::kAvx2 ? "avx2" : "baseline";
}

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
inline VectorIsa detect_vector_isa() {
  VectorIsa isa = VectorIsa::kBaseline;
  if (__builtin_cpu_supports("avx2")) {
    isa = VectorIsa::kAvx2;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")) {
      isa = VectorIsa::kAvx512;
    }
  }
  const char* cap = std::getenv("PYTORCH_QUANTIZATION_CPU_ISA");
  if (cap == nullptr || *cap == '\0') {
    return isa;
  }
  for (const VectorIsa level : {VectorIsa::kBaseline, VectorIsa::kAvx2, VectorIsa::kAvx512}) {
    if (std::strcmp(cap, vector_isa_name(level)) == 0) {
      return static_cast<int>(level) < static_cast<int>(isa) ? level : isa;
    }
  }
  TORCH_WARN("PYTORCH_QUANTIZATION_CPU_ISA=", cap, " is not one of baseline, avx2, avx512; ignored (using ",
             vector_isa_name(isa), ")");
  return isa;
}

inline VectorIsa vector_isa() {
  static const VectorIsa isa = detect_vector_isa();
  return isa;
}

template <typename Fn>
__attribute__((target("avx2"))) auto run_avx2(const Fn& fn) {
  return fn();
}

template <typename Fn>
__attribute__((target("avx2,avx512f,avx512bw,avx512dq,avx512vl,prefer-vector-width=512"))) auto run_avx512(
    const Fn& fn) {
  return fn();
}

template <typename Fn>
auto run_vectorized(const Fn& fn) {
  switch (vector_isa()) {
    case VectorIsa::kAvx512:
      return run_avx512(fn);
    case VectorIsa::kAvx2:
      return run_avx2(fn);
    default:
      return fn();
  }
}
#else
inline VectorIsa vector_isa() {
  return VectorIsa::kBaseline;
}

template <typename Fn>
auto run_vectorized(const Fn& fn) {
  return fn();
}
#endif

}  // namespace pytorch_quantization
