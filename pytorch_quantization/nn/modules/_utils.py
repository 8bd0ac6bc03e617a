"""Mixins that give quantized modules their quantizers and the ``quant_act`` switch.

``quant_act`` (not in upstream 2.2.1): every quantized module has a boolean ``quant_act``.
True (the default) quantizes the module's input as upstream does. False lets the input pass
through untouched -- the input quantizer is not called at all, so it neither quantizes nor
collects calibration statistics -- while weights are still quantized (weight-only quantization).
Input-only modules (pooling, instance norm) become exact float modules.

Where the value comes from: the ``quant_act=`` constructor keyword, else the class attribute
``default_quant_act``. ``set_default_quant_act(value)`` sets that attribute on the class it is
called on, so it applies to that class and every subclass that has not set its own:
``QuantActMixin.set_default_quant_act(False)`` for all quantized modules,
``QuantMixin.set_default_quant_act(False)`` for modules with weights,
``QuantConv2d.set_default_quant_act(False)`` for one type. ``quant_modules.initialize(quant_act=...)``
sets the ``QuantActMixin`` default while the patch is active.

The value is an ordinary attribute (so ``copy.deepcopy`` and pickling keep it) and is shown by
``repr``. It is not part of ``state_dict`` (as in 2.2.1, a quantized module's state_dict loads
strictly into the plain torch module); calibration files record it instead. A state_dict written
by earlier versions of this package, which held ``<prefix>_quant_act``, still loads and restores it.
"""
import inspect
import copy

import torch

from pytorch_quantization import tensor_quant
from pytorch_quantization.nn.modules import shared_input, weight_cache
from pytorch_quantization.nn.modules.tensor_quantizer import TensorQuantizer

__all__ = ["QuantActMixin", "QuantMixin", "QuantInputMixin", "pop_quant_desc_in_kwargs"]

QUANT_ACT_KEY = "_quant_act"


def _check_bool(value, name):
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def _check_desc(value, name):
    if not isinstance(value, tensor_quant.ScaledQuantDescriptor):
        raise ValueError(f"{name} is not an instance of QuantDescriptor! got {type(value).__name__}")
    if not value.fake_quant:
        raise ValueError(f"Only fake quantization is supported! {name} has fake_quant=False")
    return value


