"""``calibrate``: one pass over calibration data sets the amax of every quantizer of a quantized model.

* Weights: amax = ``max|w|`` per tensor or per channel, computed from the weight tensors directly (no data).
* Activations: during the pass every quantizer is switched to "collect, do not quantize", so statistics come
  from the float network; the activation quantizers get a fresh calibrator for ``method``: ``MaxCalibrator``
  for ``"max"``, else a bounded ``HistogramCalibrator`` (2048 bins) whose amax is chosen by percentile / MSE /
  entropy; ``"auto"`` collects max and histograms in one pass (``statistics``) and picks per quantizer the
  candidate that minimises its layer's output error (``auto_amax``). ``skip_zeros`` leaves exact zeros out of
  the histograms (LiDAR BEV maps are mostly zeros, which otherwise drag percentile / entropy ranges towards 0).
* Under ``torch.distributed`` the statistics are all-reduced before computing amax (see ``distributed``), so
  every rank gets the amaxes one process would compute from all ranks' data.
* Afterwards calibration is off and quantization on for every quantizer that was not disabled; the model's
  train/eval mode is restored (the pass itself runs in eval mode under ``torch.no_grad``).
* Clipping diagnostics (``diagnostics``) are attached to the result and their warnings issued.
"""
import warnings

from pytorch_quantization.calib import HistogramCalibrator, MaxCalibrator
from pytorch_quantization.ptq.auto_amax import auto_amax
from pytorch_quantization.ptq.config import CALIB_METHODS
from pytorch_quantization.ptq.diagnostics import clipping_diagnostics
from pytorch_quantization.ptq.distributed import reduce_calibrators
from pytorch_quantization.ptq.quantizers import find_quantizers
from pytorch_quantization.ptq.statistics import (apply_amax, calibrate_weights_from_tensors, check_num_batches,
                                                 collect_pass, collect_statistics, histogram_amax)

__all__ = ["calibrate", "load_amax", "calibrate_weights_from_tensors", "AUTO_CACHE_BATCHES"]

#: calibration batches whose layer inputs ``method="auto"`` scores its candidates on
AUTO_CACHE_BATCHES = 2


def _check_args(method, percentile, num_batches):
    if method not in CALIB_METHODS:
        raise ValueError(f"method must be one of {CALIB_METHODS}, got {method!r}")
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not 0 < percentile <= 100:
        raise ValueError(f"percentile must be a number in (0, 100], got {percentile!r}")
    check_num_batches(num_batches)


def _make_calibrator(quantizer, method, skip_zeros):
    args = (quantizer.num_bits, quantizer.axis, quantizer.unsigned)
    if method == "max":
        return MaxCalibrator(*args)
    if method == "entropy" and isinstance(quantizer.num_bits, tuple):
        raise ValueError("method='entropy' needs integer activation quantizers; use 'percentile' or 'mse' for E4M3 "
                         "(fp8) activations")
    if quantizer.axis is not None:
        raise ValueError(f"method={method!r} needs a per-tensor activation quantizer, but one has axis="
                         f"{quantizer.axis}; use method='max' or per-tensor input descriptors")
    return HistogramCalibrator(*args, skip_zeros=skip_zeros)


