"""One pass over calibration data, every method's amax from it: ``collect_statistics`` / ``compute_amax`` /
``apply_amax``.

``collect_statistics`` runs the float model once over the data and feeds every active activation quantizer's
input to a ``MaxCalibrator`` AND to ``HistogramCalibrator`` s (one per requested ``skip_zeros`` variant) at the
same time; ``compute_amax(stats, method, ...)`` then gives the amaxes of any method (``max``, ``percentile``,
``mse``, ``entropy``, with or without zeros) from the stored statistics without touching the data again. The
calibrators are the ones ``calibrate`` uses, fed the same tensors, so the amaxes equal those of a separate
``calibrate(..., method=m)`` pass bit for bit.

The pass also records the order in which quantizers first saw data (the first one is the layer that sees the raw
inputs) and, with ``cache_batches``, keeps a few of each quantized layer's float inputs for ``auto_amax``.
"""
import itertools
import math
import warnings

import torch

from pytorch_quantization.calib import HistogramCalibrator, MaxCalibrator
from pytorch_quantization.calib.calibrator import _Calibrator
from pytorch_quantization.ptq.distributed import reduce_calibrators
from pytorch_quantization.ptq.forward import eval_mode, run_forward
from pytorch_quantization.ptq.quantizers import find_quantizers, set_amax, weight_amax
from pytorch_quantization.ptq.table import Table

__all__ = ["ActivationStatistics", "collect_statistics", "compute_amax", "apply_amax", "collect_pass",
           "calibrate_weights_from_tensors", "check_num_batches", "histogram_amax", "quantizer_flags",
           "set_quantizer_flags", "HISTOGRAM_METHODS"]

HISTOGRAM_METHODS = ("percentile", "mse", "entropy")


def _progress(iterable, total):
    try:
        from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
    except ImportError:  # pragma: no cover - tqdm is a dependency, but keep working without it
        return iterable
    return tqdm(iterable, total=total, desc="calibrate", unit="batch", leave=False)


def check_num_batches(num_batches):
    """ValueError unless ``num_batches`` is None or an int >= 1."""
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


def quantizer_flags(refs):
    """The (quant, calib) flags of each ref's quantizer."""
    return [(r.quantizer.is_quant_enabled, r.quantizer.is_calib_enabled) for r in refs]


def set_quantizer_flags(refs, flags):
    """Restore flags read by ``quantizer_flags``."""
    for ref, (if_quant, if_calib) in zip(refs, flags):
        quantizer = ref.quantizer
        quantizer.enable_quant() if if_quant else quantizer.disable_quant()
        quantizer.enable_calib() if if_calib else quantizer.disable_calib()


def collect_pass(model, refs, acts, data, forward_fn, num_batches):
    """Run the data through the float model with the ``acts`` quantizers collecting; returns the batch count.

    On success every quantizer is left with quantization off and the ``acts`` in calibration mode; on an error
    (or no batch) the flags are restored.
    """
    saved = quantizer_flags(refs)
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
            set_quantizer_flags(refs, saved)
    if seen == 0:
        raise ValueError("data yielded no batches; pass a non-empty iterable of calibration batches")
    return seen


class _Tee(_Calibrator):
    """Stands in for a quantizer's calibrator during the pass: hands each tensor to every real calibrator."""

    def __init__(self, name, calibrators, order):
        first = calibrators[0]
        super().__init__(first._num_bits, first._axis, first._unsigned)  # pylint: disable=protected-access
        self._name, self._calibrators, self._order = name, calibrators, order

    def collect(self, x):
        if self._name not in self._order:
            self._order[self._name] = len(self._order)
        for calibrator in self._calibrators:
            calibrator.collect(x)


