// tensor_snapshot: what identifies the current contents of some tensors, read without touching their data.
#pragma once

#include <Python.h>

namespace pytorch_quantization {

// tensor_snapshot(tensors: tuple of Tensor or None) -> bytes. Per tensor: the object's identity (its id()), the
// autograd version counter (-1 for an inference tensor, which has none), the data pointer (-1 without storage), the
// dtype, the device type and index, the number of dimensions and the sizes; one marker for None. Two snapshots are
// equal exactly when pytorch_quantization.nn.modules.tensor_quantizer.tensor_token gives equal tokens for every
// tensor (except that this one does not raise for inference or storage-less tensors): the per-call checks of the
// weight cache read it once per quantized layer and forward, where the Python attribute reads cost microseconds.
PyObject* tensor_snapshot(PyObject* self, PyObject* tensors);

}  // namespace pytorch_quantization
