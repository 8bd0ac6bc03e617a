"""``auto_amax``: per activation quantizer, the amax whose quantized LAYER OUTPUT is closest to the float output.

Candidates per quantizer come from the collected statistics (``collect_statistics``): the max, percentiles
(``PERCENTILES``), the MSE and entropy choices of every histogram variant held (with / without zeros), and a
geometric grid of ``grid`` values from the smallest candidate up to the max. Each candidate is scored on the
layer's cached float calibration inputs: ``sum (layer_q(x) - layer_f(x))**2`` where ``layer_q`` runs the layer with
its weight quantized as deployed and this input quantizer at the candidate amax, and ``layer_f`` with all of the
layer's quantizers off. The smallest error wins (ties: the larger amax). Because the max is always a candidate
and the score is the layer's own output error, a range that clips the signal away (raw point coordinates clipped
by entropy calibration) can only win where clipping really costs less than rounding.

Under ``torch.distributed`` the errors are summed over the ranks before choosing, so all ranks choose alike.
"""
import math

import torch

from pytorch_quantization.ptq.distributed import world_size
from pytorch_quantization.ptq.forward import eval_mode, flatten_tensors
from pytorch_quantization.ptq.quantizers import find_quantizers, set_amax
from pytorch_quantization.ptq.statistics import (ActivationStatistics, calibrate_weights_from_tensors, histogram_amax,
                                                 quantizer_flags, set_quantizer_flags)
from pytorch_quantization.ptq.table import Table

__all__ = ["auto_amax", "amax_candidates", "PERCENTILES"]

#: percentiles tried as candidates
PERCENTILES = (99.0, 99.9, 99.99, 99.999)


def amax_candidates(stats, name, grid=16):
    """``[(label, amax float), ...]`` for quantizer ``name``: max, percentiles, mse, entropy, then the grid.

    Values are float32-exact, positive and unique (the first label of a repeated value is kept); empty when no
    data was seen.
    """
    data_max = stats.data_max(name)
    if data_max is None or data_max <= 0:
        return []
    found = [("max", data_max)]
    for skip in stats.skip_zeros:
        hist = stats.histogram(name, skip)
        if hist is None:  # per-channel quantizers have maxima only
            continue
        suffix = "+skip_zeros" if skip else ""
        for method, percentile in [("percentile", p) for p in PERCENTILES] + [("mse", None), ("entropy", None)]:
            if method == "entropy" and isinstance(stats.num_bits[name], tuple):  # no entropy for E4M3
                continue
            amax = histogram_amax(hist, method, percentile)
            if amax is not None:
                label = f"percentile {percentile:g}" if percentile else method
                found.append((label + suffix, float(amax)))
    low = min(v for _, v in found if v > 0)
    if grid > 1 and low < data_max:
        found += [(f"grid {k}/{grid - 1}", low * (data_max / low) ** (k / (grid - 1))) for k in range(1, grid - 1)]
    out, seen = [], set()
    for label, value in found:
        value = float(torch.tensor(value, dtype=torch.float32))  # what the quantizer will hold
        if value > 0 and value not in seen:
            seen.add(value)
            out.append((label, value))
    return out


def _data_device(stats, name):
    """Where quantizer ``name`` saw its data (its amax belongs there: no copy per forward)."""
    return stats.max_calibrator(name).compute_amax().device


def _output_error(layer, inputs, reference):
    """Sum of squared differences between ``layer`` on the cached inputs and the float ``reference`` outputs."""
    total = torch.zeros((), dtype=torch.float64)
    for (args, kwargs), ref in zip(inputs, reference):
        out = flatten_tensors(layer(*args, **kwargs))
        total += sum(((a.double() - b.double()) ** 2).sum().cpu() for a, b in zip(out, ref))
    return total


def _sum_over_ranks(errors, group):
    if world_size(group) > 1:
        torch.distributed.all_reduce(errors, group=group)
    return errors


