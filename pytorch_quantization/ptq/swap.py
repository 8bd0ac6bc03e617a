"""``quantize_model``: swap supported layers of a built model for quantized ones, in place.

Layers are matched with ``isinstance`` (so framework subclasses such as mmcv's ``ConvTranspose2d`` are
covered, which monkey-patching ``torch.nn`` at import time cannot reach) and converted without re-running
their constructors: the quantized module takes over the float module's attributes -- the same weight and bias
``Parameter`` objects, buffers, forward / pre-forward / state-dict hooks, device, dtype and train/eval mode --
then gets its quantizers. A subclass's own ``forward`` override is replaced by the quantized forward (noted in
the summary). Layer hyper-parameters stored as numpy integers (``kernel_size=np.int64(3)``) become Python ints.
"""
import copy
import types

import numpy as np
import torch
from torch.nn.modules.module import _WrappedHook

from pytorch_quantization import nn as quant_nn
from pytorch_quantization.nn.modules.tensor_quantizer import TensorQuantizer
from pytorch_quantization.tensor_quant import QuantDescriptor
from pytorch_quantization.ptq import layer_types
from pytorch_quantization.ptq.config import PTQConfig
from pytorch_quantization.ptq.filters import NameFilter
from pytorch_quantization.ptq.table import Table

__all__ = ["quantize_model", "SwapSummary", "QUANT_CLASSES"]

#: float layer type -> quantized type (looked up along the float module's MRO)
QUANT_CLASSES = {
    torch.nn.Conv1d: quant_nn.QuantConv1d,
    torch.nn.Conv2d: quant_nn.QuantConv2d,
    torch.nn.Conv3d: quant_nn.QuantConv3d,
    torch.nn.ConvTranspose1d: quant_nn.QuantConvTranspose1d,
    torch.nn.ConvTranspose2d: quant_nn.QuantConvTranspose2d,
    torch.nn.ConvTranspose3d: quant_nn.QuantConvTranspose3d,
    torch.nn.Linear: quant_nn.QuantLinear,
}
if layer_types.HAS_SPCONV:
    from pytorch_quantization.ptq.plugins import spconv as _sparse  # pylint: disable=ungrouped-imports
    QUANT_CLASSES.update(_sparse.SPARSE_QUANT_CLASSES)

_INT_ATTRS = ("in_channels", "out_channels", "in_features", "out_features", "groups", "kernel_size", "stride",
              "padding", "dilation", "output_padding")
_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
               "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
               "_load_state_dict_post_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
               "_forward_pre_hooks_with_kwargs")


class SwapSummary(Table):
    """What ``quantize_model`` did: one row per supported layer (swapped or left, and why) and per other
    module with parameters (left, with the reason)."""

    def __init__(self):
        super().__init__(["layer", "type", "status", "detail"], title="quantize_model summary")

    @property
    def swapped(self):
        return [r[0] for r in self.rows if r[2] == "quantized"]

    @property
    def left(self):
        return {r[0]: r[3] for r in self.rows if r[2] != "quantized"}


def _python_ints(value):
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (tuple, list)) and any(isinstance(v, np.integer) for v in value):
        return type(value)(int(v) if isinstance(v, np.integer) else v for v in value)
    return value


def _quant_class(module):
    for cls in type(module).__mro__:
        if cls in QUANT_CLASSES:
            return cls, QUANT_CLASSES[cls]
    return None, None


def _rebind(hook, new, old):
    """``hook`` re-targeted from ``old`` to ``new`` when it is a bound method of ``old`` or a torch ``_WrappedHook``
    holding one or a (weak) reference to ``old``; otherwise ``hook`` itself."""
    if isinstance(hook, types.MethodType) and hook.__self__ is old:
        return types.MethodType(hook.__func__, new)
    if isinstance(hook, _WrappedHook):
        inner = _rebind(hook.hook, new, old)
        holds_old = hook.with_module and hook.module() is old
        if inner is not hook.hook or holds_old:
            owner = (new if holds_old else hook.module()) if hook.with_module else None
            return _WrappedHook(inner, owner)
    return hook


def _rebind_hooks(new, old):
    """Copy the hook dicts; hooks tied to the old module are re-targeted to the new one."""
    for attr in _HOOK_DICTS:
        hooks = old.__dict__.get(attr)
        if hooks is None:
            continue
        copied = copy.copy(hooks)
        if isinstance(copied, dict):
            for key, hook in copied.items():
                copied[key] = _rebind(hook, new, old)
        new.__dict__[attr] = copied


