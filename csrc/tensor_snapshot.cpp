#include "tensor_snapshot.h"

#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>

#include <cstdint>
#include <vector>

namespace pytorch_quantization {
namespace {

constexpr int64_t kNoneMarker = -2;

void append_tensor(std::vector<int64_t>& words, PyObject* object, const at::Tensor& t) {
  words.push_back(static_cast<int64_t>(reinterpret_cast<intptr_t>(object)));
  words.push_back(t.is_inference() ? -1 : static_cast<int64_t>(t._version()));
  words.push_back(t.has_storage() ? static_cast<int64_t>(reinterpret_cast<intptr_t>(t.data_ptr())) : -1);
  words.push_back(static_cast<int64_t>(t.scalar_type()));
  words.push_back(static_cast<int64_t>(t.device().type()));
  words.push_back(static_cast<int64_t>(t.device().index()));
  words.push_back(t.dim());
  for (const int64_t size : t.sizes()) {
    words.push_back(size);
  }
}

}  // namespace

PyObject* tensor_snapshot(PyObject* /*self*/, PyObject* tensors) {
  HANDLE_TH_ERRORS
  if (!PyTuple_Check(tensors)) {
    PyErr_SetString(PyExc_TypeError, "tensor_snapshot takes a tuple of tensors (None allowed)");
    return nullptr;
  }
  const Py_ssize_t count = PyTuple_GET_SIZE(tensors);
  std::vector<int64_t> words;
  words.reserve(static_cast<size_t>(count) * 12);
  for (Py_ssize_t i = 0; i < count; ++i) {
    PyObject* item = PyTuple_GET_ITEM(tensors, i);
    if (item == Py_None) {
      words.push_back(kNoneMarker);
      continue;
    }
    if (!THPVariable_Check(item)) {
      PyErr_Format(PyExc_TypeError, "tensor_snapshot: item %zd is a %s, not a tensor or None", i,
                   Py_TYPE(item)->tp_name);
      return nullptr;
    }
    append_tensor(words, item, THPVariable_Unpack(item));
  }
  return PyBytes_FromStringAndSize(reinterpret_cast<const char*>(words.data()),
                                   static_cast<Py_ssize_t>(words.size() * sizeof(int64_t)));
  END_HANDLE_TH_ERRORS
}

}  // namespace pytorch_quantization
