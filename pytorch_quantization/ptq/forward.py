"""How PTQ calls a model on one batch, and how it compares outputs."""
import math
from typing import Callable, Optional

import torch

__all__ = ["run_forward", "flatten_tensors", "sqnr_db", "power_ratio_db", "eval_mode"]


def run_forward(model: torch.nn.Module, batch, forward_fn: Optional[Callable] = None):
    """``forward_fn(model, batch)`` when given; else ``model(**batch)`` for a dict, ``model(*batch)`` for a
    tuple / list, ``model(batch)`` otherwise (a tensor, a spconv SparseConvTensor, ...)."""
    if forward_fn is not None:
        return forward_fn(model, batch)
    if isinstance(batch, dict):
        return model(**batch)
    if isinstance(batch, (tuple, list)):
        return model(*batch)
    return model(batch)


def flatten_tensors(output):
    """Every floating tensor in a (nested) model output, in a stable order; sparse tensors give their features."""
    if isinstance(output, torch.Tensor):
        return [output.detach().float().reshape(-1)] if output.is_floating_point() else []
    if hasattr(output, "features") and isinstance(getattr(output, "features"), torch.Tensor):
        return flatten_tensors(output.features)
    if isinstance(output, dict):
        return [t for key in sorted(output, key=str) for t in flatten_tensors(output[key])]
    if isinstance(output, (list, tuple)):
        return [t for item in output for t in flatten_tensors(item)]
    return []


def sqnr_db(reference, test) -> float:
    """Signal-to-quantization-noise ratio ``10 log10(sum(ref^2) / sum((ref - test)^2))`` in dB.

    Both may be tensors or nested outputs with the same structure. ``inf`` when identical, ``-inf`` when the
    reference is all zeros but the test is not, ``nan`` when there is no floating tensor to compare.
    """
    ref, out = flatten_tensors(reference), flatten_tensors(test)
    if len(ref) != len(out) or any(a.numel() != b.numel() for a, b in zip(ref, out)):
        raise ValueError("outputs to compare have different structures or shapes")
    if not ref:
        return math.nan
    ref, out = torch.cat(ref).double(), torch.cat(out).double()
    return power_ratio_db(float((ref * ref).sum()), float(((ref - out) ** 2).sum()))


def power_ratio_db(signal, noise):
    """``10 log10(signal / noise)``: ``inf`` without noise, ``-inf`` for noise without signal."""
    if noise == 0:
        return math.inf
    if signal == 0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


class eval_mode:  # pylint: disable=invalid-name
    """Context manager: every submodule in eval mode, then each one's own train/eval flag restored exactly
    (``model.train(flag)`` would overwrite submodules that were deliberately in another mode)."""

    def __init__(self, model):
        self._model = model
        self._flags = None

    def __enter__(self):
        self._flags = [(m, m.training) for m in self._model.modules()]
        self._model.eval()
        return self._model

    def __exit__(self, *exc):
        for module, flag in self._flags:
            module.training = flag
        return False
