// Operator schemas of the pytorch_quantization namespace and the Python module that loads them.
//
// Importing `pytorch_quantization._C` runs the static registrations below and those of the CPU
// (csrc/cpu) and CUDA (csrc/cuda) kernels; the ops are then reachable as
// torch.ops.pytorch_quantization.<name>.
#include <Python.h>
#include <torch/library.h>

extern "C" {
// The module has no Python functions of its own: importing it only loads the shared library.
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(pytorch_quantization, m) {
  m.def("fake_quant(Tensor x, Tensor amax, int? axis, int num_bits, bool is_unsigned, bool narrow_range) -> Tensor");
  m.def(
      "fake_quant_cachemask(Tensor x, Tensor amax, int? axis, int num_bits, bool is_unsigned, bool narrow_range)"
      " -> (Tensor, Tensor)");
  m.def("fake_quant_(Tensor(a!) x, Tensor amax, int? axis, int num_bits, bool is_unsigned, bool narrow_range) -> ()");
  m.def("ste_grad(Tensor grad, Tensor mask) -> Tensor");
  m.def("fake_e4m3(Tensor x) -> Tensor");
  m.def("scaled_e4m3(Tensor x, Tensor amax, int? axis) -> Tensor");
  m.def("abs_histogram(Tensor x, int num_bins, float range_max, bool skip_zeros) -> Tensor");
}
