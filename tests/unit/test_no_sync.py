"""A quantizer's forward reads no tensor value into Python (on a GPU each read is a device-to-host sync).

On the CPU this is checked by making ``Tensor.__bool__``, ``item``, ``tolist``, ``__float__``,
``__int__`` and ``__index__`` raise while the forward runs; ``test_cuda_kernels`` checks the same on a
GPU with ``torch.cuda.set_sync_debug_mode("error")``.
"""
import contextlib
from unittest import mock

import pytest
import torch

from pytorch_quantization import tensor_quant
from pytorch_quantization.nn import QuantConv2d, QuantLinear, TensorQuantizer
from pytorch_quantization.nn.modules import weight_cache

READS = ("__bool__", "item", "tolist", "__float__", "__int__", "__index__")


class ValueRead(AssertionError):
    pass


@contextlib.contextmanager
def no_value_reads():
    def forbidden(name):
        def read(self, *args, **kwargs):
            raise ValueRead(f"Tensor.{name} called during forward")
        return read

    with contextlib.ExitStack() as stack:
        for name in READS:
            stack.enter_context(mock.patch.object(torch.Tensor, name, forbidden(name)))
        yield


def test_the_guard_catches_reads():
    x = torch.ones(3)
    with no_value_reads():
        for read in (lambda: bool(x.any()), lambda: x.sum().item(), x.tolist, lambda: float(x[0]),
                     lambda: [0, 1][x[0].long()]):
            with pytest.raises(ValueRead):
                read()


def quantizer(**desc):
    amax = desc.pop("amax", None)
    q = TensorQuantizer(tensor_quant.QuantDescriptor(**desc))
    if amax is not None:
        q.amax = amax
    return q


QUANTIZERS = {
    "per-tensor": lambda: quantizer(amax=2.0),
    "per-tensor narrow": lambda: quantizer(amax=2.0, narrow_range=True),
    "per-channel": lambda: quantizer(axis=(0,), amax=torch.rand(4, 1) + 0.5),
    "unsigned": lambda: quantizer(amax=2.0, unsigned=True),
    "dynamic per-tensor": lambda: quantizer(),
    "dynamic per-channel": lambda: quantizer(axis=(0,)),
    "4-bit": lambda: quantizer(num_bits=4, amax=2.0),
    "scale_amax": lambda: quantizer(amax=2.0, scale_amax=0.5),
    "e4m3": lambda: quantizer(num_bits=(4, 3), amax=2.0),
    "e4m3 dynamic": lambda: quantizer(num_bits=(4, 3)),
}


@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
@pytest.mark.parametrize("name", QUANTIZERS, ids=list(QUANTIZERS))
def test_quantizer_forward_reads_no_values(name, grad):
    q = QUANTIZERS[name]()
    x = torch.randn(4, 33, generator=torch.Generator().manual_seed(0))
    if name == "unsigned":
        x = x.abs()
    x.requires_grad_(grad)
    expected = q(x)  # outside the guard: the same call, values allowed
    with no_value_reads():
        out = q(x)
    assert torch.equal(out, expected)


@pytest.mark.parametrize("cached", [False, True], ids=["uncached", "weight cache"])
def test_quant_modules_forward_reads_no_values(cached):
    weight_cache.enable(cached)
    try:
        torch.manual_seed(0)
        conv = QuantConv2d(3, 4, 3)
        linear = QuantLinear(8, 5)
        for module in (conv, linear):
            module.input_quantizer.amax = 3.0
            module.weight_quantizer.amax = module.weight.detach().abs().flatten(1).amax(1).reshape(
                -1, *[1] * (module.weight.dim() - 1))
        x, y = torch.randn(2, 3, 6, 6), torch.randn(3, 8)
        with torch.no_grad():
            expected = conv(x), linear(y)
            with no_value_reads():
                assert torch.equal(conv(x), expected[0]) and torch.equal(linear(y), expected[1])
                assert torch.equal(conv(x), expected[0])  # a second call (a cache hit when cached)
    finally:
        weight_cache.enable(True)


def test_shared_input_quantization_reads_no_values():
    """Two modules reading one tensor with the same range (the second call is served by ``shared_input``,
    which compares ranges through values noted when amax was set, not by reading amax)."""
    torch.manual_seed(0)
    convs = [QuantConv2d(3, 4, 3) for _ in range(2)]
    for module in convs:
        module.input_quantizer.amax = 3.0
        module.weight_quantizer.amax = 1.0
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        expected = [module(x.clone()) for module in convs]
        with no_value_reads():
            outs = [module(x) for module in convs]
    assert all(torch.equal(a, b) for a, b in zip(outs, expected))
