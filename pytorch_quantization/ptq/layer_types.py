"""Layer types PTQ handles: the convertible layers of ``layer_registry`` (spconv convolutions are registered by
``ptq.plugins.spconv`` when spconv imports), and tests for spconv layers and tensors that are False without it."""
import torch

from pytorch_quantization import layer_registry

try:  # spconv is optional: sparse layers are handled only when it imports
    import spconv.pytorch as _spconv
    from spconv.pytorch import conv as _spconv_conv
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
