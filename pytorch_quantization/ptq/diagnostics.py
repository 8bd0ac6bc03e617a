"""``clipping_diagnostics``: how much of the calibration data each activation amax clips, with one-line warnings.

Per active activation quantizer with an amax: the largest calibration magnitude (``data_max``), ``amax / data_max``
and the fraction of calibration values with ``|x| > amax``, read from the histogram (bins above amax, plus the
part of the bin holding amax assuming values spread evenly in it). With a ``skip_zeros`` histogram only (no
other), the fraction is over the non-zero values. Max calibration clips nothing by construction.

A warning is emitted (one line each) when amax is below ``max_ratio`` of the data max and the fraction exceeds
``input_threshold`` on an input-geometry layer (by
default the quantizer that saw data first in the calibration pass, i.e. the first layer fed the raw inputs, such
as a PointPillars PFN fed point coordinates) or ``threshold`` anywhere; it names the layer and points to
``--skip-layers`` and ``--calib-method auto``.
"""
import math

import torch

from pytorch_quantization.calib import HistogramCalibrator, MaxCalibrator
from pytorch_quantization.ptq.filters import NameFilter
from pytorch_quantization.ptq.quantizers import find_quantizers
from pytorch_quantization.ptq.statistics import ActivationStatistics
from pytorch_quantization.ptq.table import Table

__all__ = ["clipping_diagnostics", "clipped_fraction", "Diagnostics"]


def clipped_fraction(histogram, amax):
    """Fraction of the values counted by ``histogram`` (a HistogramCalibrator) with ``|x| > amax``."""
    state = histogram.state_dict()
    counts = state["calib_hist"]
    if counts is None:
        return math.nan
    total = int(counts.sum())
    if total == 0:
        return 0.0
    width = histogram.calib_range / counts.numel()
    edge = amax / width
    if edge >= counts.numel():
        return 0.0
    cut = int(math.floor(edge))
    above = int(counts[cut + 1:].sum()) + int(counts[cut]) * (cut + 1 - edge)
    return above / total


class Diagnostics:
    """``table`` (one row per activation quantizer) and ``warnings`` (one line each)."""

    def __init__(self, table, warnings):
        self.table = table
        self.warnings = warnings

    def __str__(self):
        return "\n".join([str(self.table)] + self.warnings)


def _sources(ref, stats):
    """(histogram or None, data max or None) for quantizer ``ref``, from ``stats`` or its own calibrator."""
    if stats is not None:
        hist = stats.histogram(ref.name, False) or stats.histogram(ref.name, True)
        return hist, stats.data_max(ref.name)
    calibrator = getattr(ref.quantizer, "_calibrator", None)
    if isinstance(calibrator, HistogramCalibrator):
        return calibrator, calibrator.state_dict()["calib_max"]
    if isinstance(calibrator, MaxCalibrator) and calibrator.compute_amax() is not None:
        return None, float(calibrator.compute_amax().max())
    return None, None


def _input_layers(refs, stats, input_layers):
    if input_layers is not None:
        chosen = NameFilter(input_layers)
        return {r.layer_name for r in refs if chosen.match(r.layer_name, r.layer) is not None}
    if stats is not None and stats.order:
        return {stats.layer_of[stats.order[0]]}
    return {refs[0].layer_name} if refs else set()


def _check_threshold(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a fraction in [0, 1), got {value!r}")


def _warning(layer, method, is_input, amax, data_max, clipped):
    where = "the input-geometry layer" if is_input else "layer"
    advice = f"keep it float (--skip-layers '{layer}') or use --calib-method auto"
    if method.startswith("auto"):
        advice = f"auto chose it for the lowest layer output error; if accuracy drops keep it float (--skip-layers " \
                 f"'{layer}')"
    return (f"{where} {layer}: {method or 'calibrated'} amax {amax:.4g} clips {100 * clipped:.3g}% of the "
            f"calibration values (data max {data_max:.4g}, amax/max {amax / data_max:.3g}); {advice}")


def clipping_diagnostics(model, stats=None, *, method=None, input_layers=None, input_threshold=1e-4,
                         threshold=1e-2, max_ratio=0.9):
    """Clipping of every calibrated activation quantizer of ``model`` (see the module docstring).

    Args:
        model: a calibrated quantized model.
        stats: the ``ActivationStatistics`` the amaxes came from; default: the quantizers' own calibrators (as
            ``calibrate`` leaves them).
        method: label of the method per quantizer in the table and warnings (a string or ``{quantizer: label}``).
        input_layers: layer names / globs of the input-geometry layers (default: the first layer fed data).
        input_threshold, threshold: clipped fractions above which a warning is emitted, on input-geometry layers
            and on any layer, when also ``amax / data_max < max_ratio`` (a slight trim of the top is harmless).

    Returns:
        ``Diagnostics``: ``table`` (quantizer, layer, method, amax, data_max, amax_over_max, clipped_fraction,
        input_layer) and ``warnings`` (one line per quantizer over its threshold).
    """
    if stats is not None and not isinstance(stats, ActivationStatistics):
        raise TypeError(f"stats must be the ActivationStatistics of collect_statistics, got {type(stats).__name__}")
    _check_threshold("input_threshold", input_threshold)
    _check_threshold("threshold", threshold)
    if isinstance(max_ratio, bool) or not isinstance(max_ratio, (int, float)) or not 0 < max_ratio <= 1:
        raise ValueError(f"max_ratio must be in (0, 1], got {max_ratio!r}")
    label = method.get if isinstance(method, dict) else (lambda _name: method or "")
    refs = [r for r in find_quantizers(model) if r.role == "input" and r.active]
    inputs = _input_layers(refs, stats, input_layers)
    table = Table(["quantizer", "layer", "method", "amax", "data_max", "amax_over_max", "clipped_fraction",
                   "input_layer"], title="clipping of the calibration data")
    lines = []
    for ref in refs:
        amax_tensor = ref.quantizer.amax
        hist, data_max = _sources(ref, stats)
        if amax_tensor is None or data_max is None:
            continue
        amax = float(amax_tensor.max()) if amax_tensor.numel() == 1 else math.nan
        if hist is not None and amax_tensor.numel() == 1:
            clipped = clipped_fraction(hist, amax)
        else:
            clipped = 0.0 if bool(torch.all(amax_tensor >= data_max)) else math.nan
        ratio = amax / data_max if data_max > 0 else math.nan
        is_input = ref.layer_name in inputs
        table.add([ref.name, ref.layer_name, label(ref.name), amax, data_max, ratio, clipped, is_input])
        if clipped > (input_threshold if is_input else threshold) and ratio < max_ratio:
            lines.append(_warning(ref.layer_name, label(ref.name), is_input, amax, data_max, clipped))
    return Diagnostics(table, lines)
