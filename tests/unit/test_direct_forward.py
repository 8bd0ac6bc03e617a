"""TensorQuantizer's direct kernel path (``_direct_forward``) and the settings stamp it relies on.

With a static per-tensor amax the forward calls the compiled kernel straight away. Checked here: the results equal
the reference definitions bit for bit; the path is taken (counted calls of ``kernels.fake_quant_direct`` /
``scaled_e4m3_direct``) only where no gradient, tracing, native fake quantization or export needs the full path;
every change of a setting or buffer after the first call takes effect on the next one.
"""
import contextlib
import copy
import pickle
from unittest import mock

import pytest
import torch

from pytorch_quantization import _reference, kernels, ops
from pytorch_quantization import nn as quant_nn
from pytorch_quantization.tensor_quant import QuantDescriptor

pytestmark = pytest.mark.skipif(not ops.serves("cpu"), reason="compiled extension pytorch_quantization._C not built "
                                "(pip install -e . --no-build-isolation): without it there is no direct path")


@contextlib.contextmanager
def counting_direct_calls():
    """Yields a list whose length is the number of direct kernel calls made inside the block."""
    calls = []

    def counting(name):
        original = getattr(kernels, name)

        def counted(*args):
            calls.append(name)
            return original(*args)
        return counted

    with mock.patch.object(kernels, "fake_quant_direct", counting("fake_quant_direct")), \
            mock.patch.object(kernels, "scaled_e4m3_direct", counting("scaled_e4m3_direct")):
        yield calls


def quantizer(amax=2.5, **desc):
    """A quantizer with a static amax (QuantDescriptor's defaults otherwise: 8 bits, signed, full range)."""
    return quant_nn.TensorQuantizer(QuantDescriptor(amax=amax, **desc))


def x_input(dtype=torch.float32, seed=0, n=4096):
    return (torch.randn(n, generator=torch.Generator().manual_seed(seed)) * 2.0).to(dtype)


def expected(q, x):
    """What ``q(x)`` must be, from the reference definitions and q's current settings."""
    amax = q.amax.detach().reshape(())
    if q.num_bits == (4, 3):
        return _reference.scaled_e4m3(x, amax)
    return _reference.fake_quant(x, amax, q.num_bits, q.unsigned, q.narrow_range)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("desc", [dict(num_bits=8), dict(num_bits=8, narrow_range=False), dict(num_bits=4),
                                  dict(num_bits=8, unsigned=True), dict(num_bits=1, unsigned=True),
                                  dict(num_bits=(4, 3))], ids=str)
def test_direct_path_is_taken_and_matches_the_reference(dtype, desc):
    q = quantizer(**desc)
    x = x_input(dtype)
    if desc.get("unsigned"):
        x = x.abs()
    with torch.no_grad(), counting_direct_calls() as calls:
        out = q(x)
    assert len(calls) == 1
    assert out.dtype == dtype and torch.equal(out, expected(q, x))


def test_float64_amax_is_read_as_it_is():
    q = quantizer()
    q._amax = torch.tensor(1.7, dtype=torch.float64)  # pylint: disable=protected-access
    x = x_input()
    with torch.no_grad(), counting_direct_calls() as calls:
        out = q(x)
    assert len(calls) == 1 and torch.equal(out, _reference.fake_quant(x, q.amax, 8, False, False))


def set_attr(name, value):
    return lambda q: setattr(q, name, value)


EDITS = {
    "num_bits": set_attr("num_bits", 4),
    "narrow_range": set_attr("narrow_range", True),
    "amax setter": set_attr("amax", 0.75),
    "amax fill_": lambda q: q.amax.fill_(0.6),
    "amax buffer swapped without setattr": lambda q: q._buffers.__setitem__("_amax", torch.tensor(0.9)),
    "amax deleted (dynamic)": lambda q: delattr(q, "_amax"),
    "amax re-registered": lambda q: (delattr(q, "_amax"), q.register_buffer("_amax", torch.tensor(1.1))),
    "amax moved": lambda q: q.to(torch.float64),
}


