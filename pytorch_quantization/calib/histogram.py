"""Histogram calibrator: collects a bounded histogram of ``|x|`` and picks amax by entropy, MSE or percentile."""
import warnings

import torch

from pytorch_quantization import kernels
from pytorch_quantization.calib import amax_search
from pytorch_quantization.calib.calibrator import _Calibrator, as_floating_tensor, nan_error, negative_error
from pytorch_quantization.calib.histogram_bins import MAX_DATA, bin_edges, histogram_range, rebin

__all__ = ["HistogramCalibrator", "calibrate_weights"]

_METHODS = ("entropy", "mse", "percentile")


class HistogramCalibrator(_Calibrator):
    """Histogram of ``|x|`` over all collected batches; ``compute_amax`` chooses the amax from it.

    Args:
        num_bits, unsigned: see ``_Calibrator``.
        axis: must be None (histograms are per tensor).
        num_bins: number of bins (default 2048). Memory stays ``num_bins`` int64 counts whatever the data.
        grow_method: deprecated upstream and ignored (a warning says so).
        skip_zeros: do not count exact zeros (useful for sparse BEV features or post-ReLU activations).
        torch_hist: accepted for compatibility and ignored; collection always runs on the tensor's device.

    Bins and range growth: see ``histogram_bins``. The range is the smallest power of two above the largest
    magnitude seen (with a little headroom); when a batch exceeds it, the range doubles as often as needed and the
    existing counts are merged pairwise, exactly. The histogram therefore equals a one-pass histogram of all
    collected data, whatever the batch split and order.

    State for checkpoints and distributed calibration: ``state_dict()`` / ``load_state_dict()`` hold the counts
    and the largest magnitude seen; ``merge(other)`` adds another calibrator's data; ``all_reduce()`` combines
    the calibrators of all ranks in a ``torch.distributed`` group so every rank gets the histogram one process
    would have collected from all ranks' data (a MAX reduction of the data max, then a SUM of the re-binned counts).
    """

    def __init__(self, num_bits, axis, unsigned, num_bins=2048, grow_method=None, skip_zeros=False,
                 torch_hist=True):  # pylint: disable=unused-argument
        super().__init__(num_bits, axis, unsigned)
        if axis is not None:
            raise NotImplementedError(f"Calibrator histogram collection only supports per tensor scaling; got axis="
                                      f"{axis!r}: use MaxCalibrator (or calibrate_weights) for per-channel amax")
        if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 2:
            raise ValueError(f"num_bins must be an int >= 2, got {num_bins!r}")
        if grow_method is not None:
            warnings.warn(f"grow_method is deprecated and ignored (got {grow_method!r})", DeprecationWarning,
                          stacklevel=2)
        self._num_bins = num_bins
        self._skip_zeros = bool(skip_zeros)
        self._calib_hist = None  # int64 counts on the device of the first collected tensor
        self._calib_max = None  # largest |x| collected, a Python float

    @property
    def calib_range(self):
        """Upper end of the histogram range, or None before any data."""
        return None if self._calib_max is None else histogram_range(self._calib_max)

    @property
    def _calib_bin_edges(self):
        """The ``num_bins + 1`` bin edges (float64), or None before any data (upstream attribute name)."""
        if self._calib_hist is None:
            return None
        return bin_edges(self._num_bins, self.calib_range, self._calib_hist.device)

    def collect(self, x):
        """Add ``|x|`` to the histogram (an empty tensor changes nothing).

        One host sync per batch (to read min/max); the counting runs on ``x``'s device.

        Raises:
            ValueError: NaN/Inf in ``x``, magnitudes above ~1.7e38, or negative ``x`` with ``unsigned=True``.
        """
        x = as_floating_tensor(x)
        if x.numel() == 0:
            return
        with torch.no_grad():
            lo, hi = torch.stack(torch.aminmax(x.detach())).to(torch.float32).tolist()
        if lo != lo or hi != hi or not -MAX_DATA <= lo <= hi <= MAX_DATA:
            raise nan_error()
        if self._unsigned and lo < 0:
            raise negative_error()
        data_max = max(-lo, hi) if self._calib_max is None else max(-lo, hi, self._calib_max)
        new_range = histogram_range(data_max)
        if self._calib_hist is None:
            self._calib_hist = torch.zeros(self._num_bins, dtype=torch.int64, device=x.device)
        else:
            self._calib_hist = rebin(self._calib_hist, self.calib_range, new_range)
        counts = kernels.abs_histogram(x.detach(), self._num_bins, new_range, self._skip_zeros)
        self._calib_hist += counts.to(self._calib_hist.device)
        self._calib_max = data_max

    def reset(self):
        """Forget the histogram."""
        self._calib_hist = None
        self._calib_max = None

    def state_dict(self):
        """``{"num_bins", "skip_zeros", "calib_hist" (int64 tensor or None), "calib_max" (float or None)}``."""
        hist = None if self._calib_hist is None else self._calib_hist.clone()
        return {"num_bins": self._num_bins, "skip_zeros": self._skip_zeros, "calib_hist": hist,
                "calib_max": self._calib_max}

    def load_state_dict(self, state):
        """Restore a ``state_dict()`` of a calibrator with the same ``num_bins`` and ``skip_zeros``."""
        if not isinstance(state, dict) or not {"num_bins", "skip_zeros", "calib_hist", "calib_max"} <= set(state):
            raise ValueError("state must be a dict from HistogramCalibrator.state_dict() with keys num_bins, "
                             "skip_zeros, calib_hist, calib_max")
        self._check_compatible(state["num_bins"], state["skip_zeros"])
        hist, data_max = state["calib_hist"], state["calib_max"]
        if (hist is None) != (data_max is None):
            raise ValueError("state has calib_hist and calib_max inconsistent: both must be None or both set")
        if hist is not None:
            if not isinstance(hist, torch.Tensor) or hist.dtype != torch.int64 or hist.shape != (self._num_bins,):
                raise ValueError(f"state calib_hist must be an int64 tensor of shape ({self._num_bins},)")
            histogram_range(float(data_max))  # validates the range
            hist, data_max = hist.clone(), float(data_max)
        self._calib_hist, self._calib_max = hist, data_max

    def _check_compatible(self, num_bins, skip_zeros):
        if num_bins != self._num_bins or bool(skip_zeros) != self._skip_zeros:
            raise ValueError(f"histograms with num_bins={num_bins}, skip_zeros={skip_zeros} cannot be combined with "
                             f"num_bins={self._num_bins}, skip_zeros={self._skip_zeros}; use the same settings")

    def merge(self, other):
        """Add the data collected by ``other`` (a HistogramCalibrator with the same settings) to this one."""
        if not isinstance(other, HistogramCalibrator):
            raise TypeError(f"other must be a HistogramCalibrator, got {type(other).__name__}")
        self._check_compatible(other._num_bins, other._skip_zeros)
        if other._calib_hist is None:
            return
        if self._calib_hist is None:
            self.load_state_dict(other.state_dict())
            return
        data_max = max(self._calib_max, other._calib_max)
        new_range = histogram_range(data_max)
        mine = rebin(self._calib_hist, self.calib_range, new_range)
        theirs = rebin(other._calib_hist, other.calib_range, new_range)
        self._calib_hist = mine + theirs.to(mine.device)
        self._calib_max = data_max

    def all_reduce(self, group=None, device=None):
        """Combine the histograms of every rank of ``group`` (torch.distributed); all ranks must call it.

        ``device``: where the communication tensors live on a rank that has collected nothing (default: the
        histogram's device, else CPU; NCCL needs a CUDA device).
        """
        import torch.distributed as dist  # pylint: disable=import-outside-toplevel
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("torch.distributed is not initialized; call init_process_group() first")
        if self._calib_hist is not None:
            device = self._calib_hist.device
        device = torch.device("cpu") if device is None else torch.device(device)
        data_max = torch.tensor([-1.0 if self._calib_max is None else self._calib_max], dtype=torch.float64,
                                device=device)
        dist.all_reduce(data_max, op=dist.ReduceOp.MAX, group=group)
        global_max = data_max.item()
        if global_max < 0:
            return
        new_range = histogram_range(global_max)
        if self._calib_hist is None:
            counts = torch.zeros(self._num_bins, dtype=torch.int64, device=device)
        else:
            counts = rebin(self._calib_hist, self.calib_range, new_range).clone()
        dist.all_reduce(counts, op=dist.ReduceOp.SUM, group=group)
        self._calib_hist, self._calib_max = counts, global_max

    def compute_amax(self, method, *, stride=1, start_bin=128, percentile=99.99):
        """The amax (float32 0-d tensor on the histogram's device) chosen by ``method``.

        Args:
            method: ``"entropy"`` (min KL divergence), ``"mse"`` (min expected squared error) or ``"percentile"``.
            stride, start_bin: candidate bins for entropy / mse: ``start_bin, start_bin + stride, ...``.
            percentile: for ``"percentile"``, in [0, 100]; at most ``100 - percentile`` % of values lie above amax.

        Returns None (with a warning) when nothing was collected, and 0 when all collected values were 0.
        See ``amax_search`` for the exact definitions.
        """
        if method not in _METHODS:
            raise TypeError(f"Unknown calibration method {method!r}; use one of {_METHODS}")
        if self._calib_hist is None:
            warnings.warn("HistogramCalibrator.compute_amax() called before collect(); returning None", stacklevel=2)
            return None
        if self._calib_max == 0:
            return torch.zeros((), dtype=torch.float32, device=self._calib_hist.device)
        args = (self._calib_hist, self.calib_range, self._calib_max)
        if method == "percentile":
            return amax_search.percentile_amax(*args, percentile)
        search = amax_search.entropy_amax if method == "entropy" else amax_search.mse_amax
        return search(*args, self._num_bits, self._unsigned, stride=stride, start_bin=start_bin)

    def __str__(self):
        if self._calib_hist is None:
            return "HistogramCalibrator(calib_bin_edges=None)"
        return f"HistogramCalibrator(calib_bin_edges=[0.000, ..., {self.calib_range:.3f}]({self._num_bins + 1}))"

    def __repr__(self):
        return (f"HistogramCalibrator({super().__repr__()} num_bins={self._num_bins} skip_zeros={self._skip_zeros} "
                f"calib_max={self._calib_max} calib_range={self.calib_range} calib_hist={self._calib_hist})")


def __getattr__(name):
    """``calib.histogram.calibrate_weights`` (upstream's location) without an import cycle."""
    if name == "calibrate_weights":
        from pytorch_quantization.calib import calibrate_weights  # pylint: disable=import-outside-toplevel
        return calibrate_weights
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
