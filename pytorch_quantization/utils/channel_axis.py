"""Where a layer's weight keeps its output channels: the one helper every per-channel consumer asks.

Dense convolutions and Linear keep output channels on weight axis 0; transposed convolutions (weight
``[in, out / groups, *k]``) on axis 1, as pytorch-quantization 2.2.1's per-channel ConvTranspose descriptors say.
Other layer families (spconv, whose layout depends on its algorithm) add their rule with
``register_out_channel_axis`` when their plugin is imported.
"""
from typing import Callable, Union

import torch

__all__ = ["out_channel_axis", "out_channels", "register_out_channel_axis"]

_TRANSPOSED = torch.nn.modules.conv._ConvTransposeNd  # pylint: disable=protected-access
_RULES = []  # (layer class, axis or callable(module) -> axis), first match wins


def register_out_channel_axis(cls: type, rule: Union[int, Callable[[torch.nn.Module], int]]) -> None:
    """Make ``out_channel_axis`` answer ``rule`` (an axis, or ``rule(module)``) for instances of ``cls``."""
    if not isinstance(cls, type):
        raise TypeError(f"cls must be a class, got {cls!r}")
    if not (callable(rule) or (isinstance(rule, int) and not isinstance(rule, bool))):
        raise TypeError(f"rule must be an int axis or a callable(module) -> int, got {rule!r}")
    _RULES[:] = [(c, r) for c, r in _RULES if c is not cls] + [(cls, rule)]


def out_channel_axis(module: torch.nn.Module) -> int:
    """The axis of ``module.weight`` that indexes output channels (per-channel amax, BN folding)."""
    for cls, rule in _RULES:
        if isinstance(module, cls):
            return rule(module) if callable(rule) else rule
    return 1 if isinstance(module, _TRANSPOSED) else 0


def out_channels(module: torch.nn.Module) -> int:
    """Number of output channels of ``module`` (a transposed conv's weight axis 1 holds ``out / groups``)."""
    axis = out_channel_axis(module)
    groups = getattr(module, "groups", 1) if isinstance(module, _TRANSPOSED) else 1
    return module.weight.shape[axis] * groups
