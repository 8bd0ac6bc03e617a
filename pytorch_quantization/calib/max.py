"""Calibrator whose amax is the running absolute maximum of everything collected."""
import torch

from pytorch_quantization.calib.calibrator import _Calibrator, as_floating_tensor, nan_error, negative_error
from pytorch_quantization.utils.reduce_amax import reduce_amax, _normalize_axes

__all__ = ["MaxCalibrator"]


class MaxCalibrator(_Calibrator):
    """Tracks the absolute maximum, per tensor or per channel, across every collected batch.

    Args:
        num_bits, axis, unsigned: see ``_Calibrator``. With ``axis`` the amax keeps those dims and reduces the
            others with size 1 kept (e.g. ``[C, 1, 1, 1]`` for ``axis=0`` of a conv weight); per tensor it is 0-d.
        track_amax: also record each batch's amax in ``amaxs`` (numpy arrays, each its own copy).

    The amax is float32 and lives on the device of the first collected tensor.
    """

    def __init__(self, num_bits, axis, unsigned, track_amax=False):
        super().__init__(num_bits, axis, unsigned)
        self._track_amax = bool(track_amax)
        self._amaxs = [] if self._track_amax else None
        self._calib_amax = None

    @property
    def amaxs(self):
        """Per-batch amax values (list of numpy arrays) when ``track_amax`` is set, else None."""
        return self._amaxs

    def _local_amax(self, x):
        if self._axis is None:
            return reduce_amax(x)
        keep = _normalize_axes(self._axis, x.dim())
        return reduce_amax(x, axis=[i for i in range(x.dim()) if i not in keep], keepdims=True)

    def collect(self, x):
        """Update the running max with ``|x|``; an empty tensor changes nothing.

        Raises:
            ValueError: NaN/Inf in ``x`` or negative ``x`` with ``unsigned=True``.
            RuntimeError: an amax shape that differs from the previous batches (e.g. a different channel count).
        """
        x = as_floating_tensor(x)
        if x.numel() == 0:
            return
        local = self._local_amax(x).to(torch.float32)
        checks = [~torch.isfinite(local).all()]
        if self._unsigned:
            checks.append(x.min() < 0)
        bad = torch.stack(checks).tolist()
        if bad[0]:
            raise nan_error()
        if self._unsigned and bad[1]:
            raise negative_error()
        if self._calib_amax is None:
            self._calib_amax = local
        else:
            if local.shape != self._calib_amax.shape:
                raise RuntimeError(f"amax shape changed! from {tuple(self._calib_amax.shape)} to "
                                   f"{tuple(local.shape)}; a calibrator collects one kind of tensor "
                                   "(call reset() to start over)")
            self._calib_amax = torch.maximum(self._calib_amax, local.to(self._calib_amax.device))
        if self._track_amax:
            self._amaxs.append(local.cpu().numpy().copy())

    def reset(self):
        """Forget the running max and the tracked per-batch values."""
        self._calib_amax = None
        if self._track_amax:
            self._amaxs = []

    def compute_amax(self):
        """The absolute max of everything collected (a tensor), or None before the first ``collect``."""
        return self._calib_amax

    def __str__(self):
        return f"MaxCalibrator(track_amax={self._track_amax})"

    def __repr__(self):
        text = f"MaxCalibrator({super().__repr__()} calib_amax={self._calib_amax} track_amax={self._track_amax}"
        if self._track_amax:
            text += f" amaxs={self._amaxs}"
        return text + ")"
