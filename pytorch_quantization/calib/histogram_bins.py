"""The bin layout of the calibration histograms, and exact re-binning when the range grows.

A histogram of ``|x|`` has ``num_bins`` equal bins over ``[0, R]`` where ``R = histogram_range(max|x|)`` is the
smallest power of two with ``max|x| * (1 + 2**-11) < R`` (at least ``2**-64``). Because every range is a power of
two, growing from range ``R`` to ``R * 2**m`` maps old bin ``k`` onto new bin ``k >> m`` exactly: the kernel's bin
index ``floor(v * num_bins / R)`` (float32) only loses its low ``m`` bits when ``R`` doubles ``m`` times, and the
headroom keeps every value strictly inside the last bin (the kernel's ``v == range`` rule never applies). So the
histogram after any sequence of batches, merges or distributed reductions equals the one-pass histogram of all the
data over ``histogram_range(max of all data)``, bit for bit. The price: the data occupy between half and all of
the bins.
"""
import math

import torch

#: relative headroom between the data max and the histogram range
HEADROOM = 1.0 + 2.0 ** -11
#: smallest histogram range (keeps ``num_bins / range`` finite in float32)
MIN_RANGE = 2.0 ** -64
#: largest data max a float32 power-of-two range can hold
MAX_DATA = 2.0 ** 127 / HEADROOM


def histogram_range(data_max):
    """The power-of-two histogram range for data whose largest magnitude is ``data_max``."""
    if not 0.0 <= data_max <= MAX_DATA:
        raise ValueError(f"histogram data max must be in [0, {MAX_DATA:.3g}], got {data_max}; rescale the data")
    _, exponent = math.frexp(data_max * HEADROOM)  # data_max * HEADROOM < 2**exponent
    return max(math.ldexp(1.0, exponent), MIN_RANGE)


def rebin(counts, old_range, new_range):
    """Counts over ``[0, old_range]`` re-binned exactly onto ``[0, new_range]`` (a power-of-two multiple of it)."""
    if new_range == old_range:
        return counts
    shift = round(math.log2(new_range / old_range))
    if shift < 0 or math.ldexp(old_range, shift) != new_range:
        raise ValueError(f"cannot re-bin a histogram from range {old_range} to {new_range}: the new range must be "
                         "the old one times a power of two >= 1")
    target = torch.arange(counts.numel(), device=counts.device) >> min(shift, 62)
    return torch.zeros_like(counts).index_add_(0, target, counts)


def bin_edges(num_bins, range_max, device=None):
    """The ``num_bins + 1`` bin edges (float64) of a histogram over ``[0, range_max]``."""
    return torch.arange(num_bins + 1, dtype=torch.float64, device=device) * (range_max / num_bins)
