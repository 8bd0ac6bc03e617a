// CPU kernels of fake_quant, fake_quant_cachemask and fake_quant_.
//
// The inner loops are plain element loops over contiguous memory that the compiler vectorizes
// (-O3, SSE2 at least): rounding uses the "add and subtract 1.5 * 2**mantissa_bits" idiom
// instead of a libm call, applied after clamping to [lo, hi]. Because lo and hi are integers,
// clamp-then-round equals _reference's round-then-clamp, and copysign restores the sign of zero
// results (round(-0.3) is -0.0), so the outputs are bit-identical to _reference.
//
// The arithmetic bounds the loops on cache-resident tensors (activations), so they also run in AVX2 and AVX-512
// copies where the CPU has them (vector_isa.h; identical results).
//
// The data is on the host here, so the value checks of upstream 2.2.1 cost no device sync: a
// negative amax raises ValueError when the constants are built, and unsigned quantization of
// negative inputs raises TypeError; the out-of-place ops notice negatives in the quantizing pass
// itself, the in-place op scans first so that it never leaves x half-written.
#include <ATen/Dispatch.h>
#include <ATen/MemoryOverlap.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <type_traits>
#include <vector>

#include "../quant_args.h"
#include "vector_isa.h"
#include "half_convert.h"

namespace pytorch_quantization {
namespace {

constexpr int64_t kGrainSize = 32768;
// Channels with fewer contiguous elements than this use per-element scale arrays (see QuantPlan).
constexpr int64_t kMinRunLength = 64;

template <typename acc_t>
struct RoundingBias;
template <>
struct RoundingBias<float> {
  static constexpr float value = 12582912.0f;  // 1.5 * 2**23
};
template <>
struct RoundingBias<double> {
  static constexpr double value = 6755399441055744.0;  // 1.5 * 2**52
};

// round_half_even(clamp(v * scale, lo, hi)) / divisor; NaN propagates through every step.
template <typename acc_t>
inline acc_t quantize_dequantize(acc_t v, acc_t scale, acc_t divisor, acc_t lo, acc_t hi) {
  acc_t y = v * scale;
  y = y < lo ? lo : y;
  y = y > hi ? hi : y;
  const acc_t rounded = (y + RoundingBias<acc_t>::value) - RoundingBias<acc_t>::value;
  return std::copysign(rounded, y) / divisor;
}

// Per-channel constants in the compute type. divisor is scale, or 1 where amax <= 2**-24 (scale 0).
template <typename acc_t>
struct ChannelConstants {
  std::vector<acc_t> scale, divisor, amax;

