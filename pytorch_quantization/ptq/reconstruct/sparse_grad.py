"""Gradients through spconv layers on CPU, where spconv 2.3's backward needs CUDA.

While a sparse layer's rounding is learned on CPU, its forward is replaced by one that runs spconv's own
forward without gradient on the once-quantized input (for the output indices and the indice pairs it stores)
and then recomputes the features differentiably with the same gather - matmul - scatter-add over the native
indice pairs spconv's CPU path uses (KRSC weight ``[out, *k, in]``; submanifold convs take the centre offset
as a plain matmul and read the pair counts of offsets past the centre mirrored). The first call checks the
recomputation against spconv's result.

spconv 2.3's CPU convolution is only correct on one intra-op thread: with more, its scatter of partial sums
races (measured with spconv 2.3.8, 2 threads: one SubMConv3d's output changed by up to 0.39 between two
identical calls, on outputs up to 1.4). Its forward therefore runs here on one thread; the differentiable
recomputation, plain torch ops, uses them all.
"""
import types

import torch

from pytorch_quantization.ptq.layer_types import is_sparse_conv
from pytorch_quantization.utils.threads import intra_op_threads

__all__ = ["needs_sparse_grad", "install", "uninstall"]

_TEMP_KEY = "_ptq_reconstruct_pairs"


def needs_sparse_grad(layer):
    """True for a spconv layer whose weight is on the CPU."""
    return is_sparse_conv(layer) and layer.weight.device.type == "cpu"


def pairs_conv(features, weight, pairs, pair_num, n_out, subm, inverse):
    """spconv's native CPU convolution over indice pairs, in differentiable torch ops."""
    out_c = weight.shape[0]
    w = weight.reshape(out_c, -1, weight.shape[-1])
    kv = w.shape[1]
    center = kv // 2
    nums = pair_num.tolist()
    out = features @ w[:, center].T if subm else features.new_zeros((n_out, out_c))
    pin, pout = pairs[int(inverse)], pairs[int(not inverse)]
    for i in range(kv):
        if subm and i == center:
            continue
        n = nums[kv - i - 1] if subm and i > center else nums[i]
        if n > 0:
            out = out.index_add(0, pout[i, :n].long(), features[pin[i, :n].long()] @ w[:, i].T)
    return out


def _forward(layer, original, state, input, add_input=None):  # pylint: disable=redefined-builtin
    from spconv.pytorch.conv import _apply_act  # pylint: disable=import-outside-toplevel
    if add_input is not None:
        raise ValueError("reconstruct does not support spconv's fused add_input on CPU")
    features = layer._input_quantizer(input.features) if layer.quant_act else input.features  # pylint: disable=W0212
    quantizer = layer._input_quantizer  # pylint: disable=protected-access
    layer._input_quantizer = torch.nn.Identity()  # the exact run sees the features quantized once, above
    try:
        with torch.no_grad(), intra_op_threads(1):
            exact = original(input.replace_feature(features.detach()))
    finally:
        layer._input_quantizer = quantizer
    datas = (input if layer.inverse else exact).find_indice_pair(layer.indice_key)
    weight = layer._weight_quantizer(layer.weight)  # pylint: disable=protected-access
    out = pairs_conv(features, weight, datas.indice_pairs, datas.indice_pair_num, exact.features.shape[0],
                     layer.subm, layer.inverse)
    if layer.bias is not None:
        out = out + layer.bias
    out = _apply_act(out, layer.act_type, layer.act_alpha, layer.act_beta)
    if not state["checked"]:
        if out.shape != exact.features.shape or not torch.allclose(out, exact.features, rtol=1e-4, atol=1e-5):
            raise RuntimeError(f"cannot reproduce spconv's CPU convolution of {type(layer).__name__} from its indice "
                               "pairs (another weight layout or algorithm); reconstruct sparse layers on CUDA")
        state["checked"] = True
    return exact.replace_feature(out)


def install(layer):
    """Give ``layer`` the differentiable forward; returns what ``uninstall`` needs."""
    from spconv import constants  # pylint: disable=import-outside-toplevel
    if not constants.ALL_WEIGHT_IS_KRSC:
        raise RuntimeError("reconstruct of spconv layers on CPU needs the KRSC weight layout (spconv >= 2.2)")
    temp_key = layer.indice_key is None
    if temp_key:
        layer.indice_key = f"{_TEMP_KEY}_{id(layer)}"
    original = type(layer).forward.__get__(layer)
    state = {"checked": False}
    layer.forward = types.MethodType(lambda self, *a, **k: _forward(self, original, state, *a, **k), layer)
    return layer, temp_key


def uninstall(handle):
    layer, temp_key = handle
    del layer.forward
    if temp_key:
        layer.indice_key = None
