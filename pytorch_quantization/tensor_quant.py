"""Quantization descriptors and the differentiable tensor quantization functions.

Public API compatible with upstream pytorch-quantization 2.2.1: ``QuantDescriptor``
(``ScaledQuantDescriptor``), the predefined ``QUANT_DESC_*`` descriptors, ``tensor_quant``,
``fake_tensor_quant``, ``legacy_fake_tensor_quant``, ``fake_affine_tensor_quant`` and
``scaled_e4m3``. Numerics are defined in ``_reference`` and served by ``kernels``.
"""
import logging
import math
import numbers

import numpy as np
import torch
from torch.autograd import Function

from pytorch_quantization import _reference
from pytorch_quantization import kernels

logger = logging.getLogger(__name__)

_CALIB_METHODS = ("max", "histogram")
_E4M3 = (4, 3)


def _validate_num_bits(num_bits):
    """``num_bits`` as 2.2.1 accepts it: an int >= 0 (0 only logs an error, as upstream) or the tuple (4, 3).

    We also refuse ints above 16 (the kernels' integer grid); quantizing with 0 bits, or with 1 signed bit,
    is refused where the quantization runs (see ``check_quant_bits``).
    """
    if isinstance(num_bits, (tuple, list)):
        if tuple(num_bits) != _E4M3:
            raise TypeError(f"num_bits must be a postive integer or tuple (4,3), not {tuple(num_bits)}; E4M3 "
                            "(FP8) is the only float format")
        return _E4M3
    if isinstance(num_bits, bool) or not isinstance(num_bits, numbers.Integral):
        raise TypeError(f"num_bits must be a postive integer or tuple (4,3), not {type(num_bits)}")
    if num_bits < 0:
        raise ValueError(f"num_bits must be > 0, not {num_bits}.")
    if num_bits > 16:
        raise ValueError(f"num_bits must be at most 16 (the kernels' integer grid), not {num_bits}.")
    if num_bits == 0:
        logger.error("num_bits is 0. This will result in the tensor being quantized to all zeros. This mode should "
                     "only be used for debugging purposes.")
    return int(num_bits)


def check_quant_bits(num_bits, unsigned):
    """ValueError for the integer formats that have no non-zero level: 0 bits, and 1 bit signed.

    2.2.1 returns NaN for every element in these cases; we refuse them where quantization runs.
    """
    if num_bits == 0 or (num_bits == 1 and not unsigned):
        raise ValueError(f"num_bits={num_bits}{' signed' if num_bits else ''} has no non-zero quantization level "
                         "(2.2.1 returns all NaN); use num_bits >= 2, or num_bits=1 with unsigned=True")


def _validate_axis(axis):
    if axis is None:
        return None
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    for a in axes:
        if isinstance(a, bool) or not isinstance(a, numbers.Integral):
            raise TypeError(f"axis must be None, an int or a tuple of ints, got {axis!r}")
    if len(set(int(a) for a in axes)) != len(axes):
        raise ValueError(f"axis has repeated entries: {axis!r}")
    return tuple(int(a) for a in axes) if isinstance(axis, (tuple, list)) else int(axis)


def _validate_amax(amax):
    if amax is None:
        return None
    if isinstance(amax, torch.Tensor):
        amax = amax.detach().cpu().numpy()
    if isinstance(amax, numbers.Real) and not isinstance(amax, bool):
        amax = float(amax)
    if not isinstance(amax, (float, list, tuple, np.ndarray)):
        raise TypeError(f"amax must be float, list or ndarray, not {type(amax)}")
    arr = np.array(amax, dtype=np.float32)
    if arr.size == 0 or not np.all(np.isfinite(arr)):
        raise ValueError(f"amax must be non-empty and finite, got {amax!r}")
    if np.any(arr < 0):
        raise ValueError(f"Negative values in amax: {amax!r}; amax is the absolute range of the data")
    return arr


