"""Quantized linear layer."""
import torch.nn.functional as F
from torch.nn.modules import linear

from pytorch_quantization import tensor_quant
from pytorch_quantization.nn.modules import _utils

__all__ = ["Linear", "QuantLinear"]


class QuantLinear(_utils.WeightedQuantModule, linear.Linear):
    """``torch.nn.Linear`` computing ``F.linear(quant(x), quant(W), b)``; weights per output row by default.

    Extra keyword-only arguments: ``quant_desc_input``, ``quant_desc_weight``, ``quant_act``.
    """

    default_quant_desc_weight = tensor_quant.QUANT_DESC_8BIT_LINEAR_WEIGHT_PER_ROW

    def forward(self, input):  # pylint: disable=redefined-builtin
        return F.linear(*self._quant(input), self.bias)


Linear = QuantLinear
