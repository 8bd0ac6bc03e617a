// Round a float32 to the nearest E4M3 (fn) value, plain and scaled; shared by the CPU and CUDA kernels.
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>
#include <cstring>

#include "quant_args.h"

namespace pytorch_quantization {

C10_HOST_DEVICE inline uint32_t float_to_bits(float f) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
#endif
}

C10_HOST_DEVICE inline float bits_to_float(uint32_t u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
#endif
}

// a where cond, else b; a mask instead of a conditional so that CPU loops vectorize (SSE2 included).
C10_HOST_DEVICE inline uint32_t select_bits(bool cond, uint32_t a, uint32_t b) {
  const uint32_t mask = 0u - static_cast<uint32_t>(cond);
  return (a & mask) | (b & ~mask);
}

// Saturating, round-half-to-even cast to E4M3 and back, bit for bit what torch's
// x.to(torch.float8_e4m3fn).float() gives: |x| >= 448 (and +-Inf) -> +-448, NaN -> NaN with the
// input's sign (float bits 0x7ff00000), below 2**-6 the grid is the subnormal step 2**-9.
// Every case is computed and one is selected, without branches, so that CPU loops vectorize; the
// magnitude is below 2**31, so it is compared as a signed int (SSE2 has no unsigned compare).
C10_HOST_DEVICE inline float round_to_e4m3(float f) {
  const uint32_t bits = float_to_bits(f);
  const uint32_t sign = bits & 0x80000000u;
  const uint32_t magnitude = bits & 0x7fffffffu;
  const int32_t signed_magnitude = static_cast<int32_t>(magnitude);
  // Normal range: keep 3 mantissa bits, rounding the 20 dropped bits half to even.
  const uint32_t normal = (magnitude + 0x7ffffu + ((magnitude >> 20) & 1u)) & 0xfff00000u;
  // Below 2**-6: count steps of 2**-9 (both scalings by powers of two are exact).
  float steps = bits_to_float(magnitude) * 512.0f;
#ifdef __CUDA_ARCH__
  steps = rintf(steps);
#else
  const float kRoundingBias = 8388608.0f;  // 2**23: adding and subtracting it rounds [0, 8] half to even
  steps = (steps + kRoundingBias) - kRoundingBias;
#endif
  const uint32_t subnormal = float_to_bits(steps * 0.001953125f);
  uint32_t result = select_bits(signed_magnitude < 0x3c800000, subnormal, normal);       // 0x3c800000: 2**-6
  result = select_bits(signed_magnitude >= 0x43e00000, 0x43e00000u, result);             // 448.0f and above, Inf
  result = select_bits(signed_magnitude > 0x7f800000, 0x7ff00000u, result);              // NaN
  return bits_to_float(sign | result);
}

// Largest finite E4M3 value; the scaled cast maps amax to it (_reference.E4M3_MAX).
constexpr float kE4M3Max = 448.0f;

// The scaled E4M3 fake cast of one element, bit for bit what _reference.scaled_e4m3 computes:
// round_to_e4m3(float(x) * scale) / scale in float32, and +0.0 where |x| < 2**-24 (decided in x's own
// precision acc_t: float for float32/float16/bfloat16, double for float64). scale is kE4M3Max / amax in
// float32, computed once per channel by the caller.
template <typename acc_t>
C10_HOST_DEVICE inline float scaled_round_to_e4m3(acc_t x, float scale) {
  const acc_t tiny = static_cast<acc_t>(kAmaxEpsilon);
  const bool zero = (x < tiny) & (x > -tiny);  // false for NaN, which propagates
  const float y = round_to_e4m3(static_cast<float>(x) * scale) / scale;
  return bits_to_float(select_bits(zero, 0u, float_to_bits(y)));
}

}  // namespace pytorch_quantization
