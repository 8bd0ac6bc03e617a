// Argument checks and shape bookkeeping shared by the CPU and CUDA kernels.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>

namespace pytorch_quantization {

// amax at or below this quantizes everything to 0 (scale 0): 2**-24, _reference.AMAX_EPSILON.
constexpr double kAmaxEpsilon = 5.9604644775390625e-08;

// x viewed as [outer, channels, inner] (contiguous): element i uses amax[(i / inner) % channels].
// Per tensor: channels = 1 and inner = numel.
struct ChannelLayout {
  int64_t channels = 1;
  int64_t inner = 1;
};

// The integer grid [lo, hi] and bound = 2**(num_bits - 1 + unsigned) - 1 (equal to hi).
struct IntegerRange {
  double lo;
  double hi;
};

// Checks x (floating) and amax (float32 or float64, on x's device, one element per channel); returns the
// layout of the quantization axis (channels = 1, inner = numel for axis = None).
ChannelLayout check_amax_layout(const at::Tensor& x, const at::Tensor& amax, std::optional<int64_t> axis,
                                const char* op_name);

// check_amax_layout plus num_bits in 1..16.
ChannelLayout check_fake_quant_args(const at::Tensor& x, const at::Tensor& amax, std::optional<int64_t> axis,
                                    int64_t num_bits, const char* op_name);

// Checks that x is float32, float64, float16 or bfloat16.
void check_floating_input(const at::Tensor& x, const char* op_name);

// Checks grad (floating) and mask (bool) of ste_grad: same shape and device.
void check_ste_grad_args(const at::Tensor& grad, const at::Tensor& mask);

// Checks num_bins >= 1 and that range_max is finite and positive in float32 (the histogram's compute type).
void check_histogram_args(int64_t num_bins, double range_max);

IntegerRange integer_range(int64_t num_bits, bool is_unsigned, bool narrow_range);

}  // namespace pytorch_quantization
