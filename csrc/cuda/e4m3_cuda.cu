// CUDA kernels of fake_e4m3 and scaled_e4m3 (rounding in ../e4m3.h, shared with the CPU kernels).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../e4m3.h"
#include "../quant_args.h"
#include "launch.cuh"

namespace pytorch_quantization {
namespace {

template <typename scalar_t>
__global__ void fake_e4m3_kernel(const scalar_t* x, scalar_t* out, int64_t n) {
  for (int64_t i = global_thread_index(); i < n; i += grid_stride()) {
    out[i] = static_cast<scalar_t>(round_to_e4m3(static_cast<float>(x[i])));
  }
}

// scale = 448 / amax in float32 (an IEEE division, as on the CPU); per channel (kPerChannel) element i uses
// amax[(i / inner) % channels], per tensor amax[0]. No value of amax is read on the host.
template <typename scalar_t, bool kPerChannel>
__global__ void scaled_e4m3_kernel(const scalar_t* x, const float* amax, scalar_t* out, int64_t n, int64_t channels,
                                   int64_t inner) {
  using acc_t = at::opmath_type<scalar_t>;
  const float tensor_scale = kPerChannel ? 0.0f : kE4M3Max / amax[0];
  for (int64_t i = global_thread_index(); i < n; i += grid_stride()) {
    const float scale = kPerChannel ? kE4M3Max / amax[(i / inner) % channels] : tensor_scale;
    out[i] = static_cast<scalar_t>(scaled_round_to_e4m3(static_cast<acc_t>(x[i]), scale));
  }
}

at::Tensor fake_e4m3_cuda(const at::Tensor& x) {
  check_floating_input(x, "fake_e4m3");
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor src = x.contiguous();
  at::Tensor out = at::empty(x.sizes(), x.options());
  const int64_t n = src.numel();
  if (n == 0) {
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fake_e4m3_cuda", [&] {
    fake_e4m3_kernel<scalar_t><<<grid_size(n), kThreadsPerBlock, 0, at::cuda::getCurrentCUDAStream()>>>(
        src.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), n);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor scaled_e4m3_cuda(const at::Tensor& x, const at::Tensor& amax, std::optional<int64_t> axis) {
  const ChannelLayout layout = check_amax_layout(x, amax, axis, "scaled_e4m3");
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor amax_f32 = amax.to(at::kFloat).contiguous();
  const at::Tensor src = x.contiguous();
  at::Tensor out = at::empty(x.sizes(), x.options());
  const int64_t n = src.numel();
  if (n == 0) {
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "scaled_e4m3_cuda", [&] {
    const auto stream = at::cuda::getCurrentCUDAStream();
    const scalar_t* in = src.const_data_ptr<scalar_t>();
    const float* a = amax_f32.const_data_ptr<float>();
    scalar_t* dst = out.mutable_data_ptr<scalar_t>();
    if (layout.channels > 1) {
      scaled_e4m3_kernel<scalar_t, true>
          <<<grid_size(n), kThreadsPerBlock, 0, stream>>>(in, a, dst, n, layout.channels, layout.inner);
    } else {
      scaled_e4m3_kernel<scalar_t, false>
          <<<grid_size(n), kThreadsPerBlock, 0, stream>>>(in, a, dst, n, layout.channels, layout.inner);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(pytorch_quantization, CUDA, m) {
  m.impl("fake_e4m3", &fake_e4m3_cuda);
  m.impl("scaled_e4m3", &scaled_e4m3_cuda);
}

}  // namespace pytorch_quantization