  ChannelConstants(const at::Tensor& amax_tensor, double bound) {
    const at::Tensor a = amax_tensor.to(c10::CppTypeToScalarType<acc_t>::value).contiguous();
    const acc_t* data = a.const_data_ptr<acc_t>();
    const int64_t n = a.numel();
    scale.resize(n);
    divisor.resize(n);
    amax.assign(data, data + n);
    for (int64_t c = 0; c < n; ++c) {
      TORCH_CHECK_VALUE(!(amax[c] < acc_t(0)), "Negative values in amax (", amax[c], " at index ", c,
                        "); amax is the magnitude of the range: set it to a value >= 0 or recalibrate");
      const bool tiny = amax[c] <= static_cast<acc_t>(kAmaxEpsilon);
      scale[c] = tiny ? acc_t(0) : static_cast<acc_t>(bound) / amax[c];
      divisor[c] = tiny ? acc_t(1) : scale[c];
    }
  }
};

// Pointers to the constants of one run of elements: one value each (kPerElement false) or one per element.
template <typename acc_t>
struct RunConstants {
  const acc_t* scale;
  const acc_t* divisor;
  const acc_t* amax;
  acc_t lo, hi;
};

// Returns nonzero when some element of x is negative (a by-product for the unsigned check).
template <typename scalar_t, typename acc_t, bool kPerElement, bool kMask>
C10_ALWAYS_INLINE unsigned quantize_run(const scalar_t* __restrict__ x, scalar_t* __restrict__ out,
                                        bool* __restrict__ mask, int64_t n, const RunConstants<acc_t>& k) {
  const acc_t* __restrict__ scale = k.scale;
  const acc_t* __restrict__ divisor = k.divisor;
  const acc_t* __restrict__ amax = k.amax;
  unsigned negative = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t j = kPerElement ? i : 0;
    const acc_t v = static_cast<acc_t>(x[i]);
    out[i] = static_cast<scalar_t>(quantize_dequantize(v, scale[j], divisor[j], k.lo, k.hi));
    negative |= static_cast<unsigned>(v < acc_t(0));
    if constexpr (kMask) {
      mask[i] = std::abs(v) <= amax[j];
    }
  }
  return negative;
}

template <typename scalar_t, typename acc_t, bool kPerElement>
C10_ALWAYS_INLINE void quantize_run_inplace(scalar_t* data, int64_t n, const RunConstants<acc_t>& k) {
  const acc_t* __restrict__ scale = k.scale;
  const acc_t* __restrict__ divisor = k.divisor;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t j = kPerElement ? i : 0;
    data[i] = static_cast<scalar_t>(quantize_dequantize(static_cast<acc_t>(data[i]), scale[j], divisor[j], k.lo, k.hi));
  }
}

// One run, out of place (x != out) or in place (x == out, no mask): the element loops above.
template <typename scalar_t, typename acc_t, bool kPerElement, bool kMask>
C10_ALWAYS_INLINE unsigned quantize_block(const scalar_t* x, scalar_t* out, bool* mask, int64_t n,
                                          const RunConstants<acc_t>& k) {
  if constexpr (!kMask) {
    if (x == out) {
      quantize_run_inplace<scalar_t, acc_t, kPerElement>(out, n, k);
      return 0u;
    }
  }
  return quantize_run<scalar_t, acc_t, kPerElement, kMask>(x, out, mask, n, k);
}

// quantize_block, in the copy for the CPU's vector instruction set (vector_isa.h).
template <typename scalar_t, typename acc_t, bool kPerElement, bool kMask>
unsigned quantize_dispatch(const scalar_t* x, scalar_t* out, bool* mask, int64_t n, const RunConstants<acc_t>& k) {
  return run_vectorized([&]() C10_ALWAYS_INLINE_ATTRIBUTE {
    return quantize_block<scalar_t, acc_t, kPerElement, kMask>(x, out, mask, n, k);
  });
}

template <typename acc_t>
RunConstants<acc_t> offset_constants(const RunConstants<acc_t>& k, int64_t offset) {
  return {k.scale + offset, k.divisor + offset, k.amax + offset, k.lo, k.hi};
}

constexpr int64_t kHalfBlock = 1024;

// One run of elements, in place when x == out; returns nonzero when it saw a negative input (always 0
// in place, where the caller has checked before). float16 goes through float32 blocks so that its
// conversions are vectorized (half_convert.h); the other dtypes convert inside quantize_run.
template <bool kPerElement, bool kMask, typename scalar_t, typename acc_t>
unsigned quantize_any(const scalar_t* x, scalar_t* out, bool* mask, int64_t n, const RunConstants<acc_t>& k) {
  unsigned negative = 0;
  if constexpr (std::is_same_v<scalar_t, c10::Half>) {
    float in[kHalfBlock], result[kHalfBlock];
    for (int64_t offset = 0; offset < n; offset += kHalfBlock) {
      const int64_t m = std::min(kHalfBlock, n - offset);
      half_to_float(x + offset, in, m);
      negative |= quantize_dispatch<float, float, kPerElement, kMask>(in, result, kMask ? mask + offset : nullptr, m,
                                                                      kPerElement ? offset_constants(k, offset) : k);
      float_to_half(result, out + offset, m);
    }
    return x == out ? 0u : negative;
  } else {
    return quantize_dispatch<scalar_t, acc_t, kPerElement, kMask>(x, out, mask, n, k);
  }
}