class ScaledQuantDescriptor:
    """How a tensor is quantized: bits, granularity, range and how the range is found.

    Args:
        num_bits: int in 1..16 for integer quantization, or ``(4, 3)`` for E4M3 (FP8). Default 8.
        name: optional name.

    Keyword Args:
        fake_quant: quantize-dequantize (True, default) or return integer values (False).
        axis: None for a per-tensor scale, or the axis / tuple of axes that keep their own amax
            (e.g. ``axis=(0,)`` per output channel of a conv weight).
        amax: fixed range (float, list or ndarray); when given, no calibration is needed.
        learn_amax: make amax a trainable parameter (per-tensor only).
        scale_amax: multiply amax by this before quantizing.
        calib_method: ``"max"`` or ``"histogram"`` (then ``compute_amax`` chooses entropy/mse/percentile).
        unsigned: use the unsigned range ``[0, 2**num_bits - 1]``.
        narrow_range: signed range ``[-(2**(b-1) - 1), 2**(b-1) - 1]`` instead of starting at ``-2**(b-1)``.
    """

    def __init__(self, num_bits=8, name=None, **kwargs):
        self._num_bits = _validate_num_bits(num_bits)
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a string or None, not {type(name)}.")
        self._name = name
        self._fake_quant = bool(kwargs.pop("fake_quant", True))
        self._axis = _validate_axis(kwargs.pop("axis", None))
        self._learn_amax = bool(kwargs.pop("learn_amax", False))
        if self._learn_amax and self._axis is not None:
            raise TypeError(f"axis is ignored and must be None when learn_amax is true, got {self._axis!r}; the "
                            "learned range is per tensor")
        self._amax = _validate_amax(kwargs.pop("amax", None))
        self._scale_amax = kwargs.pop("scale_amax", None)
        if self._scale_amax is not None and not (isinstance(self._scale_amax, numbers.Real)
                                                 and math.isfinite(self._scale_amax) and self._scale_amax > 0):
            raise ValueError(f"scale_amax must be a positive finite number, got {self._scale_amax!r}")
        self._calib_method = kwargs.pop("calib_method", "max")
        if self._calib_method not in _CALIB_METHODS:
            raise ValueError(f"calib_method must be one of {_CALIB_METHODS}, got {self._calib_method!r}")
        self._unsigned = bool(kwargs.pop("unsigned", False))
        self._narrow_range = bool(kwargs.pop("narrow_range", False))
        if kwargs:
            raise TypeError(f"Unused keys: {sorted(kwargs)}; valid keys are fake_quant, axis, amax, learn_amax, "
                            "scale_amax, calib_method, unsigned, narrow_range")

    num_bits = property(lambda self: self._num_bits)
    name = property(lambda self: self._name)
    fake_quant = property(lambda self: self._fake_quant)
    axis = property(lambda self: self._axis)
    amax = property(lambda self: self._amax)
    learn_amax = property(lambda self: self._learn_amax)
    scale_amax = property(lambda self: self._scale_amax)
    calib_method = property(lambda self: self._calib_method)
    unsigned = property(lambda self: self._unsigned)
    narrow_range = property(lambda self: self._narrow_range)

    def __str__(self):
        parts = [f"{'unsigned ' if self._unsigned else ''}{self._num_bits}bit",
                 "fake" if self._fake_quant else "real",
                 f"axis={self._axis}" if self._axis is not None else "per-tensor"]
        if self._amax is not None:
            parts.append(f"amax={np.array2string(self._amax.flatten(), edgeitems=1)}")
        if self._narrow_range:
            parts.append("narrow")
        if self._learn_amax:
            parts.append("learn_amax")
        if self._scale_amax:
            parts.append(f"scale_amax={self._scale_amax}")
        return f"{self._name + ': ' if self._name else 'QuantDescriptor'}({' '.join(parts)})"

    __repr__ = __str__

    def __eq__(self, other):
        if not isinstance(other, ScaledQuantDescriptor):
            return NotImplemented
        mine, theirs = self.dict(), other.dict()
        return mine == theirs

    def __hash__(self):
        return hash(str(self.dict()))

    def dict(self):
        """The non-default settings as a dict; ``QuantDescriptor(**d)`` rebuilds an equal descriptor."""
        out = {"num_bits": self._num_bits, "name": self._name}
        if not self._fake_quant:
            out["fake_quant"] = False
        if self._axis is not None:
            out["axis"] = self._axis
        if self._amax is not None:
            out["amax"] = self._amax.tolist()
        if self._learn_amax:
            out["learn_amax"] = True
        if self._scale_amax is not None:
            out["scale_amax"] = self._scale_amax
        if self._calib_method != "max":
            out["calib_method"] = self._calib_method
        if self._unsigned:
            out["unsigned"] = True
        if self._narrow_range:
            out["narrow_range"] = True
        return out

    def to_yaml(self):
        """YAML text of ``dict()`` (tuples written as lists)."""
        import yaml  # pylint: disable=import-outside-toplevel
        out = self.dict()
        for key in ("num_bits", "axis"):
            if isinstance(out.get(key), tuple):
                out[key] = list(out[key])
        return yaml.safe_dump(out, width=120)

    @classmethod
    def from_yaml(cls, yaml_str):
        """Inverse of ``to_yaml``."""
        import yaml  # pylint: disable=import-outside-toplevel
        obj = yaml.safe_load(yaml_str)
        if not isinstance(obj, dict):
            raise ValueError(f"expected a YAML mapping of descriptor settings, got {type(obj).__name__}")
        for key in ("num_bits", "axis"):
            if isinstance(obj.get(key), list):
                obj[key] = tuple(obj[key])
        return cls(**obj)


