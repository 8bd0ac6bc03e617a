"""Activation quantization inside a block being reconstructed: learned step sizes (LSQ) and QDrop.

``BlockActQuantizer`` stands in for an activation ``TensorQuantizer`` during reconstruction. With
``learn_amax`` its range is a learned parameter (``amax = amax0 * exp(t)``; the round uses a straight-through
estimator, so the gradient reaches the step size as in LSQ, Esser et al., 2020). With ``drop_prob > 0`` each
element keeps its float value with that probability (QDrop, Wei et al., 2022). Otherwise it calls the original
quantizer unchanged.
"""
import torch

from pytorch_quantization import _reference

__all__ = ["BlockActQuantizer"]


class BlockActQuantizer(torch.nn.Module):
    """Replacement of one activation quantizer during reconstruction (see the module docstring)."""

    def __init__(self, quantizer, learn_amax, drop_prob, generator):
        super().__init__()
        self.quantizer = quantizer
        self.drop_prob = drop_prob
        self.generator = generator
        amax = quantizer.amax
        self.learnable = (learn_amax and amax is not None and not isinstance(quantizer.num_bits, tuple)
                          and quantizer.pre_quant_scale is None)
        if self.learnable:
            self.lo, self.hi = _reference.integer_range(quantizer.num_bits, quantizer.unsigned,
                                                        quantizer.narrow_range)
            self.bound = _reference.integer_range(quantizer.num_bits, quantizer.unsigned, False)[1]
            self.register_buffer("amax0", amax.detach().clone())
            self.log_ratio = torch.nn.Parameter(torch.zeros_like(amax))

    def learned_amax(self):
        return self.amax0 * torch.exp(self.log_ratio)

    def _quantize(self, x):
        if not self.learnable:
            return self.quantizer(x)
        scale = self.bound / self.learned_amax().clamp_min(_reference.AMAX_EPSILON)
        y = x * scale
        q = torch.clamp(y + (torch.round(y) - y).detach(), self.lo, self.hi)
        return q / scale

    def forward(self, x):
        out = self._quantize(x)
        if self.drop_prob > 0:
            keep_float = torch.rand(x.shape, generator=self.generator, device="cpu").to(x.device) < self.drop_prob
            out = torch.where(keep_float, x, out)
        return out
