// CPU kernels of ste_grad and ste_grad_packed, the backward of fake quantization: grad where the saved
// mask is set, +0.0 elsewhere (what torch.where(mask, grad, 0) gives), in one pass over grad and mask.
//
// The element is selected by its bits (an AND with all-ones or zero), which is exact for every
// floating dtype and vectorizes without floating-point work. ste_grad_packed takes the mask of
// fake_quant_packmask (8 flags per byte, element i in bit i % 8 of byte i / 8) and unpacks it block by
// block through a table into the byte flags that the same selection loop reads.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>

#include "../quant_args.h"

namespace pytorch_quantization {
namespace {

constexpr int64_t kGrainSize = 65536;
constexpr int64_t kUnpackBlock = 4096;  // a multiple of 8

template <typename bits_t>
void select_run(const bits_t* __restrict__ grad, const uint8_t* __restrict__ keep, bits_t* __restrict__ out,
                int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    out[i] = grad[i] & (bits_t(0) - static_cast<bits_t>(keep[i]));
  }
}

// byte -> its 8 bits as 8 bytes of 0 or 1 (bit i in byte i of the little-endian word)
using SpreadTable = std::array<uint64_t, 256>;

SpreadTable make_spread_table() {
  SpreadTable table{};
  for (uint32_t value = 0; value < 256; ++value) {
    uint8_t flags[8];
    for (int bit = 0; bit < 8; ++bit) {
      flags[bit] = static_cast<uint8_t>((value >> bit) & 1u);
    }
    std::memcpy(&table[value], flags, sizeof(flags));
  }
  return table;
}

template <typename bits_t>
void select_all(const at::Tensor& grad, const uint8_t* keep, bool packed, at::Tensor& out) {
  static const SpreadTable spread = make_spread_table();
  const bits_t* g = static_cast<const bits_t*>(grad.const_data_ptr());
  bits_t* o = static_cast<bits_t*>(out.mutable_data_ptr());
  const int64_t n = grad.numel();
  if (!packed) {
    at::parallel_for(0, n, kGrainSize,
                     [&](int64_t begin, int64_t end) { select_run(g + begin, keep + begin, o + begin, end - begin); });
    return;
  }
  at::parallel_for(0, (n + 7) / 8, kGrainSize / 8, [&](int64_t byte_begin, int64_t byte_end) {
    uint8_t flags[kUnpackBlock];
    const int64_t stop = std::min(byte_end * 8, n);
    for (int64_t b = byte_begin * 8; b < stop; b += kUnpackBlock) {
      const int64_t e = std::min(b + kUnpackBlock, stop);
      for (int64_t j = 0; j < (e - b + 7) / 8; ++j) {
        std::memcpy(flags + 8 * j, &spread[keep[b / 8 + j]], 8);
      }
      select_run(g + b, flags, o + b, e - b);
    }
  });
}

at::Tensor select_by_mask(const at::Tensor& grad, const at::Tensor& mask, bool packed) {
  const at::Tensor g = grad.contiguous();
  const at::Tensor m = mask.contiguous();
  const uint8_t* keep = static_cast<const uint8_t*>(m.const_data_ptr());
  at::Tensor out = at::empty(grad.sizes(), grad.options());
  switch (grad.element_size()) {
    case 2:
      select_all<uint16_t>(g, keep, packed, out);
      break;
    case 4:
      select_all<uint32_t>(g, keep, packed, out);
      break;
    default:
      select_all<uint64_t>(g, keep, packed, out);
      break;
  }
  return out;
}

at::Tensor ste_grad_cpu(const at::Tensor& grad, const at::Tensor& mask) {
  check_ste_grad_args(grad, mask);
  return select_by_mask(grad, mask, false);
}

at::Tensor ste_grad_packed_cpu(const at::Tensor& grad, const at::Tensor& packed_mask) {
  check_floating_input(grad, "ste_grad_packed");
  TORCH_CHECK(packed_mask.scalar_type() == at::kByte && packed_mask.dim() == 1 &&
                  packed_mask.numel() == (grad.numel() + 7) / 8,
              "pytorch_quantization::ste_grad_packed: packed_mask must be the uint8 mask of fake_quant_packmask, ",
              "ceil(numel / 8) = ", (grad.numel() + 7) / 8, " elements, got ", packed_mask.scalar_type(), " of shape ",
              packed_mask.sizes());
  TORCH_CHECK(packed_mask.device() == grad.device(), "pytorch_quantization::ste_grad_packed: packed_mask is on ",
              packed_mask.device(), " but grad is on ", grad.device());
  return select_by_mask(grad, packed_mask, true);
}

}  // namespace

TORCH_LIBRARY_IMPL(pytorch_quantization, CPU, m) {
  m.impl("ste_grad", &ste_grad_cpu);
  m.impl("ste_grad_packed", &ste_grad_packed_cpu);
}

}  // namespace pytorch_quantization