// Nonzero when some element of the contiguous x is negative (-0.0 and NaN are not).
template <typename scalar_t>
bool any_negative(const at::Tensor& x) {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* data = x.const_data_ptr<scalar_t>();
  std::atomic<bool> found{false};
  at::parallel_for(0, x.numel(), kGrainSize, [&](int64_t begin, int64_t end) {
    unsigned negative = 0;
    for (int64_t i = begin; i < end; ++i) {
      negative |= static_cast<unsigned>(static_cast<acc_t>(data[i]) < acc_t(0));
    }
    if (negative != 0) {
      found.store(true, std::memory_order_relaxed);
    }
  });
  return found.load();
}

void check_unsigned_input(bool negative) {
  TORCH_CHECK_TYPE(!negative, "Negative values encountered in unsigned quantization. Use a signed quantizer "
                   "(unsigned=False) for data that can be negative");
}

// How the flat index range splits into runs that share constants. With long channels a run is
// (part of) one channel's contiguous block and uses that channel's constants; with short ones
// (e.g. per-channel along the last axis) the constants are tiled over one period of
// channels * inner elements and a run is (part of) one period, with per-element constants.
template <typename acc_t>
struct QuantPlan {
  ChannelConstants<acc_t> channel;
  ChannelLayout layout;
  bool per_element;
  std::vector<acc_t> tiled_scale, tiled_divisor, tiled_amax;
  acc_t lo, hi;

  QuantPlan(const at::Tensor& amax, ChannelLayout layout_, const IntegerRange& range)
      : channel(amax, range.hi), layout(layout_), per_element(layout_.channels > 1 && layout_.inner < kMinRunLength),
        lo(static_cast<acc_t>(range.lo)), hi(static_cast<acc_t>(range.hi)) {
    if (!per_element) {
      return;
    }
    const int64_t period = layout.channels * layout.inner;
    tiled_scale.resize(period);
    tiled_divisor.resize(period);
    tiled_amax.resize(period);
    for (int64_t p = 0; p < period; ++p) {
      const int64_t c = p / layout.inner;
      tiled_scale[p] = channel.scale[c];
      tiled_divisor[p] = channel.divisor[c];
      tiled_amax[p] = channel.amax[c];
    }
  }

  // Calls run(begin, end, constants) for consecutive runs covering [begin, end).
  template <typename RunFn>
  void for_each_run(int64_t begin, int64_t end, const RunFn& run) const {
    const int64_t block = per_element ? layout.channels * layout.inner : layout.inner;
    int64_t i = begin;
    while (i < end) {
      const int64_t stop = std::min(end, (i / block + 1) * block);
      RunConstants<acc_t> k{nullptr, nullptr, nullptr, lo, hi};
      if (per_element) {
        const int64_t p = i % block;
        k.scale = tiled_scale.data() + p;
        k.divisor = tiled_divisor.data() + p;
        k.amax = tiled_amax.data() + p;
      } else {
        const int64_t c = (i / block) % layout.channels;
        k.scale = channel.scale.data() + c;
        k.divisor = channel.divisor.data() + c;
        k.amax = channel.amax.data() + c;
      }
      run(i, stop, k);
      i = stop;
    }
  }
};

