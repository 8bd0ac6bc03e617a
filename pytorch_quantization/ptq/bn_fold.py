"""``fold_batchnorm``: fold BatchNorm layers into the conv / linear / sparse conv that feeds them.

Folding ``y = gamma * (conv(x) - mean) / sqrt(var + eps) + beta`` gives a conv with weight scaled per
output channel by ``s = gamma / sqrt(var + eps)`` and bias ``(b - mean) * s + beta``, as deployment engines do
before quantizing. The BN becomes ``nn.Identity`` (outputs unchanged within float rounding, eval mode).

Which BN belongs to which producer (conv / transposed conv / linear / spconv conv):

* with ``example_inputs``: one forward pass (eval mode, no grad) records every call and who reads the
  producers' outputs. A BN is folded into a producer when both were called exactly once and the BN received the
  producer's output tensor itself (for a sparse conv: its output's ``features``), or -- the pillar-feature-net
  pattern ``bn(linear(x).permute(0, 2, 1))`` -- the BN was the next recorded call after a Linear and its input
  derives from that output through layout ops only (permute, contiguous, ...) and equals it with the last axis
  moved to axis 1. When anything else also reads the producer's output (or a tensor on that layout chain),
  e.g. ``y = conv(x); return bn(y) + side(y)``, the pair is left unfolded with a warning: folding would change
  what the other reader sees. Readers are torch calls that return tensors (metadata such as ``y.shape`` is not
  a read);
* without: a producer immediately followed by a BN inside an ``nn.Sequential`` (or spconv ``SparseSequential``),
  whose output feeds only the next module.

spconv's CPU kernels refuse a fused bias in eval mode, so for a float spconv conv the folded bias is kept in a
``ChannelBias`` module in the BN's place instead of the conv's ``bias`` (quantized sparse convs add their bias
themselves and take it directly).
"""
import warnings

import torch
from torch.overrides import TorchFunctionMode

from pytorch_quantization.ptq import layer_types, plugins
from pytorch_quantization.ptq.filters import NameFilter
from pytorch_quantization.ptq.forward import eval_mode, run_forward
from pytorch_quantization.ptq.quantizers import set_amax, weight_amax
from pytorch_quantization.ptq.table import Table
from pytorch_quantization.utils.channel_axis import out_channel_axis, out_channels

__all__ = ["fold_batchnorm", "ChannelBias"]

_BN = torch.nn.modules.batchnorm._BatchNorm  # pylint: disable=protected-access


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
    return layer_types.is_weighted_layer(module)


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


_SHARED = "producer output also read by other layers or ops"

#: ops that only re-arrange one tensor; a chain of them from a Linear to a BN is the pillar-feature-net pattern
_LAYOUT_OPS = frozenset(("permute", "transpose", "movedim", "moveaxis", "contiguous", "view", "reshape", "flatten",
                         "squeeze", "unsqueeze", "t"))


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in _tensors(item)]
    if isinstance(obj, dict):
        return [t for item in obj.values() for t in _tensors(item)]
    return []


class _Readers(TorchFunctionMode):
    """Counts the readers of watched tensors during a forward pass: every torch call (outside a BatchNorm's own
    forward) that takes a watched tensor and returns a new tensor, plus each BatchNorm called on it. Results of
    layout ops on a watched tensor are watched too, with a link to their source. Watched tensors stay referenced,
    so their ids stay unique."""

    def __init__(self):
        super().__init__()
        self.tensors, self.readers, self.source = {}, {}, {}
        self.inside_bn = 0

    def watch(self, tensor, source=None):
        if isinstance(tensor, torch.Tensor) and id(tensor) not in self.tensors:
            self.tensors[id(tensor)] = tensor
            self.readers[id(tensor)] = 0
            if source is not None:
                self.source[id(tensor)] = source

    def read(self, tensor):
        if id(tensor) in self.tensors:
            self.readers[id(tensor)] += 1

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        outs = _tensors(out)
        if self.inside_bn or not outs:  # metadata (size, dim, ...) reads no data
            return out
        name = getattr(func, "__name__", "")
        in_place = name.startswith("__i") or (name.endswith("_") and not name.endswith("__"))
        # a call returning its input unchanged (contiguous() of a contiguous tensor) reads nothing new
        read = [t for t in _tensors((args, kwargs))
                if id(t) in self.tensors and (in_place or all(t is not o for o in outs))]
        for tensor in read:
            self.read(tensor)
        if len(read) == 1 and name in _LAYOUT_OPS and isinstance(out, torch.Tensor):
            self.watch(out, source=id(read[0]))
        return out

    def chain(self, tensor, root):
        """ids from ``tensor`` back to ``root`` through layout ops, or None when ``tensor`` does not derive so."""
        ids = [id(tensor)]
        while ids[-1] != id(root):
            if ids[-1] not in self.source:
                return None
            ids.append(self.source[ids[-1]])
        return ids