def _check_unused_keys(cls, kwargs):
    """TypeError (2.2.1's "Unused keys") for keywords the torch base class of ``cls`` does not take."""
    torch_cls = next(c for c in cls.__mro__ if c.__module__.startswith("torch.nn."))
    params = inspect.signature(torch_cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unused = sorted(k for k in kwargs if k not in params)
    if unused:
        raise TypeError(f"Unused keys: {unused}; {cls.__name__} takes the arguments of {torch_cls.__name__} plus "
                        "quant_desc_input, quant_desc_weight and quant_act")


class QuantActMixin:
    """The ``quant_act`` switch (see the module docstring). Put it before the torch class in the bases."""

    default_quant_act = True

    @classmethod
    def set_default_quant_act(cls, value):
        """Default ``quant_act`` for modules of this class (and its subclasses) created from now on."""
        cls.default_quant_act = _check_bool(value, "quant_act")

    @property
    def quant_act(self):
        """Whether the input is quantized (and calibrated); weights are quantized either way."""
        return self._quant_act

    @quant_act.setter
    def quant_act(self, value):
        self._quant_act = _check_bool(value, "quant_act")

    def _init_quant_act(self, quant_act):
        self.quant_act = type(self).default_quant_act if quant_act is None else quant_act

    def _quant_input(self, inputs):
        """The input through the input quantizer, or untouched when ``quant_act`` is False. Quantized once for
        every module that reads the same tensor with the same quantization (``shared_input``)."""
        return shared_input.quantized_input(self._input_quantizer, inputs) if self._quant_act else inputs

    def extra_repr(self):
        base = super().extra_repr()
        return f"{base}, quant_act={self._quant_act}" if base else f"quant_act={self._quant_act}"

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        value = state_dict.pop(prefix + QUANT_ACT_KEY, None)
        if value is not None:
            self.quant_act = bool(value)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class QuantMixin(QuantActMixin):
    """Input and weight quantizers for modules with weights."""

    default_quant_desc_input = tensor_quant.QUANT_DESC_8BIT_PER_TENSOR
    default_quant_desc_weight = tensor_quant.QUANT_DESC_8BIT_PER_TENSOR

    @classmethod
    def set_default_quant_desc_input(cls, value):
        """Descriptor used for inputs of modules of this class created from now on."""
        cls.default_quant_desc_input = copy.deepcopy(_check_desc(value, "quant_desc_input"))

    @classmethod
    def set_default_quant_desc_weight(cls, value):
        """Descriptor used for weights of modules of this class created from now on."""
        cls.default_quant_desc_weight = copy.deepcopy(_check_desc(value, "quant_desc_weight"))

    def init_quantizer(self, quant_desc_input=None, quant_desc_weight=None, num_layers=None, quant_act=None):
        """Create the quantizers (call from ``__init__``); None means the class default.

        With ``num_layers`` creates ``_input_quantizers`` / ``_weight_quantizers`` lists (RNNs).
        """
        desc_in = _check_desc(type(self).default_quant_desc_input if quant_desc_input is None else quant_desc_input,
                              "quant_desc_input")
        desc_w = _check_desc(type(self).default_quant_desc_weight if quant_desc_weight is None else quant_desc_weight,
                             "quant_desc_weight")
        self._fake_quant = True
        if num_layers is None:
            self._input_quantizer = TensorQuantizer(desc_in)
            self._weight_quantizer = TensorQuantizer(desc_w)
        else:
            self._input_quantizers = torch.nn.ModuleList([TensorQuantizer(desc_in) for _ in range(num_layers)])
            self._weight_quantizers = torch.nn.ModuleList([TensorQuantizer(desc_w) for _ in range(num_layers)])
        self._init_quant_act(quant_act)

    @property
    def input_quantizer(self):
        return self._input_quantizer

    @property
    def weight_quantizer(self):
        return self._weight_quantizer


class QuantInputMixin(QuantActMixin):
    """Input quantizer for modules without weights."""

    default_quant_desc_input = tensor_quant.QUANT_DESC_8BIT_PER_TENSOR

    @classmethod
    def set_default_quant_desc_input(cls, value):
        """Descriptor used for inputs of modules of this class created from now on."""
        cls.default_quant_desc_input = copy.deepcopy(_check_desc(value, "quant_desc_input"))

    def init_quantizer(self, quant_desc_input=None, quant_act=None):
        """Create the input quantizer (call from ``__init__``); None means the class default."""
        desc_in = _check_desc(type(self).default_quant_desc_input if quant_desc_input is None else quant_desc_input,
                              "quant_desc_input")
        self._fake_quant = True
        self._input_quantizer = TensorQuantizer(desc_in)
        self._init_quant_act(quant_act)

    @property
    def input_quantizer(self):
        return self._input_quantizer


class WeightedQuantModule(QuantMixin):
    """Constructor for ``Quant<X>(QuantMixin-subclass, torch X)``: torch's arguments plus keyword-only
    ``quant_desc_input``, ``quant_desc_weight`` and ``quant_act``."""

    def __init__(self, *args, quant_desc_input=None, quant_desc_weight=None, quant_act=None, **kwargs):
        _check_unused_keys(type(self), kwargs)
        super().__init__(*args, **kwargs)
        self.init_quantizer(quant_desc_input, quant_desc_weight, quant_act=quant_act)

    def _quant(self, input):  # pylint: disable=redefined-builtin
        """``(input, weight)`` as the float op should see them (upstream's helper, honouring ``quant_act``).

        The quantized weight is reused while the weight, its quantizer's amax and settings are unchanged
        and no gradient is wanted for it (``weight_cache``).
        """
        return self._quant_input(input), weight_cache.quantized_weight(self)


class InputQuantModule(QuantInputMixin):
    """Constructor and forward for input-only modules: quantize the input, then run the torch module."""

    def __init__(self, *args, quant_desc_input=None, quant_act=None, **kwargs):
        _check_unused_keys(type(self), kwargs)
        super().__init__(*args, **kwargs)
        self.init_quantizer(quant_desc_input, quant_act=quant_act)

    def forward(self, input):  # pylint: disable=redefined-builtin
        return super().forward(self._quant_input(input))


def pop_quant_desc_in_kwargs(quant_cls, input_only=False, **kwargs):
    """Upstream helper: the ``quant_desc_input`` (and ``quant_desc_weight``) in ``kwargs`` or the class defaults.

    Raises TypeError for any other key.
    """
    quant_desc_input = kwargs.pop("quant_desc_input", quant_cls.default_quant_desc_input)
    if not input_only:
        quant_desc_weight = kwargs.pop("quant_desc_weight", quant_cls.default_quant_desc_weight)
    if kwargs:
        raise TypeError(f"Unused keys: {sorted(kwargs)}")
    return quant_desc_input if input_only else (quant_desc_input, quant_desc_weight)
