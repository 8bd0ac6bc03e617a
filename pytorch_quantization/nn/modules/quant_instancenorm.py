"""Quantized instance normalization: the input is fake-quantized, then torch's instance norm runs."""
from torch.nn.modules import instancenorm

from pytorch_quantization.nn.modules import _utils

__all__ = ["QuantInstanceNorm1d", "QuantInstanceNorm2d", "QuantInstanceNorm3d", "InstanceNorm1d", "InstanceNorm2d",
           "InstanceNorm3d"]


class QuantInstanceNorm1d(_utils.InputQuantModule, instancenorm.InstanceNorm1d):
    """Quantized instance normalization over a 2D/3D input."""


class QuantInstanceNorm2d(_utils.InputQuantModule, instancenorm.InstanceNorm2d):
    """Quantized instance normalization over a 3D/4D input."""


class QuantInstanceNorm3d(_utils.InputQuantModule, instancenorm.InstanceNorm3d):
    """Quantized instance normalization over a 4D/5D input."""


InstanceNorm1d = QuantInstanceNorm1d
InstanceNorm2d = QuantInstanceNorm2d
InstanceNorm3d = QuantInstanceNorm3d
