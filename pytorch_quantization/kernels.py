"""Kernel dispatch: the compiled ops from ``csrc/`` when they serve the tensor's device, else ``_reference``.

Every function here takes ``amax`` in the broadcastable form used throughout the package
(a scalar / one-element tensor for per-tensor quantization, e.g. shape ``[C, 1, 1, 1]`` for
per-channel along axis 0) and validates its arguments, so that callers get a ``ValueError`` or
``TypeError`` naming the argument instead of a crash inside a kernel.

The checks here read metadata only (type, dtype, device, shape): reading values would force a
device-to-host synchronisation on every call. amax values are validated where they are set, loaded
or calibrated (``TensorQuantizer``). The compiled CPU kernels, which see the data anyway, also raise
upstream 2.2.1's errors: ``ValueError`` for a negative amax and ``TypeError`` for negative inputs to
unsigned quantization; the CUDA kernels and the reference fallback do not look (a NaN amax
propagates NaN, as in 2.2.1).
"""
import torch

from pytorch_quantization import _reference
from pytorch_quantization import ops

__all__ = [
    "kernel_backend", "fake_quant", "fake_quant_cachemask", "fake_quant_", "fake_quant_backward", "ste_grad",
    "fake_e4m3", "scaled_e4m3", "abs_histogram", "amax_axis", "needs_autograd", "check_num_bits"
]


def kernel_backend():
    """Which implementation serves tensors on each device: ``{"cpu": ..., "cuda": ...}``.

    Values are ``"compiled"`` (our C++/CUDA ops), ``"reference"`` (pure PyTorch) or, for
    CUDA, ``"unavailable"`` when this torch build or machine has no CUDA device.
    """
    cuda = "unavailable"
    if torch.cuda.is_available():
        cuda = "compiled" if ops.serves("cuda") else "reference"
    return {"cpu": "compiled" if ops.serves("cpu") else "reference", "cuda": cuda}


def check_num_bits(num_bits):
    """ValueError unless ``num_bits`` is an int in 1..16 (what the compiled ops take)."""
    if isinstance(num_bits, bool) or not isinstance(num_bits, int) or not 1 <= num_bits <= 16:
        raise ValueError(f"num_bits must be an int in 1..16, got {num_bits!r}")


def _check_inputs(x, amax, num_bits):
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"inputs must be a floating point tensor, got {getattr(x, 'dtype', type(x))}; "
                        "cast it with .float() first")
    if not isinstance(amax, torch.Tensor) or not amax.is_floating_point():
        raise TypeError(f"amax must be a floating point tensor, got {getattr(amax, 'dtype', type(amax))}")
    if amax.device != x.device:
        raise ValueError(f"amax is on {amax.device} but inputs are on {x.device}; move amax with .to(inputs.device)")
    check_num_bits(num_bits)
    if amax.numel() == 0:
        raise ValueError("amax is empty; calibrate the quantizer or set amax before quantizing")
    if amax.numel() != 1 and not all(a in (1, b) or b == 1 for a, b in zip(reversed(amax.shape), reversed(x.shape))):
        raise ValueError(f"amax of shape {tuple(amax.shape)} does not broadcast to inputs of shape "
                         f"{tuple(x.shape)}; per-channel amax needs size 1 on every other axis")


def amax_axis(x, amax):
    """The single axis of ``x`` along which ``amax`` varies, None for per-tensor, or ``False`` when amax
    varies along several axes (only the reference path handles that)."""
    if amax.numel() == 1:
        return None
    offset = x.dim() - amax.dim()
    varying = [offset + i for i, size in enumerate(amax.shape) if size != 1]
    if len(varying) != 1 or offset < 0 or amax.shape[varying[0] - offset] != x.shape[varying[0]]:
        return False
    return varying[0]


def _compiled_args(x, amax):
    """(flat amax, axis) for the compiled ops, or None when they cannot serve this call."""
    if not ops.serves(x.device.type):
        return None
    if amax.numel() == 1 and amax.dtype in (torch.float32, torch.float64):
        return amax.detach(), None  # the ops read a one-element float32 / float64 amax of any shape as it is
    axis = amax_axis(x, amax)
    if axis is False:
        return None
    return amax.detach().reshape(-1).to(device=x.device, dtype=_reference.compute_dtype(x.dtype)), axis


def needs_autograd(*tensors):
    """Whether a call on ``tensors`` must go through autograd: a gradient can flow (grad mode on and one of them
    requires it), or a tracer / compiler records the call (ONNX export reads autograd Functions' symbolics).
    Non-tensors among ``tensors`` count as not requiring a gradient."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return True
    return torch.is_grad_enabled() and any(getattr(t, "requires_grad", False) for t in tensors)


def _call(op, x, *args):
    """``op(x, *args)``; in eager mode when no gradient can flow to ``x``, dispatched straight to the kernel,
    past the op's Python autograd formula, which otherwise costs more than the kernel on small tensors."""
    if needs_autograd(x):
        return op(x, *args)
    with torch._C._AutoDispatchBelowAutograd():  # pylint: disable=protected-access
        return op(x, *args)


_DIRECT_DTYPES = frozenset((torch.float32, torch.float64, torch.float16, torch.bfloat16))


def can_call_direct(x, amax):
    """Whether ``x`` may go straight to ``fake_quant_direct`` / ``scaled_e4m3_direct`` with ``amax``: eager, no
    gradient to flow, a floating tensor of a dtype the compiled ops take, on amax's device, which they serve.
    Where not, callers take the checked functions, which raise the errors or fall back to the reference."""
    return (isinstance(x, torch.Tensor) and x.dtype in _DIRECT_DTYPES and not needs_autograd(x, amax)
            and x.device == amax.device and ops.serves(x.device.type))


