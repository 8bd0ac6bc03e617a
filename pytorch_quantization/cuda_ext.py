"""Backward-compatible ``pytorch_quantization.cuda_ext``: upstream's compiled-module functions.

Code written against upstream 2.2.1 calls these directly. They keep upstream's names and
arguments but run through ``kernels`` (compiled ops on CPU and CUDA, else the reference), so they
also work on CPU, honour ``narrow_range`` on every device and quantize non-contiguous tensors in place.
"""
import torch

from pytorch_quantization import _reference, kernels

__all__ = ["fake_tensor_quant", "fake_tensor_quant_", "fake_tensor_quant_with_axis", "fake_e4m3fy"]


def _as_tensor(amax, device):
    """amax as a tensor on ``device``; Python numbers become float32 (tensors keep their dtype)."""
    if isinstance(amax, torch.Tensor):
        return amax.to(device)
    return torch.tensor(amax, dtype=torch.float32, device=device)


def _per_tensor_amax(amax, device):
    amax = _as_tensor(amax, device)
    if amax.numel() != 1:
        raise ValueError(f"amax must have one element for per-tensor quantization, got shape {tuple(amax.shape)}; "
                         "use fake_tensor_quant_with_axis for per-channel amax")
    return amax.reshape(())


def fake_tensor_quant(inputs, amax, num_bits=8, unsigned=False, narrow_range=True):
    """Fake-quantize ``inputs`` with a one-element ``amax``; returns a new tensor."""
    return kernels.fake_quant(inputs, _per_tensor_amax(amax, inputs.device), num_bits, unsigned, narrow_range)


def fake_tensor_quant_(inputs, amax, num_bits=8, unsigned=False, narrow_range=True):
    """In-place ``fake_tensor_quant``; returns None like upstream."""
    kernels.fake_quant_(inputs, _per_tensor_amax(amax, inputs.device), num_bits, unsigned, narrow_range)


def fake_tensor_quant_with_axis(inputs, amax, axis, num_bits=8, unsigned=False, narrow_range=True):
    """Fake-quantize ``inputs`` with one amax per index along ``axis`` (``amax`` has ``inputs.size(axis)`` elements)."""
    if isinstance(axis, bool) or not isinstance(axis, int) or not -inputs.dim() <= axis < inputs.dim():
        raise ValueError(f"axis must be an int in [{-inputs.dim()}, {inputs.dim()}), got {axis!r}")
    amax = _as_tensor(amax, inputs.device).reshape(-1)
    if amax.numel() != inputs.size(axis):
        raise ValueError(f"amax has {amax.numel()} elements but inputs have {inputs.size(axis)} along axis {axis}; "
                         "give one amax per channel")
    axis = axis % inputs.dim()
    return kernels.fake_quant(inputs, _reference.broadcast_amax(amax, inputs.dim(), axis), num_bits, unsigned,
                              narrow_range)


def fake_e4m3fy(inputs):
    """Round ``inputs`` to the nearest E4M3 value (saturating at +-448), in the input dtype."""
    return kernels.fake_e4m3(inputs)
