"""Calibrating the weight quantizers of a model directly from its weights."""
import logging

import torch

from pytorch_quantization.calib.histogram import HistogramCalibrator
from pytorch_quantization.utils.channel_axis import out_channel_axis
from pytorch_quantization.utils.reduce_amax import reduce_amax

__all__ = ["calibrate_weights"]

_LOGGER = logging.getLogger(__name__)
_METHODS = ("max", "mse", "percentile")


def _amax_of(weight, method, num_bits, unsigned, percentile, num_bins):
    if method == "max":
        return reduce_amax(weight).to(torch.float32)
    calibrator = HistogramCalibrator(num_bits, None, unsigned, num_bins=num_bins)
    calibrator.collect(weight)
    if method == "percentile":
        return calibrator.compute_amax("percentile", percentile=percentile)
    return calibrator.compute_amax("mse", start_bin=min(128, num_bins // 2))


def calibrate_weights(model, method="percentile", perchannel=True, percentile=99.99, num_bins=2048):
    """Set the amax of every weight quantizer in ``model`` from the weights themselves.

    Applies to every submodule with a ``weight`` and a ``weight_quantizer`` (the quant modules of
    ``pytorch_quantization.nn``). ``method`` (``"max"``, ``"mse"`` or ``"percentile"``) is used whatever the
    quantizer's own calibrator is. With ``perchannel`` the amax is per output channel, along the axis
    ``utils.channel_axis.out_channel_axis`` gives (1 for transposed convolutions, whose weight is ``[in, out, ...]``;
    0 for convolutions and Linear); each channel gets its own histogram of
    ``num_bins`` bins (see ``HistogramCalibrator``). MSE starts its search at bin ``min(128, num_bins // 2)``.
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    for name, module in model.named_modules():
        if not (hasattr(module, "weight") and hasattr(module, "weight_quantizer")):
            continue
        _LOGGER.info("Calibrate weight of %s", name)
        quantizer = module.weight_quantizer
        weight = module.weight.detach()
        args = (method, quantizer.num_bits, quantizer.unsigned, percentile, num_bins)
        if not perchannel:
            quantizer.amax = _amax_of(weight, *args)
            continue
        axis = out_channel_axis(module)
        amax = torch.stack([_amax_of(weight.select(axis, i), *args) for i in range(weight.shape[axis])])
        shape = [1] * weight.dim()
        shape[axis] = weight.shape[axis]
        quantizer.amax = amax.reshape(shape)