def _pairs_from_trace(model, example_inputs, forward_fn):
    """(pairs to fold, pairs to leave because the producer's output has other readers)."""
    names = {m: n for n, m in model.named_modules()}
    calls, outputs, events = {}, {}, []
    readers = _Readers()

    def bn_pre_hook(module, args):
        if args and isinstance(args[0], torch.Tensor):
            readers.read(args[0])
        readers.inside_bn += 1

    def hook(module, args, output):
        name = names[module]
        calls[name] = calls.get(name, 0) + 1
        if isinstance(module, _BN):
            readers.inside_bn -= 1
            events.append(("bn", name, args[0] if args else None))
        else:
            feats = layer_types.features_of(output)
            outputs[name] = feats
            readers.watch(feats)
            events.append(("producer", name, feats))

    handles = []
    for m in model.modules():
        if isinstance(m, _BN):
            handles.append(m.register_forward_pre_hook(bn_pre_hook))
        if _is_producer(m) or isinstance(m, _BN):
            handles.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad(), eval_mode(model), readers:
            run_forward(model, example_inputs, forward_fn)
    finally:
        for h in handles:
            h.remove()

    by_id = {id(t): n for n, t in outputs.items() if isinstance(t, torch.Tensor)}
    pairs, shared = [], []
    for i, (kind, name, tensor) in enumerate(events):
        if kind != "bn" or not isinstance(tensor, torch.Tensor):
            continue
        producer = by_id.get(id(tensor))
        chain = [id(tensor)]
        if producer is None and i > 0 and events[i - 1][0] == "producer":
            prev_name, prev_out = events[i - 1][1], events[i - 1][2]
            moved = prev_out.movedim(-1, 1) if prev_out.dim() > 2 else None
            chain = readers.chain(tensor, prev_out)
            if chain is not None and moved is not None and moved.shape == tensor.shape and torch.equal(moved, tensor):
                producer = prev_name
        if producer is None or calls.get(producer) != 1 or calls.get(name) != 1:
            continue
        if all(readers.readers[t] == 1 for t in chain):
            pairs.append((producer, name))
        else:
            shared.append((producer, name))
    return pairs, shared


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
    axis = out_channel_axis(producer)
    groups = out_channels(producer) // w.shape[axis]  # > 1 only for grouped transposed convs
    wd = w.detach().double()
    if groups > 1:  # weight [in, out/groups, *k]: output channel g * (out/groups) + j reads input group g
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
    quantizer = getattr(producer, "weight_quantizer", None)
    if quantizer is None or quantizer.amax is None:
        return
    set_amax(quantizer, weight_amax(producer.weight, quantizer.axis))


def _fold(model, producer_name, bn_name):
    producer, bn = model.get_submodule(producer_name), model.get_submodule(bn_name)
    channels = out_channels(producer)
    if channels != bn.num_features:
        return f"channel mismatch ({channels} vs {bn.num_features})"
    scale_shift = _bn_scale_shift(bn)
    if scale_shift is None:
        return "BN has no running statistics"
    scale, shift = scale_shift
    bias = producer.bias.detach().double() if producer.bias is not None else torch.zeros_like(scale)
    new_bias = (bias * scale + shift).to(producer.weight.dtype)
    _scale_weight(producer, scale)
    float_sparse = layer_types.is_sparse_conv(producer) and not hasattr(producer, "weight_quantizer")
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


def fold_batchnorm(model: torch.nn.Module, example_inputs=None, *, forward_fn=None, skip=None) -> Table:
    """Fold every BatchNorm that follows a conv / linear / sparse conv into it, in place.

    Args:
        model: the model (any mode; the trace runs in eval mode and restores the mode).
        example_inputs: optional batch for a tracing forward pass (see the module docstring for both rules).
        forward_fn: ``forward_fn(model, batch)`` when ``model(batch)`` is not how the model is called.
        skip: names (glob / regex / callable) of producers or BNs not to fold.

    Returns:
        a ``Table`` (columns producer, batchnorm, status) of every candidate pair found. A pair whose producer
        output is also read by something else than its BN is left (folding would change that other reader's
        input), with a warning naming it.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    skip = NameFilter(skip)
    shared = []
    if example_inputs is None:
        pairs = _pairs_from_sequentials(model)
    else:
        pairs, shared = _pairs_from_trace(model, example_inputs, forward_fn)
    table = Table(["producer", "batchnorm", "status"], title="BatchNorm folding")
    for producer_name, bn_name in pairs:
        hit = skip.match(producer_name, model.get_submodule(producer_name)) or skip.match(
            bn_name, model.get_submodule(bn_name))
        if hit is not None:
            table.add([producer_name, bn_name, "left: " + NameFilter.describe(hit)])
            continue
        problem = _fold(model, producer_name, bn_name)
        table.add([producer_name, bn_name, "folded" if problem is None else "left: " + problem])
    for producer_name, bn_name in shared:
        table.add([producer_name, bn_name, "left: " + _SHARED])
    if shared:
        warnings.warn(f"fold_batchnorm left {len(shared)} pairs unfolded because the producer's output also feeds "
                      f"other layers or ops besides its BatchNorm (folding would change their input): "
                      + ", ".join(f"{p} -> {b}" for p, b in shared), stacklevel=2)
    return table
