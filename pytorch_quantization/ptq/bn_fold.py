"""``fold_batchnorm``: fold BatchNorm layers into the conv / linear / sparse conv that feeds them.

Folding ``y = gamma * (conv(x) - mean) / sqrt(var + eps) + beta`` gives a conv with weight scaled per
output channel by ``s = gamma / sqrt(var + eps)`` and bias ``(b - mean) * s + beta``, as deployment engines do
before quantizing. The BN becomes ``nn.Identity`` (outputs unchanged within float rounding, eval mode).

Which BN belongs to which producer (conv / transposed conv / linear / spconv conv):

* with ``example_inputs``: one forward pass (eval mode, no grad) records every call. A BN is folded into a
  producer when both were called exactly once and the BN received the producer's output tensor itself (for a
  sparse conv: its output's ``features``), or -- the pillar-feature-net pattern ``bn(linear(x).permute(0, 2, 1))``
  -- the BN was the next recorded call after a Linear and its input equals that output with the last axis moved
  to axis 1;
* without: a producer immediately followed by a BN inside an ``nn.Sequential`` (or spconv ``SparseSequential``).

Both rules assume the producer's output feeds only that BN (true for conv-BN-act stacks, ConvModule, SECOND /
CenterPoint backbones and heads); a producer whose output also feeds another branch must be excluded with ``skip``.

spconv's CPU kernels refuse a fused bias in eval mode, so for a float spconv conv the folded bias is kept in a
``ChannelBias`` module in the BN's place instead of the conv's ``bias`` (quantized sparse convs add their bias
themselves and take it directly).
"""
import torch

from pytorch_quantization.ptq import layer_types, plugins
from pytorch_quantization.ptq.filters import NameFilter
from pytorch_quantization.ptq.forward import eval_mode, run_forward
from pytorch_quantization.ptq.quantizers import set_amax, weight_amax
from pytorch_quantization.ptq.table import Table

__all__ = ["fold_batchnorm", "ChannelBias"]

_BN = torch.nn.modules.batchnorm._BatchNorm  # pylint: disable=protected-access
_PRODUCERS = layer_types.DENSE_WEIGHTED


class ChannelBias(torch.nn.Module):
    """Adds a per-channel bias along axis 1 (the folded remainder of a BatchNorm after a float sparse conv)."""

    def __init__(self, bias):
        super().__init__()
        self.bias = torch.nn.Parameter(bias.detach().clone())

    def forward(self, x):
        shape = [1] * x.dim()
        shape[1] = -1
        return x + self.bias.reshape(shape)


def _is_producer(module):
    return isinstance(module, _PRODUCERS) or layer_types.is_sparse_conv(module)


def _pairs_from_sequentials(model):
    pairs = []
    for parent_name, parent in model.named_modules():
        if not isinstance(parent, plugins.SEQUENTIAL_TYPES):
            continue
        children = list(parent.named_children())
        for (pname, prod), (bname, bn) in zip(children, children[1:]):
            if _is_producer(prod) and isinstance(bn, _BN):
                prefix = parent_name + "." if parent_name else ""
                pairs.append((prefix + pname, prefix + bname))
    return pairs


def _pairs_from_trace(model, example_inputs, forward_fn):
    names = {m: n for n, m in model.named_modules()}
    calls, outputs, events = {}, {}, []  # outputs keep tensors alive so their ids stay unique

    def hook(module, args, output):
        name = names[module]
        calls[name] = calls.get(name, 0) + 1
        if isinstance(module, _BN):
            events.append(("bn", name, args[0] if args else None))
        else:
            feats = layer_types.features_of(output)
            outputs[name] = feats
            events.append(("producer", name, feats))

    handles = [m.register_forward_hook(hook) for m in model.modules() if _is_producer(m) or isinstance(m, _BN)]
    try:
        with torch.no_grad(), eval_mode(model):
            run_forward(model, example_inputs, forward_fn)
    finally:
        for h in handles:
            h.remove()

    by_id = {id(t): n for n, t in outputs.items() if isinstance(t, torch.Tensor)}
    pairs = []
    for i, (kind, name, tensor) in enumerate(events):
        if kind != "bn" or not isinstance(tensor, torch.Tensor):
            continue
        producer = by_id.get(id(tensor))
        if producer is None and i > 0 and events[i - 1][0] == "producer":
            prev_name, prev_out = events[i - 1][1], events[i - 1][2]
            moved = prev_out.movedim(-1, 1) if prev_out.dim() > 2 else None
            if moved is not None and moved.shape == tensor.shape and torch.equal(moved, tensor):
                producer = prev_name
        if producer is not None and calls.get(producer) == 1 and calls.get(name) == 1:
            pairs.append((producer, name))
    return pairs


