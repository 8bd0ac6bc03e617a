// Bulk float16 <-> float32 conversion for the CPU kernels.
//
// The extension is built for baseline x86-64, where c10::Half converts one element at a time in
// software. These helpers use the F16C instructions when the CPU has them (checked once at run
// time) and c10's conversion otherwise; both round to nearest even, so the results are identical.
#pragma once

#include <c10/util/Half.h>

#include <cstdint>

namespace pytorch_quantization {

void half_to_float(const c10::Half* src, float* dst, int64_t n);
void float_to_half(const float* src, c10::Half* dst, int64_t n);

}  // namespace pytorch_quantization
