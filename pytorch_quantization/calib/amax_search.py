"""Choosing amax from a histogram of ``|x|``: entropy (KL divergence), MSE and percentile.

Every function takes the int64 ``counts`` of ``num_bins`` equal bins over ``[0, range_max]`` and the largest
collected magnitude ``data_max``, runs vectorized on the counts' device and returns a float32 0-d tensor there.
Candidates never exceed ``data_max`` (a larger amax clips nothing more and only coarsens the grid), and the
result is capped at ``data_max``.
"""
import math
import numbers

import torch

from pytorch_quantization import _reference
from pytorch_quantization import kernels

__all__ = ["entropy_amax", "mse_amax", "percentile_amax", "entropy_divergences"]

#: how many (candidate, bin) pairs the MSE search evaluates at once
_MSE_CHUNK = 1 << 20


def _result(value, data_max, device):
    return torch.tensor(min(float(value), data_max), dtype=torch.float32, device=device)


def _check_search_args(stride, start_bin):
    for name, value in (("stride", stride), ("start_bin", start_bin)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "stride" else 0):
            raise ValueError(f"{name} must be an int >= {1 if name == 'stride' else 0}, got {value!r}")


def _candidates(counts, start_bin, stride, last):
    """Candidate indices ``start_bin, start_bin + stride, ... <= last``; ValueError when there are none."""
    if start_bin > last:
        raise ValueError(f"start_bin={start_bin} is beyond the {last + 1} histogram bins that hold data; "
                         "lower start_bin or use more num_bins")
    return torch.arange(start_bin, last + 1, stride, device=counts.device)


def percentile_amax(counts, range_max, data_max, percentile):
    """The upper edge of the bin where the cumulative count reaches ``percentile`` % of all values.

    At most ``100 - percentile`` % of the collected values lie above the returned amax.
    """
    if isinstance(percentile, bool) or not isinstance(percentile, numbers.Real) or not 0 <= percentile <= 100:
        raise ValueError(f"Invalid percentile. Must be in range 0 <= percentile <= 100. Got {percentile!r}")
    cdf = torch.cumsum(counts, 0).to(torch.float64)
    target = torch.tensor([percentile / 100 * cdf[-1].item()], dtype=torch.float64, device=counts.device)
    idx = min(int(torch.searchsorted(cdf, target).item()), counts.numel() - 1)
    return _result((idx + 1) * range_max / counts.numel(), data_max, counts.device)


