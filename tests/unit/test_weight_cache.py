"""weight_cache: a quantized module reuses its fake-quantized weight only while nothing it depends on changed.

Every case compares the module's output with an independent expectation: the float op applied to the
weight fake-quantized right now by ``_reference`` (written out here), so a stale cache entry fails.
Reuse itself is observed by counting calls into ``kernels.fake_quant`` and ``kernels.fake_quant_cachemask``.
"""
import contextlib
from unittest import mock

import pytest
import torch
import torch.nn.functional as F

from pytorch_quantization import _reference, kernels
from pytorch_quantization.nn import QuantConv2d, QuantLinear, TensorQuantizer
from pytorch_quantization.nn.modules import weight_cache


@pytest.fixture(autouse=True)
def _fresh_cache():
    weight_cache.enable(True)
    weight_cache.clear()
    yield
    weight_cache.enable(True)
    weight_cache.clear()


@contextlib.contextmanager
def count_weight_quantizations(counter):
    """Counts calls of kernels.fake_quant / fake_quant_cachemask (what a weight quantizer runs, without and with
    autograd) into counter[0]."""
    def counting(original):
        def wrapper(*args, **kwargs):
            counter[0] += 1
            return original(*args, **kwargs)
        return wrapper

    with mock.patch.object(kernels, "fake_quant", counting(kernels.fake_quant)), \
            mock.patch.object(kernels, "fake_quant_cachemask", counting(kernels.fake_quant_cachemask)):
        yield


def make_conv(seed=0, amax_fraction=1.0):
    """A weight-only QuantConv2d with per-channel amax = amax_fraction * max |weight| (below 1: some clipping)."""
    torch.manual_seed(seed)
    conv = QuantConv2d(3, 4, 3, padding=1, quant_act=False).eval()
    conv.weight_quantizer.amax = conv.weight.detach().abs().amax(dim=(1, 2, 3), keepdim=True) * amax_fraction
    return conv


def expected_conv(conv, x):
    """The float convolution with the weight fake-quantized by the reference definition now."""
    q = conv.weight_quantizer
    amax = q.amax.detach()
    if q._scale_amax is not None:  # pylint: disable=protected-access
        amax = amax * q._scale_amax  # pylint: disable=protected-access
    weight = _reference.fake_quant(conv.weight.detach(), amax, q.num_bits, q.unsigned, q.narrow_range)
    return F.conv2d(x, weight, conv.bias, padding=1)


def inputs(seed=1):
    return torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_hit_returns_the_same_result_without_quantizing_again():
    conv, x, calls = make_conv(), inputs(), [0]
    with count_weight_quantizations(calls), torch.no_grad():
        first = conv(x)
        second = conv(x)
        third = conv(inputs(2))
    assert calls[0] == 1
    assert torch.equal(first, second) and torch.equal(first, expected_conv(conv, x))
    assert torch.equal(third, expected_conv(conv, inputs(2)))
    weight_cache.enable(False)
    with torch.no_grad():
        assert torch.equal(conv(x), first)  # the uncached computation agrees bit for bit


def test_weight_without_requires_grad_is_cached_with_grad_enabled():
    conv, x, calls = make_conv(), inputs(), [0]
    conv.weight.requires_grad_(False)
    with count_weight_quantizations(calls):
        conv(x)
        conv(x)
    assert calls[0] == 1


WEIGHT_EDITS = {
    "no_grad in-place": lambda conv: torch.no_grad()(conv.weight.mul_)(1.5),
    "in-place on a detached view": lambda conv: conv.weight.detach()[0].mul_(-2.0),
    "assigning .data": lambda conv: setattr(conv.weight, "data", conv.weight.detach() * 0.5),
    "load_state_dict": lambda conv: conv.load_state_dict(make_conv(seed=5).state_dict()),
    "replacing the parameter": lambda conv: setattr(conv, "weight", torch.nn.Parameter(conv.weight.detach() + 0.1)),
    "to float64": lambda conv: conv.double(),
}


@pytest.mark.parametrize("edit", WEIGHT_EDITS, ids=list(WEIGHT_EDITS))
def test_weight_changes_invalidate(edit):
    conv, calls = make_conv(), [0]
    x = inputs()
    with count_weight_quantizations(calls), torch.no_grad():
        before = conv(x)
        WEIGHT_EDITS[edit](conv)
        x = x.to(conv.weight.dtype)
        after = conv(x)
    assert calls[0] == 2
    assert torch.equal(after, expected_conv(conv, x))
    assert not torch.equal(after.to(before.dtype), before)


AMAX_EDITS = {
    "amax.fill_": lambda q: q.amax.fill_(0.05),
    "amax setter": lambda q: setattr(q, "amax", torch.full_like(q.amax, 0.05)),
    "no_grad amax.mul_": lambda q: torch.no_grad()(q.amax.mul_)(0.25),
    "load_calib_amax": lambda q: (q.enable_calib(), q.disable_quant(), q(torch.full((4, 3, 3, 3), 0.05)),
                                  q.disable_calib(), q.enable_quant(), q.load_calib_amax()),
}