// Fake quant of contiguous src into contiguous dst (dst may be src), and mask when given. Returns
// whether a negative input was seen (out of place only).
template <typename scalar_t>
bool fake_quant_contiguous(const at::Tensor& src, at::Tensor& dst, bool* mask,
                           const QuantPlan<at::opmath_type<scalar_t>>& plan) {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* in = src.const_data_ptr<scalar_t>();
  scalar_t* out = dst.mutable_data_ptr<scalar_t>();
  std::atomic<bool> found_negative{false};
  at::parallel_for(0, src.numel(), kGrainSize, [&](int64_t begin, int64_t end) {
    unsigned negative = 0;
    plan.for_each_run(begin, end, [&](int64_t b, int64_t e, const RunConstants<acc_t>& k) {
      if (plan.per_element) {
        negative |= mask ? quantize_any<true, true>(in + b, out + b, mask + b, e - b, k)
                         : quantize_any<true, false>(in + b, out + b, nullptr, e - b, k);
      } else {
        negative |= mask ? quantize_any<false, true>(in + b, out + b, mask + b, e - b, k)
                         : quantize_any<false, false>(in + b, out + b, nullptr, e - b, k);
      }
    });
    if (negative != 0) {
      found_negative.store(true, std::memory_order_relaxed);
    }
  });
  return found_negative.load();
}

std::tuple<at::Tensor, at::Tensor> fake_quant_with_mask(const at::Tensor& x, const at::Tensor& amax,
                                                        std::optional<int64_t> axis, int64_t num_bits,
                                                        bool is_unsigned, bool narrow_range, bool want_mask,
                                                        const char* op_name) {
  const ChannelLayout layout = check_fake_quant_args(x, amax, axis, num_bits, op_name);
  const IntegerRange range = integer_range(num_bits, is_unsigned, narrow_range);
  const at::Tensor src = x.contiguous();
  at::Tensor out = at::empty(x.sizes(), x.options());
  at::Tensor mask = want_mask ? at::empty(x.sizes(), x.options().dtype(at::kBool)) : at::Tensor();
  bool negative = false;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fake_quant", [&] {
    const QuantPlan<at::opmath_type<scalar_t>> plan(amax, layout, range);
    negative = fake_quant_contiguous<scalar_t>(src, out, want_mask ? mask.mutable_data_ptr<bool>() : nullptr, plan);
  });
  if (is_unsigned) {
    check_unsigned_input(negative);
  }
  return {out, mask};
}

at::Tensor fake_quant_cpu(const at::Tensor& x, const at::Tensor& amax, std::optional<int64_t> axis, int64_t num_bits,
                          bool is_unsigned, bool narrow_range) {
  return std::get<0>(fake_quant_with_mask(x, amax, axis, num_bits, is_unsigned, narrow_range, false, "fake_quant"));
}

std::tuple<at::Tensor, at::Tensor> fake_quant_cachemask_cpu(const at::Tensor& x, const at::Tensor& amax,
                                                            std::optional<int64_t> axis, int64_t num_bits,
                                                            bool is_unsigned, bool narrow_range) {
  return fake_quant_with_mask(x, amax, axis, num_bits, is_unsigned, narrow_range, true, "fake_quant_cachemask");
}

// In place; a non-contiguous x is quantized in a contiguous copy that is then copied back, so
// every view of x's storage sees the result.
void fake_quant_inplace_cpu(at::Tensor& x, const at::Tensor& amax, std::optional<int64_t> axis, int64_t num_bits,
                            bool is_unsigned, bool narrow_range) {
  const ChannelLayout layout = check_fake_quant_args(x, amax, axis, num_bits, "fake_quant_");
  at::assert_no_internal_overlap(x);
  const IntegerRange range = integer_range(num_bits, is_unsigned, narrow_range);
  at::Tensor work = x.is_contiguous() ? x : x.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fake_quant_", [&] {
    const QuantPlan<at::opmath_type<scalar_t>> plan(amax, layout, range);
    if (is_unsigned) {
      check_unsigned_input(any_negative<scalar_t>(work));
    }
    fake_quant_contiguous<scalar_t>(work, work, nullptr, plan);
  });
  if (!work.is_same(x)) {
    x.copy_(work);
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(pytorch_quantization, CPU, m) {
  m.impl("fake_quant", &fake_quant_cpu);
  m.impl("fake_quant_cachemask", &fake_quant_cachemask_cpu);
  m.impl("fake_quant_", &fake_quant_inplace_cpu);
}

}  // namespace pytorch_quantization
