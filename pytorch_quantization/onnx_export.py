"""Export-mode quantization for torch's default (``torch.export``-based) ONNX exporter.

Inside ``enable_onnx_export()`` a ``TensorQuantizer`` that is not being traced by the TorchScript-based
exporter (which has its own ``symbolic`` for our autograd functions) quantizes with
``torch.fake_quantize_per_tensor_affine`` / ``torch.fake_quantize_per_channel_affine``. The default exporter
translates those to ``QuantizeLinear`` / ``DequantizeLinear``, so the graph holds standard Q/DQ pairs and no
op of this package. E4M3 (FP8) uses the reference float8 casts.

Numerics are ONNX's: ``round(x / scale)`` with ``scale = amax / bound`` on the int8 (``[-128, 127]``) or uint8
(``[0, 255]``) grid; ``narrow_range`` is not expressible in opset 17 Q/DQ, so it differs from fake quantization
by at most one step, and only for inputs at or beyond ``-amax``.
"""
import contextlib
import importlib.util
import logging

import torch

from pytorch_quantization import _reference
from pytorch_quantization import kernels

__all__ = ["use_export_path", "export_fake_quant", "export_fake_e4m3", "torchscript_without_onnxscript"]

logger = logging.getLogger(__name__)


def use_export_path():
    """True inside ``torch.export`` (the default ONNX exporter), False under TorchScript tracing."""
    return not torch.jit.is_tracing()


def _scale(amax, bound):
    amax = amax.detach().to(torch.float32)
    # 1 / (bound / amax): the reciprocal of the multiplier fake quantization uses, so that ONNX's x / scale
    # rounds like the package's x * (bound / amax) as often as float32 allows
    multiplier = torch.full_like(amax, bound) / amax
    return torch.where(amax <= _reference.AMAX_EPSILON, torch.ones_like(amax), 1.0 / multiplier)


def export_fake_quant(inputs, amax, num_bits, unsigned):
    """Fake quantization of ``inputs`` written with the aten ops that ONNX exporters map to Q/DQ."""
    if num_bits != 8:
        raise ValueError(f"ONNX export supports num_bits=8 only (QuantizeLinear is 8-bit), got {num_bits}; export "
                         "an 8-bit model or keep this quantizer disabled while exporting")
    bound = float(2 ** (num_bits - 1 + int(unsigned)) - 1)
    qmin, qmax = (0, 255) if unsigned else (-128, 127)
    axis = kernels.amax_axis(inputs, amax)
    if axis is False:
        raise ValueError(f"ONNX Q/DQ supports one quantization axis, amax has shape {tuple(amax.shape)} for inputs "
                         f"of shape {tuple(inputs.shape)}")
    x = inputs.to(torch.float32)
    if axis is None:
        scale = _scale(amax.reshape(()), bound)
        zero_point = torch.zeros((), dtype=torch.int32, device=x.device)
        out = torch.fake_quantize_per_tensor_affine(x, scale, zero_point, qmin, qmax)
    else:
        scale = _scale(amax.reshape(-1), bound)
        zero_point = torch.zeros(scale.shape, dtype=torch.int32, device=x.device)
        out = torch.fake_quantize_per_channel_affine(x, scale, zero_point, axis, qmin, qmax)
    return out.to(inputs.dtype)


def export_fake_e4m3(inputs, amax):
    """Scaled E4M3 fake cast written with float8 casts (what ``tensor_quant.scaled_e4m3`` computes)."""
    scale = torch.full_like(amax, _reference.E4M3_MAX, dtype=torch.float32) / amax.to(torch.float32)
    return (_reference.fake_e4m3(inputs.to(torch.float32) * scale) / scale).to(inputs.dtype)


@contextlib.contextmanager
def torchscript_without_onnxscript():
    """While active, ``torch.onnx.export`` calls that do not choose an exporter use the TorchScript-based one when
    onnxscript (which torch's default exporter needs) is not installed, instead of failing with an ImportError."""
    if importlib.util.find_spec("onnxscript") is not None:
        yield
        return
    original = torch.onnx.export

    def export(*args, **kwargs):
        if "dynamo" not in kwargs:
            logger.warning("onnxscript is not installed: exporting with the TorchScript-based exporter "
                           "(dynamo=False); `pip install onnxscript` for torch's default exporter")
            kwargs["dynamo"] = False
        return original(*args, **kwargs)

    torch.onnx.export = export
    try:
        yield
    finally:
        torch.onnx.export = original
