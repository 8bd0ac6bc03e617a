"""shared_input: a tensor read by several quantized modules with the same quantization is quantized once.

Each case checks the modules' outputs against an independent expectation (the float op on inputs and
weights fake-quantized by the formula written out here) and counts quantizer kernel calls to see what was
shared. Anything that could make a shared result wrong (another range or setting, an in-place edit of the
input, of the result or of amax, autograd) must lead to a fresh quantization.
"""
import contextlib
import gc
import weakref
from unittest import mock

import pytest
import torch
import torch.nn.functional as F

from pytorch_quantization import kernels
from pytorch_quantization.nn import QuantConv2d, QuantLinear
from pytorch_quantization.nn.modules import shared_input, weight_cache
from pytorch_quantization.tensor_quant import QuantDescriptor


@pytest.fixture(autouse=True)
def _defaults():
    shared_input.enable(True)
    yield
    shared_input.enable(True)


def fake_quant(x, amax, narrow=False, bits=8):
    """Round-to-nearest-even fake quantization over [-amax, amax] (signed; narrow: symmetric levels)."""
    bound = 2 ** (bits - 1) - 1
    scale = bound / amax
    low = -bound if narrow else -bound - 1
    return torch.clamp(torch.round(x * scale), low, bound) / scale


def conv(amax=2.0, narrow=False, seed=0):
    torch.manual_seed(seed)
    layer = QuantConv2d(4, 3, 3, padding=1, quant_desc_input=QuantDescriptor(narrow_range=narrow)).eval()
    layer.input_quantizer.amax = amax
    layer.weight_quantizer.amax = layer.weight.detach().abs().amax(dim=(1, 2, 3), keepdim=True)
    return layer


def expected(layer, x, amax, narrow=False):
    w_amax = layer.weight.detach().abs().amax(dim=(1, 2, 3), keepdim=True)
    return F.conv2d(fake_quant(x, amax, narrow), fake_quant(layer.weight.detach(), w_amax), layer.bias, padding=1)


@contextlib.contextmanager
def counting_input_quantizations(counter):
    """Counts fake-quantization kernel calls, checked or direct (weights are quantized by them too, but the
    weight cache serves them after the first call; tests warm it first)."""
    def counting(original):
        def counted(x, *args, **kwargs):
            counter[0] += 1
            return original(x, *args, **kwargs)
        return counted

    with mock.patch.object(kernels, "fake_quant", counting(kernels.fake_quant)), \
            mock.patch.object(kernels, "fake_quant_direct", counting(kernels.fake_quant_direct)):
        yield


def run(layers, x):
    """Every layer on ``x`` after warming the weight cache; (outputs, input quantizations)."""
    with torch.no_grad():
        for layer in layers:
            layer(x.clone())
        calls = [0]
        with counting_input_quantizations(calls):
            outs = [layer(x) for layer in layers]
    return outs, calls[0]


def x_input(seed=1):
    return torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(seed)) * 1.5


def test_same_range_is_quantized_once_and_matches_the_formula():
    layers, x = [conv(seed=s) for s in range(4)], x_input()
    outs, calls = run(layers, x)
    assert calls == 1
    for layer, out in zip(layers, outs):
        torch.testing.assert_close(out, expected(layer, x, 2.0), rtol=1e-5, atol=1e-5)
    shared_input.enable(False)
    unshared, calls = run(layers, x)
    assert calls == 4
    assert all(torch.equal(a, b) for a, b in zip(outs, unshared))