QuantDescriptor = ScaledQuantDescriptor

QUANT_DESC_8BIT_PER_TENSOR = QuantDescriptor(num_bits=8)
QUANT_DESC_UNSIGNED_8BIT_PER_TENSOR = QuantDescriptor(num_bits=8, unsigned=True)
QUANT_DESC_8BIT_CONV1D_WEIGHT_PER_CHANNEL = QuantDescriptor(num_bits=8, axis=(0))
QUANT_DESC_8BIT_CONV2D_WEIGHT_PER_CHANNEL = QuantDescriptor(num_bits=8, axis=(0))
QUANT_DESC_8BIT_CONV3D_WEIGHT_PER_CHANNEL = QuantDescriptor(num_bits=8, axis=(0))
QUANT_DESC_8BIT_LINEAR_WEIGHT_PER_ROW = QuantDescriptor(num_bits=8, axis=(0))
# a transposed convolution's weight is [in, out / groups, k...]: its output channels are axis 1 (as in 2.2.1)
QUANT_DESC_8BIT_CONVTRANSPOSE1D_WEIGHT_PER_CHANNEL = QuantDescriptor(num_bits=8, axis=(1))
QUANT_DESC_8BIT_CONVTRANSPOSE2D_WEIGHT_PER_CHANNEL = QuantDescriptor(num_bits=8, axis=(1))
QUANT_DESC_8BIT_CONVTRANSPOSE3D_WEIGHT_PER_CHANNEL = QuantDescriptor(num_bits=8, axis=(1))


def _onnx_const_amax(amax):
    """amax as a float32 tensor in a TorchScript symbolic: it must be a constant (a calibrated buffer)."""
    if not isinstance(amax, torch.Tensor):
        from torch.onnx import symbolic_helper  # pylint: disable=import-outside-toplevel
        amax = symbolic_helper._get_const(amax, "t", "amax")  # pylint: disable=protected-access
    return amax.detach().float()


def _onnx_cast(g, value, in_type, to_input_type):
    """Cast float16/bfloat16 graph values to float32 (or back to ``in_type`` when ``to_input_type``)."""
    import torch._C._onnx as _C_onnx  # pylint: disable=import-outside-toplevel
    types = {"Half": _C_onnx.TensorProtoDataType.FLOAT16, "BFloat16": _C_onnx.TensorProtoDataType.BFLOAT16}
    if in_type not in types:
        return value
    return g.op("Cast", value, to_i=types[in_type] if to_input_type else _C_onnx.TensorProtoDataType.FLOAT)


def _onnx_e4m3(g, inputs, amax):
    """Scaled E4M3 fake cast for the TorchScript-based ONNX exporter: Mul, Cast to FLOAT8E4M3FN and back, Div."""
    import torch._C._onnx as _C_onnx  # pylint: disable=import-outside-toplevel
    from torch.onnx import symbolic_helper  # pylint: disable=import-outside-toplevel
    in_type = inputs.type().scalarType()
    x = _onnx_cast(g, inputs, in_type, False)
    scale = None
    if amax is not None and not symbolic_helper._is_none(amax):  # pylint: disable=protected-access
        scale = g.op("Constant", value_t=torch.full_like(_onnx_const_amax(amax), _reference.E4M3_MAX)
                     / _onnx_const_amax(amax))
        x = g.op("Mul", x, scale)
    out = g.op("Cast", g.op("Cast", x, to_i=_C_onnx.TensorProtoDataType.FLOAT8E4M3FN),
               to_i=_C_onnx.TensorProtoDataType.FLOAT)
    if scale is not None:
        out = g.op("Div", out, scale)
    return _onnx_cast(g, out, in_type, True)


