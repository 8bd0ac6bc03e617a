"""spconv plugin: quantized sparse convolutions and the CPU bias work-around.

Quantized layers: ``QuantSubMConv3d``, ``QuantSparseConv3d``, ``QuantSparseInverseConv3d``.

Each subclasses the spconv class (same constructor, parameters and state_dict keys, plus the keyword-only
``quant_desc_input``, ``quant_desc_weight`` and ``quant_act`` of the dense quantized layers). The forward
fake-quantizes the active features ``x.features`` with the input quantizer (only the active sites exist, so
statistics never see the empty space) and the weight with the weight quantizer (per output channel = axis 0 of
spconv's ``[out, *k, in]`` weight), then runs spconv's own convolution. The bias and any fused activation are
applied after the convolution rather than inside spconv's kernel, because spconv's CPU kernels refuse a fused
bias / activation in eval mode; the result is the same.

Float layers: spconv's CPU kernels refuse a bias (or fused activation) in eval mode (``cpu don't support act and
bias``), and detectors (OpenPCDet's ``VoxelResBackBone8x``) give sparse convolutions a bias. While
``bias_after_sparse_conv(model)`` is active, every float spconv convolution of ``model`` with a bias and no fused
activation whose input is on the CPU runs without the bias and gets it added to its output features afterwards
(same result; the bias ``Parameter`` is back in place as soon as the call returns). Both paths finish the
convolution with ``finish_output`` (bias, then activation, on the output features).

Only imported when spconv imports (``layer_types.HAS_SPCONV``; ``pytorch_quantization.ptq.plugins``).

Reproducibility: spconv 2.3.8's CPU kernels can return slightly different features from run to run when torch
uses several intra-op threads (spconv issue #679); use ``torch.set_num_threads(1)`` when comparing sparse PTQ
settings on CPU bit for bit.
"""
import contextlib

import spconv.pytorch as spconv
from spconv import constants as _spconv_constants
from spconv.core import ConvAlgo as _ConvAlgo
from spconv.pytorch import conv as _spconv_conv
from spconv.pytorch.conv import _apply_act

from pytorch_quantization import layer_registry
from pytorch_quantization.nn.modules import weight_cache
from pytorch_quantization.nn.modules._utils import WeightedQuantModule
from pytorch_quantization.nn.modules.tensor_quantizer import TensorQuantizer
from pytorch_quantization.ptq import layer_types
from pytorch_quantization.utils.channel_axis import register_out_channel_axis

__all__ = ["QuantSubMConv3d", "QuantSparseConv3d", "QuantSparseInverseConv3d", "SPARSE_QUANT_CLASSES",
           "finish_output", "bias_after_sparse_conv"]

_STASH = "_bias_held_outside_kernel"
_HOOKED = "_bias_after_sparse_conv_hooked"


def finish_output(module, out, bias):
    """``out`` (a SparseConvTensor) with ``bias`` (or None) added and ``module``'s fused activation applied."""
    features = out.features if bias is None else out.features + bias
    return out.replace_feature(_apply_act(features, module.act_type, module.act_alpha, module.act_beta))


class _QuantSparseConvolution(WeightedQuantModule):
    """Forward shared by the quantized spconv layers."""

    def forward(self, input, add_input=None):  # pylint: disable=redefined-builtin
        if self.quant_act:
            input = input.replace_feature(self._input_quantizer(input.features))
        out = self._conv_forward(self.training, input, weight_cache.quantized_weight(self), None, add_input,
                                 name=self.name, sparse_unique_name=self._sparse_unique_name)
        return finish_output(self, out, self.bias)


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


def _sparse_out_channel_axis(module):
    """spconv keeps ``[out, *k, in]`` (KRSC) unless its native algorithm runs with the older RSKC / RSCK layouts."""
    if module.algo != _ConvAlgo.Native or _spconv_constants.ALL_WEIGHT_IS_KRSC:
        return 0
    return module.weight.dim() - 1 if _spconv_conv.FILTER_HWIO else module.weight.dim() - 2


register_out_channel_axis(_spconv_conv.SparseConvolution, _sparse_out_channel_axis)
for _float_cls, _quant_cls in SPARSE_QUANT_CLASSES.items():
    layer_registry.register(_float_cls, _quant_cls)


def _needs_help(module):
    if not layer_types.is_sparse_conv(module) or module.bias is None or module.__dict__.get(_HOOKED):
        return False
    if any(isinstance(child, TensorQuantizer) for child in module.children()):
        return False  # quantized layers add their bias themselves
    return str(getattr(module, "act_type", "None_")).endswith("None_")


def _before(module, inputs):
    x = inputs[0]
    if module.training or not layer_types.is_sparse_tensor(x) or x.features.is_cuda:
        return
    module.__dict__[_STASH] = module._parameters["bias"]  # pylint: disable=protected-access
    module._parameters["bias"] = None  # pylint: disable=protected-access


def _after(module, inputs, output):
    bias = module.__dict__.pop(_STASH, None)
    if bias is None:
        return output
    module._parameters["bias"] = bias  # pylint: disable=protected-access
    return finish_output(module, output, bias)


@contextlib.contextmanager
def bias_after_sparse_conv(model):
    """See the module docstring; hooks are removed (and biases restored) when the block ends. Nested blocks on
    the same modules add no second pair of hooks."""
    handles, hooked = [], []
    for module in model.modules():
        if _needs_help(module):
            handles.append(module.register_forward_pre_hook(_before))
            handles.append(module.register_forward_hook(_after))
            module.__dict__[_HOOKED] = True
            hooked.append(module)
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        for module in hooked:
            del module.__dict__[_HOOKED]
            if _STASH in module.__dict__:
                module._parameters["bias"] = module.__dict__.pop(_STASH)  # pylint: disable=protected-access
