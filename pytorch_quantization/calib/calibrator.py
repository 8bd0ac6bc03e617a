"""Base class of the calibrators: they collect statistics of tensors and turn them into an ``amax``."""
import torch

from pytorch_quantization.tensor_quant import _validate_num_bits


class _Calibrator:
    """Abstract calibrator.

    Args:
        num_bits: int in 1..16, or ``(4, 3)`` for E4M3.
        axis: None (per tensor), or the axis / tuple of axes that keep their own amax (see QuantDescriptor).
        unsigned: the quantized range is unsigned (inputs must then be >= 0).
    """

    def __init__(self, num_bits, axis, unsigned):
        self._num_bits = _validate_num_bits(num_bits)
        self._axis = axis
        self._unsigned = bool(unsigned)

    def collect(self, x):
        """Add the statistics of tensor ``x``."""
        raise NotImplementedError

    def reset(self):
        """Forget everything collected."""
        raise NotImplementedError

    def compute_amax(self, *args, **kwargs):
        """The amax (a tensor) chosen from what was collected, or None when nothing was."""
        raise NotImplementedError

    def __repr__(self):
        return f"num_bits={self._num_bits} axis={self._axis} unsigned={self._unsigned}"


def as_floating_tensor(x):
    """``x`` as a floating point tensor: integer and bool tensors are converted to float32 (as 2.2.1 accepts
    them); TypeError for anything that is not a tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"calibrators collect tensors, got {type(x).__name__}; pass a torch.Tensor")
    return x if x.is_floating_point() else x.to(torch.float32)


def nan_error():
    """The error for NaN / Inf calibration data."""
    return ValueError("calibration data contains NaN or Inf; fix the model or data producing it, or replace the "
                      "values (e.g. torch.nan_to_num) before collecting")


def negative_error():
    """The error for negative data given to an unsigned calibrator."""
    return ValueError("unsigned calibrator got negative values; use unsigned=False for signed data (or calibrate "
                      "the tensor after the ReLU)")
