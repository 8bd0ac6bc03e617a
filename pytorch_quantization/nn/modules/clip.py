"""``Clip`` module: clamp to a (possibly learnable) range."""
import numbers

import numpy as np
import torch
from torch import nn

from pytorch_quantization.nn import functional as QF

__all__ = ["Clip"]


def _bound(value, learn, name):
    """The bound as given, or a learnable scalar ``Parameter`` from a Python number or a one-element ndarray
    (what 2.2.1 accepts; like 2.2.1, a tensor is refused)."""
    if not learn:
        return value
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"clip_value_min/clip_value_max must be scalar for initilizing learnable range. {name} is "
                         f"a {type(value).__name__}; pass a Python float (e.g. tensor.item())")
    return nn.Parameter(torch.tensor(float(value)))


class Clip(nn.Module):
    """Clip a tensor to ``[clip_value_min, clip_value_max]``.

    Args:
        clip_value_min: lower bound, a number or a tensor broadcastable to the input.
        clip_value_max: upper bound, same forms.
        learn_min: make the lower bound a learnable scalar ``Parameter`` initialised from ``clip_value_min``.
        learn_max: the same for the upper bound.
    """

    def __init__(self, clip_value_min, clip_value_max, learn_min=False, learn_max=False):
        super().__init__()
        self.clip_value_min = _bound(clip_value_min, learn_min, "clip_value_min")
        self.clip_value_max = _bound(clip_value_max, learn_max, "clip_value_max")

    def forward(self, inputs):
        return QF.clip(inputs, self.clip_value_min, self.clip_value_max)
