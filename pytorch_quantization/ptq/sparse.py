"""Quantized spconv layers: ``QuantSubMConv3d``, ``QuantSparseConv3d``, ``QuantSparseInverseConv3d``.

Each subclasses the spconv class (same constructor, parameters and state_dict keys, plus the keyword-only
``quant_desc_input``, ``quant_desc_weight`` and ``quant_act`` of the dense quantized layers). The forward
fake-quantizes the active features ``x.features`` with the input quantizer (only the active sites exist, so
statistics never see the empty space) and the weight with the weight quantizer (per output channel = axis 0 of
spconv's ``[out, *k, in]`` weight), then runs spconv's own convolution. The bias and any fused activation are
applied after the convolution rather than inside spconv's kernel, because spconv's CPU kernels refuse a fused
bias / activation in eval mode; the result is the same.

Only defined when spconv imports (``layer_types.HAS_SPCONV``).

Reproducibility: spconv 2.3.8's CPU kernels can return slightly different features from run to run when torch
uses several intra-op threads (spconv issue #679); use ``torch.set_num_threads(1)`` when comparing sparse PTQ
settings on CPU bit for bit.
"""
import spconv.pytorch as spconv
from spconv.pytorch.conv import _apply_act

from pytorch_quantization.nn.modules import weight_cache
from pytorch_quantization.nn.modules._utils import WeightedQuantModule

__all__ = ["QuantSubMConv3d", "QuantSparseConv3d", "QuantSparseInverseConv3d", "SPARSE_QUANT_CLASSES"]


class _QuantSparseConvolution(WeightedQuantModule):
    """Forward shared by the quantized spconv layers."""

    def forward(self, input, add_input=None):  # pylint: disable=redefined-builtin
        if self.quant_act:
            input = input.replace_feature(self._input_quantizer(input.features))
        out = self._conv_forward(self.training, input, weight_cache.quantized_weight(self), None, add_input,
                                 name=self.name, sparse_unique_name=self._sparse_unique_name)
        features = out.features
        if self.bias is not None:
            features = features + self.bias
        features = _apply_act(features, self.act_type, self.act_alpha, self.act_beta)
        return out.replace_feature(features)


class QuantSubMConv3d(_QuantSparseConvolution, spconv.SubMConv3d):
    """Quantized submanifold 3D sparse convolution."""


class QuantSparseConv3d(_QuantSparseConvolution, spconv.SparseConv3d):
    """Quantized 3D sparse convolution."""


class QuantSparseInverseConv3d(_QuantSparseConvolution, spconv.SparseInverseConv3d):
    """Quantized 3D sparse inverse convolution."""


SPARSE_QUANT_CLASSES = {
    spconv.SubMConv3d: QuantSubMConv3d,
    spconv.SparseConv3d: QuantSparseConv3d,
    spconv.SparseInverseConv3d: QuantSparseInverseConv3d,
}
