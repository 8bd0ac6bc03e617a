"""Quantized pooling: the input is fake-quantized, then the torch pooling runs unchanged.

Constructors take torch's arguments plus keyword-only ``quant_desc_input`` and ``quant_act``
(``quant_act=False`` makes the module an exact float pooling).
"""
from torch.nn.modules import pooling

from pytorch_quantization.nn.modules import _utils

__all__ = [
    "MaxPool1d", "QuantMaxPool1d", "MaxPool2d", "QuantMaxPool2d", "MaxPool3d", "QuantMaxPool3d", "AvgPool1d",
    "QuantAvgPool1d", "AvgPool2d", "QuantAvgPool2d", "AvgPool3d", "QuantAvgPool3d", "AdaptiveAvgPool1d",
    "QuantAdaptiveAvgPool1d", "AdaptiveAvgPool2d", "QuantAdaptiveAvgPool2d", "AdaptiveAvgPool3d",
    "QuantAdaptiveAvgPool3d"
]


class QuantMaxPool1d(_utils.InputQuantModule, pooling.MaxPool1d):
    """Quantized 1D max pooling."""


class QuantMaxPool2d(_utils.InputQuantModule, pooling.MaxPool2d):
    """Quantized 2D max pooling."""


class QuantMaxPool3d(_utils.InputQuantModule, pooling.MaxPool3d):
    """Quantized 3D max pooling."""


class QuantAvgPool1d(_utils.InputQuantModule, pooling.AvgPool1d):
    """Quantized 1D average pooling."""


class QuantAvgPool2d(_utils.InputQuantModule, pooling.AvgPool2d):
    """Quantized 2D average pooling."""


class QuantAvgPool3d(_utils.InputQuantModule, pooling.AvgPool3d):
    """Quantized 3D average pooling."""


class QuantAdaptiveAvgPool1d(_utils.InputQuantModule, pooling.AdaptiveAvgPool1d):
    """Quantized 1D adaptive average pooling."""


class QuantAdaptiveAvgPool2d(_utils.InputQuantModule, pooling.AdaptiveAvgPool2d):
    """Quantized 2D adaptive average pooling."""


class QuantAdaptiveAvgPool3d(_utils.InputQuantModule, pooling.AdaptiveAvgPool3d):
    """Quantized 3D adaptive average pooling."""


MaxPool1d = QuantMaxPool1d
MaxPool2d = QuantMaxPool2d
MaxPool3d = QuantMaxPool3d
AvgPool1d = QuantAvgPool1d
AvgPool2d = QuantAvgPool2d
AvgPool3d = QuantAvgPool3d
AdaptiveAvgPool1d = QuantAdaptiveAvgPool1d
AdaptiveAvgPool2d = QuantAdaptiveAvgPool2d
AdaptiveAvgPool3d = QuantAdaptiveAvgPool3d
