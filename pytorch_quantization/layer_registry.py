"""The one table of float layer classes and the quantized classes that replace them.

Every consumer reads this table: ``quant_modules.initialize`` patches ``torch.nn`` with the built-in entries,
``ptq.quantize_model`` converts built layers of the ``convertible`` entries in place (matched along the layer's
MRO, so framework subclasses are covered) and ``ptq.fold_batchnorm`` folds BatchNorms into those layers. Which
weight axis holds a layer's output channels is ``utils.channel_axis.out_channel_axis``.

Plugins (e.g. spconv layers in ``ptq``) add entries with ``register``.
"""
from typing import Dict, NamedTuple, Optional, Tuple

import torch

from pytorch_quantization import nn as quant_nn

__all__ = ["QuantEntry", "register", "entries", "builtin_entries", "convertible_classes", "lookup"]


class QuantEntry(NamedTuple):
    """``float_cls`` is replaced by ``quant_cls``; ``convertible``: ``ptq.quantize_model`` converts built
    instances in place (layers with a weight whose output channels a BatchNorm can be folded into)."""
    float_cls: type
    quant_cls: type
    convertible: bool


def _builtin():
    weighted = ["Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d", "Linear"]
    others = ["LSTM", "LSTMCell", "AvgPool1d", "AvgPool2d", "AvgPool3d", "AdaptiveAvgPool1d", "AdaptiveAvgPool2d",
              "AdaptiveAvgPool3d"]
    return [QuantEntry(getattr(torch.nn, name), getattr(quant_nn, "Quant" + name), name in weighted)
            for name in weighted + others]


_BUILTIN = tuple(_builtin())
_ENTRIES = list(_BUILTIN)


def register(float_cls: type, quant_cls: type, *, convertible: bool = True) -> None:
    """Add (or replace) the entry of ``float_cls``."""
    if not (isinstance(float_cls, type) and issubclass(float_cls, torch.nn.Module)):
        raise TypeError(f"float_cls must be a torch.nn.Module subclass, got {float_cls!r}")
    if not (isinstance(quant_cls, type) and issubclass(quant_cls, float_cls)):
        raise TypeError(f"quant_cls must be a subclass of {float_cls.__name__}, got {quant_cls!r}")
    _ENTRIES[:] = [e for e in _ENTRIES if e.float_cls is not float_cls] + [QuantEntry(float_cls, quant_cls,
                                                                                      bool(convertible))]


def entries() -> Tuple[QuantEntry, ...]:
    """Every entry, built-in ones first."""
    return tuple(_ENTRIES)


def builtin_entries() -> Tuple[QuantEntry, ...]:
    """The entries for ``torch.nn`` classes (what ``quant_modules.initialize`` patches by default)."""
    return _BUILTIN


def convertible_classes() -> Dict[type, type]:
    """``{float class: quantized class}`` of the entries ``ptq.quantize_model`` converts."""
    return {e.float_cls: e.quant_cls for e in _ENTRIES if e.convertible}


def lookup(module: torch.nn.Module) -> Optional[QuantEntry]:
    """The convertible entry whose float class is the nearest in ``module``'s MRO (quantized layers match their
    float base class), or None."""
    table = {e.float_cls: e for e in _ENTRIES if e.convertible}
    for cls in type(module).__mro__:
        if cls in table:
            return table[cls]
    return None
