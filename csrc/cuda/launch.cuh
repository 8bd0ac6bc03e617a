// Launch geometry shared by the CUDA kernels: enough blocks to fill the device, then grid-stride loops.
#pragma once

#include <ATen/cuda/CUDAContext.h>

#include <algorithm>
#include <cstdint>

namespace pytorch_quantization {

constexpr int kThreadsPerBlock = 256;

inline unsigned int grid_size(int64_t work_items) {
  const int64_t wanted = (work_items + kThreadsPerBlock - 1) / kThreadsPerBlock;
  const int64_t resident = static_cast<int64_t>(at::cuda::getCurrentDeviceProperties()->multiProcessorCount) * 8;
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min(wanted, resident)));
}

__device__ inline int64_t global_thread_index() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}

__device__ inline int64_t grid_stride() {
  return static_cast<int64_t>(gridDim.x) * blockDim.x;
}

}  // namespace pytorch_quantization
