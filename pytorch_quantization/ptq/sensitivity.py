"""``sensitivity``: which quantized layers hurt, by toggling their quantizers one layer at a time.

Modes:

* ``"one_quantized"``: every layer float except one; the metric drop from the float model is that layer's
  own damage. Ranked by that drop (worst first).
* ``"one_float"``: every layer quantized except one; the metric gain over the fully quantized model is what
  keeping that layer float would buy. Ranked by that gain (largest first).
* ``"proxy"``: no metric; each layer's own output SQNR on a few batches (``sample`` / ``samples``) from one
  float pass per batch, in seconds (see ``proxy_sensitivity``). Ranked by that SQNR (lowest first). For the
  task-output error instead, use ``"one_quantized"`` with ``eval_fn=None`` and ``sample``: the model output
  SQNR with one layer quantized at a time (one forward per layer).

For each configuration the table records ``eval_fn(model)`` (any scalar metric, higher is better unless
``higher_is_better=False``) and, when ``sample`` is given, the SQNR (dB) of the model output on ``sample``
against the float model. Quantizers are only switched (``disable`` / ``enable``), never recalibrated, and are
restored afterwards. ``keep_float(model, names)`` then leaves chosen layers in float for good.
"""
import math
from typing import Callable, Iterable, List, Optional

import torch

from pytorch_quantization.ptq.filters import NameFilter
from pytorch_quantization.ptq.forward import run_forward, sqnr_db
from pytorch_quantization.ptq.proxy_sensitivity import proxy_sensitivity
from pytorch_quantization.ptq.quantizers import find_quantizers, set_enabled
from pytorch_quantization.ptq.table import Table

__all__ = ["sensitivity", "keep_float"]

_MODES = ("one_quantized", "one_float", "proxy")


def _progress(items, desc):
    try:
        from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
    except ImportError:  # pragma: no cover
        return items
    return tqdm(items, desc=desc, unit="layer", leave=False)


def _layers(model, layers):
    """``{layer name: [quantizer refs]}`` for quantized layers, filtered by ``layers``."""
    grouped = {}
    for ref in find_quantizers(model):
        grouped.setdefault(ref.layer_name, []).append(ref)
    if not grouped:
        raise ValueError("model has no quantized layers; run quantize_model (and calibrate) first")
    if layers is None:
        return grouped
    chosen = NameFilter(layers)
    picked = {n: refs for n, refs in grouped.items() if chosen.match(n, refs[0].layer) is not None}
    if not picked:
        raise ValueError(f"layers={layers!r} matches none of the quantized layers, e.g. {list(grouped)[:5]}")
    return picked


def _evaluate(model, eval_fn, sample, forward_fn):
    with torch.no_grad():
        metric = math.nan if eval_fn is None else float(eval_fn(model))
        return metric, None if sample is None else run_forward(model, sample, forward_fn)


def sensitivity(model: torch.nn.Module, eval_fn: Optional[Callable[[torch.nn.Module], float]] = None, *,
                mode: str = "one_quantized", layers=None, sample=None,
                forward_fn: Optional[Callable] = None, higher_is_better: bool = True,
                samples: Optional[Iterable] = None) -> Table:
    """Per-layer quantization sensitivity of a calibrated model (see the module docstring).

    Args:
        model: a quantized, calibrated model.
        eval_fn: ``eval_fn(model) -> float`` (e.g. mAP on a few validation frames); optional when ``sample`` is given.
        mode: ``"one_quantized"`` or ``"one_float"``.
        layers: restrict to these layer names (glob / regex / callable, as ``skip``); default all quantized layers.
        sample: a batch for the output-SQNR column (``forward_fn(model, sample)`` or ``model(sample)``).
        higher_is_better: direction of ``eval_fn``'s metric.
        samples: for ``mode="proxy"``, several batches (instead of the one ``sample``).

    Returns:
        a ranked ``Table`` (rank, layer, metric, delta, output_sqnr_db); the title gives the float and fully
        quantized metrics. ``delta`` is the metric minus the float metric (one_quantized) or minus the fully
        quantized metric (one_float). ``mode="proxy"``: a Table (rank, layer, layer_sqnr_db), ``eval_fn`` unused.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if mode == "proxy":
        batches = samples if samples is not None else [] if sample is None else [sample]
        return proxy_sensitivity(model, _layers(model, layers), batches, forward_fn)
    if eval_fn is None and sample is None:
        raise ValueError("pass eval_fn (a metric) and/or sample (a batch for output SQNR)")
    grouped = _layers(model, layers)
    all_refs = find_quantizers(model)
    original = [ref.quantizer.is_enabled for ref in all_refs]
    sign = 1.0 if higher_is_better else -1.0

    def set_state(float_layers):
        for ref, was_enabled in zip(all_refs, original):
            set_enabled(ref.quantizer, was_enabled and ref.layer_name not in float_layers)

    rows = []
    everything = {r.layer_name for r in all_refs}
    try:
        set_state(everything)
        float_metric, float_out = _evaluate(model, eval_fn, sample, forward_fn)
        set_state(set())
        quant_metric, quant_out = _evaluate(model, eval_fn, sample, forward_fn)
        for name in _progress(list(grouped), f"sensitivity ({mode})"):
            set_state(everything - {name} if mode == "one_quantized" else {name})
            metric, out = _evaluate(model, eval_fn, sample, forward_fn)
            delta = metric - (float_metric if mode == "one_quantized" else quant_metric)
            sqnr = math.nan if out is None else sqnr_db(float_out, out)
            rows.append([name, metric, delta, sqnr])
    finally:
        set_state(set())
    # worst first: largest loss (one_quantized) or largest gain (one_float); SQNR breaks ties / ranks alone
    if eval_fn is not None:
        key = (lambda r: sign * r[2]) if mode == "one_quantized" else (lambda r: -sign * r[2])
    else:
        key = (lambda r: r[3]) if mode == "one_quantized" else (lambda r: -r[3])
    rows.sort(key=key)
    quant_sqnr = math.nan if quant_out is None else sqnr_db(float_out, quant_out)
    table = Table(["rank", "layer", "metric", "delta", "output_sqnr_db"],
                  title=f"sensitivity ({mode}): float metric {float_metric:.4g}, quantized metric "
                        f"{quant_metric:.4g}, quantized output SQNR {quant_sqnr:.3g} dB")
    for rank, row in enumerate(rows, 1):
        table.add([rank] + row)
    table.float_metric, table.quantized_metric = float_metric, quant_metric
    return table


def keep_float(model: torch.nn.Module, names) -> List[str]:
    """Disable the quantizers of the quantized layers matching ``names`` (names, globs, regexes or a callable).

    Returns the layer names now kept in float. Raises ValueError when an entry matches no quantized layer.
    """
    grouped = {}
    for ref in find_quantizers(model):
        grouped.setdefault(ref.layer_name, []).append(ref)
    entries = [names] if isinstance(names, str) or callable(names) else list(names)
    kept = []
    for entry in entries:
        matched = [n for n, refs in grouped.items() if NameFilter(entry).match(n, refs[0].layer) is not None]
        if not matched:
            raise ValueError(f"keep_float: {entry!r} matches no quantized layer; quantized layers are e.g. "
                             f"{list(grouped)[:5]}")
        for name in matched:
            for ref in grouped[name]:
                ref.quantizer.disable()
            if name not in kept:
                kept.append(name)
    return kept
