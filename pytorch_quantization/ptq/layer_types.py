"""Layer types PTQ handles: the convertible layers of ``layer_registry`` plus spconv convolutions (registered here
when spconv imports, with the rule for where their weight keeps output channels)."""
import torch

from pytorch_quantization import layer_registry
from pytorch_quantization.utils.channel_axis import register_out_channel_axis

try:  # spconv is optional: sparse layers are handled only when it imports
    import spconv.pytorch as _spconv
    from spconv import constants as _spconv_constants
    from spconv.pytorch import conv as _spconv_conv
    from spconv.core import ConvAlgo as _ConvAlgo
except ImportError:  # pragma: no cover - depends on the environment
    _spconv = None

__all__ = ["HAS_SPCONV", "is_weighted_layer", "is_sparse_conv", "is_sparse_tensor", "features_of"]

HAS_SPCONV = _spconv is not None


def is_weighted_layer(module: torch.nn.Module) -> bool:
    """A layer ``quantize_model`` converts (float or already quantized): conv, transposed conv, linear, spconv."""
    return layer_registry.lookup(module) is not None


def is_sparse_conv(module: torch.nn.Module) -> bool:
    return HAS_SPCONV and isinstance(module, _spconv_conv.SparseConvolution)


def is_sparse_tensor(x) -> bool:
    return HAS_SPCONV and isinstance(x, _spconv.SparseConvTensor)


def features_of(x):
    """The tensor a BatchNorm would see: ``x`` itself, or a sparse tensor's active features."""
    return x.features if is_sparse_tensor(x) else x


def _sparse_out_channel_axis(module):
    """spconv keeps ``[out, *k, in]`` (KRSC) unless its native algorithm runs with the older RSKC / RSCK layouts."""
    if module.algo != _ConvAlgo.Native or _spconv_constants.ALL_WEIGHT_IS_KRSC:
        return 0
    return module.weight.dim() - 1 if _spconv_conv.FILTER_HWIO else module.weight.dim() - 2


if HAS_SPCONV:
    from pytorch_quantization.ptq import sparse as _sparse  # pylint: disable=ungrouped-imports
    register_out_channel_axis(_spconv_conv.SparseConvolution, _sparse_out_channel_axis)
    for _float_cls, _quant_cls in _sparse.SPARSE_QUANT_CLASSES.items():
        layer_registry.register(_float_cls, _quant_cls)