def mse_amax(counts, range_max, data_max, num_bits, unsigned, stride=1, start_bin=128):
    """The bin center (from ``start_bin`` on, every ``stride``) minimizing the expected squared quantization error.

    The error of a candidate is ``sum_bins count * (q(center) - center)**2`` (the expected squared error times the
    number of values) where ``q`` is this package's fake quantization (``kernels.fake_quant``, or the E4M3 cast for ``num_bits=(4, 3)``). Ties pick the smallest.
    """
    _check_search_args(stride, start_bin)
    num_bins = counts.numel()
    width = range_max / num_bins
    occupied = torch.nonzero(counts).flatten()
    cand = _candidates(counts, start_bin, stride, int(occupied.max().item()))
    centers = ((occupied.to(torch.float64) + 0.5) * width).to(torch.float32)
    weights = counts[occupied].to(torch.float64)
    amaxs = ((cand.to(torch.float64) + 0.5) * width).to(torch.float32)
    rows = max(1, _MSE_CHUNK // centers.numel())
    errors = []
    for start in range(0, amaxs.numel(), rows):
        amax = amaxs[start:start + rows, None]
        grid = centers.expand(amax.shape[0], -1).contiguous()
        if num_bits == (4, 3):
            scale = torch.full_like(amax, _reference.E4M3_MAX) / amax  # as scaled_e4m3 computes it
            quantized = kernels.fake_e4m3(grid * scale) / scale
        else:
            quantized = kernels.fake_quant(grid, amax, num_bits, unsigned, True)
        errors.append(((quantized.to(torch.float64) - grid.to(torch.float64)) ** 2 * weights).sum(1))
    best = int(torch.argmin(torch.cat(errors)).item())
    return _result(amaxs[best].item(), data_max, counts.device)


def entropy_divergences(counts, num_bits, unsigned, stride=1, start_bin=128):
    """``(candidates, divergences)``: the KL divergence for keeping the first ``i`` bins, for each candidate ``i``.

    TensorRT's entropy calibration, as upstream pytorch-quantization computes it: bin 0 (the zeros after a ReLU)
    is given bin 1's count; the reference distribution P is bins ``[0, i)`` with everything beyond added to bin
    ``i - 1``; Q splits bins ``[0, i)`` into ``2**(num_bits - 1 + unsigned)`` groups (bin ``j`` in group
    ``floor(j * levels / i)``) and spreads each group's count evenly over its non-empty bins. Divergence is
    ``sum P log(P / Q)`` of the normalized distributions (``inf`` where Q is 0 and P is not).
    Candidates run from ``start_bin`` to one past the last non-empty bin. Computed in float64 with prefix sums
    instead of a loop over candidates.
    """
    if isinstance(num_bits, tuple):
        raise ValueError("entropy calibration needs an integer num_bits; use method='mse' or 'percentile' for E4M3")
    _check_search_args(stride, start_bin)
    bins = counts.to(torch.float64).clone()
    if bins.numel() > 1:
        bins[0] = bins[1]
    levels = 1 << (num_bits - 1 + int(unsigned))
    cand = _candidates(counts, max(start_bin, 1), stride, int(torch.nonzero(counts).max().item()) + 1)
    zero = bins.new_zeros(1)
    prefix_count = torch.cat([zero, torch.cumsum(bins, 0)])
    prefix_nonzero = torch.cat([zero, torch.cumsum((bins > 0).to(torch.float64), 0)])
    plogp = torch.where(bins > 0, bins * torch.log(torch.where(bins > 0, bins, 1.0)), 0.0)
    prefix_plogp = torch.cat([zero, torch.cumsum(plogp, 0)])
    total = prefix_count[-1]

    # Group k of candidate i holds bins [ceil(k * i / levels), ceil((k + 1) * i / levels)).
    k = torch.arange(levels + 1, device=counts.device)
    edges = (k[None, :] * cand[:, None] + levels - 1) // levels
    group_sum = prefix_count[edges[:, 1:]] - prefix_count[edges[:, :-1]]
    group_nonzero = prefix_nonzero[edges[:, 1:]] - prefix_nonzero[edges[:, :-1]]
    group_mean = group_sum / group_nonzero.clamp(min=1)
    log_mean = torch.log(torch.where(group_sum > 0, group_mean, 1.0))
    sum_group_log = (group_sum * log_mean).sum(1)

    last = cand - 1
    last_count = bins[last]
    last_log_mean = log_mean.gather(1, ((last * levels) // cand)[:, None]).squeeze(1)
    kept = prefix_count[cand]  # normalizer of Q
    kept_before_last = prefix_count[last]
    p_last = total - kept_before_last  # bin i - 1 plus everything beyond
    log_ratio = torch.log(torch.where(kept > 0, kept, 1.0)) - torch.log(total)
    body = (prefix_plogp[last] + log_ratio * kept_before_last - (sum_group_log - last_count * last_log_mean)) / total
    tail = p_last / total * (torch.log(torch.where(p_last > 0, p_last, 1.0)) - last_log_mean + log_ratio)
    divergence = body + torch.where(p_last > 0, tail, 0.0)
    infinite = (kept == 0) | ((p_last > 0) & (last_count == 0))
    return cand, torch.where(infinite, math.inf, divergence)


def entropy_amax(counts, range_max, data_max, num_bits, unsigned, stride=1, start_bin=128):
    """The bin edge ``i * width`` of the candidate with the smallest KL divergence (the last one on ties)."""
    cand, divergence = entropy_divergences(counts, num_bits, unsigned, stride, start_bin)
    best = divergence.numel() - 1 - int(torch.argmin(divergence.flip(0)).item())
    return _result(cand[best].item() * range_max / counts.numel(), data_max, counts.device)
