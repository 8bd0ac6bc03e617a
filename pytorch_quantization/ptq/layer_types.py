"""Layer types PTQ handles: dense float layers, spconv convolutions (when spconv imports), their weight layout."""
import torch

try:  # spconv is optional: sparse layers are handled only when it imports
    import spconv.pytorch as _spconv
    from spconv import constants as _spconv_constants
    from spconv.pytorch import conv as _spconv_conv
    from spconv.core import ConvAlgo as _ConvAlgo
except ImportError:  # pragma: no cover - depends on the environment
    _spconv = None

__all__ = ["HAS_SPCONV", "DENSE_WEIGHTED", "is_sparse_conv", "out_channel_axis", "is_sparse_tensor", "features_of"]

HAS_SPCONV = _spconv is not None

#: dense float layer types that PTQ quantizes (subclasses included)
DENSE_WEIGHTED = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.ConvTranspose1d,
                  torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d, torch.nn.Linear)


def is_sparse_conv(module):
    return HAS_SPCONV and isinstance(module, _spconv_conv.SparseConvolution)


def is_sparse_tensor(x):
    return HAS_SPCONV and isinstance(x, _spconv.SparseConvTensor)


def features_of(x):
    """The tensor a BatchNorm would see: ``x`` itself, or a sparse tensor's active features."""
    return x.features if is_sparse_tensor(x) else x


def out_channel_axis(module):
    """The weight axis that indexes output channels (for BN folding and per-channel quantization).

    Dense convs: 0; transposed convs: 1 (weight is ``[in, out / groups, *k]``); Linear: 0. spconv keeps
    ``[out, *k, in]`` (KRSC) unless its native algorithm runs with the older RSKC / RSCK layouts.
    """
    if is_sparse_conv(module):
        krsc = module.algo != _ConvAlgo.Native or _spconv_constants.ALL_WEIGHT_IS_KRSC
        if krsc:
            return 0
        return module.weight.dim() - 1 if _spconv_conv.FILTER_HWIO else module.weight.dim() - 2
    if isinstance(module, (torch.nn.ConvTranspose1d, torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)):
        return 1
    return 0
