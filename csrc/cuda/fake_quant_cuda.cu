// CUDA kernels of fake_quant, fake_quant_cachemask and fake_quant_.
//
// Arithmetic uses the explicitly rounded intrinsics (__fmul_rn, __fdiv_rn, ...) so that no
// multiply is fused into a later operation whatever the compiler flags, matching _reference bit
// for bit. Per-tensor calls on contiguous, 16-byte aligned data load and store 16 bytes at a time.
#include <ATen/Dispatch.h>
#include <ATen/MemoryOverlap.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../quant_args.h"
#include "launch.cuh"

namespace pytorch_quantization {
namespace {


__device__ inline float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ inline double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ inline float div_rn(float a, float b) { return __fdiv_rn(a, b); }
__device__ inline double div_rn(double a, double b) { return __ddiv_rn(a, b); }
__device__ inline float round_even(float a) { return rintf(a); }
__device__ inline double round_even(double a) { return rint(a); }

// scale = bound / amax and its divisor (1 where amax <= 2**-24, which makes scale 0).
template <typename acc_t>
struct Scale {
  acc_t scale, divisor, amax;

  __device__ Scale(acc_t a, acc_t bound) : amax(a) {
    const bool tiny = a <= static_cast<acc_t>(kAmaxEpsilon);
    scale = tiny ? acc_t(0) : div_rn(bound, a);
    divisor = tiny ? acc_t(1) : scale;
  }

