"""Replace ``torch.nn`` module classes by their quantized versions (monkey patching).

``initialize()`` makes ``torch.nn.Conv2d`` & co. name the quantized classes, so models built
afterwards get quantized modules; ``deactivate()`` puts the original classes back. Unlike upstream:

* ``initialize`` is idempotent: calling it again first undoes the active patch, so any number of
  ``initialize`` calls followed by one ``deactivate`` restore exactly the original classes;
  ``deactivate`` without an active patch does nothing;
* ``initialize(quant_act=False)`` makes weight-only quantization (see ``nn.QuantActMixin``) the
  default for every quantized module created while the patch is active;
* ``enable_onnx_export()`` restores the exporter flag even when the export raises.
"""
from collections import namedtuple
from contextlib import contextmanager

import torch

from pytorch_quantization import nn as quant_nn
from pytorch_quantization import layer_registry, onnx_export

__all__ = ["initialize", "deactivate", "enable_onnx_export"]

_quant_entry = namedtuple("quant_entry", "orig_mod mod_name replace_mod")

#: the built-in entries of ``layer_registry`` as upstream's ``(module, name, quantized class)`` triples
_DEFAULT_QUANT_MAP = [_quant_entry(torch.nn, e.float_cls.__name__, e.quant_cls)
                      for e in layer_registry.builtin_entries()]


class QuantModuleReplacementHelper:
    """Applies and exactly reverts one monkey patch.

    Attributes:
        default_quant_map: the built-in ``(module, name, quantized class)`` entries.
        quant_map: the entries of the active patch (empty when none is active).
        orginal_func_map: ``(module, name, original object)`` for every patched name (upstream's spelling).
    """

    def __init__(self):
        self.default_quant_map = _DEFAULT_QUANT_MAP
        self.quant_map = []
        self.orginal_func_map = []
        self._saved_quant_act = None

    def prepare_state(self, float_module_list=None, custom_map=None):
        """Choose the entries to patch: the defaults minus ``float_module_list``, plus ``custom_map``."""
        if float_module_list is not None:
            if isinstance(float_module_list, str) or not all(isinstance(n, str) for n in float_module_list):
                raise TypeError(f"float_module_list must be a list of class names such as ['Linear'], got "
                                f"{float_module_list!r}")
            unknown = set(float_module_list) - {e.mod_name for e in self.default_quant_map}
            if unknown:
                raise ValueError(f"float_module_list names {sorted(unknown)} that are not replaced anyway; valid "
                                 f"names: {[e.mod_name for e in self.default_quant_map]}")
        entries = [e for e in self.default_quant_map if not float_module_list or e.mod_name not in float_module_list]
        for item in custom_map or ():
            if len(item) != 3 or not isinstance(item[1], str) or not hasattr(item[0], item[1]):
                raise ValueError(f"custom_quant_modules entries must be (module, 'ClassName', QuantClass) with "
                                 f"ClassName an attribute of module, got {item!r}")
            entries = [e for e in entries if not (e.orig_mod is item[0] and e.mod_name == item[1])]
            entries.append(_quant_entry(*item))
        self.quant_map = entries
        self.orginal_func_map = [_quant_entry(e.orig_mod, e.mod_name, getattr(e.orig_mod, e.mod_name))
                                 for e in entries]

    def apply_quant_modules(self):
        """Point every chosen name at its quantized class."""
        for entry in self.quant_map:
            setattr(entry.orig_mod, entry.mod_name, entry.replace_mod)

    def restore_float_modules(self):
        """Put the original objects back and forget the patch."""
        for entry in reversed(self.orginal_func_map):
            setattr(entry.orig_mod, entry.mod_name, entry.replace_mod)
        self.quant_map = []
        self.orginal_func_map = []

    def set_quant_act(self, quant_act):
        """Make ``quant_act`` the default of every quantized module while the patch is active."""
        self._saved_quant_act = quant_nn.QuantActMixin.default_quant_act
        quant_nn.QuantActMixin.set_default_quant_act(quant_act)

    def restore_quant_act(self):
        if self._saved_quant_act is not None:
            quant_nn.QuantActMixin.set_default_quant_act(self._saved_quant_act)
            self._saved_quant_act = None


_quant_module_helper_object = QuantModuleReplacementHelper()


def initialize(float_module_list=None, custom_quant_modules=None, quant_act=True):
    """Replace ``torch.nn`` classes by quantized ones until ``deactivate()``.

    Args:
        float_module_list: names of default entries to leave alone, e.g. ``["Linear"]``.
        custom_quant_modules: extra ``(module, "ClassName", QuantClass)`` entries.
        quant_act: default ``quant_act`` of quantized modules created while the patch is active
            (False: weight-only quantization). Classes with their own ``set_default_quant_act``
            value and explicit ``quant_act=`` arguments take precedence.
    """
    if not isinstance(quant_act, bool):
        raise TypeError(f"quant_act must be True or False, got {quant_act!r}")
    deactivate()
    helper = _quant_module_helper_object
    helper.prepare_state(float_module_list, custom_quant_modules)
    helper.apply_quant_modules()
    helper.set_quant_act(quant_act)


def deactivate():
    """Undo ``initialize()``; does nothing when no patch is active."""
    helper = _quant_module_helper_object
    helper.restore_float_modules()
    helper.restore_quant_act()


@contextmanager
def enable_onnx_export():
    """Context manager for ``torch.onnx.export`` of a quantized model.

    Inside it every ``TensorQuantizer`` checks that it has a static (calibrated) amax before it
    quantizes, and quantizes with ops both torch exporters turn into QuantizeLinear/DequantizeLinear (see
    ``onnx_export``). Without onnxscript, an export that does not choose an exporter uses the TorchScript-based
    one. The previous state is restored on exit, also when the export raises.
    """
    previous = quant_nn.TensorQuantizer._enable_onnx_export  # pylint: disable=protected-access
    quant_nn.TensorQuantizer._enable_onnx_export = True  # pylint: disable=protected-access
    try:
        with onnx_export.torchscript_without_onnxscript():
            yield
    finally:
        quant_nn.TensorQuantizer._enable_onnx_export = previous  # pylint: disable=protected-access
