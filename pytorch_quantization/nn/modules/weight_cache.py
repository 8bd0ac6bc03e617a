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
* the quantizer's settings: every plain attribute (bits, axis, unsigned, narrow range, scale_amax,
  enabled/disabled switches, ...) and ``TensorQuantizer.use_fb_fake_quant``.

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

from pytorch_quantization.nn.modules._reuse import may_reuse, settings, tensor_token

__all__ = ["quantized_weight", "enable", "is_enabled", "clear"]

_ENTRIES = weakref.WeakKeyDictionary()  # module -> (key, tensors the key refers to by id, quantized weight)
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
        _ENTRIES.pop(module, None)


def _key(weight, quantizer):
    """(key, tensors): everything the quantized weight is computed from, tensors by identity and version; key
    None when one of the quantizer's tensors is an inference tensor (no version counter to follow).

    The quantizer's own buffers and parameters only: submodules (``clip``) matter with ``learn_amax``, which
    is never cached.
    """
    # pylint: disable=protected-access
    tensors = [weight] + [t for t in quantizer._buffers.values() if t is not None] + [
        t for t in quantizer._parameters.values() if t is not None]
    if any(t.is_inference() for t in tensors):
        return None, tensors
    return (tuple(tensor_token(t) for t in tensors), settings(quantizer)), tensors


def quantized_weight(module):
    """``module._weight_quantizer(module.weight)``, reused while its inputs are unchanged (module docstring)."""
    weight, quantizer = module.weight, module._weight_quantizer  # pylint: disable=protected-access
    if not _state["enabled"] or not may_reuse(weight, quantizer):
        return quantizer(weight)
    key, tensors = _key(weight, quantizer)
    if key is None:
        return quantizer(weight)
    entry = _ENTRIES.get(module)
    if entry is not None and entry[0] == key:
        return entry[2]
    result = quantizer(weight)
    # the tensors are kept alive with the key so that their ids cannot be reused by other tensors
    _ENTRIES[module] = (key, tensors, result)
    return result
