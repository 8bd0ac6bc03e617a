// CPU kernels of fake_e4m3 and scaled_e4m3: every dtype is rounded through float32, like _reference.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "../e4m3.h"
#include "../quant_args.h"
#include "vector_isa.h"
#include "half_convert.h"

namespace pytorch_quantization {
namespace {

constexpr int64_t kGrainSize = 32768;
constexpr int64_t kHalfBlock = 1024;

template <typename scalar_t>
C10_ALWAYS_INLINE void round_block(const scalar_t* in, scalar_t* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    out[i] = static_cast<scalar_t>(round_to_e4m3(static_cast<float>(in[i])));
  }
}

template <typename scalar_t>
C10_ALWAYS_INLINE void scaled_round_block(const scalar_t* in, scalar_t* out, int64_t n, float scale) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t i = 0; i < n; ++i) {
    out[i] = static_cast<scalar_t>(scaled_round_to_e4m3(static_cast<acc_t>(in[i]), scale));
  }
}

// The rounding is arithmetic-bound on cache-resident tensors (activations), so the element loops also run in an
// AVX2 and AVX-512 copies where the CPU has them (vector_isa.h; identical results).
template <typename scalar_t, typename BlockFn>
void run_block(const BlockFn& block, const scalar_t* in, scalar_t* out, int64_t n) {
  run_vectorized([&]() C10_ALWAYS_INLINE_ATTRIBUTE { block(in, out, n); });
}

// Runs block(in, out, n) over a range; float16 goes through float32 blocks so that its conversions are
// vectorized (half_convert.h), the other dtypes convert inside the block function.
template <typename scalar_t, typename BlockFn>
void for_range(const scalar_t* in, scalar_t* out, int64_t n, const BlockFn& block) {
  if constexpr (std::is_same_v<scalar_t, c10::Half>) {
    float buffer[kHalfBlock];
    for (int64_t b = 0; b < n; b += kHalfBlock) {
      const int64_t m = std::min(kHalfBlock, n - b);
      half_to_float(in + b, buffer, m);
      run_block(block, static_cast<const float*>(buffer), buffer, m);
      float_to_half(buffer, out + b, m);
    }
  } else {
    run_block(block, in, out, n);
  }
}

at::Tensor fake_e4m3_cpu(const at::Tensor& x) {
  check_floating_input(x, "fake_e4m3");
  const at::Tensor src = x.contiguous();
  at::Tensor out = at::empty(x.sizes(), x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fake_e4m3", [&] {
    const scalar_t* in = src.const_data_ptr<scalar_t>();
    scalar_t* dst = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, src.numel(), kGrainSize, [&](int64_t begin, int64_t end) {
      for_range(in + begin, dst + begin, end - begin,
                [](const auto* a, auto* b, int64_t m) C10_ALWAYS_INLINE_ATTRIBUTE { round_block(a, b, m); });
    });
  });
  return out;
}

// One pass: each run of elements inside one channel's contiguous block uses that channel's scale.
at::Tensor scaled_e4m3_cpu(const at::Tensor& x, const at::Tensor& amax, std::optional<int64_t> axis) {
  const ChannelLayout layout = check_amax_layout(x, amax, axis, "scaled_e4m3");
  const at::Tensor amax_f32 = amax.to(at::kFloat).contiguous();
  const float* a = amax_f32.const_data_ptr<float>();
  std::vector<float> scales(layout.channels);
  for (int64_t c = 0; c < layout.channels; ++c) {
    scales[c] = kE4M3Max / a[c];
  }
  const at::Tensor src = x.contiguous();
  at::Tensor out = at::empty(x.sizes(), x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "scaled_e4m3", [&] {
    const scalar_t* in = src.const_data_ptr<scalar_t>();
    scalar_t* dst = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, src.numel(), kGrainSize, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end;) {
        const int64_t stop = std::min(end, (i / layout.inner + 1) * layout.inner);
        const float scale = scales[(i / layout.inner) % layout.channels];
        for_range(in + i, dst + i, stop - i, [scale](const auto* p, auto* q, int64_t m) C10_ALWAYS_INLINE_ATTRIBUTE {
          scaled_round_block(p, q, m, scale);
        });
        i = stop;
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(pytorch_quantization, CPU, m) {
  m.impl("fake_e4m3", &fake_e4m3_cpu);
  m.impl("scaled_e4m3", &scaled_e4m3_cpu);
}

}  // namespace pytorch_quantization
