#include "quant_args.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>

namespace pytorch_quantization {

void check_floating_input(const at::Tensor& x, const char* op_name) {
  const auto dtype = x.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16,
              "pytorch_quantization::", op_name, ": x must be float32, float64, float16 or bfloat16, got ", dtype,
              "; cast it with .float() first");
}

ChannelLayout check_fake_quant_args(const at::Tensor& x, const at::Tensor& amax, std::optional<int64_t> axis,
                                    int64_t num_bits, const char* op_name) {
  const ChannelLayout layout = check_amax_layout(x, amax, axis, op_name);
  TORCH_CHECK(num_bits >= 1 && num_bits <= 16, "pytorch_quantization::", op_name,
              ": num_bits must be in 1..16, got ", num_bits);
  return layout;
}

ChannelLayout check_amax_layout(const at::Tensor& x, const at::Tensor& amax, std::optional<int64_t> axis,
                                const char* op_name) {
  check_floating_input(x, op_name);
  TORCH_CHECK(amax.scalar_type() == at::kFloat || amax.scalar_type() == at::kDouble, "pytorch_quantization::",
              op_name, ": amax must be float32 or float64, got ", amax.scalar_type());
  TORCH_CHECK(amax.device() == x.device(), "pytorch_quantization::", op_name, ": amax is on ", amax.device(),
              " but x is on ", x.device(), "; move amax with .to(x.device)");
  ChannelLayout layout;
  if (!axis.has_value()) {
    TORCH_CHECK(amax.numel() == 1, "pytorch_quantization::", op_name,
                ": per-tensor quantization (axis=None) needs a one-element amax, got ", amax.numel(),
                " elements; pass the axis amax varies along");
    layout.inner = std::max<int64_t>(x.numel(), 1);  // one channel spanning the whole tensor
    return layout;
  }
  const int64_t dim = x.dim();
  const int64_t ax = *axis < 0 ? *axis + dim : *axis;
  TORCH_CHECK(dim > 0 && ax >= 0 && ax < dim, "pytorch_quantization::", op_name, ": axis ", *axis,
              " is out of range for a ", dim, "-D x");
  layout.channels = x.size(ax);
  TORCH_CHECK(amax.numel() == layout.channels, "pytorch_quantization::", op_name, ": amax has ", amax.numel(),
              " elements but x has ", layout.channels, " along axis ", ax, "; give one amax per channel");
  for (int64_t d = ax + 1; d < dim; ++d) {
    layout.inner *= x.size(d);
  }
  return layout;
}

void check_ste_grad_args(const at::Tensor& grad, const at::Tensor& mask) {
  check_floating_input(grad, "ste_grad");
  TORCH_CHECK(mask.scalar_type() == at::kBool, "pytorch_quantization::ste_grad: mask must be bool, got ",
              mask.scalar_type(), "; pass the mask fake_quant_cachemask returned");
  TORCH_CHECK(mask.sizes() == grad.sizes(), "pytorch_quantization::ste_grad: mask has shape ", mask.sizes(),
              " but grad has shape ", grad.sizes(), "; they must be equal");
  TORCH_CHECK(mask.device() == grad.device(), "pytorch_quantization::ste_grad: mask is on ", mask.device(),
              " but grad is on ", grad.device());
}

void check_histogram_args(int64_t num_bins, double range_max) {
  TORCH_CHECK(num_bins >= 1, "pytorch_quantization::abs_histogram: num_bins must be >= 1, got ", num_bins);
  const float range = static_cast<float>(range_max);
  TORCH_CHECK(std::isfinite(range) && range > 0.0f,
              "pytorch_quantization::abs_histogram: range_max must be positive and finite in float32, got ",
              range_max);
}

IntegerRange integer_range(int64_t num_bits, bool is_unsigned, bool narrow_range) {
  const double hi = std::ldexp(1.0, static_cast<int>(num_bits - 1 + (is_unsigned ? 1 : 0))) - 1.0;
  if (is_unsigned) {
    return {0.0, hi};
  }
  return {narrow_range ? -hi : -hi - 1.0, hi};
}

}  // namespace pytorch_quantization
