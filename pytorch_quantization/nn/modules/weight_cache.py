"""Reuse of a quantized module's fake-quantized weight while nothing it is computed from has changed.

At inference the weights of a quantized module do not change between calls, yet fake-quantizing them
costs a pass over every weight on every forward. ``quantized_weight(module)`` returns the result of
``module._weight_quantizer(module.weight)``, and remembers it; the next call returns the remembered
tensor when all of these are unchanged (compared without reading any tensor values, so no device sync):

* the weight: the same Parameter object, its autograd version counter (bumped by every in-place
  operation on it or on a view of it: ``with torch.no_grad(): w.mul_(2)``, ``w.detach().fill_(0)``,
  ``w.copy_(...)`` in ``load_state_dict``, optimizer steps), its data pointer, dtype, device and shape
  (so ``w.data = other``, ``module.to(...)`` and ``module.half()`` are seen);
* every tensor of the weight quantizer (``_amax``, ``_pre_quant_scale``), the same way: ``amax.fill_``,
  ``quantizer.amax = ...``, ``load_calib_amax()`` and ``load_state_dict`` are all seen;
* the quantizer's settings: none of its attributes (bits, axis, unsigned, narrow range, scale_amax,
  enabled/disabled switches, ...) set since (``TensorQuantizer._settings_stamp``), and
  ``TensorQuantizer.use_fb_fake_quant``.

The remembered tensor is used only where reusing it cannot change a result: autograd off for the
weight (``torch.no_grad()``, ``torch.inference_mode()`` or a weight with ``requires_grad=False``), the
quantizer quantizing without calibrating, clipping or learning its range, no forward hooks on it, not
during ONNX export, ``torch.jit`` tracing or ``torch.compile``. Training and calibration therefore
always recompute, and so does a module whose weight or quantizer tensors were made under
``torch.inference_mode()`` (inference tensors keep no version counter, so their edits could not be seen).

One edit is invisible: an in-place operation on ``w.data`` (``w.data.mul_(2)``), because PyTorch gives
``.data`` a version counter of its own. Write ``with torch.no_grad(): w.mul_(2)`` instead, or call
``clear()``. ``enable(False)`` turns the cache off everywhere. The cache costs one extra copy of each
quantized weight in memory; it holds its entries weakly, so it neither keeps modules alive nor
travels with ``state_dict``, ``copy.deepcopy`` or pickling.
"""
import weakref

import torch

from pytorch_quantization.nn.modules._reuse import may_reuse, may_reuse_now, tensors_snapshot

__all__ = ["quantized_weight", "enable", "is_enabled", "clear"]

_ENTRIES = {}  # id(module) -> _Entry; dropped when the module is freed
_state = {"enabled": True}


def enable(value=True):
    """Turn the weight cache on (the default) or off for every module. Off, entries are neither used nor
    updated (``clear()`` frees them); on again, an entry is used only if it is still valid."""
    if not isinstance(value, bool):
        raise TypeError(f"enable() takes True or False, got {value!r}")
    _state["enabled"] = value


def is_enabled():
    return _state["enabled"]


def clear(module=None):
    """Forget the remembered weight of ``module``, or of every module when None."""
    if module is None:
        _ENTRIES.clear()
    else:
        _ENTRIES.pop(id(module), None)


class _ModuleRef(weakref.ref):
    """A weak reference to a module that drops the module's entry when the module is freed."""
    __slots__ = ("key",)

    def __new__(cls, module):
        self = super().__new__(cls, module, _forget)
        self.key = id(module)
        return self

    def __init__(self, module):
        super().__init__(module, _forget)


def _forget(ref):
    entry = _ENTRIES.get(ref.key)
    if entry is not None and entry.module is ref:
        del _ENTRIES[ref.key]


def _tensors(weight, quantizer):
    """The weight and the quantizer's own buffers and parameters (None where one is registered as None): what the
    quantized weight is computed from. Submodules (``clip``) matter with ``learn_amax`` only, never cached."""
    # pylint: disable=protected-access
    return (weight, *quantizer._buffers.values(), *quantizer._parameters.values())


def _context(quantizer):
    """What a result may depend on besides the quantizer's attributes and tensors."""
    return type(quantizer).use_fb_fake_quant, torch.is_inference_mode_enabled()


class _Entry:
    """A remembered quantized weight and everything it was computed from. The tensors are kept alive with it,
    so that their ids in ``tokens`` cannot be taken by other tensors."""
    __slots__ = ("module", "quantizer", "stamp", "context", "tensors", "tokens", "result")

    def __init__(self, module, quantizer, tensors, result):
        self.module = _ModuleRef(module)
        self.quantizer = quantizer
        self.stamp = quantizer._settings_stamp  # pylint: disable=protected-access
        self.context = _context(quantizer)
        self.tensors = tensors
        self.tokens = tensors_snapshot(tensors)
        self.result = result

    def holds(self, module, weight, quantizer):
        """Whether ``result`` is what the quantizer would return for ``weight`` now. The entry was only made
        where ``may_reuse`` held: what can change without a new stamp or token is checked again here."""
        # pylint: disable=protected-access
        return (self.module() is module and self.quantizer is quantizer
                and self.stamp == quantizer._settings_stamp and self.context == _context(quantizer)
                and may_reuse_now(weight, quantizer)
                and self.tokens == tensors_snapshot(_tensors(weight, quantizer)))


def quantized_weight(module):
    """``module._weight_quantizer(module.weight)``, reused while its inputs are unchanged (module docstring)."""
    weight, quantizer = module.weight, module._weight_quantizer  # pylint: disable=protected-access
    if not _state["enabled"] or torch.compiler.is_compiling():  # a compiled graph quantizes (no reuse across calls)
        return quantizer(weight)
    entry = _ENTRIES.get(id(module))
    if entry is not None and entry.holds(module, weight, quantizer):
        return entry.result
    if not may_reuse(weight, quantizer):
        return quantizer(weight)
    tensors = _tensors(weight, quantizer)
    if any(t is not None and t.is_inference() for t in tensors):  # no version counter to follow
        return quantizer(weight)
    result = quantizer(weight)
    _ENTRIES[id(module)] = _Entry(module, quantizer, tensors, result)
    return result