@pytest.mark.parametrize("edit", AMAX_EDITS, ids=list(AMAX_EDITS))
def test_amax_changes_invalidate(edit):
    conv, x = make_conv(), inputs()
    with torch.no_grad():
        before = conv(x)
        AMAX_EDITS[edit](conv.weight_quantizer)
        after = conv(x)
    assert torch.equal(after, expected_conv(conv, x))
    assert not torch.equal(after, before)


SETTING_EDITS = {
    "num_bits": lambda q: setattr(q, "num_bits", 4),
    "narrow_range": lambda q: setattr(q, "narrow_range", not q.narrow_range),
    "scale_amax": lambda q: setattr(q, "_scale_amax", 0.5),
}


@pytest.mark.parametrize("edit", SETTING_EDITS, ids=list(SETTING_EDITS))
def test_setting_changes_invalidate(edit):
    conv, x = make_conv(amax_fraction=0.5), inputs()  # clipped weights, so narrow_range shows
    with torch.no_grad():
        before = conv(x)
        SETTING_EDITS[edit](conv.weight_quantizer)
        after = conv(x)
    assert torch.equal(after, expected_conv(conv, x))
    assert not torch.equal(after, before)


def test_disabling_the_quantizer_or_quantization_gives_the_float_weight():
    conv, x = make_conv(), inputs()
    with torch.no_grad():
        quantized = conv(x)
        plain = F.conv2d(x, conv.weight, conv.bias, padding=1)
        for off, on in (("disable", "enable"), ("disable_quant", "enable_quant")):
            getattr(conv.weight_quantizer, off)()
            assert torch.equal(conv(x), plain)
            getattr(conv.weight_quantizer, on)()
            assert torch.equal(conv(x), quantized)


def test_native_fake_quant_switch_invalidates():
    conv, x = make_conv(), inputs()
    with torch.no_grad():
        ours = conv(x)
        with mock.patch.object(TensorQuantizer, "use_fb_fake_quant", True):
            native = conv(x)
        q = conv.weight_quantizer
        scale = (q.amax.reshape(-1) / 127).float()
        weight = torch.fake_quantize_per_channel_affine(conv.weight, scale, torch.zeros(4, dtype=torch.int32), 0,
                                                        -128, 127)
        assert torch.equal(native, F.conv2d(x, weight, conv.bias, padding=1))
        assert torch.equal(conv(x), ours)


def test_grad_enabled_recomputes_and_gives_weight_gradients():
    conv, x, calls = make_conv(), inputs(), [0]
    with count_weight_quantizations(calls):
        with torch.no_grad():
            conv(x)
        out = conv(x)
        out.sum().backward()
        conv(x)
    assert calls[0] == 3
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


def test_calibration_and_hooks_always_call_the_quantizer():
    conv, x = make_conv(), inputs()
    q = conv.weight_quantizer
    seen = []
    handle = q.register_forward_hook(lambda module, args, output: seen.append(1))
    with torch.no_grad():
        conv(x)
        conv(x)
    handle.remove()
    assert len(seen) == 2
    q.enable_calib()
    with torch.no_grad():
        conv(x)
        conv(x)
    assert q._calibrator._calib_amax is not None  # pylint: disable=protected-access


def test_in_place_edit_of_dot_data_needs_clear():
    # PyTorch gives ``.data`` its own version counter, so this edit is invisible to the cache (documented)
    conv, x = make_conv(), inputs()
    with torch.no_grad():
        conv(x)
        conv.weight.data.mul_(-1.0)
        weight_cache.clear(conv)
        assert torch.equal(conv(x), expected_conv(conv, x))


def test_entries_do_not_keep_modules_alive_or_travel_with_state():
    import copy  # pylint: disable=import-outside-toplevel
    import gc  # pylint: disable=import-outside-toplevel
    import weakref  # pylint: disable=import-outside-toplevel
    linear = QuantLinear(5, 3, quant_act=False).eval()
    linear.weight_quantizer.amax = torch.tensor([1.0, 1.0, 1.0]).reshape(3, 1)
    with torch.no_grad():
        out = linear(torch.ones(2, 5))
    assert "weight_cache" not in str(sorted(linear.state_dict()))
    clone = copy.deepcopy(linear)
    with torch.no_grad():
        clone.weight.mul_(0.0)
        assert torch.equal(clone(torch.ones(2, 5)), clone.bias.expand(2, 3))
        assert torch.equal(linear(torch.ones(2, 5)), out)
    ref = weakref.ref(linear)
    del linear
    gc.collect()
    assert ref() is None


def test_enable_rejects_non_bool():
    with pytest.raises(TypeError, match="True or False"):
        weight_cache.enable(1)


def test_a_module_made_under_inference_mode_is_never_cached():
    """Its weight and amax are inference tensors, which keep no version counter: an in-place edit of them inside
    inference mode could not be seen, so the weight is quantized on every call (and nothing raises)."""
    calls = [0]
    with torch.inference_mode():
        conv, x = make_conv(), inputs()
        expected_first = expected_conv(conv, x)
        with count_weight_quantizations(calls):
            first = conv(x)
            conv.weight_quantizer.amax.mul_(0.5)  # an edit no version counter records
            second = conv(x)
        torch.testing.assert_close(first, expected_first)
        torch.testing.assert_close(second, expected_conv(conv, x))
        assert not torch.allclose(first, second)
    assert calls[0] == 2
