"""``--sensitivity proxy|full|both``: per-layer sensitivity tables of a quantized mode.

``proxy`` (the default) ranks layers by their own output SQNR on one calibration frame (seconds); ``full``
evaluates the task metric once per layer with only that layer quantized (minutes per layer on real data);
``both`` runs the two and prints how far their rankings agree (Spearman and Kendall, ``ptq.stats.rank_agreement``),
also written into the full table's title.
"""
__all__ = ["layer_sensitivity"]


def layer_sensitivity(model, mode, kind, example, forward, eval_fn):
    """``{"<mode>_<kind>": Table}`` for ``kind`` in proxy / full / both (see the module docstring); ``forward``
    runs the model on a batch, ``eval_fn(model)`` is the task metric."""
    from pytorch_quantization import ptq
    tables = {}
    if kind in ("proxy", "both"):
        tables[f"{mode}_proxy"] = ptq.sensitivity(model, mode="proxy", samples=[example], forward_fn=forward)
    if kind in ("full", "both"):
        tables[f"{mode}_full"] = ptq.sensitivity(model, eval_fn, sample=example, forward_fn=forward)
    if kind == "both":
        agree = ptq.stats.rank_agreement(tables[f"{mode}_proxy"].column("layer"),
                                         tables[f"{mode}_full"].column("layer"))
        line = (f"proxy vs full ranking agreement over {agree['n']} layers: Spearman {agree['spearman']:.3f}, "
                f"Kendall {agree['kendall']:.3f}")
        print(f"{mode}: {line}")
        tables[f"{mode}_full"].title += f"; {line}"
    return tables