def _bn_scale_shift(bn):
    if bn.running_mean is None or bn.running_var is None:
        return None
    inv_std = torch.rsqrt(bn.running_var.double() + bn.eps)
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(inv_std)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(inv_std)
    scale = gamma * inv_std
    return scale, beta - bn.running_mean.double() * scale


def _scale_weight(producer, scale):
    """Multiply the producer's weight by ``scale`` along its output-channel axis (groups handled)."""
    w = producer.weight
    axis = layer_types.out_channel_axis(producer)
    groups = getattr(producer, "groups", 1) if axis == 1 else 1
    wd = w.detach().double()
    if groups > 1:  # transposed conv: weight [in, out/groups, *k], output channel = g * (out/groups) + j
        shape = [groups, w.shape[0] // groups] + list(w.shape[1:])
        s_shape = [groups, 1, w.shape[1]] + [1] * (w.dim() - 2)
        new = (wd.reshape(shape) * scale.reshape(s_shape)).reshape(w.shape)
    else:
        s_shape = [1] * w.dim()
        s_shape[axis] = -1
        new = wd * scale.reshape(s_shape)
    with torch.no_grad():
        w.copy_(new.to(w.dtype))


def _refresh_weight_amax(producer):
    """A calibrated weight quantizer keeps amax = max|w| per channel after the weight changed."""
    quantizer = getattr(producer, "_weight_quantizer", None)
    if quantizer is None or getattr(quantizer, "amax", None) is None:
        return
    set_amax(quantizer, weight_amax(producer.weight, quantizer.axis))


def _fold(model, producer_name, bn_name):
    producer, bn = model.get_submodule(producer_name), model.get_submodule(bn_name)
    out_channels = producer.weight.shape[layer_types.out_channel_axis(producer)] * (
        getattr(producer, "groups", 1) if layer_types.out_channel_axis(producer) == 1 else 1)
    if out_channels != bn.num_features:
        return f"channel mismatch ({out_channels} vs {bn.num_features})"
    scale_shift = _bn_scale_shift(bn)
    if scale_shift is None:
        return "BN has no running statistics"
    scale, shift = scale_shift
    bias = producer.bias.detach().double() if producer.bias is not None else torch.zeros_like(scale)
    new_bias = (bias * scale + shift).to(producer.weight.dtype)
    _scale_weight(producer, scale)
    float_sparse = layer_types.is_sparse_conv(producer) and not hasattr(producer, "_weight_quantizer")
    if float_sparse:
        if producer.bias is not None:
            with torch.no_grad():
                producer.bias.zero_()
        replacement = ChannelBias(new_bias)
    else:
        if producer.bias is None:
            producer.bias = torch.nn.Parameter(new_bias)
        else:
            with torch.no_grad():
                producer.bias.copy_(new_bias)
        replacement = torch.nn.Identity()
    _refresh_weight_amax(producer)
    model.set_submodule(bn_name, replacement.to(device=producer.weight.device))
    return None


def fold_batchnorm(model, example_inputs=None, *, forward_fn=None, skip=None):
    """Fold every BatchNorm that follows a conv / linear / sparse conv into it, in place.

    Args:
        model: the model (any mode; the trace runs in eval mode and restores the mode).
        example_inputs: optional batch for a tracing forward pass (see the module docstring for both rules).
        forward_fn: ``forward_fn(model, batch)`` when ``model(batch)`` is not how the model is called.
        skip: names (glob / regex / callable) of producers or BNs not to fold.

    Returns:
        a ``Table`` (columns producer, batchnorm, status) of every candidate pair found.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    skip = NameFilter(skip)
    if example_inputs is None:
        pairs = _pairs_from_sequentials(model)
    else:
        pairs = _pairs_from_trace(model, example_inputs, forward_fn)
    table = Table(["producer", "batchnorm", "status"], title="BatchNorm folding")
    for producer_name, bn_name in pairs:
        hit = skip.match(producer_name, model.get_submodule(producer_name)) or skip.match(
            bn_name, model.get_submodule(bn_name))
        if hit is not None:
            table.add([producer_name, bn_name, "left: " + NameFilter.describe(hit)])
            continue
        problem = _fold(model, producer_name, bn_name)
        table.add([producer_name, bn_name, "folded" if problem is None else "left: " + problem])
    return table