def _onnx_qdq(g, inputs, amax, num_bits, unsigned, narrow_range):
    """QuantizeLinear/DequantizeLinear pair for the TorchScript-based ONNX exporter."""
    if num_bits != 8:
        raise ValueError(f"ONNX export supports num_bits=8 only, got {num_bits}")
    _, bound = _reference.integer_range(num_bits, unsigned, narrow_range)
    amax = _onnx_const_amax(amax)
    axis = None
    if amax.numel() > 1:
        varying = [i for i, s in enumerate(amax.shape) if s != 1]
        if len(varying) != 1:
            raise ValueError(f"ONNX Q/DQ supports one quantization axis, amax has shape {tuple(amax.shape)}")
        axis = varying[0] + (inputs.type().dim() - amax.dim() if inputs.type().dim() else 0)
        amax = amax.reshape(-1)
    else:
        amax = amax.reshape(())
    scale = amax / bound
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    zp_dtype = torch.uint8 if unsigned else torch.int8
    zero_point = torch.zeros(scale.shape, dtype=zp_dtype)
    scale_c = g.op("Constant", value_t=scale)
    zp_c = g.op("Constant", value_t=zero_point)
    in_type = inputs.type().scalarType()
    kwargs = {} if axis is None else {"axis_i": axis}
    q = g.op("QuantizeLinear", _onnx_cast(g, inputs, in_type, False), scale_c, zp_c, **kwargs)
    return _onnx_cast(g, g.op("DequantizeLinear", q, scale_c, zp_c, **kwargs), in_type, True)


def _check_values(inputs, amax, num_bits, unsigned):
    """Argument checks of ``tensor_quant`` and ``legacy_fake_tensor_quant``, with 2.2.1's value checks (negative
    inputs when unsigned, negative amax). Those read the data, a device-to-host sync, so ``fake_tensor_quant``
    (what quantizers call on every forward) does not run them: quantizers validate amax when it is set."""
    check_quant_bits(num_bits, unsigned)
    kernels._check_inputs(inputs, amax, num_bits)  # pylint: disable=protected-access
    if unsigned and inputs.numel() and inputs.min() < 0:
        raise TypeError("Negative values encountered in unsigned quantization. Use unsigned=False for signed data.")
    if amax.min() < 0:
        raise ValueError(f"Negative values in amax (min {amax.min().item()}); amax is the absolute range of the data")


class FakeTensorQuantFunction(Function):
    """Fake quantization with a straight-through estimator (gradient zero where ``|x| > amax``).

    The forward is one fused pass that also produces the mask the backward uses (only when ``inputs``
    requires grad: at inference it writes the output alone).
    """

    @staticmethod
    def symbolic(g, inputs, amax, num_bits=8, unsigned=False, narrow_range=True):
        return _onnx_qdq(g, inputs, amax, num_bits, unsigned, narrow_range)

    @staticmethod
    def forward(ctx, inputs, amax, num_bits=8, unsigned=False, narrow_range=True):
        check_quant_bits(num_bits, unsigned)
        if not ctx.needs_input_grad[0]:
            return kernels.fake_quant(inputs, amax, num_bits, unsigned, narrow_range)
        outputs, mask = kernels.fake_quant_cachemask(inputs, amax, num_bits, unsigned, narrow_range)
        ctx.save_for_backward(mask)
        return outputs

    @staticmethod
    def backward(ctx, grad_outputs):
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        mask, = ctx.saved_tensors
        return kernels.ste_grad(grad_outputs, mask), None, None, None, None


class TensorQuantFunction(Function):
    """Integer quantization: returns ``(outputs, scale)`` where ``outputs / scale`` dequantizes.

    ``outputs`` holds integers in the input's floating dtype; gradient is the clipped straight-through estimator.
    """

    @staticmethod
    def symbolic(g, inputs, amax, num_bits=8, unsigned=False, narrow_range=True):
        return _onnx_qdq(g, inputs, amax, num_bits, unsigned, narrow_range), None

    @staticmethod
    def forward(ctx, inputs, amax, num_bits=8, unsigned=False, narrow_range=True):
        _check_values(inputs, amax, num_bits, unsigned)
        ctx.save_for_backward(inputs, amax)
        outputs, scale = _reference.quant(inputs, amax, num_bits, unsigned, narrow_range)
        if inputs.dtype == torch.float16 and scale.max() > 65504:
            raise ValueError(f"scale is too large for FP16 with amax={amax}; the largest scale ({scale.max().item()}) "
                             "exceeds 65504: use a larger amax or float32 inputs")
        return outputs.to(inputs.dtype), scale.to(inputs.dtype)

    @staticmethod
    def backward(ctx, grad_outputs, grad_scale):
        inputs, amax = ctx.saved_tensors
        return kernels.fake_quant_backward(grad_outputs, inputs, amax), None, None, None, None


