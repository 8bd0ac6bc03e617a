"""``report``: per-layer weight and activation SQNR and amax of a calibrated model, as tables and a plot.

For every quantized layer: ``weight_sqnr_db`` = SQNR of the fake-quantized weight against the weight;
``input_sqnr_db`` = SQNR of the quantizer's output against its input, accumulated over the batches run
through the quantized model (so it includes upstream quantization error, as deployment does); the amaxes
(max over channels for per-channel ones); and the model output SQNR against the float model in the title.
"""
import math
import os
from typing import Callable, Iterable, List, Optional

import torch

from pytorch_quantization.ptq.forward import eval_mode, power_ratio_db, run_forward, sqnr_db
from pytorch_quantization.ptq.quantizers import find_quantizers, set_enabled
from pytorch_quantization.ptq.atomic_io import atomic_write
from pytorch_quantization.ptq.table import Table

__all__ = ["report", "Report"]


class Report:
    """A per-layer ``table`` plus the model output SQNR; ``save(out_dir)`` writes markdown, CSV and a PNG."""

    def __init__(self, table: Table, output_sqnr_db: float):
        self.table = table
        self.output_sqnr_db = output_sqnr_db

    def __str__(self):
        return str(self.table)

    def to_markdown(self):
        return self.table.to_markdown()

    def to_csv(self):
        return self.table.to_csv()

    def save(self, out_dir: str, name: str = "ptq_report") -> List[str]:
        """Write ``<name>.md``, ``<name>.csv`` and, when matplotlib imports, ``<name>.png`` into ``out_dir``.

        Returns the paths written (a message is printed instead of the PNG without matplotlib).
        """
        os.makedirs(out_dir, exist_ok=True)
        paths = []
        for ext in ("md", "csv"):
            path = os.path.join(out_dir, f"{name}.{ext}")
            self.table.save(path)
            paths.append(path)
        png = os.path.join(out_dir, f"{name}.png")
        if self.plot(png):
            paths.append(png)
        return paths

    def plot(self, path: str) -> bool:
        """Bar chart of weight and input SQNR per layer; returns False (with a message) without matplotlib."""
        try:
            import matplotlib  # pylint: disable=import-outside-toplevel
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
        except ImportError:
            print("report: matplotlib is not installed; skipping the plot (pip install matplotlib)")
            return False
        layers = self.table.column("layer")
        finite = lambda v: v if isinstance(v, float) and math.isfinite(v) else 0.0  # noqa: E731
        w = [finite(v) for v in self.table.column("weight_sqnr_db")]
        a = [finite(v) for v in self.table.column("input_sqnr_db")]
        fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(layers) + 2), 4.5))
        xs = range(len(layers))
        ax.bar([x - 0.2 for x in xs], w, width=0.4, label="weight")
        ax.bar([x + 0.2 for x in xs], a, width=0.4, label="input")
        ax.set_xticks(list(xs))
        ax.set_xticklabels(layers, rotation=90, fontsize=7)
        ax.set_ylabel("SQNR (dB)")
        ax.set_title(f"per-layer SQNR (model output {self.output_sqnr_db:.1f} dB)")
        ax.legend()
        fig.tight_layout()
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
        plt.close(fig)
        return True


def report(model: torch.nn.Module, data: Iterable, *, forward_fn: Optional[Callable] = None,
           num_batches: int = 1) -> Report:
    """Measure every quantized layer of a calibrated ``model`` on up to ``num_batches`` batches of ``data``.

    Returns:
        a ``Report`` (``.table`` columns: layer, weight_sqnr_db, weight_amax, input_sqnr_db, input_amax).
    """
    refs = find_quantizers(model)
    if not refs:
        raise ValueError("model has no quantizers; run quantize_model and calibrate before report")
    sums = {ref.name: [0.0, 0.0] for ref in refs if ref.role == "input"}
    names = {id(ref.quantizer): ref.name for ref in refs}

    def hook(quantizer, args, output):
        if not quantizer.is_enabled:  # the float reference pass
            return
        x = args[0].detach().double()
        acc = sums[names[id(quantizer)]]
        acc[0] += float((x * x).sum())
        acc[1] += float(((x - output.detach().double()) ** 2).sum())

    handles = [r.quantizer.register_forward_hook(hook) for r in refs if r.role == "input" and r.active]
    float_outs, quant_outs, seen = [], [], 0
    try:
        with torch.no_grad(), eval_mode(model):
            for batch in data:
                if seen >= num_batches:
                    break
                quant_outs.append(run_forward(model, batch, forward_fn))
                saved = [r.quantizer.is_enabled for r in refs]
                for r in refs:
                    r.quantizer.disable()
                try:
                    float_outs.append(run_forward(model, batch, forward_fn))
                finally:
                    for r, was_enabled in zip(refs, saved):
                        set_enabled(r.quantizer, was_enabled)
                seen += 1
    finally:
        for h in handles:
            h.remove()
    if seen == 0:
        raise ValueError("data yielded no batches; pass at least one batch to report on")

    table = Table(["layer", "weight_sqnr_db", "weight_amax", "input_sqnr_db", "input_amax"])
    rows = {}
    for ref in refs:
        row = rows.setdefault(ref.layer_name, [ref.layer_name, math.nan, math.nan, math.nan, math.nan])
        amax = ref.quantizer.amax
        amax_value = math.nan if amax is None or not ref.active else float(amax.max())
        if ref.role == "weight":
            if ref.active:
                with torch.no_grad():
                    row[1] = sqnr_db(ref.layer.weight, ref.quantizer(ref.layer.weight))
            row[2] = amax_value
        else:
            signal, noise = sums[ref.name]
            row[3] = power_ratio_db(signal, noise) if ref.active and signal > 0 else math.nan
            row[4] = amax_value
    for row in rows.values():
        table.add(row)
    output_sqnr = sqnr_db(float_outs, quant_outs)
    table.title = f"PTQ report ({seen} batches): model output SQNR {output_sqnr:.2f} dB"
    return Report(table, output_sqnr)
