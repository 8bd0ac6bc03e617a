"""``Clip`` module: clamp to a (possibly learnable) range."""
import numbers

import torch
from torch import nn

from pytorch_quantization.nn import functional as QF

__all__ = ["Clip"]


def _bound(value, learn, name):
    if not learn:
        return value
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar to be learned, got shape {tuple(value.shape)}")
        value = value.detach().reshape(()).float().clone()
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        value = torch.tensor(float(value))
    else:
        raise TypeError(f"{name} must be a number or a one-element tensor to be learned, got {type(value).__name__}")
    return nn.Parameter(value)


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
