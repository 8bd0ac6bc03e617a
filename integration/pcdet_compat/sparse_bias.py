"""Float spconv layers with a bias on a CPU, in eval mode.

spconv's CPU kernels refuse a bias (or fused activation) in eval mode (``cpu don't support act and bias``),
and OpenPCDet's ``VoxelResBackBone8x`` gives the convolutions of its ``SparseBasicBlock`` a bias. While
``bias_after_sparse_conv(model)`` is active, every float spconv convolution of ``model`` with a bias and no
fused activation whose input is on the CPU runs without the bias and gets it added to its output features
afterwards (same result; the bias ``Parameter`` is back in place as soon as the call returns). Quantized
sparse convolutions (``pytorch_quantization.ptq.sparse``) already add their bias themselves and are left alone.
"""
import contextlib

from pytorch_quantization.nn.modules.tensor_quantizer import TensorQuantizer
from pytorch_quantization.ptq import layer_types

__all__ = ["bias_after_sparse_conv"]

_STASH = "_bias_held_outside_kernel"


def _needs_help(module):
    if not layer_types.is_sparse_conv(module) or module.bias is None:
        return False
    if any(isinstance(child, TensorQuantizer) for child in module.children()):
        return False
    return str(getattr(module, "act_type", "None_")).endswith("None_")


def _before(module, inputs):
    x = inputs[0]
    if module.training or not layer_types.is_sparse_tensor(x) or x.features.is_cuda:
        return
    module.__dict__[_STASH] = module._parameters["bias"]  # pylint: disable=protected-access
    module._parameters["bias"] = None  # pylint: disable=protected-access


def _after(module, inputs, output):
    bias = module.__dict__.pop(_STASH, None)
    if bias is None:
        return output
    module._parameters["bias"] = bias  # pylint: disable=protected-access
    return output.replace_feature(output.features + bias)


@contextlib.contextmanager
def bias_after_sparse_conv(model):
    """See the module docstring; hooks are removed (and biases restored) when the block ends."""
    handles = []
    for module in model.modules():
        if _needs_help(module):
            handles.append(module.register_forward_pre_hook(_before))
            handles.append(module.register_forward_hook(_after))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        for module in model.modules():
            if _STASH in module.__dict__:
                module._parameters["bias"] = module.__dict__.pop(_STASH)  # pylint: disable=protected-access
