// CUDA kernel of ste_grad: grad where the saved mask is true, +0.0 elsewhere, in one pass.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../quant_args.h"
#include "launch.cuh"

namespace pytorch_quantization {
namespace {

template <typename scalar_t>
__global__ void ste_grad_kernel(const scalar_t* grad, const bool* mask, scalar_t* out, int64_t n) {
  for (int64_t i = global_thread_index(); i < n; i += grid_stride()) {
    out[i] = mask[i] ? grad[i] : static_cast<scalar_t>(0);
  }
}

at::Tensor ste_grad_cuda(const at::Tensor& grad, const at::Tensor& mask) {
  check_ste_grad_args(grad, mask);
  const c10::cuda::CUDAGuard guard(grad.device());
  const at::Tensor g = grad.contiguous();
  const at::Tensor m = mask.contiguous();
  at::Tensor out = at::empty(grad.sizes(), grad.options());
  const int64_t n = g.numel();
  if (n == 0) {
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "ste_grad_cuda", [&] {
    ste_grad_kernel<scalar_t><<<grid_size(n), kThreadsPerBlock, 0, at::cuda::getCurrentCUDAStream()>>>(
        g.const_data_ptr<scalar_t>(), m.const_data_ptr<bool>(), out.mutable_data_ptr<scalar_t>(), n);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(pytorch_quantization, CUDA, m) {
  m.impl("ste_grad", &ste_grad_cuda);
}

}  // namespace pytorch_quantization
