"""pytorch_quantization: simulated (fake) quantization for PyTorch, a maintained drop-in replacement
for NVIDIA's discontinued pytorch-quantization 2.2.1."""
from pytorch_quantization.version import __version__
from pytorch_quantization.kernels import kernel_backend
from pytorch_quantization import tensor_quant
from pytorch_quantization import calib
from pytorch_quantization import nn
from pytorch_quantization import quant_modules
from pytorch_quantization.quant_modules import initialize, deactivate, enable_onnx_export
from pytorch_quantization import utils
from pytorch_quantization.tensor_quant import QuantDescriptor, ScaledQuantDescriptor

__all__ = ["__version__", "kernel_backend", "tensor_quant", "calib", "nn", "quant_modules", "utils", "initialize", "deactivate", "enable_onnx_export",
           "QuantDescriptor", "ScaledQuantDescriptor"]
