"""Quantized residual additions: ``QuantAdd`` and ``quantize_residual_blocks``.

Deployment engines (TensorRT) fuse ``relu(conv(x) + identity)`` only when both operands of the add carry the
same quantization scale, so the fake-quant graph must quantize both with ONE quantizer. ``QuantAdd`` does that:
``QuantAdd()(a, b) == q(a) + q(b)`` with a single input quantizer that, when calibrating, sees both operands
(so its amax covers both). ``a`` / ``b`` may be tensors or spconv ``SparseConvTensor`` s with the same active
sites (their features are added, the result keeps ``a``'s indices).

Wiring it into a model:

* your own blocks: create ``self.add = QuantAdd()`` in ``__init__`` and write ``out = self.add(out, identity)``
  instead of ``out + identity``; ``quantize_model`` then leaves it alone, ``calibrate`` calibrates it;
* known third-party blocks (MMDetection3D's and OpenPCDet's ``SparseBasicBlock``: conv1 -> norm1/bn1 -> relu ->
  conv2 -> norm2/bn2 (+ downsample) -> add -> relu): ``quantize_residual_blocks(model, config)`` gives each
  block a ``residual_add`` QuantAdd and switches the block instance to a subclass whose ``forward`` calls it.
  The block's parameters and state_dict keys are unchanged (plus ``residual_add._input_quantizer._amax`` after
  calibration). Such instances pickle only in a process that has called ``quantize_residual_blocks`` (the
  subclass is made at run time); ``state_dict`` round trips work everywhere.
"""
import torch

from pytorch_quantization.nn.modules._utils import QuantInputMixin
from pytorch_quantization.tensor_quant import QuantDescriptor
from pytorch_quantization.ptq import layer_types
from pytorch_quantization.ptq.config import PTQConfig
from pytorch_quantization.ptq.filters import NameFilter
from pytorch_quantization.ptq.table import Table

__all__ = ["QuantAdd", "quantize_residual_blocks", "RESIDUAL_BLOCK_NAMES"]

#: class names of the residual blocks ``quantize_residual_blocks`` knows how to rewire
RESIDUAL_BLOCK_NAMES = ("SparseBasicBlock",)


class QuantAdd(QuantInputMixin, torch.nn.Module):
    """``a + b`` with both operands quantized by one shared input quantizer (see the module docstring)."""

    def __init__(self, quant_desc_input=None, quant_act=None):
        super().__init__()
        self.init_quantizer(quant_desc_input, quant_act=quant_act)

    def forward(self, a, b):
        if layer_types.is_sparse_tensor(a):
            b_features = b.features if layer_types.is_sparse_tensor(b) else b
            return a.replace_feature(self._quant_input(a.features) + self._quant_input(b_features))
        return self._quant_input(a) + self._quant_input(b)


class _QuantResidualForward:
    """``forward`` of a SparseBasicBlock-shaped block with its residual add through ``self.residual_add``."""

    def forward(self, x):
        norm1 = self.norm1 if hasattr(self, "norm1") else self.bn1  # MMDetection3D / OpenPCDet names
        norm2 = self.norm2 if hasattr(self, "norm2") else self.bn2
        out = self.conv1(x)
        out = out.replace_feature(self.relu(norm1(out.features)))
        out = self.conv2(out)
        out = out.replace_feature(norm2(out.features))
        identity = x if self.downsample is None else self.downsample(x)
        out = self.residual_add(out, identity)
        return out.replace_feature(self.relu(out.features))


_SUBCLASSES = {}


def _quant_subclass(cls):
    if cls not in _SUBCLASSES:
        _SUBCLASSES[cls] = type(f"QuantResidual{cls.__name__}", (_QuantResidualForward, cls),
                                {"__module__": cls.__module__, "__doc__": f"{cls.__name__} with a QuantAdd."})
    return _SUBCLASSES[cls]


def _is_known_block(module):
    return (type(module).__name__ in RESIDUAL_BLOCK_NAMES and not isinstance(module, _QuantResidualForward)
            and all(hasattr(module, a) for a in ("conv1", "conv2", "relu", "downsample")))


def quantize_residual_blocks(model, config="w8a8", *, skip=None):
    """Give every known residual block of ``model`` a shared-quantizer ``QuantAdd`` (see the module docstring).

    ``config``: a PTQConfig / preset name; its (overridden) ``input`` settings for the block's name describe the
    add's quantizer; blocks whose input settings are None (weight-only presets) are left as they are.

    Returns:
        a ``Table`` (block, type, status).
    """
    config = PTQConfig.coerce(config)
    skip = NameFilter(skip)
    table = Table(["block", "type", "status"], title="residual adds")
    for name, module in list(model.named_modules()):
        if not _is_known_block(module):
            continue
        _, inp = config.settings_for(name)
        if skip.match(name, module) is not None:
            table.add([name, type(module).__name__, "left: skipped"])
            continue
        if inp is None:
            table.add([name, type(module).__name__, "left: config does not quantize activations"])
            continue
        add = QuantAdd(QuantDescriptor(**inp))
        param = next(module.parameters(), None)
        module.residual_add = add if param is None else add.to(param.device)
        module.__class__ = _quant_subclass(type(module))
        table.add([name, type(module).__name__, "residual add quantized"])
    return table