def _shrink(x, budget):
    """``x`` cut down to at most about ``budget`` elements: leading rows first, then a central spatial crop."""
    if not isinstance(x, torch.Tensor) or x.numel() <= budget:
        return x
    if x.shape[0] > 1:
        x = x[:max(1, x.shape[0] * budget // x.numel())]
    if x.numel() > budget and x.dim() >= 3:
        spatial = x.dim() - 2
        factor = (budget / x.numel()) ** (1.0 / spatial)
        for dim in range(2, x.dim()):
            size = max(1, int(x.shape[dim] * factor))
            x = x.narrow(dim, (x.shape[dim] - size) // 2, size)
    return x.clone()  # own the memory instead of keeping a view of the whole batch


class _InputCache:
    """Forward pre-hooks keeping up to ``batches`` float inputs (args, kwargs) of each quantized layer."""

    def __init__(self, layers, batches, budget):
        self.inputs = {name: [] for name in layers}
        self._batches, self._budget = batches, budget
        self._handles = [layer.register_forward_pre_hook(self._hook(name), with_kwargs=True)
                         for name, layer in layers.items()]

    def _keep(self, value):
        return _shrink(value.detach(), self._budget) if isinstance(value, torch.Tensor) else value

    def _hook(self, name):
        def hook(_module, args, kwargs):
            kept = self.inputs[name]
            if len(kept) < self._batches:
                kept.append((tuple(self._keep(a) for a in args), {k: self._keep(v) for k, v in kwargs.items()}))
        return hook

    def remove(self):
        for handle in self._handles:
            handle.remove()


class ActivationStatistics:
    """What ``collect_statistics`` gathered, per activation quantizer name.

    Attributes:
        names: the quantizer names, in module order.
        order: quantizer names in the order they first saw data during the pass (execution order).
        skip_zeros: the histogram variants held (a tuple of bools).
        batches: how many batches the pass ran.
        inputs: ``{layer name: [(args, kwargs), ...]}`` the float inputs of each layer's first ``cache_batches``
            calls (empty without ``cache_batches``).
        layer_of: ``{quantizer name: layer name}``.
        num_bits: ``{quantizer name: num_bits}``.
    """

    def __init__(self, max_calibrators, histograms, skip_zeros, order, batches, inputs, layer_of, num_bits):
        self._max = max_calibrators
        self._hist = histograms
        self.skip_zeros = tuple(skip_zeros)
        self.names = list(max_calibrators)
        self.order = sorted(order, key=order.get)
        self.batches = batches
        self.inputs = inputs
        self.layer_of = layer_of
        self.num_bits = num_bits

    def max_calibrator(self, name):
        """The ``MaxCalibrator`` of quantizer ``name``."""
        return self._max[name]

    def histogram(self, name, skip_zeros=False):
        """The ``HistogramCalibrator`` of quantizer ``name`` for the ``skip_zeros`` variant (None if not held)."""
        return self._hist.get((name, bool(skip_zeros)))

    def calibrators(self):
        """Every calibrator held (for distributed reduction), in a stable order."""
        return [self._max[n] for n in self.names] + [self._hist[(n, s)] for n in self.names for s in self.skip_zeros
                                                      if (n, s) in self._hist]

    def data_max(self, name):
        """Largest ``|x|`` seen by quantizer ``name`` (a float), or None when it saw no data."""
        amax = self._max[name].compute_amax()
        return None if amax is None else float(amax.max())


def _skip_variants(skip_zeros):
    if skip_zeros == "both":
        return (False, True)
    if isinstance(skip_zeros, bool):
        return (skip_zeros,)
    raise ValueError(f"skip_zeros must be True, False or 'both', got {skip_zeros!r}")


def collect_statistics(model, data, *, forward_fn=None, num_batches=None, skip_zeros="both", num_bins=2048,
                       cache_batches=0, cache_values=1 << 20, group=None):
    """One pass of ``data`` through the float ``model`` feeding max and histogram statistics of every active
    activation quantizer.

    Args:
        model: a model with quantized layers (``quantize_model``).
        data, forward_fn, num_batches, group: as ``calibrate``.
        skip_zeros: ``False``, ``True`` or ``"both"`` (default): which histogram variants to collect.
        num_bins: histogram bins (``calibrate`` uses 2048).
        cache_batches: keep this many float inputs of each quantized layer (for ``auto_amax``); 0 keeps none.
        cache_values: at most about this many elements per cached tensor (leading rows, then a central crop).

    Returns:
        an ``ActivationStatistics``. The quantizers keep their calibrators, amaxes and flags; nothing is set.

    Raises:
        ValueError: no quantizers, no active activation quantizer, no batch, bad arguments.
    """
    check_num_batches(num_batches)
    variants = _skip_variants(skip_zeros)
    for name, value, low in (("cache_batches", cache_batches, 0), ("cache_values", cache_values, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    refs = find_quantizers(model)
    if not refs:
        raise ValueError("model has no quantizers; run quantize_model(model, config) before collect_statistics")
    acts = [r for r in refs if r.role == "input" and r.active]
    if not acts:
        raise ValueError("model has no active activation quantizers (weight-only config?); nothing to collect")
    max_cals, hists, order = {}, {}, {}
    saved = [getattr(r.quantizer, "_calibrator", None) for r in acts]
    for ref in acts:
        q = ref.quantizer
        args = (q.num_bits, q.axis, q.unsigned)
        max_cals[ref.name] = MaxCalibrator(*args)
        tee = [max_cals[ref.name]]
        if q.axis is None:  # histograms are per tensor
            for skip in variants:
                hists[(ref.name, skip)] = HistogramCalibrator(*args, num_bins=num_bins, skip_zeros=skip)
                tee.append(hists[(ref.name, skip)])
        q.calibrator = _Tee(ref.name, tee, order)
    layers = {r.layer_name: r.layer for r in acts}
    cache = _InputCache(layers, cache_batches, cache_values) if cache_batches else None
    flags = quantizer_flags(refs)
    try:
        seen = collect_pass(model, refs, acts, data, forward_fn, num_batches)
    finally:
        if cache is not None:
            cache.remove()
        for ref, calibrator in zip(acts, saved):
            ref.quantizer.calibrator = calibrator
        set_quantizer_flags(refs, flags)
    stats = ActivationStatistics(max_cals, hists, variants, order, seen,
                                 cache.inputs if cache is not None else {}, {r.name: r.layer_name for r in acts},
                                 {r.name: r.quantizer.num_bits for r in acts})
    reduce_calibrators(stats.calibrators(), group=group)
    return stats


def _check_method(method, percentile):
    if method not in ("max",) + HISTOGRAM_METHODS:
        raise ValueError(f"method must be one of {('max',) + HISTOGRAM_METHODS}, got {method!r} "
                         "(method='auto' chooses per quantizer: use auto_amax)")
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not 0 < percentile <= 100:
        raise ValueError(f"percentile must be a number in (0, 100], got {percentile!r}")


def histogram_amax(calibrator, method, percentile):
    """``calibrator.compute_amax`` for a histogram method, quietly None when it collected nothing."""
    kwargs = {"percentile": percentile} if method == "percentile" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "nothing collected" is reported once, by apply_amax
        return calibrator.compute_amax(method, **kwargs)


def compute_amax(stats, method, *, percentile=99.99, skip_zeros=False):
    """``{quantizer name: amax tensor or None}`` for ``method`` from ``stats`` (no data pass).

    ``skip_zeros`` picks the histogram variant for the histogram methods; it must have been collected.
    """
    _check_method(method, percentile)
    if not isinstance(stats, ActivationStatistics):
        raise TypeError(f"stats must be the ActivationStatistics of collect_statistics, got {type(stats).__name__}")
    if method == "max":
        return {name: stats.max_calibrator(name).compute_amax() for name in stats.names}
    if bool(skip_zeros) not in stats.skip_zeros:
        raise ValueError(f"skip_zeros={skip_zeros} histograms were not collected (held: {stats.skip_zeros}); "
                         f"collect_statistics(..., skip_zeros='both')")
    per_channel = [name for name in stats.names if stats.histogram(name, skip_zeros) is None]
    if per_channel:
        raise ValueError(f"method={method!r} needs per-tensor activation quantizers, but {per_channel[:3]} are per "
                         "channel (maxima only); use method='max' or per-tensor input descriptors")
    return {name: histogram_amax(stats.histogram(name, skip_zeros), method, percentile) for name in stats.names}


def apply_amax(model, amaxes, method="max"):
    """Set weight amaxes from the weights and activation amaxes from ``amaxes`` (``{quantizer name: amax}``),
    then switch calibration off and quantization on for every quantizer.

    ``method``: the label shown per activation quantizer, a string or ``{quantizer name: label}``.

    Returns:
        a ``Table`` (quantizer, role, method, amax, status); a warning lists active activation quantizers with no
        amax (they saw no data, or ``amaxes`` lacks them).
    """
    refs = find_quantizers(model)
    calibrate_weights_from_tensors(model)
    label = method.get if isinstance(method, dict) else (lambda _name: method)
    table = Table(["quantizer", "role", "method", "amax", "status"],
                  title=f"amax ({method if isinstance(method, str) else 'per quantizer'})")
    unreached = []
    for ref in refs:
        q = ref.quantizer
        q.disable_calib()
        q.enable_quant()
        status = "ok"
        if not ref.active:
            status = "quant_act=False" if q.is_enabled else "disabled"
        elif ref.role == "input":
            amax = amaxes.get(ref.name)
            if amax is None:
                status = "not reached by the data"
                unreached.append(ref.name)
            else:
                set_amax(q, amax)
        amax = q.amax
        table.add([ref.name, ref.role, "max" if ref.role == "weight" else label(ref.name),
                   math.nan if amax is None else float(amax.max()), status])
    if unreached:
        warnings.warn(f"{len(unreached)} activation quantizers saw no data and keep no amax (they will use dynamic "
                      f"ranges): {unreached[:10]}{' ...' if len(unreached) > 10 else ''}; check forward_fn / data",
                      stacklevel=2)
    return table
