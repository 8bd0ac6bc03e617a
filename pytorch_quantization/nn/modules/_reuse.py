"""When a remembered quantization result may stand in for calling a quantizer again.

Shared by ``weight_cache`` (a module's fake-quantized weight, reused across calls) and ``shared_input``
(one tensor quantized once for every module that reads it with the same settings and range). Both compare
tensors by identity and autograd version, never by value, so that no check reads device memory.
"""
import operator

import torch
from torch.nn.modules import module as torch_module

from pytorch_quantization.kernels import needs_autograd
from pytorch_quantization.nn.modules.tensor_quantizer import TensorQuantizer, tensor_token

__all__ = ["tensor_token", "settings", "may_reuse"]

_SETTING_TYPES = frozenset((bool, int, float, str, tuple, type(None)))
# attributes that are bookkeeping about tensors, not settings: their identity tokens differ between quantizers
_NOT_SETTINGS = frozenset(("_amax_note",))


_forward_settings = operator.attrgetter(*TensorQuantizer.FORWARD_SETTINGS)


def settings(quantizer):
    """The quantizer's settings (bits, axis, unsigned, narrow range, scale_amax, switches, ...) and the
    class-wide ``use_fb_fake_quant``: for a ``TensorQuantizer`` the attributes its forward reads; for a
    subclass, which may read others, every plain attribute."""
    if type(quantizer) is TensorQuantizer:
        own = _forward_settings(quantizer)
    else:
        own = tuple(item for item in vars(quantizer).items()
                    if type(item[1]) in _SETTING_TYPES and item[0] not in _NOT_SETTINGS)
    return own, type(quantizer).use_fb_fake_quant, torch.is_inference_mode_enabled()


def _has_hooks(quantizer):
    # pylint: disable=protected-access
    return bool(quantizer._forward_hooks or quantizer._forward_pre_hooks or torch_module._global_forward_hooks
                or torch_module._global_forward_pre_hooks)


def may_reuse(tensor, quantizer):
    """Whether a remembered ``quantizer(tensor)`` may be returned instead of calling the quantizer.

    Only where reusing cannot change a result or skip a side effect: no gradient wanted for ``tensor``,
    not under ``torch.compile``, ``torch.jit`` or ONNX export, a plain dense tensor with a version counter
    (not an inference tensor), and a
    ``TensorQuantizer`` that quantizes without calibrating, clipping or learning its range and has no hooks.
    """
    if needs_autograd(tensor) or torch.jit.is_scripting():
        return False
    if tensor.device.type == "meta" or type(tensor) not in (torch.Tensor, torch.nn.Parameter) or tensor.is_sparse:
        return False
    if tensor.is_inference():  # made under torch.inference_mode(): no version counter, so edits could not be seen
        return False
    if not isinstance(quantizer, TensorQuantizer):  # a stand-in (e.g. reconstruction's learned rounding)
        return False
    q = quantizer
    # pylint: disable=protected-access
    if q._disabled or not q._if_quant or q._if_calib or q._if_clip or q._learn_amax or q._enable_onnx_export:
        return False
    return not _has_hooks(q)
