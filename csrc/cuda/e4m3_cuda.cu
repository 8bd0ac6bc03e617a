// CUDA kernel of fake_e4m3 (rounding in ../e4m3.h, shared with the CPU kernel).
#include <ATen/Dispatch.h>
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

}  // namespace

TORCH_LIBRARY_IMPL(pytorch_quantization, CUDA, m) {
  m.impl("fake_e4m3", &fake_e4m3_cuda);
}

}  // namespace pytorch_quantization