def _choose_layer(layer, quantizers, stats, inputs, grid, group):
    """Choose the amax of each of ``layer``'s input ``quantizers`` (refs) in turn; returns table rows.

    The others start at their max; the layer's quantizer flags are restored afterwards.
    """
    layer_refs = [r for r in find_quantizers(layer) if r.quantizer.is_enabled]
    flags = quantizer_flags(layer_refs)
    for ref in quantizers:
        set_amax(ref.quantizer, stats.data_max(ref.name), device=_data_device(stats, ref.name))
    try:
        for ref in layer_refs:
            ref.quantizer.disable()
        reference = [flatten_tensors(layer(*args, **kwargs)) for args, kwargs in inputs]
        for ref in layer_refs:
            ref.quantizer.enable()
            ref.quantizer.disable_calib()
            ref.quantizer.enable_quant()
        return [_choose(ref, layer, stats, inputs, reference, grid, group) for ref in quantizers]
    finally:
        for ref in layer_refs:
            ref.quantizer.enable()
        set_quantizer_flags(layer_refs, flags)


def _choose(ref, layer, stats, inputs, reference, grid, group):
    """Score every candidate of quantizer ``ref``, set the best one; returns its table row."""
    cands = amax_candidates(stats, ref.name, grid)
    errors = torch.zeros(len(cands), dtype=torch.float64)
    for i, (_, value) in enumerate(cands):
        set_amax(ref.quantizer, value, device=_data_device(stats, ref.name))
        errors[i] = _output_error(layer, inputs, reference)
    errors = _sum_over_ranks(errors, group)
    values = torch.tensor([v for _, v in cands], dtype=torch.float64)
    tied = errors == errors.min()
    best = int(torch.nonzero(tied).flatten()[values[tied].argmax()])
    set_amax(ref.quantizer, cands[best][1], device=_data_device(stats, ref.name))
    max_error = float(errors[0])
    return [ref.name, cands[best][0], cands[best][1], cands[best][1] / cands[0][1],
            float(errors[best]) / max_error if max_error > 0 else math.nan, len(cands)]


def auto_amax(model, stats, *, grid=16, group=None):
    """Choose every active activation quantizer's amax by its layer's output error (module docstring).

    Args:
        model: the quantized model the statistics were collected on.
        stats: ``collect_statistics(..., cache_batches=k)`` with k >= 1 (cached layer inputs are needed).
        grid: number of geometric grid points between the smallest candidate and the max (0 or 1: none).
        group: torch.distributed group whose ranks' errors are summed (default: the world when initialized).

    Returns:
        a ``Table`` (quantizer, choice, amax, amax_over_max, error_vs_max, candidates), ``error_vs_max`` being
        the chosen candidate's layer output error over that of the max. ``table.amaxes`` / ``table.labels``
        (``{quantizer: amax}`` / ``{quantizer: "auto: <choice>"}``) go to ``apply_amax``, which switches
        quantization on (``calibrate(..., method="auto")`` does both); ``table.choices`` is the JSON-ready
        ``{quantizer: {"choice", "amax", "error_vs_max"}}`` for a calibration file's metadata.
        The weight amaxes are set from the weights; the quantizers' flags are left as they were.
    """
    if not isinstance(stats, ActivationStatistics):
        raise TypeError(f"stats must be the ActivationStatistics of collect_statistics, got {type(stats).__name__}")
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 0:
        raise ValueError(f"grid must be an int >= 0, got {grid!r}")
    if not any(stats.inputs.values()):
        raise ValueError("auto_amax needs cached layer inputs: collect_statistics(..., cache_batches=2)")
    calibrate_weights_from_tensors(model)
    by_layer = {}
    for ref in find_quantizers(model):
        if ref.role == "input" and ref.active and stats.data_max(ref.name) is not None:
            by_layer.setdefault(ref.layer_name, []).append(ref)
    table = Table(["quantizer", "choice", "amax", "amax_over_max", "error_vs_max", "candidates"],
                  title=f"auto amax (layer output error, {stats.batches} batches)")
    with torch.no_grad(), eval_mode(model):
        for layer_name, refs in by_layer.items():
            # every rank scores every layer (a rank that cached no input adds zero errors to the all-reduce)
            if stats.inputs.get(layer_name) or world_size(group) > 1:
                for row in _choose_layer(refs[0].layer, refs, stats, stats.inputs.get(layer_name, []), grid, group):
                    table.add(row)
    records = table.records()
    table.amaxes = {r["quantizer"]: torch.tensor(r["amax"], dtype=torch.float32,
                                                  device=_data_device(stats, r["quantizer"])) for r in records}
    table.labels = {r["quantizer"]: f"auto: {r['choice']}" for r in records}
    table.choices = {r["quantizer"]: {"choice": r["choice"], "amax": r["amax"],
                                      "error_vs_max": None if math.isnan(r["error_vs_max"]) else r["error_vs_max"]}
                     for r in records}
    return table