def fake_quant_direct(x, amax, num_bits, unsigned, narrow_range):
    """``fake_quant`` where ``can_call_direct`` holds, with a one-element float32 / float64 amax on x's device
    and a valid ``num_bits``: the same kernel, without the argument checks and autograd's bookkeeping."""
    with torch._C._AutoDispatchBelowAutograd():  # pylint: disable=protected-access
        return torch.ops.pytorch_quantization.fake_quant(x, amax, None, num_bits, unsigned, narrow_range)


def scaled_e4m3_direct(x, amax):
    """``scaled_e4m3`` where ``can_call_direct`` holds, with a one-element float32 amax (as ``fake_quant_direct``)."""
    with torch._C._AutoDispatchBelowAutograd():  # pylint: disable=protected-access
        return torch.ops.pytorch_quantization.scaled_e4m3(x, amax, None)


def fake_quant(x, amax, num_bits=8, unsigned=False, narrow_range=True):
    """Fake-quantize ``x`` (no autograd formula of its own; see ``tensor_quant.fake_tensor_quant``)."""
    _check_inputs(x, amax, num_bits)
    compiled = _compiled_args(x, amax)
    if compiled is None:
        return _reference.fake_quant(x, amax, num_bits, unsigned, narrow_range)
    return _call(torch.ops.pytorch_quantization.fake_quant, x, compiled[0], compiled[1], num_bits, unsigned,
                 narrow_range)


def fake_quant_cachemask(x, amax, num_bits=8, unsigned=False, narrow_range=True):
    """Fake-quantize ``x`` and return ``(output, mask)``; mask is True where the STE passes gradient."""
    _check_inputs(x, amax, num_bits)
    compiled = _compiled_args(x, amax)
    if compiled is None:
        return _reference.fake_quant_cachemask(x, amax, num_bits, unsigned, narrow_range)
    return torch.ops.pytorch_quantization.fake_quant_cachemask(x, compiled[0], compiled[1], num_bits, unsigned,
                                                               narrow_range)


def fake_quant_(x, amax, num_bits=8, unsigned=False, narrow_range=True):
    """In-place fake quantization of ``x``; returns ``x``."""
    _check_inputs(x, amax, num_bits)
    compiled = _compiled_args(x, amax)
    if compiled is None:
        return x.copy_(_reference.fake_quant(x, amax, num_bits, unsigned, narrow_range))
    torch.ops.pytorch_quantization.fake_quant_(x, compiled[0], compiled[1], num_bits, unsigned, narrow_range)
    return x


def fake_quant_backward(grad, x, amax):
    """Straight-through estimator without a cached mask: ``grad`` where ``|x| <= amax``, else 0."""
    return _reference.fake_quant_backward(grad, x, amax)


def ste_grad(grad, mask):
    """Backward of fake quantization from its saved mask: ``grad`` where ``mask``, +0.0 elsewhere (one pass)."""
    if ops.serves(grad.device.type):
        return torch.ops.pytorch_quantization.ste_grad(grad, mask)
    return torch.where(mask, grad, torch.zeros((), dtype=grad.dtype, device=grad.device))


def fake_e4m3(x):
    """Saturating round-to-nearest-even E4M3 fake cast (see ``_reference.fake_e4m3``)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"inputs must be a floating point tensor, got {getattr(x, 'dtype', type(x))}")
    if ops.serves(x.device.type):
        return torch.ops.pytorch_quantization.fake_e4m3(x)
    return _reference.fake_e4m3(x)


def scaled_e4m3(x, amax):
    """Scaled E4M3 fake cast in one pass (see ``_reference.scaled_e4m3``); ``amax`` a floating tensor on ``x``'s
    device that broadcasts to ``x``: one element, or varying along one axis. Other shapes (several axes, more
    dimensions than ``x``) and devices the compiled ops do not serve use the reference. No autograd formula of
    its own (see ``tensor_quant.scaled_e4m3``)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"inputs must be a floating point tensor, got {getattr(x, 'dtype', type(x))}")
    if not isinstance(amax, torch.Tensor) or not amax.is_floating_point():
        raise TypeError(f"amax must be a floating point tensor, got {getattr(amax, 'dtype', type(amax))}")
    if ops.serves(x.device.type) and amax.device == x.device and amax.dim() <= x.dim():
        axis = amax_axis(x, amax)
        if axis is not False:
            flat = amax.detach().reshape(-1).to(torch.float32)
            return _call(torch.ops.pytorch_quantization.scaled_e4m3, x, flat, axis)
    return _reference.scaled_e4m3(x, amax)


def abs_histogram(x, num_bins, range_max, skip_zeros=False):
    """int64 counts of ``|x|`` over ``num_bins`` equal bins of ``[0, range_max]`` (see ``_reference``)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"inputs must be a floating point tensor, got {getattr(x, 'dtype', type(x))}")
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
        raise ValueError(f"num_bins must be a positive int, got {num_bins!r}")
    range_max = float(range_max)
    if not range_max > 0 or range_max == float("inf"):
        raise ValueError(f"range_max must be finite and > 0, got {range_max}")
    if ops.serves(x.device.type):
        return torch.ops.pytorch_quantization.abs_histogram(x, num_bins, range_max, skip_zeros)
    return _reference.abs_histogram(x, num_bins, range_max, skip_zeros)
