// CPU kernel of fake_e4m3: every dtype is rounded through float32, like _reference.fake_e4m3.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "../e4m3.h"
#include "../quant_args.h"

namespace pytorch_quantization {
namespace {

at::Tensor fake_e4m3_cpu(const at::Tensor& x) {
  check_floating_input(x, "fake_e4m3");
  const at::Tensor src = x.contiguous();
  at::Tensor out = at::empty(x.sizes(), x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fake_e4m3", [&] {
    const scalar_t* in = src.const_data_ptr<scalar_t>();
    scalar_t* dst = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, src.numel(), 32768, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        dst[i] = static_cast<scalar_t>(round_to_e4m3(static_cast<float>(in[i])));
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(pytorch_quantization, CPU, m) {
  m.impl("fake_e4m3", &fake_e4m3_cpu);
}

}  // namespace pytorch_quantization
