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
from typing import Optional, Union

import numpy as np
import torch
from torch.nn.modules.module import _WrappedHook

from pytorch_quantization import layer_registry
from pytorch_quantization.nn.modules.tensor_quantizer import TensorQuantizer
from pytorch_quantization.tensor_quant import QuantDescriptor
from pytorch_quantization.utils.channel_axis import out_channel_axis
from pytorch_quantization.ptq import plugins  # noqa: F401  (registers the spconv layers when spconv imports)
from pytorch_quantization.ptq.config import PTQConfig
from pytorch_quantization.ptq.filters import NameFilter
from pytorch_quantization.ptq.table import Table

__all__ = ["quantize_model", "SwapSummary", "QUANT_CLASSES"]

#: float layer type -> quantized type, as ``layer_registry.convertible_classes()`` was at import
QUANT_CLASSES = layer_registry.convertible_classes()

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
        new.weight_quantizer.disable()
    ref = next(iter(module.parameters(recurse=False)), None)
    if ref is not None:
        new.weight_quantizer.to(ref.device)
        new.input_quantizer.to(ref.device)
    return new


def _layer_weight_settings(module, weight):
    """The weight settings for ``module``: a config's per-channel ``axis`` 0 means "per output channel", so it
    becomes the layer's output-channel axis (1 for transposed convs, see ``utils.channel_axis``)."""
    if weight is None or weight.get("axis") not in (0, (0,)):
        return weight
    axis = out_channel_axis(module)
    return {**weight, "axis": axis if weight["axis"] == 0 else (axis,)}


def _describe(weight, inp):
    def one(settings):
        if settings is None:
            return "float"
        return str(QuantDescriptor(**settings)).replace("QuantDescriptor", "")
    return f"weight {one(weight)}, input {one(inp)}"


def _is_quantized(module):
    return any(isinstance(c, TensorQuantizer) for c in module.children())


_GRID = ("num_bits", "axis", "unsigned", "narrow_range", "fake_quant")


def _grid(obj):
    """The quantization grid of a descriptor or quantizer (axis ``0`` and ``(0,)`` compare equal)."""
    out = {k: getattr(obj, k) for k in _GRID}
    out["axis"] = (out["axis"],) if isinstance(out["axis"], int) else out["axis"]
    return out


def _brief(grid):
    if grid is None:
        return "float"
    axis = grid["axis"]
    text = f"{'unsigned ' if grid['unsigned'] else ''}{grid['num_bits']}bit "
    text += "per-tensor" if axis is None else f"axis={axis[0] if len(axis) == 1 else axis}"
    return text + (" narrow" if grid["narrow_range"] else "") + ("" if grid["fake_quant"] else " real")


def _conflict(module, weight, inp):
    """How an already quantized layer differs from the config's settings for it, or None when it does not."""
    if not hasattr(module, "weight_quantizer"):
        return None
    wq, iq = module.weight_quantizer, module.input_quantizer
    have = (_grid(wq) if wq.is_enabled else None,
            _grid(iq) if iq.is_enabled and getattr(module, "quant_act", True) else None)
    want = tuple(None if s is None else _grid(QuantDescriptor(**s)) for s in (weight, inp))
    if have == want:
        return None
    return (f"weight {_brief(have[0])}, input {_brief(have[1])} (config: weight {_brief(want[0])}, "
            f"input {_brief(want[1])})")