@pytest.mark.parametrize("edit", list(EDITS), ids=list(EDITS))
def test_changes_after_the_first_call_take_effect(edit):
    q, x = quantizer(), x_input()
    with torch.no_grad():
        before = q(x)
        EDITS[edit](q)
        after = q(x)
    if q.amax is None:  # dynamic range: amax = max |x|
        want = _reference.fake_quant(x, x.abs().max(), 8, False, True)
    else:
        want = _reference.fake_quant(x, q.amax.detach().float().reshape(()), q.num_bits, q.unsigned, q.narrow_range)
    assert torch.equal(after, want)
    if edit != "amax moved":  # a float64 amax of the same value quantizes alike
        assert not torch.equal(after, before)


def test_switches_after_the_first_call_take_effect():
    """(disable / disable_quant after a first call: test_nn_tensor_quantizer.test_stage_switches)"""
    q, x = quantizer(), x_input()
    with torch.no_grad():
        q(x)
        q.enable_calib()
        q(x)
        q.disable_calib()
        assert q.calibrator.compute_amax().item() == x.abs().max().item()
        q._scale_amax = 0.5  # pylint: disable=protected-access
        assert torch.equal(q(x), _reference.fake_quant(x, torch.tensor(1.25), 8, False, False))
        q._scale_amax = None  # pylint: disable=protected-access
        q.pre_quant_scale = torch.tensor(2.0)
        assert torch.equal(q(x), _reference.fake_quant(x * 2.0, torch.tensor(2.5), 8, False, False))


def test_gradient_flow_takes_the_autograd_path():
    q = quantizer(amax=1.0)
    x = x_input().requires_grad_()
    with counting_direct_calls() as calls:
        out = q(x)
    assert not calls
    out.sum().backward()
    assert torch.equal(x.grad, (x.detach().abs() <= 1.0).float())  # straight-through estimator
    with torch.no_grad(), counting_direct_calls() as calls:
        q(x)
    assert len(calls) == 1


def test_native_fake_quant_switch_takes_the_full_path():
    q, x = quantizer(amax=1.27), x_input()
    with torch.no_grad():
        q(x)
        quant_nn.TensorQuantizer.use_fb_fake_quant = True
        try:
            with counting_direct_calls() as calls:
                out = q(x)
        finally:
            quant_nn.TensorQuantizer.use_fb_fake_quant = False
    assert not calls
    assert torch.equal(out, torch.fake_quantize_per_tensor_affine(x, 0.01, 0, -128, 127))


def test_integer_input_still_gets_the_type_error():
    with torch.no_grad(), pytest.raises(TypeError, match="floating point"):
        quantizer()(torch.arange(8))


def test_every_kind_of_change_renews_the_stamp():
    q = quantizer()
    stamps = [q._settings_stamp]  # pylint: disable=protected-access

    def renewed():
        stamps.append(q._settings_stamp)  # pylint: disable=protected-access
        return stamps[-1] != stamps[-2]

    q.narrow_range = False
    assert renewed()
    del q._amax
    assert renewed()
    q.register_buffer("_amax", torch.tensor(1.0))
    assert renewed()
    q.to(torch.float64)
    assert renewed()
    q.load_state_dict({"_amax": torch.tensor(3.0, dtype=torch.float64)})
    assert renewed()
    q(x_input())
    assert not renewed()  # a forward changes nothing


@pytest.mark.parametrize("copier", [copy.deepcopy, lambda q: pickle.loads(pickle.dumps(q))], ids=["deepcopy", "pickle"])
def test_copies_derive_their_own_plan(copier):
    q, x = quantizer(), x_input()
    with torch.no_grad():
        q(x)
        twin = copier(q)
        assert "_derived_cache" not in vars(twin)
        twin.amax = 0.5
        assert torch.equal(twin(x), _reference.fake_quant(x, torch.tensor(0.5), 8, False, False))
        assert torch.equal(q(x), _reference.fake_quant(x, torch.tensor(2.5), 8, False, False))
