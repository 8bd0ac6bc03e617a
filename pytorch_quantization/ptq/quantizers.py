"""Finding the quantizers of a model and reading / writing their ranges."""
from typing import Dict, List

import torch

from pytorch_quantization.nn.modules.tensor_quantizer import TensorQuantizer
from pytorch_quantization.utils import reduce_amax

__all__ = ["QuantizerRef", "find_quantizers", "quant_layers", "amax_shape", "weight_amax", "set_amax", "set_enabled"]


class QuantizerRef:
    """One quantizer of a model: its dotted name, the layer holding it and its role (``weight`` or ``input``)."""

    __slots__ = ("name", "quantizer", "layer_name", "layer", "role")

    def __init__(self, name, quantizer, layer_name, layer, role):
        self.name, self.quantizer, self.layer_name, self.layer, self.role = name, quantizer, layer_name, layer, role

    @property
    def active(self) -> bool:
        """False when the quantizer is disabled or its layer skips input quantization (``quant_act=False``)."""
        if not self.quantizer.is_enabled:
            return False
        return self.role == "weight" or getattr(self.layer, "quant_act", True)


def find_quantizers(model: torch.nn.Module) -> List[QuantizerRef]:
    """Every ``TensorQuantizer`` directly held by a layer, as ``QuantizerRef`` in module order."""
    refs = []
    for layer_name, layer in model.named_modules():
        for attr, child in layer.named_children():
            if isinstance(child, TensorQuantizer):
                name = f"{layer_name}.{attr}" if layer_name else attr
                role = "weight" if attr == "_weight_quantizer" else "input"
                refs.append(QuantizerRef(name, child, layer_name, layer, role))
    return refs


def quant_layers(model: torch.nn.Module) -> Dict[str, torch.nn.Module]:
    """``{layer name: layer}`` of every module that holds at least one quantizer, in module order."""
    return {ref.layer_name: ref.layer for ref in find_quantizers(model)}


def _kept(ndim, axis):
    return {a % ndim for a in (axis if isinstance(axis, (tuple, list)) else (axis,))}


def amax_shape(shape, axis):
    """The shape of a per-channel amax for a tensor of ``shape`` (dims kept, e.g. ``[C, 1, 1, 1]``); None for
    per-tensor (``axis`` None)."""
    if axis is None:
        return None
    keep = _kept(len(shape), axis)
    return [size if i in keep else 1 for i, size in enumerate(shape)]


def weight_amax(weight, axis):
    """``max|weight|`` per tensor (axis None) or over every dim except ``axis`` (shape ``amax_shape``)."""
    if axis is None:
        return reduce_amax(weight)
    keep = _kept(weight.dim(), axis)
    reduce = [i for i in range(weight.dim()) if i not in keep]
    return reduce_amax(weight, axis=reduce, keepdims=True) if reduce else weight.detach().abs()


def set_amax(quantizer, value, device=None):
    """Set a quantizer's amax, replacing a buffer of another shape (the setter refuses shape changes).

    The buffer goes to ``device``, else stays where the current amax is, else where ``value`` is.
    """
    value = torch.as_tensor(value, dtype=torch.float32)
    current = quantizer.amax
    if device is None:
        device = current.device if current is not None else value.device
    if current is not None and (current.shape != value.shape or current.device != torch.device(device)):
        quantizer.reset_amax()
    quantizer.amax = value.to(device)


def set_enabled(quantizer, enabled):
    """``quantizer.enable()`` or ``quantizer.disable()``."""
    if enabled:
        quantizer.enable()
    else:
        quantizer.disable()
