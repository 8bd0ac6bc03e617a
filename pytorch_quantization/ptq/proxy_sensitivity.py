"""Proxy sensitivity: every quantized layer's own output SQNR, from one float pass per batch.

During a float forward of the model (all quantizers off), a forward hook on each selected layer calls the layer
again on the same input with its own quantizers on, and accumulates ``sum(float_out**2)`` and
``sum((float_out - quant_out)**2)``. The cost is one model forward plus one extra call per layer and batch, so
ranking every layer takes seconds where a full evaluation per layer takes minutes; the price is that it measures
each layer's local error, not its effect on the task metric (compare the two with ``stats.rank_agreement``).
"""
import math

import torch

from pytorch_quantization.ptq.forward import eval_mode, flatten_tensors, power_ratio_db, run_forward
from pytorch_quantization.ptq.quantizers import find_quantizers, set_enabled
from pytorch_quantization.ptq.table import Table

__all__ = ["proxy_sensitivity"]


class _LayerProbe:
    """Forward hook measuring one layer's quantized output against its float output."""

    def __init__(self, refs):
        self.refs = refs
        self.was_enabled = [r.quantizer.is_enabled for r in refs]
        self.signal = self.noise = 0.0
        self._busy = False

    def __call__(self, layer, args, kwargs, output):
        if self._busy:  # the quantized re-call below runs this hook again
            return
        self._busy = True
        try:
            for ref, was in zip(self.refs, self.was_enabled):
                set_enabled(ref.quantizer, was)
            quantized = flatten_tensors(layer(*args, **kwargs))
        finally:
            for ref in self.refs:
                ref.quantizer.disable()
            self._busy = False
        for ref_out, q_out in zip(flatten_tensors(output), quantized):
            ref_out = ref_out.double()
            self.signal += float((ref_out * ref_out).sum())
            self.noise += float(((ref_out - q_out.double()) ** 2).sum())


def proxy_sensitivity(model, grouped, samples, forward_fn=None):
    """Rank the layers of ``grouped`` (``{layer name: [quantizer refs]}``) by their own output SQNR on
    ``samples`` (an iterable of batches), lowest (most damaged) first.

    Returns:
        a ``Table`` (rank, layer, layer_sqnr_db); quantizer states are restored afterwards.
    """
    samples = list(samples)
    if not samples:
        raise ValueError("mode='proxy' needs calibration-like batches: pass sample=batch or samples=[batch, ...]")
    all_refs = find_quantizers(model)
    original = [ref.quantizer.is_enabled for ref in all_refs]
    probes, handles = {}, []
    for name, refs in grouped.items():
        probes[name] = _LayerProbe(refs)
        handles.append(refs[0].layer.register_forward_hook(probes[name], with_kwargs=True))
    try:
        for ref in all_refs:
            ref.quantizer.disable()
        with torch.no_grad(), eval_mode(model):
            for batch in samples:
                run_forward(model, batch, forward_fn)
    finally:
        for handle in handles:
            handle.remove()
        for ref, was in zip(all_refs, original):
            set_enabled(ref.quantizer, was)
    rows = [[name, power_ratio_db(p.signal, p.noise) if p.signal or p.noise else math.nan]
            for name, p in probes.items()]
    rows.sort(key=lambda r: (math.isnan(r[1]), r[1]))
    table = Table(["rank", "layer", "layer_sqnr_db"],
                  title=f"sensitivity (proxy): each layer's own output SQNR on {len(samples)} batches")
    for rank, row in enumerate(rows, 1):
        table.add([rank] + row)
    return table