  __device__ acc_t apply(acc_t v, acc_t lo, acc_t hi) const {
    acc_t q = round_even(mul_rn(v, scale));
    q = q < lo ? lo : q;  // comparisons are false for NaN, which passes through
    q = q > hi ? hi : q;
    return div_rn(q, divisor);
  }
};

template <typename scalar_t, typename acc_t>
struct QuantArgs {
  const scalar_t* x;
  scalar_t* out;  // may equal x (in place)
  bool* mask;     // nullptr when not wanted
  const acc_t* amax;
  int64_t n, channels, inner;
  acc_t bound, lo, hi;
};

// Any layout: element i uses amax[(i / inner) % channels].
template <typename scalar_t, typename acc_t>
__global__ void fake_quant_kernel(QuantArgs<scalar_t, acc_t> a) {
  for (int64_t i = global_thread_index(); i < a.n; i += grid_stride()) {
    const int64_t c = a.channels == 1 ? 0 : (i / a.inner) % a.channels;
    const Scale<acc_t> s(a.amax[c], a.bound);
    const acc_t v = static_cast<acc_t>(a.x[i]);
    a.out[i] = static_cast<scalar_t>(s.apply(v, a.lo, a.hi));
    if (a.mask != nullptr) {
      a.mask[i] = fabs(v) <= s.amax;
    }
  }
}

template <typename scalar_t, int kVec>
struct alignas(sizeof(scalar_t) * kVec) Pack {
  scalar_t v[kVec];
};

// Per tensor, x and out 16-byte aligned: kVec elements per load/store, the tail element-wise.
template <typename scalar_t, typename acc_t, int kVec>
__global__ void fake_quant_per_tensor_vec_kernel(QuantArgs<scalar_t, acc_t> a) {
  const Scale<acc_t> s(a.amax[0], a.bound);
  const int64_t packs = a.n / kVec;
  const auto* in = reinterpret_cast<const Pack<scalar_t, kVec>*>(a.x);
  auto* out = reinterpret_cast<Pack<scalar_t, kVec>*>(a.out);
  for (int64_t p = global_thread_index(); p < packs; p += grid_stride()) {
    Pack<scalar_t, kVec> pack = in[p];
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      const acc_t v = static_cast<acc_t>(pack.v[k]);
      if (a.mask != nullptr) {
        a.mask[p * kVec + k] = fabs(v) <= s.amax;
      }
      pack.v[k] = static_cast<scalar_t>(s.apply(v, a.lo, a.hi));
    }
    out[p] = pack;
  }
  const int64_t tail = packs * kVec + global_thread_index();
  if (tail < a.n) {
    const acc_t v = static_cast<acc_t>(a.x[tail]);
    a.out[tail] = static_cast<scalar_t>(s.apply(v, a.lo, a.hi));
    if (a.mask != nullptr) {
      a.mask[tail] = fabs(v) <= s.amax;
    }
  }
}

// Runs the kernel on contiguous src into contiguous dst (dst may be src).
void launch_fake_quant(const at::Tensor& src, at::Tensor& dst, bool* mask, const at::Tensor& amax,
                       const ChannelLayout& layout, const IntegerRange& range) {
  const int64_t n = src.numel();
  if (n == 0) {
    return;
  }
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, src.scalar_type(), "fake_quant_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const at::Tensor amax_acc = amax.to(c10::CppTypeToScalarType<acc_t>::value).contiguous();
    QuantArgs<scalar_t, acc_t> args{src.const_data_ptr<scalar_t>(), dst.mutable_data_ptr<scalar_t>(), mask,
                                    amax_acc.const_data_ptr<acc_t>(), n, layout.channels, layout.inner,
                                    static_cast<acc_t>(range.hi), static_cast<acc_t>(range.lo),
                                    static_cast<acc_t>(range.hi)};
    constexpr int kVec = 16 / sizeof(scalar_t);
    const bool aligned = reinterpret_cast<uintptr_t>(args.x) % 16 == 0 && reinterpret_cast<uintptr_t>(args.out) % 16 == 0;
    if (layout.channels == 1 && aligned) {
      fake_quant_per_tensor_vec_kernel<scalar_t, acc_t, kVec>
          <<<grid_size(n / kVec + 1), kThreadsPerBlock, 0, stream>>>(args);
    } else {
      fake_quant_kernel<scalar_t, acc_t><<<grid_size(n), kThreadsPerBlock, 0, stream>>>(args);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

std::tuple<at::Tensor, at::Tensor> fake_quant_with_mask(const at::Tensor& x, const at::Tensor& amax,
                                                        std::optional<int64_t> axis, int64_t num_bits,
                                                        bool is_unsigned, bool narrow_range, bool want_mask,
                                                        const char* op_name) {
  const ChannelLayout layout = check_fake_quant_args(x, amax, axis, num_bits, op_name);
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor src = x.contiguous();
  at::Tensor out = at::empty(x.sizes(), x.options());
  at::Tensor mask = want_mask ? at::empty(x.sizes(), x.options().dtype(at::kBool)) : at::Tensor();
  launch_fake_quant(src, out, want_mask ? mask.mutable_data_ptr<bool>() : nullptr, amax, layout,
                    integer_range(num_bits, is_unsigned, narrow_range));
  return {out, mask};
}

at::Tensor fake_quant_cuda(const at::Tensor& x, const at::Tensor& amax, std::optional<int64_t> axis, int64_t num_bits,
                           bool is_unsigned, bool narrow_range) {
  return std::get<0>(fake_quant_with_mask(x, amax, axis, num_bits, is_unsigned, narrow_range, false, "fake_quant"));
}

std::tuple<at::Tensor, at::Tensor> fake_quant_cachemask_cuda(const at::Tensor& x, const at::Tensor& amax,
                                                             std::optional<int64_t> axis, int64_t num_bits,
                                                             bool is_unsigned, bool narrow_range) {
  return fake_quant_with_mask(x, amax, axis, num_bits, is_unsigned, narrow_range, true, "fake_quant_cachemask");
}

void fake_quant_inplace_cuda(at::Tensor& x, const at::Tensor& amax, std::optional<int64_t> axis, int64_t num_bits,
                             bool is_unsigned, bool narrow_range) {
  const ChannelLayout layout = check_fake_quant_args(x, amax, axis, num_bits, "fake_quant_");
  at::assert_no_internal_overlap(x);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor work = x.is_contiguous() ? x : x.contiguous();
  launch_fake_quant(work, work, nullptr, amax, layout, integer_range(num_bits, is_unsigned, narrow_range));
  if (!work.is_same(x)) {
    x.copy_(work);
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(pytorch_quantization, CUDA, m) {
  m.impl("fake_quant", &fake_quant_cuda);
  m.impl("fake_quant_cachemask", &fake_quant_cachemask_cuda);
  m.impl("fake_quant_", &fake_quant_inplace_cuda);
}

}  // namespace pytorch_quantization
