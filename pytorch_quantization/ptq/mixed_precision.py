"""``mixed_precision``: keep the most quantization-sensitive layers at higher precision under a bit budget.

Given a ranking (most sensitive first; a ``sensitivity`` table or a list of layer names), layers are promoted
in that order from their current weight bits to ``high_bits`` (8, or ``None`` for float) while the average
weight bits over all quantized layers, weighted by parameter count (a float layer counts as ``float_bits``),
stays within ``budget``. A layer that does not fit is passed over and smaller, less sensitive ones may still
fit. Promotion changes ``num_bits`` of the weight quantizer (the max-calibrated amax does not depend on it) or
disables it (float). Run it before ``reconstruct``, which learns rounding on the final grid.
"""
from pytorch_quantization.ptq.quantizers import find_quantizers
from pytorch_quantization.ptq.table import Table

__all__ = ["mixed_precision"]


def _bits(quantizer, float_bits):
    if not quantizer.is_enabled:
        return float_bits
    return sum(quantizer.num_bits) + 1 if isinstance(quantizer.num_bits, tuple) else quantizer.num_bits


def _ranked_names(ranking):
    names = list(ranking.column("layer")) if hasattr(ranking, "column") else list(ranking)
    if not all(isinstance(n, str) for n in names):
        raise TypeError("ranking must be a sensitivity Table or a list of layer names (most sensitive first)")
    return names


def mixed_precision(model, ranking, budget, *, high_bits=8, float_bits=32):
    """Promote the most sensitive layers to ``high_bits`` (``None``: float) within ``budget`` average weight bits.

    Returns:
        a ``Table`` (layer, params, bits, promoted) whose title gives the average bits before and after.

    Raises:
        ValueError: unknown layer names in ``ranking``, a budget below the current average, no weight quantizer.
    """
    if high_bits is not None and (isinstance(high_bits, bool) or not isinstance(high_bits, int) or high_bits < 2):
        raise ValueError(f"high_bits must be an int >= 2 or None (float), got {high_bits!r}")
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget <= 0:
        raise ValueError(f"budget must be a positive number of average weight bits, got {budget!r}")
    weights = {r.layer_name: r for r in find_quantizers(model) if r.role == "weight"}
    if not weights:
        raise ValueError("model has no weight quantizers; run quantize_model (and calibrate) first")
    names = _ranked_names(ranking)
    unknown = [n for n in names if n not in weights]
    if unknown:
        raise ValueError(f"ranking names layers without a weight quantizer: {unknown[:5]}; quantized layers are "
                         f"e.g. {list(weights)[:5]}")
    params = {n: r.layer.weight.numel() for n, r in weights.items()}
    bits = {n: _bits(r.quantizer, float_bits) for n, r in weights.items()}
    total = sum(params.values())
    before = sum(bits[n] * params[n] for n in weights) / total
    if before > budget:
        raise ValueError(f"budget {budget} is below the model's current average of {before:.3f} weight bits; "
                         "raise it or quantize with fewer bits first")
    target = float_bits if high_bits is None else high_bits
    used = before * total
    promoted = []
    for name in names:
        extra = (target - bits[name]) * params[name]
        if extra > 0 and used + extra <= budget * total:
            used += extra
            bits[name] = target
            promoted.append(name)
            quantizer = weights[name].quantizer
            if high_bits is None:
                quantizer.disable()
            else:
                quantizer.num_bits = high_bits
    table = Table(["layer", "params", "bits", "promoted"],
                  title=f"mixed precision: {before:.3f} -> {used / total:.3f} average weight bits (budget {budget})")
    for name in weights:
        table.add([name, params[name], bits[name], name in promoted])
    return table