def _convert(module, quant_cls, desc_weight, desc_input):
    """A ``quant_cls`` instance that takes over ``module``'s state (see the module docstring)."""
    new = quant_cls.__new__(quant_cls)
    for key, value in module.__dict__.items():
        new.__dict__[key] = copy.copy(value) if key in ("_parameters", "_buffers", "_modules") else value
    _rebind_hooks(new, module)
    for attr in _INT_ATTRS:
        if attr in new.__dict__:
            new.__dict__[attr] = _python_ints(new.__dict__[attr])
    new.init_quantizer(desc_input or QuantDescriptor(), desc_weight or QuantDescriptor(),
                       quant_act=desc_input is not None)
    if desc_weight is None:
        new._weight_quantizer.disable()  # pylint: disable=protected-access
    ref = next(iter(module.parameters(recurse=False)), None)
    if ref is not None:
        new._weight_quantizer.to(ref.device)  # pylint: disable=protected-access
        new._input_quantizer.to(ref.device)  # pylint: disable=protected-access
    return new


def _describe(weight, inp):
    def one(settings):
        if settings is None:
            return "float"
        return str(QuantDescriptor(**settings)).replace("QuantDescriptor", "")
    return f"weight {one(weight)}, input {one(inp)}"


def _is_quantized(module):
    return any(isinstance(c, TensorQuantizer) for c in module.children())


def quantize_model(model, config="w8a8", *, skip=None, overrides=None):
    """Swap every supported layer of ``model`` for its quantized version, in place.

    Args:
        model: a built ``torch.nn.Module`` (weights loaded or not; any device, dtype or mode).
        config: a ``PTQConfig``, a preset name (``fp32``, ``w8``, ``w8a8``, ``w4``, ``fp8``) or a dict of
            PTQConfig fields.
        skip: layers to leave float, in addition to ``config.skip``: glob pattern(s) on dotted module names,
            compiled regex(es), or a callable ``(name, module) -> bool``.
        overrides: ``{name glob: {"weight": settings | None, "input": settings | None}}`` applied after
            ``config.overrides`` (see ``PTQConfig.settings_for``).

    Returns:
        ``SwapSummary`` (a printable table; ``.swapped`` names, ``.left`` name -> reason).

    Supported: Conv1d/2d/3d, ConvTranspose1d/2d/3d, Linear and their subclasses; spconv SubMConv3d,
    SparseConv3d and SparseInverseConv3d when spconv is importable. Residual adds are not layers: give known
    residual blocks a shared-quantizer add with ``quantize_residual_blocks`` (see ``residual``). Calibrate
    afterwards (``calibrate``) unless every quantizer has a fixed amax.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    config = PTQConfig.coerce(config)
    if overrides:
        config = copy.deepcopy(config)
        config.overrides = {**config.overrides, **PTQConfig(overrides=overrides).overrides}
    skip_filter = NameFilter(config.skip) + NameFilter(skip)
    summary = SwapSummary()
    supported = 0
    for name, module in list(model.named_modules()):
        if not name or isinstance(module, TensorQuantizer):
            continue
        float_cls, quant_cls = _quant_class(module)
        kind = type(module).__name__
        if _is_quantized(module):
            supported += 1
            summary.add([name, kind, "left", "already quantized"])
            continue
        if quant_cls is None:
            if any(True for _ in module.parameters(recurse=False)):
                summary.add([name, kind, "left", _unsupported_reason(module)])
            continue
        supported += 1
        hit = skip_filter.match(name, module)
        if hit is not None:
            summary.add([name, kind, "left", NameFilter.describe(hit)])
            continue
        weight, inp = config.settings_for(name)
        if weight is None and inp is None:
            summary.add([name, kind, "left", "config quantizes neither weight nor input"])
            continue
        model.set_submodule(name, _convert(module, quant_cls, _desc(weight), _desc(inp)))
        detail = _describe(weight, inp)
        if type(module) is not float_cls and type(module).forward is not float_cls.forward:
            detail += f"; {kind}.forward replaced by {quant_cls.__name__}.forward"
        summary.add([name, kind, "quantized", detail])
    if supported == 0:
        raise ValueError(f"model {type(model).__name__} has no layer quantize_model supports "
                         f"({', '.join(c.__name__ for c in QUANT_CLASSES)} or subclasses); nothing to quantize")
    return summary


def _desc(settings):
    return None if settings is None else QuantDescriptor(**settings)


def _unsupported_reason(module):
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):  # pylint: disable=protected-access
        return "normalization stays float (fold_batchnorm folds it into the layer before)"
    return f"type {type(module).__name__} is not supported"
