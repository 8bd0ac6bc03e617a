"""Loads the compiled extension (``pytorch_quantization._C``) and tells which devices it serves.

Importing ``_C`` registers the ops in the ``torch.ops.pytorch_quantization`` namespace (schemas in
``csrc/ops.cpp``). This module adds what the tracing stack needs to see through them:

* a fake (meta) kernel for every op, so ``torch.compile(fullgraph=True)`` and ``torch.export``
  trace them without running them;
* autograd formulas for ``fake_quant``, ``scaled_e4m3`` and ``fake_quant_cachemask``: the
  straight-through estimator, gradient ``grad`` where ``|x| <= amax`` and 0 elsewhere, none for
  ``amax`` (``fake_quant_cachemask``'s applies its saved mask with the one-pass ``ste_grad`` op).

When ``_C`` is missing, one warning says how to build it and the package runs on ``_reference``.
"""
import importlib
import warnings

import torch

from pytorch_quantization import _reference

_OPS = ("fake_quant", "fake_quant_cachemask", "fake_quant_", "ste_grad", "fake_e4m3", "scaled_e4m3",
        "abs_histogram")
_DISPATCH_KEYS = {"cpu": "CPU", "cuda": "CUDA"}

_C = None
LOAD_ERROR = None
try:
    _C = importlib.import_module("pytorch_quantization._C")
except ImportError as error:  # not built: the package falls back to the pure-PyTorch reference
    LOAD_ERROR = error
    warnings.warn(f"pytorch_quantization._C is not available ({error}); fake quantization runs on the slower "
                  "pure-PyTorch reference kernels. Build the compiled kernels with "
                  "`pip install -e . --no-build-isolation` in the source tree.", RuntimeWarning, stacklevel=2)


def _served_devices():
    if _C is None:
        return frozenset()
    has_kernel = torch._C._dispatch_has_kernel_for_dispatch_key  # pylint: disable=protected-access
    return frozenset(device for device, key in _DISPATCH_KEYS.items()
                     if all(has_kernel(f"pytorch_quantization::{op}", key) for op in _OPS))


# Fixed once _C is loaded; a plain set lookup keeps serves() traceable by torch.compile.
_SERVED = _served_devices()


#: the extension's plain Python functions by name (``cpu_vector_isa``, ``tensor_snapshot``); empty without it
C_FUNCTIONS = {} if _C is None else {name: getattr(_C, name) for name in ("cpu_vector_isa", "tensor_snapshot")}


def cpu_vector_isa():
    """The vector instruction set the compiled CPU kernels' element loops run in ("avx512", "avx2" or "baseline";
    capped by the environment variable ``PYTORCH_QUANTIZATION_CPU_ISA``), or None without the compiled kernels."""
    isa = C_FUNCTIONS.get("cpu_vector_isa")
    return None if isa is None else isa()


def serves(device_type):
    """True when the compiled ops implement tensors on ``device_type`` ("cpu" or "cuda")."""
    return device_type in _SERVED


def _fake_quant_fake(x, amax, axis, num_bits, is_unsigned, narrow_range):  # pylint: disable=unused-argument
    return x.new_empty(x.shape)


def _fake_quant_cachemask_fake(x, amax, axis, num_bits, is_unsigned, narrow_range):  # pylint: disable=unused-argument
    return x.new_empty(x.shape), x.new_empty(x.shape, dtype=torch.bool)


def _fake_quant_inplace_fake(x, amax, axis, num_bits, is_unsigned, narrow_range):  # pylint: disable=unused-argument
    return None


def _ste_grad_fake(grad, mask):  # pylint: disable=unused-argument
    return grad.new_empty(grad.shape)


def _fake_e4m3_fake(x):
    return x.new_empty(x.shape)


def _scaled_e4m3_fake(x, amax, axis):  # pylint: disable=unused-argument
    return x.new_empty(x.shape)


def _abs_histogram_fake(x, num_bins, range_max, skip_zeros):  # pylint: disable=unused-argument
    return x.new_empty((num_bins,), dtype=torch.int64)


def _ste_setup_context(ctx, inputs, output):  # pylint: disable=unused-argument
    """For ops whose first three arguments are ``(x, amax, axis)`` and whose gradient is the STE's."""
    x, amax, axis = inputs[:3]
    ctx.save_for_backward(x, amax)
    ctx.axis = axis
    ctx.num_inputs = len(inputs)


def _ste_backward(ctx, grad):
    x, amax = ctx.saved_tensors
    amax = _reference.broadcast_amax(amax, x.dim(), ctx.axis)
    return (_reference.fake_quant_backward(grad, x, amax),) + (None,) * (ctx.num_inputs - 1)


def _cachemask_setup_context(ctx, inputs, output):  # pylint: disable=unused-argument
    ctx.save_for_backward(output[1])


def _cachemask_backward(ctx, grad, grad_mask):  # pylint: disable=unused-argument
    mask, = ctx.saved_tensors
    return torch.ops.pytorch_quantization.ste_grad(grad, mask), None, None, None, None, None


def _register_tracing_support():
    fakes = {
        "fake_quant": _fake_quant_fake,
        "fake_quant_cachemask": _fake_quant_cachemask_fake,
        "fake_quant_": _fake_quant_inplace_fake,
        "ste_grad": _ste_grad_fake,
        "fake_e4m3": _fake_e4m3_fake,
        "scaled_e4m3": _scaled_e4m3_fake,
        "abs_histogram": _abs_histogram_fake,
    }
    for name, fake in fakes.items():
        torch.library.register_fake(f"pytorch_quantization::{name}", fake)
    for name in ("fake_quant", "scaled_e4m3"):
        torch.library.register_autograd(f"pytorch_quantization::{name}", _ste_backward,
                                        setup_context=_ste_setup_context)
    torch.library.register_autograd("pytorch_quantization::fake_quant_cachemask", _cachemask_backward,
                                    setup_context=_cachemask_setup_context)


if _C is not None:
    _register_tracing_support()
