// CUDA kernel of abs_histogram: each block counts into a shared-memory histogram with atomics and
// adds it to the global int64 counts; histograms too large for shared memory count globally.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../quant_args.h"
#include "launch.cuh"

namespace pytorch_quantization {
namespace {

constexpr int64_t kMaxSharedBins = 12288;  // 48 KiB of 32-bit counters

struct HistogramArgs {
  int64_t n, num_bins;
  float range, bins_per_unit;
  bool skip_zeros;
  unsigned long long* counts;
};

// The bin of x's element, or -1 when it is not counted (above the range, NaN, skipped zero).
template <typename scalar_t>
__device__ inline int64_t bin_of(scalar_t value, const HistogramArgs& a) {
  const float v = fabsf(static_cast<float>(value));
  if (!(v <= a.range) || (a.skip_zeros && v == 0.0f)) {
    return -1;
  }
  const int64_t bin = static_cast<int64_t>(floorf(__fmul_rn(v, a.bins_per_unit)));
  return bin < a.num_bins ? bin : a.num_bins - 1;
}

template <typename scalar_t>
__global__ void abs_histogram_shared_kernel(const scalar_t* x, HistogramArgs a) {
  extern __shared__ unsigned int block_counts[];
  for (int64_t b = threadIdx.x; b < a.num_bins; b += blockDim.x) {
    block_counts[b] = 0;
  }
  __syncthreads();
  for (int64_t i = global_thread_index(); i < a.n; i += grid_stride()) {
    const int64_t bin = bin_of(x[i], a);
    if (bin >= 0) {
      atomicAdd(&block_counts[bin], 1u);
    }
  }
  __syncthreads();
  for (int64_t b = threadIdx.x; b < a.num_bins; b += blockDim.x) {
    if (block_counts[b] != 0) {
      atomicAdd(&a.counts[b], static_cast<unsigned long long>(block_counts[b]));
    }
  }
}

template <typename scalar_t>
__global__ void abs_histogram_global_kernel(const scalar_t* x, HistogramArgs a) {
  for (int64_t i = global_thread_index(); i < a.n; i += grid_stride()) {
    const int64_t bin = bin_of(x[i], a);
    if (bin >= 0) {
      atomicAdd(&a.counts[bin], 1ull);
    }
  }
}

at::Tensor abs_histogram_cuda(const at::Tensor& x, int64_t num_bins, double range_max, bool skip_zeros) {
  check_floating_input(x, "abs_histogram");
  check_histogram_args(num_bins, range_max);
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor src = x.contiguous();
  at::Tensor hist = at::zeros({num_bins}, x.options().dtype(at::kLong));
  const int64_t n = src.numel();
  if (n == 0) {
    return hist;
  }
  const float range = static_cast<float>(range_max);
  const HistogramArgs args{n, num_bins, range, static_cast<float>(num_bins) / range, skip_zeros,
                           reinterpret_cast<unsigned long long*>(hist.mutable_data_ptr<int64_t>())};
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "abs_histogram_cuda", [&] {
    const scalar_t* data = src.const_data_ptr<scalar_t>();
    if (num_bins <= kMaxSharedBins) {
      abs_histogram_shared_kernel<scalar_t>
          <<<grid_size(n), kThreadsPerBlock, num_bins * sizeof(unsigned int), stream>>>(data, args);
    } else {
      abs_histogram_global_kernel<scalar_t><<<grid_size(n), kThreadsPerBlock, 0, stream>>>(data, args);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return hist;
}

}  // namespace

TORCH_LIBRARY_IMPL(pytorch_quantization, CUDA, m) {
  m.impl("abs_histogram", &abs_histogram_cuda);
}

}  // namespace pytorch_quantization
