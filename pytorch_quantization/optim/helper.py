"""Selecting, grouping and freezing parameters by name, and quantizing weights in place (for QAT)."""
import logging
import re

import torch

__all__ = ["match_parameters", "group_parameters", "freeze_parameters", "quant_weight_inplace"]

_LOGGER = logging.getLogger(__name__)


def _check_patterns(patterns, name="patterns"):
    if isinstance(patterns, str) or not isinstance(patterns, (list, tuple)):
        raise TypeError(f"{name} must be a list of regex strings, got {type(patterns).__name__}; "
                        "wrap a single pattern in a list")
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise TypeError(f"{name} must hold strings, got {type(pattern).__name__}")


def _matches(name, patterns):
    return any(re.search(pattern, name) for pattern in patterns)


def match_parameters(model, patterns):
    """Yield each parameter of ``model`` whose name contains a match of any regex in ``patterns`` (once each)."""
    _check_patterns(patterns)
    for name, param in model.named_parameters():
        if _matches(name, patterns):
            yield param


def group_parameters(model, patterns_list, lrs=None, momentums=None, weight_decays=None):
    """Optimizer parameter groups, one per list of patterns in ``patterns_list``.

    Returns ``[{"params": [...], "lr": ..., "momentum": ..., "weight_decay": ...}, ...]`` (options only when
    given; each option list must have one entry per group). Patterns of different groups should not match the
    same parameter: PyTorch optimizers reject a parameter in two groups.
    """
    hint = "e.g. [['conv1', 'conv2'], ['fc']]"
    if isinstance(patterns_list, str) or not isinstance(patterns_list, (list, tuple)):
        raise TypeError(f"patterns_list must be list of list of patterns, {hint}")
    for patterns in patterns_list:
        if isinstance(patterns, str) or not isinstance(patterns, (list, tuple)):
            raise TypeError(f"patterns_list must be list of list of patterns, {hint}; got an entry "
                            f"{type(patterns).__name__}")
        _check_patterns(patterns, "each entry of patterns_list")
    options = {key: values for key, values in (("lr", lrs), ("momentum", momentums), ("weight_decay", weight_decays))
               if values is not None}
    for key, values in options.items():
        if len(values) != len(patterns_list):
            raise TypeError(f"len({key}s) must match len(patterns_list): got {len(values)}, need one per group "
                            f"({len(patterns_list)})")
    groups = [{"params": list(match_parameters(model, patterns))} for patterns in patterns_list]
    for key, values in options.items():
        for group, value in zip(groups, values):
            group[key] = value
    return groups


def freeze_parameters(model, patterns):
    """Set ``requires_grad=False`` on every parameter whose name matches any regex in ``patterns``."""
    _check_patterns(patterns)
    for name, param in model.named_parameters():
        if _matches(name, patterns):
            _LOGGER.warning("Freeze %s.", name)
            param.requires_grad = False


def quant_weight_inplace(model):
    """Replace the weight of every quant module by its quantized value, using the module's weight quantizer.

    Modules with a ``_weight_quantizer`` (QuantConvNd, QuantLinear, ...) are affected. With a real (not fake)
    quantizer the weights become integers, which only makes sense for inference.
    """
    for name, module in model.named_modules():
        quantizer = getattr(module, "_weight_quantizer", None)
        if quantizer is None:
            continue
        if not getattr(quantizer, "fake_quant", True):
            _LOGGER.warning("In-place real quantization of %s: the weights become integers (inference only).", name)
        _LOGGER.warning("In-place quantize weight of %s", name)
        with torch.no_grad():
            module.weight.copy_(quantizer(module.weight))