def calibrate(model, data, *, forward_fn=None, num_batches=None, method="max", percentile=99.99, skip_zeros=False,
              group=None):
    """Calibrate every quantizer of ``model`` (built with ``quantize_model``) on ``data``.

    Args:
        model: a model with quantized layers.
        data: an iterable of batches (DataLoader, list, generator...).
        forward_fn: ``forward_fn(model, batch)``; default ``model(batch)`` / ``model(*batch)`` / ``model(**batch)``.
        num_batches: stop after this many batches (default: all of ``data``).
        method: ``"max"``, ``"percentile"``, ``"mse"``, ``"entropy"`` or ``"auto"`` for activations (weights always
            use max). ``"auto"`` chooses per quantizer the candidate amax (max, percentiles, MSE, entropy, with and
            without zeros, and a grid between them) minimising its layer's output error on the first
            ``AUTO_CACHE_BATCHES`` batches (see ``auto_amax``).
        percentile: for ``method="percentile"``, in (0, 100].
        skip_zeros: exclude exact zeros from histogram statistics.
        group: torch.distributed process group to reduce statistics over (default: the world, when initialized).

    Returns:
        the ``Table`` of ``load_amax``: one row per quantizer (name, role, method, amax, status); with
        ``method="auto"`` the method column says each quantizer's choice and ``table.choices`` holds them
        JSON-ready (for ``save_calibration``'s metadata). ``table.diagnostics`` is the ``clipping_diagnostics``
        of the result; each of its warnings is also issued with ``warnings.warn``.

    The histograms stay in the quantizers' calibrators, so ``load_amax(model, other_method)`` compares
    histogram methods without another pass over the data.

    Raises:
        ValueError: no quantizers in the model, no batch in ``data``, bad arguments.
    """
    _check_args(method, percentile, num_batches)
    refs = find_quantizers(model)
    if not refs:
        raise ValueError("model has no quantizers; run quantize_model(model, config) before calibrate")
    acts = [r for r in refs if r.role == "input" and r.active]
    if method == "auto":
        table, seen = _calibrate_auto(model, acts, data, forward_fn, num_batches, skip_zeros, group)
    else:
        for ref in acts:
            ref.quantizer.calibrator = _make_calibrator(ref.quantizer, method, skip_zeros)
        seen = collect_pass(model, refs, acts, data, forward_fn, num_batches)
        reduce_calibrators([r.quantizer.calibrator for r in acts], group=group)
        table = load_amax(model, method, percentile=percentile)
    table.title = f"calibration ({seen} batches, {method})"
    table.diagnostics = clipping_diagnostics(model, method=dict(zip(table.column("quantizer"),
                                                                    table.column("method"))))
    for line in table.diagnostics.warnings:
        warnings.warn(line, stacklevel=2)
    return table


def _calibrate_auto(model, acts, data, forward_fn, num_batches, skip_zeros, group):
    """``method="auto"``: one statistics pass, the per-quantizer choice, then the amaxes applied."""
    if not acts:  # weight-only: nothing to choose
        seen = collect_pass(model, find_quantizers(model), acts, data, forward_fn, num_batches)
        return apply_amax(model, {}, "auto"), seen
    stats = collect_statistics(model, data, forward_fn=forward_fn, num_batches=num_batches, skip_zeros="both",
                               cache_batches=AUTO_CACHE_BATCHES, group=group)
    for ref in acts:  # as after a histogram calibration: load_amax can compare histogram methods later
        kept = stats.histogram(ref.name, skip_zeros) or stats.max_calibrator(ref.name)
        ref.quantizer.calibrator = kept  # pylint: disable=protected-access
    chosen = auto_amax(model, stats, group=group)
    table = apply_amax(model, chosen.amaxes, chosen.labels)
    table.choices = chosen.choices
    return table, stats.batches


def load_amax(model, method="max", *, percentile=99.99):
    """Set weight amaxes from the weights and activation amaxes from the collected statistics, then switch
    calibration off and quantization on. ``method`` must fit the collected statistics: ``"max"`` after a max
    pass, any histogram method after a histogram pass (``"auto"`` needs ``calibrate(..., method="auto")``)."""
    _check_args(method, percentile, None)
    if method == "auto":
        raise ValueError("load_amax cannot choose method='auto' from calibrator statistics alone (it needs the "
                         "layers' inputs); use calibrate(..., method='auto') or ptq.auto_amax(model, stats)")
    amaxes = {}
    for ref in find_quantizers(model):
        if ref.role == "input" and ref.active:
            amaxes[ref.name] = _compute(ref.quantizer.calibrator, method, percentile)
    return apply_amax(model, amaxes, method)


def _compute(calibrator, method, percentile):
    if isinstance(calibrator, HistogramCalibrator):
        if method == "max":
            raise ValueError("the collected statistics are histograms; load_amax needs 'percentile', 'mse' or "
                             "'entropy' (or recalibrate with method='max')")
        return histogram_amax(calibrator, method, percentile)
    if method != "max":
        raise ValueError(f"the collected statistics are maxima; method {method!r} needs a histogram pass: "
                         f"calibrate(..., method={method!r})")
    return calibrator.compute_amax()
