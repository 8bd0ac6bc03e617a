// Operator schemas of the pytorch_quantization namespace and the Python module that loads them.
//
// Importing `pytorch_quantization._C` runs the static registrations below and those of the CPU
// (csrc/cpu) and CUDA (csrc/cuda) kernels; the ops are then reachable as
// torch.ops.pytorch_quantization.<name>.
#include <Python.h>
#include <torch/library.h>

#include "cpu/vector_isa.h"
#include "tensor_snapshot.h"

extern "C" {
// cpu_vector_isa(): the vector instruction set the CPU kernels' element loops run in (cpu/vector_isa.h).
static PyObject* cpu_vector_isa(PyObject* /*self*/, PyObject* /*args*/) {
  return PyUnicode_FromString(pytorch_quantization::vector_isa_name(pytorch_quantization::vector_isa()));
}

// Besides cpu_vector_isa and tensor_snapshot, importing the module only loads the shared library (the
// registrations below).
PyMODINIT_FUNC PyInit__C(void) {
  static PyMethodDef methods[] = {
      {"cpu_vector_isa", cpu_vector_isa, METH_NOARGS,
       "The vector instruction set of the CPU kernels' element loops: 'avx512', 'avx2' or 'baseline' "
       "(capped by PYTORCH_QUANTIZATION_CPU_ISA)."},
      {"tensor_snapshot", pytorch_quantization::tensor_snapshot, METH_O,
       "What identifies the current contents of a tuple of tensors (None allowed), as bytes (tensor_snapshot.h)."},
      {nullptr, nullptr, 0, nullptr}};
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, methods};
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
