"""When a remembered quantization result may stand in for calling a quantizer again.

Shared by ``weight_cache`` (a module's fake-quantized weight, reused across calls) and ``shared_input``
(one tensor quantized once for every module that reads it with the same settings and range). Both compare
tensors by identity and autograd version, never by value, so that no check reads device memory.

Both run on every forward of every quantized module, so what depends only on a quantizer's settings (its
attributes) is derived once per change of them: ``TensorQuantizer._settings_stamp`` changes whenever one is set.
"""
import operator

import torch
from torch.nn.modules import module as torch_module

from pytorch_quantization.kernels import needs_autograd
from pytorch_quantization.nn.modules.tensor_quantizer import TensorQuantizer, tensors_snapshot

__all__ = ["tensors_snapshot", "settings", "may_reuse", "may_reuse_now"]

_SETTING_TYPES = frozenset((bool, int, float, str, tuple, type(None)))
# attributes that are bookkeeping, not settings: they differ between quantizers that quantize alike
_NOT_SETTINGS = frozenset(("_amax_note", "_settings_stamp", "_derived_cache"))


_forward_settings = operator.attrgetter(*TensorQuantizer.FORWARD_SETTINGS)


def _profile(quantizer):
    """``(plain, settings)`` of a ``TensorQuantizer`` (derived once per change of its settings, ``_derived``).

    plain: ``TensorQuantizer._only_quantizes`` (enabled, quantizing, not calibrating, clipping or learning its
    range). settings: for a ``TensorQuantizer`` the attributes its forward reads; for a subclass, which may read
    others, every plain attribute.
    """
    q = quantizer
    plain = q._only_quantizes()  # pylint: disable=protected-access
    if type(q) is TensorQuantizer:
        own = _forward_settings(q)
    else:
        own = tuple(item for item in vars(q).items() if type(item[1]) in _SETTING_TYPES and item[0] not in _NOT_SETTINGS)
    return plain, own


def settings(quantizer):
    """The quantizer's own settings (bits, axis, unsigned, narrow range, scale_amax, switches, ...): what a
    quantization result depends on besides tensors, inference mode and the class-wide ``use_fb_fake_quant``."""
    return quantizer._derived("reuse_profile", _profile)[1]  # pylint: disable=protected-access


def _has_hooks(quantizer):
    # pylint: disable=protected-access
    return bool(quantizer._forward_hooks or quantizer._forward_pre_hooks or torch_module._global_forward_hooks
                or torch_module._global_forward_pre_hooks)


def may_reuse_now(tensor, quantizer):
    """The part of ``may_reuse`` that can change between calls without a change of ``tensor`` or of the
    quantizer's attributes: autograd, tracing or compiling, ONNX export (switched on class-wide), hooks."""
    # pylint: disable=protected-access
    return not (needs_autograd(tensor) or quantizer._enable_onnx_export or _has_hooks(quantizer))


def may_reuse(tensor, quantizer):
    """Whether a remembered ``quantizer(tensor)`` may be returned instead of calling the quantizer.

    Only where reusing cannot change a result or skip a side effect: no gradient wanted for ``tensor``,
    not under ``torch.compile``, ``torch.jit`` or ONNX export, a plain dense tensor with a version counter
    (not an inference tensor), and a
    ``TensorQuantizer`` that quantizes without calibrating, clipping or learning its range and has no hooks.
    """
    if torch.jit.is_scripting() or not isinstance(quantizer, TensorQuantizer):  # not: a stand-in (learned rounding)
        return False
    if tensor.device.type == "meta" or type(tensor) not in (torch.Tensor, torch.nn.Parameter) or tensor.is_sparse:
        return False
    if tensor.is_inference():  # made under torch.inference_mode(): no version counter, so edits could not be seen
        return False
    return quantizer._derived("reuse_profile", _profile)[0] and may_reuse_now(tensor, quantizer)  # pylint: disable=protected-access
