"""Quantized convolutions: ``torch.nn`` convolutions whose input and weight are fake-quantized.

Each class subclasses the torch class (same constructor arguments, parameters and state_dict
keys) and adds keyword-only ``quant_desc_input``, ``quant_desc_weight`` and ``quant_act``.
Weights are quantized per output channel by default: axis 0 of a convolution weight ``[out, in / groups, k...]``,
axis 1 of a transposed-convolution weight ``[in, out / groups, k...]`` (as in 2.2.1).
"""
import torch.nn.functional as F
from torch.nn.modules import conv

from pytorch_quantization import tensor_quant
from pytorch_quantization.nn.modules import _utils

__all__ = [
    "Conv1d", "QuantConv1d", "Conv2d", "QuantConv2d", "Conv3d", "QuantConv3d", "ConvTranspose1d", "ConvTranspose2d",
    "ConvTranspose3d", "QuantConvTranspose1d", "QuantConvTranspose2d", "QuantConvTranspose3d"
]


class _QuantConvNd(_utils.WeightedQuantModule):
    """Forward shared by QuantConv1d/2d/3d (torch's ``_conv_forward`` handles every padding mode)."""

    def forward(self, input):  # pylint: disable=redefined-builtin
        return self._conv_forward(*self._quant(input), self.bias)


class QuantConv1d(_QuantConvNd, conv.Conv1d):
    """Quantized 1D convolution."""
    default_quant_desc_weight = tensor_quant.QUANT_DESC_8BIT_CONV1D_WEIGHT_PER_CHANNEL


class QuantConv2d(_QuantConvNd, conv.Conv2d):
    """Quantized 2D convolution."""
    default_quant_desc_weight = tensor_quant.QUANT_DESC_8BIT_CONV2D_WEIGHT_PER_CHANNEL


class QuantConv3d(_QuantConvNd, conv.Conv3d):
    """Quantized 3D convolution."""
    default_quant_desc_weight = tensor_quant.QUANT_DESC_8BIT_CONV3D_WEIGHT_PER_CHANNEL


class _QuantConvTransposeNd(_utils.WeightedQuantModule):
    """Forward shared by QuantConvTranspose1d/2d/3d."""

    _num_spatial_dims = None
    _conv_transpose = None

    def forward(self, input, output_size=None):  # pylint: disable=redefined-builtin
        if self.padding_mode != "zeros":
            raise ValueError(f"Only `zeros` padding mode is supported for {type(self).__name__}")
        output_padding = self._output_padding(input, output_size, self.stride, self.padding, self.kernel_size,
                                              self._num_spatial_dims, self.dilation)
        return type(self)._conv_transpose(*self._quant(input), self.bias, self.stride, self.padding, output_padding,
                                          self.groups, self.dilation)


class QuantConvTranspose1d(_QuantConvTransposeNd, conv.ConvTranspose1d):
    """Quantized 1D transposed convolution."""
    default_quant_desc_weight = tensor_quant.QUANT_DESC_8BIT_CONVTRANSPOSE1D_WEIGHT_PER_CHANNEL
    _num_spatial_dims = 1
    _conv_transpose = F.conv_transpose1d


class QuantConvTranspose2d(_QuantConvTransposeNd, conv.ConvTranspose2d):
    """Quantized 2D transposed convolution."""
    default_quant_desc_weight = tensor_quant.QUANT_DESC_8BIT_CONVTRANSPOSE2D_WEIGHT_PER_CHANNEL
    _num_spatial_dims = 2
    _conv_transpose = F.conv_transpose2d


class QuantConvTranspose3d(_QuantConvTransposeNd, conv.ConvTranspose3d):
    """Quantized 3D transposed convolution."""
    default_quant_desc_weight = tensor_quant.QUANT_DESC_8BIT_CONVTRANSPOSE3D_WEIGHT_PER_CHANNEL
    _num_spatial_dims = 3
    _conv_transpose = F.conv_transpose3d


_ConvNd = _QuantConvNd
Conv1d = QuantConv1d
Conv2d = QuantConv2d
Conv3d = QuantConv3d
ConvTranspose1d = QuantConvTranspose1d
ConvTranspose2d = QuantConvTranspose2d
ConvTranspose3d = QuantConvTranspose3d