def quantize_model(model: torch.nn.Module, config: Union[PTQConfig, str, dict] = "w8a8", *, skip=None,
                   overrides: Optional[dict] = None) -> SwapSummary:
    """Swap every supported layer of ``model`` for its quantized version, in place.

    Args:
        model: a built ``torch.nn.Module`` (weights loaded or not; any device, dtype or mode).
        config: a ``PTQConfig``, a preset name (``fp32``, ``w8``, ``w8a8``, ``w4``, ``fp8``) or a dict of
            PTQConfig fields. A weight ``axis`` of 0 means per output channel (axis 1 of transposed convs).
        skip: layers to leave float, in addition to ``config.skip``: glob pattern(s) on dotted module names,
            compiled regex(es), or a callable ``(name, module) -> bool``.
        overrides: ``{name glob: {"weight": settings | None, "input": settings | None}}`` applied after
            ``config.overrides`` (see ``PTQConfig.settings_for``).

    Returns:
        ``SwapSummary`` (a printable table; ``.swapped`` names, ``.left`` name -> reason).

    Raises:
        ValueError: nothing to quantize, or layers already quantized with other settings than ``config`` gives
            them (nothing is changed then; quantize a fresh float model instead).

    Supported: the convertible layers of ``layer_registry`` (Conv1d/2d/3d, ConvTranspose1d/2d/3d, Linear and
    their subclasses; spconv SubMConv3d, SparseConv3d and SparseInverseConv3d when spconv is importable).
    Residual adds are not layers: give known residual blocks a shared-quantizer add with
    ``quantize_residual_blocks`` (see ``residual``). Calibrate afterwards (``calibrate``) unless every quantizer
    has a fixed amax.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    name_of_config = config if isinstance(config, str) else "the given config"
    config = PTQConfig.coerce(config)
    if overrides:
        config = copy.deepcopy(config)
        config.overrides = {**config.overrides, **PTQConfig(overrides=overrides).overrides}
    skip_filter = NameFilter(config.skip) + NameFilter(skip)
    summary, swaps, conflicts = SwapSummary(), [], []
    supported = 0
    for name, module in list(model.named_modules()):
        if not name or isinstance(module, TensorQuantizer):
            continue
        entry = layer_registry.lookup(module)
        kind = type(module).__name__
        quantized = _is_quantized(module)
        if entry is None and not quantized:
            if any(True for _ in module.parameters(recurse=False)):
                summary.add([name, kind, "left", _unsupported_reason(module)])
            continue
        supported += 1
        hit = skip_filter.match(name, module)
        if hit is not None:
            summary.add([name, kind, "left", NameFilter.describe(hit)])
            continue
        weight, inp = config.settings_for(name)
        weight = _layer_weight_settings(module, weight)
        if quantized:
            problem = _conflict(module, weight, inp)
            if problem is not None:
                conflicts.append(f"{name}: {problem}")
            summary.add([name, kind, "left", "already quantized"])
            continue
        if weight is None and inp is None:
            summary.add([name, kind, "left", "config quantizes neither weight nor input"])
            continue
        detail = _describe(weight, inp)
        if type(module) is not entry.float_cls and type(module).forward is not entry.float_cls.forward:
            detail += f"; {kind}.forward replaced by {entry.quant_cls.__name__}.forward"
        swaps.append((name, module, entry.quant_cls, weight, inp))
        summary.add([name, kind, "quantized", detail])
    if supported == 0:
        raise ValueError(f"model {type(model).__name__} has no layer quantize_model supports "
                         f"({', '.join(c.__name__ for c in layer_registry.convertible_classes())} or subclasses); "
                         "nothing to quantize")
    if conflicts:
        shown = "; ".join(conflicts[:3]) + (f"; ... (+{len(conflicts) - 3})" if len(conflicts) > 3 else "")
        raise ValueError(f"{len(conflicts)} layers are already quantized with other settings than "
                         f"{name_of_config}: {shown}. Nothing was changed; quantize_model configures float layers "
                         "only, so quantize a fresh float copy of the model (e.g. rebuild it, or deepcopy it before "
                         "the first quantize_model)")
    for name, module, quant_cls, weight, inp in swaps:
        model.set_submodule(name, _convert(module, quant_cls, _desc(weight), _desc(inp)))
    return summary


def _desc(settings):
    return None if settings is None else QuantDescriptor(**settings)


def _unsupported_reason(module):
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):  # pylint: disable=protected-access
        return "normalization stays float (fold_batchnorm folds it into the layer before)"
    return f"type {type(module).__name__} is not supported"