@pytest.mark.parametrize("other", [dict(amax=1.0), dict(narrow=True)], ids=["other amax", "narrow range"])
def test_another_range_or_setting_is_not_shared(other):
    first, second, x = conv(), conv(seed=1, **other), x_input()
    outs, calls = run([first, second], x)
    assert calls == 2
    torch.testing.assert_close(outs[0], expected(first, x, 2.0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outs[1], expected(second, x, other.get("amax", 2.0), other.get("narrow", False)),
                               rtol=1e-5, atol=1e-5)


AMAX_EDITS = {
    "fill_": lambda q: q.amax.fill_(1.0),
    "mul_ under no_grad": lambda q: q.amax.mul_(0.5),
}


@pytest.mark.parametrize("edit", AMAX_EDITS, ids=list(AMAX_EDITS))
def test_an_amax_edited_in_place_is_not_taken_for_its_old_value(edit):
    first, second, x = conv(), conv(seed=1), x_input()
    with torch.no_grad():
        AMAX_EDITS[edit](second.input_quantizer)  # now 1.0, while its note still says 2.0
    outs, calls = run([first, second], x)
    assert calls == 2
    torch.testing.assert_close(outs[1], expected(second, x, 1.0), rtol=1e-5, atol=1e-5)
    second.input_quantizer.amax = 1.0  # setting it again lets it share with others of that range
    third = conv(amax=1.0, seed=2)
    _, calls = run([second, third], x)
    assert calls == 1


def test_an_input_edited_in_place_is_quantized_again():
    first, second, x = conv(), conv(seed=1), x_input()
    with torch.no_grad():
        first(x)
        x.mul_(0.5)
        out = second(x)
    torch.testing.assert_close(out, expected(second, x, 2.0), rtol=1e-5, atol=1e-5)


def test_a_result_edited_in_place_is_not_reused():
    first, second, x = conv(), conv(seed=1), x_input()
    with torch.no_grad():
        result = shared_input.quantized_input(first.input_quantizer, x)
        torch.testing.assert_close(result, fake_quant(x, 2.0), rtol=0, atol=1e-6)
        result.zero_()
        again = shared_input.quantized_input(second.input_quantizer, x)
    assert again is not result
    torch.testing.assert_close(again, fake_quant(x, 2.0), rtol=0, atol=1e-6)


def test_results_live_as_long_as_the_input():
    layer, x = conv(), x_input()
    with torch.no_grad():
        result = weakref.ref(shared_input.quantized_input(layer.input_quantizer, x))
    gc.collect()
    assert result() is not None  # remembered with x
    del x
    gc.collect()
    assert result() is None


def test_autograd_and_inference_tensors_are_never_shared():
    layers = [conv(), conv(seed=1)]
    x = x_input().requires_grad_(True)
    calls = [0]
    with counting_input_quantizations(calls), \
            mock.patch.object(kernels, "fake_quant_cachemask", wraps=kernels.fake_quant_cachemask) as with_mask:
        outs = [layer(x) for layer in layers]
    assert calls[0] + with_mask.call_count - 2 == 2  # two input quantizations (plus the two weights)
    sum(o.sum() for o in outs).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    made_before = x_input(seed=2)
    with torch.inference_mode():
        for y in (x_input(), made_before):  # an inference tensor, and a normal one read under inference mode
            calls = [0]
            with counting_input_quantizations(calls):
                outs = [layer(y) for layer in layers]
                outs += [layer(y) for layer in layers]  # a second round: nothing remembered from the first
            assert calls[0] >= 4
            torch.testing.assert_close(outs[1], expected(layers[1], y, 2.0), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(outs[3], outs[1], rtol=0, atol=0)


def test_a_loaded_calibration_shares_and_a_linear_layer_too():
    source = conv()
    loaded = conv(seed=1)
    loaded.input_quantizer.reset_amax()
    loaded.load_state_dict({**loaded.state_dict(), "_input_quantizer._amax": source.input_quantizer.amax.clone()})
    x = x_input()
    outs, calls = run([source, loaded], x)
    assert calls == 1
    torch.testing.assert_close(outs[1], expected(loaded, x, 2.0), rtol=1e-5, atol=1e-5)
    torch.manual_seed(3)
    linears = [QuantLinear(6, 2).eval() for _ in range(2)]
    for layer in linears:
        layer.input_quantizer.amax = 2.0
        layer.weight_quantizer.amax = layer.weight.detach().abs().amax(dim=1, keepdim=True)
    _, calls = run(linears, x)
    assert calls == 0  # x was quantized with this range for the convolutions already
    _, calls = run(linears, x_input(seed=2))
    assert calls == 1


def test_weight_cache_is_independent():
    assert weight_cache.is_enabled() and shared_input.is_enabled()
    with pytest.raises(TypeError, match="True or False"):
        shared_input.enable(1)
