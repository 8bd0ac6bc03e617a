#include "half_convert.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define PYTORCH_QUANTIZATION_HAVE_F16C_PATH 1
#endif

namespace pytorch_quantization {
namespace {

void half_to_float_portable(const c10::Half* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    dst[i] = static_cast<float>(src[i]);
  }
}

void float_to_half_portable(const float* src, c10::Half* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    dst[i] = static_cast<c10::Half>(src[i]);
  }
}

#ifdef PYTORCH_QUANTIZATION_HAVE_F16C_PATH
__attribute__((target("avx,f16c"))) void half_to_float_f16c(const c10::Half* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
  }
  half_to_float_portable(src + i, dst + i, n - i);
}

__attribute__((target("avx,f16c"))) void float_to_half_f16c(const float* src, c10::Half* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), h);
  }
  float_to_half_portable(src + i, dst + i, n - i);
}

bool cpu_has_f16c() {
  static const bool has = __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
  return has;
}
#endif

}  // namespace

void half_to_float(const c10::Half* src, float* dst, int64_t n) {
#ifdef PYTORCH_QUANTIZATION_HAVE_F16C_PATH
  if (cpu_has_f16c()) {
    half_to_float_f16c(src, dst, n);
    return;
  }
#endif
  half_to_float_portable(src, dst, n);
}

void float_to_half(const float* src, c10::Half* dst, int64_t n) {
#ifdef PYTORCH_QUANTIZATION_HAVE_F16C_PATH
  if (cpu_has_f16c()) {
    float_to_half_f16c(src, dst, n);
    return;
  }
#endif
  float_to_half_portable(src, dst, n);
}

}  // namespace pytorch_quantization
