"""AdaRound: learned rounding of a layer's weights on its calibrated integer grid.

For ``x = w * scale`` (``scale = bound / amax``, per channel or per tensor, as the weight quantizer was
calibrated) the integer is ``floor(x) + h`` with ``h`` in [0, 1] the rectified sigmoid of a learned ``alpha``
(Nagel et al., 2020): ``h = clamp(sigmoid(alpha) * (ZETA - GAMMA) + GAMMA, 0, 1)``, initialised so that the
soft weight equals the float one. A regulariser ``1 - |2h - 1|^beta`` (beta annealed from high to low) pushes
every ``h`` to 0 or 1; ``freeze`` then rounds up where ``alpha >= 0`` and writes the integers into the layer.
"""
import math

import torch

from pytorch_quantization.ptq import weight_payload

__all__ = ["AdaRoundQuantizer", "rounding_regularizer", "beta_schedule"]

ZETA, GAMMA = 1.1, -0.1


class AdaRoundQuantizer(torch.nn.Module):
    """Stands in for a layer's weight quantizer while its rounding is learned: ``forward(weight)`` returns the
    soft-rounded (``hard=False``) or hard-rounded (``hard=True``) fake-quantized weight."""

    def __init__(self, quantizer, weight):
        super().__init__()
        scale, self.lo, self.hi = weight_payload.weight_grid(quantizer, weight)
        x = weight.detach().to(scale.dtype) * scale
        self.register_buffer("scale", scale)
        self.register_buffer("floor", torch.floor(x))
        rest = (x - self.floor).clamp(1e-4, 1 - 1e-4)
        self.alpha = torch.nn.Parameter(-torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1))
        self.hard = False
        self.dtype = weight.dtype

    def h(self):
        """The soft rounding offsets in [0, 1]."""
        return torch.clamp(torch.sigmoid(self.alpha) * (ZETA - GAMMA) + GAMMA, 0, 1)

    def integers(self):
        """The hard integers: round up where ``alpha >= 0``."""
        return torch.clamp(self.floor + (self.alpha.detach() >= 0).to(self.floor.dtype), self.lo, self.hi)

    def forward(self, weight):  # pylint: disable=unused-argument
        q = self.integers() if self.hard else torch.clamp(self.floor + self.h(), self.lo, self.hi)
        safe = torch.where(self.scale == 0, torch.ones_like(self.scale), self.scale)
        return torch.where(self.scale == 0, torch.zeros_like(q), q / safe).to(self.dtype)


def rounding_regularizer(quantizers, beta):
    """Mean over all rounding variables of ``1 - |2h - 1|^beta`` (0 when every ``h`` is 0 or 1)."""
    total = sum(((1 - (2 * q.h() - 1).abs().pow(beta)).sum() for q in quantizers), torch.zeros(()))
    count = sum(q.alpha.numel() for q in quantizers)
    return total / max(count, 1)


def beta_schedule(step, iters, warmup=0.2, start=20.0, end=2.0):
    """``None`` (no regulariser) during the first ``warmup`` fraction of steps, then ``beta`` falling linearly
    from ``start`` to ``end``."""
    begin = int(math.ceil(warmup * iters))
    if step < begin:
        return None
    progress = (step - begin) / max(iters - begin - 1, 1)
    return end + (start - end) * max(0.0, 1.0 - progress)
