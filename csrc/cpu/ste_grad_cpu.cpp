// CPU kernel of ste_grad, the backward of fake quantization: grad where the saved mask is true, +0.0
// elsewhere (what torch.where(mask, grad, 0) gives), in one pass over grad and mask.
//
// The element is selected by its bits (an AND with all-ones or zero), which is exact for every
// floating dtype and vectorizes without floating-point work.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cstdint>

#include "../quant_args.h"

namespace pytorch_quantization {
namespace {

constexpr int64_t kGrainSize = 65536;

template <typename bits_t>
void select_run(const bits_t* __restrict__ grad, const bool* __restrict__ mask, bits_t* __restrict__ out,
                int64_t n) {
  const uint8_t* __restrict__ keep = reinterpret_cast<const uint8_t*>(mask);
  for (int64_t i = 0; i < n; ++i) {
    out[i] = grad[i] & (bits_t(0) - static_cast<bits_t>(keep[i]));
  }
}

template <typename bits_t>
void select_all(const at::Tensor& grad, const at::Tensor& mask, at::Tensor& out) {
  const bits_t* g = static_cast<const bits_t*>(grad.const_data_ptr());
  const bool* m = mask.const_data_ptr<bool>();
  bits_t* o = static_cast<bits_t*>(out.mutable_data_ptr());
  at::parallel_for(0, grad.numel(), kGrainSize,
                   [&](int64_t begin, int64_t end) { select_run(g + begin, m + begin, o + begin, end - begin); });
}

at::Tensor ste_grad_cpu(const at::Tensor& grad, const at::Tensor& mask) {
  check_ste_grad_args(grad, mask);
  const at::Tensor g = grad.contiguous();
  const at::Tensor m = mask.contiguous();
  at::Tensor out = at::empty(grad.sizes(), grad.options());
  switch (grad.element_size()) {
    case 2:
      select_all<uint16_t>(g, m, out);
      break;
    case 4:
      select_all<uint32_t>(g, m, out);
      break;
    default:
      select_all<uint64_t>(g, m, out);
      break;
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(pytorch_quantization, CPU, m) {
  m.impl("ste_grad", &ste_grad_cpu);
}

}  // namespace pytorch_quantization