class LegacyFakeTensorQuantFunction(Function):
    """Fake quantization always computed by the pure-PyTorch reference (upstream's legacy path)."""

    @staticmethod
    def forward(ctx, inputs, amax, num_bits=8, unsigned=False, narrow_range=True):
        _check_values(inputs, amax, num_bits, unsigned)
        ctx.save_for_backward(inputs, amax)
        return _reference.fake_quant(inputs, amax, num_bits, unsigned, narrow_range)

    @staticmethod
    def backward(ctx, grad_outputs):
        inputs, amax = ctx.saved_tensors
        return kernels.fake_quant_backward(grad_outputs, inputs, amax), None, None, None, None


class FakeAffineTensorQuantFunction(Function):
    """Asymmetric (scale + zero point) fake quantization of a tensor over ``[min_range, max_range]``.

    Gradient passes where ``min_range <= x <= max_range``.
    """

    @staticmethod
    def forward(ctx, inputs, min_range, max_range, num_bits=8):
        _validate_num_bits(num_bits)
        min_range = torch.as_tensor(min_range, dtype=torch.float32, device=inputs.device)
        max_range = torch.as_tensor(max_range, dtype=torch.float32, device=inputs.device)
        if not bool((max_range > min_range).all()):
            raise ValueError(f"max_range must be greater than min_range, got {min_range} and {max_range}")
        ctx.save_for_backward(inputs, min_range, max_range)
        step = (max_range - min_range) / (2.0 ** num_bits - 1)
        lo, hi = -2.0 ** (num_bits - 1), 2.0 ** (num_bits - 1) - 1
        zero = torch.round(min_range / step) - lo
        q = torch.clamp(torch.round(inputs.float() / step) - zero, lo, hi)
        return ((q + zero) * step).to(inputs.dtype)

    @staticmethod
    def backward(ctx, grad_outputs):
        inputs, min_range, max_range = ctx.saved_tensors
        inside = (inputs >= min_range) & (inputs <= max_range)
        return grad_outputs * inside, None, None, None


class ScaledE4M3Function(Function):
    """E4M3 (FP8) fake cast of ``x * 448 / amax``; amax None (no scaling), per-tensor, or any shape that
    broadcasts to ``x`` (e.g. per channel). Inputs with ``|x| < 2**-24`` become 0.

    Gradient passes where ``|x| <= amax`` (448 when amax is None).
    """

    @staticmethod
    def symbolic(g, inputs, amax=None, E=4, M=3):  # pylint: disable=invalid-name,unused-argument
        return _onnx_e4m3(g, inputs, amax)

    @staticmethod
    def forward(ctx, inputs, amax=None, E=4, M=3):  # pylint: disable=invalid-name
        if (E, M) != _E4M3:
            raise NotImplementedError(f"Only support E=4 & M=3 for now. Got E={E}, M={M}")
        if amax is None:  # 448 / 448 = 1: the unscaled cast, exactly
            amax = torch.tensor(_reference.E4M3_MAX, device=inputs.device)
        else:
            amax = torch.as_tensor(amax, dtype=torch.float32, device=inputs.device).detach()
        ctx.save_for_backward(inputs, amax)
        return kernels.scaled_e4m3(inputs, amax)

    @staticmethod
    def backward(ctx, grad_outputs):
        inputs, amax = ctx.saved_tensors
        return kernels.fake_quant_backward(grad_outputs, inputs, amax), None, None, None


tensor_quant = TensorQuantFunction.apply
fake_tensor_quant = FakeTensorQuantFunction.apply
legacy_fake_tensor_quant = LegacyFakeTensorQuantFunction.apply
fake_affine_tensor_quant = FakeAffineTensorQuantFunction.apply
scaled_e4m3 = ScaledE4M3Function.apply


def fake_tensor_quant_lean(inputs, amax, num_bits=8, unsigned=False, narrow_range=True):
    """``fake_tensor_quant``, calling the kernel directly where no gradient can flow and nothing traces (the
    same result without autograd's bookkeeping, which costs more than the kernel on small tensors).
    ``TensorQuantizer`` calls this on every forward."""
    if kernels.needs_autograd(inputs, amax):
        return fake_tensor_quant(inputs, amax, num_bits, unsigned, narrow_range)
    check_quant_bits(num_bits, unsigned)
    return kernels.fake_quant(inputs, amax, num_bits, unsigned, narrow_range)


def scaled_e4m3_lean(inputs, amax):
    """``scaled_e4m3(inputs, amax, 4, 3)`` for a tensor ``amax``, without autograd's bookkeeping where it is not
    needed (as ``fake_tensor_quant_lean``)."""
    if kernels.needs_autograd(inputs, amax):
        return scaled_e4m3(inputs, amax, 4, 3)
    return kernels.scaled_e4m3(inputs, torch.as_tensor(amax, dtype=torch.float32, device=inputs.device))
