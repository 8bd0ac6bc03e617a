// CPU kernel of abs_histogram: each thread counts into its own histogram, then they are summed.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "../quant_args.h"
#include "half_convert.h"

namespace pytorch_quantization {
namespace {

constexpr int64_t kHalfBlock = 1024;

struct Bins {
  int64_t num_bins;
  float range, bins_per_unit;
  bool skip_zeros;
};

template <typename scalar_t>
void count_block(const scalar_t* in, int64_t n, int64_t* counts, const Bins& bins) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = std::abs(static_cast<float>(in[i]));
    if (!(v <= bins.range) || (bins.skip_zeros && v == 0.0f)) {
      continue;  // above the range, NaN, or a skipped zero
    }
    // v * bins_per_unit is finite and >= 0 here, so truncation is floor (and needs no libm call)
    const int64_t bin = static_cast<int64_t>(v * bins.bins_per_unit);
    ++counts[std::min(bin, bins.num_bins - 1)];
  }
}

// float16 goes through float32 blocks so that its conversions are vectorized (half_convert.h).
template <typename scalar_t>
void count_range(const scalar_t* in, int64_t n, int64_t* counts, const Bins& bins) {
  if constexpr (std::is_same_v<scalar_t, c10::Half>) {
    float block[kHalfBlock];
    for (int64_t b = 0; b < n; b += kHalfBlock) {
      const int64_t m = std::min(kHalfBlock, n - b);
      half_to_float(in + b, block, m);
      count_block(block, m, counts, bins);
    }
  } else {
    count_block(in, n, counts, bins);
  }
}

at::Tensor abs_histogram_cpu(const at::Tensor& x, int64_t num_bins, double range_max, bool skip_zeros) {
  check_floating_input(x, "abs_histogram");
  check_histogram_args(num_bins, range_max);
  const at::Tensor src = x.contiguous();
  const float range = static_cast<float>(range_max);
  const Bins bins{num_bins, range, static_cast<float>(num_bins) / range, skip_zeros};
  const int64_t num_threads = at::get_num_threads();
  std::vector<int64_t> partial(static_cast<size_t>(num_threads * num_bins), 0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "abs_histogram", [&] {
    const scalar_t* in = src.const_data_ptr<scalar_t>();
    at::parallel_for(0, src.numel(), 65536, [&](int64_t begin, int64_t end) {
      count_range(in + begin, end - begin, partial.data() + at::get_thread_num() * num_bins, bins);
    });
  });
  at::Tensor hist = at::zeros({num_bins}, x.options().dtype(at::kLong));
  int64_t* total = hist.mutable_data_ptr<int64_t>();
  for (int64_t t = 0; t < num_threads; ++t) {
    const int64_t* counts = partial.data() + t * num_bins;
    for (int64_t b = 0; b < num_bins; ++b) {
      total[b] += counts[b];
    }
  }
  return hist;
}

}  // namespace

TORCH_LIBRARY_IMPL(pytorch_quantization, CPU, m) {
  m.impl("abs_histogram", &abs_histogram_cpu);
}

}  // namespace pytorch_quantization
