// CPU kernel of fake_e4m3: every dtype is rounded through float32, like _reference.fake_e4m3.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>

#include "../e4m3.h"
#include "../quant_args.h"
#include "half_convert.h"

namespace pytorch_quantization {
namespace {

constexpr int64_t kHalfBlock = 1024;

template <typename scalar_t>
void round_block(const scalar_t* in, scalar_t* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    out[i] = static_cast<scalar_t>(round_to_e4m3(static_cast<float>(in[i])));
  }
}

// float16 goes through float32 blocks so that its conversions are vectorized (half_convert.h).
template <typename scalar_t>
void round_range(const scalar_t* in, scalar_t* out, int64_t n) {
  if constexpr (std::is_same_v<scalar_t, c10::Half>) {
    float block[kHalfBlock];
    for (int64_t b = 0; b < n; b += kHalfBlock) {
      const int64_t m = std::min(kHalfBlock, n - b);
      half_to_float(in + b, block, m);
      round_block(block, block, m);
      float_to_half(block, out + b, m);
    }
  } else {
    round_block(in, out, n);
  }
}

at::Tensor fake_e4m3_cpu(const at::Tensor& x) {
  check_floating_input(x, "fake_e4m3");
  const at::Tensor src = x.contiguous();
  at::Tensor out = at::empty(x.sizes(), x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fake_e4m3", [&] {
    const scalar_t* in = src.const_data_ptr<scalar_t>();
    scalar_t* dst = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, src.numel(), 32768,
                     [&](int64_t begin, int64_t end) { round_range(in + begin, dst + begin, end - begin); });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(pytorch_quantization, CPU, m) {
  m.impl("fake_e4m3", &fake_e4m3_cpu);
}

}  // namespace pytorch_quantization
