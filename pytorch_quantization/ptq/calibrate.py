"""``calibrate``: one pass over calibration data sets the amax of every quantizer of a quantized model.

* Weights: amax = ``max|w|`` per tensor or per channel, computed from the weight tensors directly (no data).
* Activations: during the pass every quantizer is switched to "collect, do not quantize", so statistics come
  from the float network; the activation quantizers get a fresh calibrator for ``method``: ``MaxCalibrator``
  for ``"max"``, else a bounded ``HistogramCalibrator`` (2048 bins) whose amax is chosen by percentile / MSE /
  entropy. ``skip_zeros`` leaves exact zeros out of the histograms (LiDAR BEV maps are mostly zeros, which
  otherwise drag percentile / entropy ranges towards 0).
* Under ``torch.distributed`` the statistics are all-reduced before computing amax (see ``distributed``), so
  every rank gets the amaxes one process would compute from all ranks' data.
* Afterwards calibration is off and quantization on for every quantizer that was not disabled; the model's
  train/eval mode is restored (the pass itself runs in eval mode under ``torch.no_grad``).
"""
import itertools
import math
import warnings

import torch

from pytorch_quantization.calib import HistogramCalibrator, MaxCalibrator
from pytorch_quantization.ptq.config import CALIB_METHODS
from pytorch_quantization.ptq.distributed import reduce_calibrators
from pytorch_quantization.ptq.forward import eval_mode, run_forward
from pytorch_quantization.ptq.quantizers import find_quantizers, set_amax, weight_amax
from pytorch_quantization.ptq.table import Table

__all__ = ["calibrate", "load_amax", "calibrate_weights_from_tensors"]


def _progress(iterable, total):
    try:
        from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
    except ImportError:  # pragma: no cover - tqdm is a dependency, but keep working without it
        return iterable
    return tqdm(iterable, total=total, desc="calibrate", unit="batch", leave=False)


def _check_args(method, percentile, num_batches):
    if method not in CALIB_METHODS:
        raise ValueError(f"method must be one of {CALIB_METHODS}, got {method!r}")
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not 0 < percentile <= 100:
        raise ValueError(f"percentile must be a number in (0, 100], got {percentile!r}")
    if num_batches is not None and (isinstance(num_batches, bool) or not isinstance(num_batches, int)
                                    or num_batches < 1):
        raise ValueError(f"num_batches must be None or an int >= 1, got {num_batches!r}")


def calibrate_weights_from_tensors(model):
    """Set every active weight quantizer's amax to ``max|w|`` along its axis; returns the refs it set."""
    done = []
    for ref in find_quantizers(model):
        if ref.role == "weight" and ref.active:
            set_amax(ref.quantizer, weight_amax(ref.layer.weight, ref.quantizer.axis))
            done.append(ref)
    return done


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


def _set_flags(refs, flags):
    for ref, (if_quant, if_calib) in zip(refs, flags):
        quantizer = ref.quantizer
        if if_quant:
            quantizer.enable_quant()
        else:
            quantizer.disable_quant()
        if if_calib:
            quantizer.enable_calib()
        else:
            quantizer.disable_calib()


def _collect(model, refs, acts, data, forward_fn, num_batches):
    """Run the data through the float model with the activation quantizers collecting; returns the batch count."""
    saved = [(r.quantizer.is_quant_enabled, r.quantizer.is_calib_enabled) for r in refs]
    for ref in refs:
        ref.quantizer.disable_quant()
    for ref in acts:
        ref.quantizer.enable_calib()
    seen, finished = 0, False
    total = len(data) if hasattr(data, "__len__") else None
    if num_batches is not None:
        total = num_batches if total is None else min(total, num_batches)
    try:
        with torch.no_grad(), eval_mode(model):
            for batch in _progress(itertools.islice(data, num_batches), total):
                run_forward(model, batch, forward_fn)
                seen += 1
        finished = True
    finally:
        if seen == 0 or not finished:  # leave the quantizers as they were
            _set_flags(refs, saved)
    if seen == 0:
        raise ValueError("data yielded no batches; pass a non-empty iterable of calibration batches")
    return seen


def calibrate(model, data, *, forward_fn=None, num_batches=None, method="max", percentile=99.99, skip_zeros=False,
              group=None):
    """Calibrate every quantizer of ``model`` (built with ``quantize_model``) on ``data``.

    Args:
        model: a model with quantized layers.
        data: an iterable of batches (DataLoader, list, generator...).
        forward_fn: ``forward_fn(model, batch)``; default ``model(batch)`` / ``model(*batch)`` / ``model(**batch)``.
        num_batches: stop after this many batches (default: all of ``data``).
        method: ``"max"``, ``"percentile"``, ``"mse"`` or ``"entropy"`` for activations (weights always use max).
        percentile: for ``method="percentile"``, in (0, 100].
        skip_zeros: exclude exact zeros from histogram statistics.
        group: torch.distributed process group to reduce statistics over (default: the world, when initialized).

    Returns:
        the ``Table`` of ``load_amax``: one row per quantizer (name, role, method, amax, status).

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
    for ref in acts:
        ref.quantizer.calibrator = _make_calibrator(ref.quantizer, method, skip_zeros)
    seen = _collect(model, refs, acts, data, forward_fn, num_batches)
    reduce_calibrators([r.quantizer.calibrator for r in acts], group=group)
    table = load_amax(model, method, percentile=percentile)
    table.title = f"calibration ({seen} batches, {method})"
    return table


def load_amax(model, method="max", *, percentile=99.99):
    """Set weight amaxes from the weights and activation amaxes from the collected statistics, then switch
    calibration off and quantization on. ``method`` must fit the collected statistics: ``"max"`` after a max
    pass, any histogram method after a histogram pass."""
    _check_args(method, percentile, None)
    refs = find_quantizers(model)
    calibrate_weights_from_tensors(model)
    table = Table(["quantizer", "role", "method", "amax", "status"], title=f"amax ({method})")
    unreached = []
    for ref in refs:
        q = ref.quantizer
        q.disable_calib()
        q.enable_quant()
        status = "ok"
        if not ref.active:
            status = "quant_act=False" if q.is_enabled else "disabled"
        elif ref.role == "input":
            amax = _compute(q.calibrator, method, percentile)
            if amax is None:
                status = "not reached by the data"
                unreached.append(ref.name)
            else:
                set_amax(q, amax)
        amax = q.amax
        table.add([ref.name, ref.role, "max" if ref.role == "weight" else method,
                   math.nan if amax is None else float(amax.max()), status])
    if unreached:
        warnings.warn(f"{len(unreached)} activation quantizers saw no data and keep no amax (they will use dynamic "
                      f"ranges): {unreached[:10]}{' ...' if len(unreached) > 10 else ''}; check forward_fn / data",
                      stacklevel=2)
    return table


def _compute(calibrator, method, percentile):
    if isinstance(calibrator, HistogramCalibrator):
        if method == "max":
            raise ValueError("the collected statistics are histograms; load_amax needs 'percentile', 'mse' or "
                             "'entropy' (or recalibrate with method='max')")
        kwargs = {"percentile": percentile} if method == "percentile" else {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "nothing collected" is reported once, by load_amax
            return calibrator.compute_amax(method, **kwargs)
    if method != "max":
        raise ValueError(f"the collected statistics are maxima; method {method!r} needs a histogram pass: "
                         f"calibrate(..., method={method!r})")
    return calibrator.compute_amax()
