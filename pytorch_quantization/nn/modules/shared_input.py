"""Quantize a tensor once for every module that reads it with the same settings and range.

A tensor read by several quantized modules is quantized by each of their input quantizers. After
calibration those quantizers usually hold the same range: a CenterPoint head's shared features feed
6 x 6 task convolutions, so at inference the same quantization ran 36 times per frame. TensorRT, too,
places one Q/DQ pair on such a tensor.

``quantized_input(quantizer, x)`` returns ``quantizer(x)`` and remembers it with ``x``; another
quantizer asked for ``x`` returns the remembered tensor instead of computing it again when all of
these hold (compared without reading any tensor values, so no device sync):

* ``x`` is the same tensor object at the same autograd version (no in-place edit since);
* both quantizers have the same settings (``_reuse.settings``: bits, axis, unsigned, narrow range,
  scale_amax, switches; and ``TensorQuantizer.use_fb_fake_quant``), the same type, and a per-tensor amax
  of the same value and dtype that has not changed since it was set, loaded, calibrated or moved
  (``TensorQuantizer.amax_if_unchanged``), and no ``pre_quant_scale``;
* the remembered result has not been edited in place;
* not under ``torch.inference_mode()`` and ``x`` is not an inference tensor (those keep no version
  counter, so an in-place edit could not be seen); ``torch.no_grad()`` is what enables sharing;
* reusing cannot change a result (``_reuse.may_reuse``): no gradient wanted for ``x``, no
  calibration, clipping, learned range, hooks, ONNX export, tracing or ``torch.compile``.

The remembered result lives exactly as long as ``x``. It is only used where the quantized tensor
goes straight into the module's float operation and never reaches the caller (the ``_quant_input``
of quantized modules), so two modules holding one result cannot see each other's in-place edits.
As with the weight cache, an edit of amax through ``amax.data`` is not seen; ``enable(False)``
turns the sharing off everywhere.
"""
import weakref

import torch

from pytorch_quantization.nn.modules._reuse import may_reuse, settings

__all__ = ["quantized_input", "enable", "is_enabled"]

_MEMO = {}  # id(x) -> (weakref to x, x._version, {key: (result, result._version)})
_state = {"enabled": True}


def enable(value=True):
    """Turn the sharing on (the default) or off for every module."""
    if not isinstance(value, bool):
        raise TypeError(f"enable() takes True or False, got {value!r}")
    _state["enabled"] = value
    if not value:
        _MEMO.clear()


def is_enabled():
    return _state["enabled"]


class _InputRef(weakref.ref):
    """A weak reference to an input tensor that drops its memo entry when the tensor is freed."""
    __slots__ = ("key_id",)

    def __new__(cls, tensor, key_id):
        self = super().__new__(cls, tensor, _forget)
        self.key_id = key_id
        return self

    def __init__(self, tensor, key_id):  # pylint: disable=unused-argument
        super().__init__(tensor, _forget)


def _forget(ref):
    entry = _MEMO.get(ref.key_id)
    if entry is not None and entry[0] is ref:
        del _MEMO[ref.key_id]


def _static_key(quantizer):
    """The part of ``_key`` derived from settings and the noted amax (``TensorQuantizer._derived``)."""
    # pylint: disable=protected-access
    if not quantizer._fake_quant or quantizer.pre_quant_scale is not None or quantizer._amax_note is None:
        return None  # real quantization records its scale on the quantizer: a side effect to keep
    amax = quantizer._buffers.get("_amax")
    if amax is None:
        return None
    return type(quantizer), settings(quantizer), quantizer._amax_note[1], amax.dtype, amax.device


def _key(quantizer):
    """The quantization ``quantizer`` applies, as a value two quantizers can compare; None if unknown."""
    if quantizer.amax_if_unchanged() is None:  # the noted value may be stale
        return None
    key = quantizer._derived("share_key", _static_key)  # pylint: disable=protected-access
    # use_fb_fake_quant is class-wide: no stamp of the quantizer changes with it
    return key and key + (type(quantizer).use_fb_fake_quant,)


def quantized_input(quantizer, x):
    """``quantizer(x)``, shared with every other quantizer that applies the same quantization to ``x``."""
    # under torch.compile the graph quantizes (the checks below would break it); under inference mode the
    # result would have no version counter to check
    if (torch.compiler.is_compiling() or not _state["enabled"] or torch.is_inference_mode_enabled()
            or not may_reuse(x, quantizer)):
        return quantizer(x)
    key = _key(quantizer)
    if key is None:
        return quantizer(x)
    # pylint: disable=protected-access
    key_id, version = id(x), x._version
    entry = _MEMO.get(key_id)
    if entry is None or entry[0]() is not x or entry[1] != version:
        entry = (_InputRef(x, key_id), version, {})
        _MEMO[key_id] = entry
    known = entry[2].get(key)
    if known is not None and known[0]._version == known[1]:
        return known[0]
    result = quantizer.forward(x)  # may_reuse found no hooks: all that __call__ would add
    if result is not x:  # the entry must not keep x alive (it is dropped when x is freed)
        entry[2][key] = (result, result._version)
    return result
