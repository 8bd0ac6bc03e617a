"""TensorQuantizer behaviour against quantization computed from first principles in this file."""
import copy
import pickle

import numpy as np
import pytest
import torch

from pytorch_quantization import nn as quant_nn
from pytorch_quantization.tensor_quant import QuantDescriptor


def fake_ref(x, amax, lo=-128.0, hi=127.0):
    """round(x * hi/amax) clamped to [lo, hi], divided back: the documented formula, float32."""
    scale = torch.full_like(amax, hi) / amax  # true division (hi / amax would be reciprocal * hi)
    return torch.clamp(torch.round(x * scale), lo, hi) / scale


def calibrate(quantizer, *batches):
    quantizer.enable_calib()
    quantizer.disable_quant()
    for batch in batches:
        quantizer(batch)
    quantizer.load_calib_amax()
    quantizer.disable_calib()
    quantizer.enable_quant()


def test_calibrated_per_tensor_amax_is_abs_max_of_all_batches():
    torch.manual_seed(0)
    a, b = torch.randn(4, 5), torch.randn(3, 5) * 3
    q = quant_nn.TensorQuantizer(QuantDescriptor(num_bits=8))
    calibrate(q, a, b)
    expected = torch.cat([a, b]).abs().max()
    assert q.amax.numel() == 1
    assert float(q.amax) == pytest.approx(float(expected), rel=0, abs=0)
    x = torch.randn(6, 5) * 4
    torch.testing.assert_close(q(x), fake_ref(x, expected), rtol=0, atol=0)


def test_calibrated_per_channel_amax_keeps_channel_dim():
    torch.manual_seed(1)
    w = torch.randn(4, 3, 2, 2)
    q = quant_nn.TensorQuantizer(QuantDescriptor(num_bits=8, axis=(0,)))
    calibrate(q, w)
    expected = w.abs().flatten(1).max(dim=1).values.reshape(4, 1, 1, 1)
    assert tuple(q.amax.shape) == (4, 1, 1, 1)
    torch.testing.assert_close(q.amax, expected, rtol=0, atol=0)
    torch.testing.assert_close(q(w), fake_ref(w, expected), rtol=0, atol=0)


def test_dynamic_amax_uses_current_input():
    torch.manual_seed(2)
    x = torch.randn(3, 7)
    q = quant_nn.TensorQuantizer(QuantDescriptor(num_bits=8, axis=(0,)))
    amax = x.abs().max(dim=1, keepdim=True).values
    torch.testing.assert_close(q(x), fake_ref(x, amax), rtol=0, atol=0)
    assert q.amax is None


@pytest.mark.parametrize("narrow, lo", [(True, -127.0), (False, -128.0)])
def test_narrow_range_sets_lowest_integer(narrow, lo):
    q = quant_nn.TensorQuantizer(QuantDescriptor(num_bits=8, amax=1.0, narrow_range=narrow, fake_quant=False))
    x = torch.tensor([-5.0, -1.0, 0.5, 2.0])
    out = q(x)
    assert out.tolist() == [lo, -127.0, round(0.5 * 127), 127.0]


def test_unsigned_uses_0_to_255():
    q = quant_nn.TensorQuantizer(QuantDescriptor(num_bits=8, amax=2.0, unsigned=True))
    x = torch.tensor([0.0, 0.3, 1.0, 3.0])
    torch.testing.assert_close(q(x), fake_ref(x, torch.tensor(2.0), lo=0.0, hi=255.0), rtol=0, atol=0)


def test_real_quant_returns_integers_and_scale():
    q = quant_nn.TensorQuantizer(QuantDescriptor(num_bits=4, amax=2.0, fake_quant=False))
    x = torch.tensor([-3.0, -0.5, 0.26, 1.9])
    out = q(x)
    assert out.tolist() == [-8.0, round(-0.5 * 3.5), round(0.26 * 3.5), round(1.9 * 3.5)]
    assert float(q.scale) == pytest.approx(7 / 2.0)


def test_stage_switches():
    x = torch.linspace(-1, 1, 11)
    q = quant_nn.TensorQuantizer(QuantDescriptor(num_bits=2, amax=1.0))
    assert not torch.equal(q(x), x)
    q.disable()
    assert q(x) is x
    q.enable()
    q.disable_quant()
    assert torch.equal(q(x), x)
    q.enable_quant()
    torch.testing.assert_close(q(x), fake_ref(x, torch.tensor(1.0), lo=-2.0, hi=1.0), rtol=0, atol=0)


def test_amax_setter_validates():
    q = quant_nn.TensorQuantizer(QuantDescriptor())
    q.amax = 2.5
    assert float(q.amax) == 2.5
    assert q.step_size.item() == pytest.approx(2.5 / 127)
    with pytest.raises(ValueError, match="^Negative values in amax"):
        q.amax = -1.0
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="must be finite"):
            q.amax = bad
    with pytest.raises(RuntimeError, match="^Changing shape when setting amax is not allowed"):
        q.amax = [1.0, 2.0]
    q.amax = None  # 2.2.1 logs an error and changes nothing
    assert float(q.amax) == 2.5
    pc = quant_nn.TensorQuantizer(QuantDescriptor(axis=(0,)))
    pc.amax = torch.ones(3, 1)
    with pytest.raises(RuntimeError, match="^Changing shape when setting amax is not allowed"):
        pc.amax = torch.ones(4, 1)


@pytest.mark.parametrize("amax", [np.array([3.0, 0.5, 1.5], dtype=np.float32), torch.tensor([[3.0, 0.5, 1.5]]),
                                  [[3.0], [0.5]]])
def test_amax_setter_takes_any_broadcastable_shape(amax):
    """2.2.1 stores any ndarray / tensor / list and broadcasts it against the input in forward."""
    x = torch.randn(2, 3) * 2
    q = quant_nn.TensorQuantizer(QuantDescriptor())
    q.amax = amax
    a = amax if isinstance(amax, torch.Tensor) else torch.as_tensor(np.array(amax, dtype=np.float32))
    torch.testing.assert_close(q(x), fake_ref(x, a), rtol=0, atol=0)


def test_pre_quant_scale_is_used_in_forward():
    x = torch.tensor([[0.0, 0.4, 1.1, 2.0]])
    q = quant_nn.TensorQuantizer(QuantDescriptor(num_bits=4, amax=7.0))
    q.pre_quant_scale = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    torch.testing.assert_close(q(x), fake_ref(x * torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.tensor(7.0), lo=-8.0, hi=7.0),
                               rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="^Changing shape when setting pre_quant_scale is not allowed"):
        q.pre_quant_scale = torch.ones(3)


def test_nan_dynamic_amax_propagates():
    x = torch.tensor([1.0, float("nan"), -0.5])
    out = quant_nn.TensorQuantizer(QuantDescriptor())(x)
    assert torch.isnan(out).all()  # the dynamic amax is NaN, as in 2.2.1


def test_axis_out_of_range_and_amax_shape_mismatch():
    q = quant_nn.TensorQuantizer(QuantDescriptor(axis=(3,)))
    with pytest.raises(ValueError, match="out of range"):
        q(torch.randn(2, 3))
    pc = quant_nn.TensorQuantizer(QuantDescriptor(axis=(0,)))
    pc.amax = torch.ones(5, 1, 1)
    with pytest.raises(ValueError, match="does not fit"):
        pc(torch.randn(4, 2, 2))


def test_one_dim_per_channel_amax_is_broadcast_along_axis():
    torch.manual_seed(3)
    x = torch.randn(2, 3, 4)
    amax = torch.tensor([0.5, 1.0, 2.0])
    q = quant_nn.TensorQuantizer(QuantDescriptor(axis=(1,), amax=amax.tolist()))
    torch.testing.assert_close(q(x), fake_ref(x, amax.reshape(1, 3, 1)), rtol=0, atol=0)


def test_load_calib_amax_strict():
    q = quant_nn.TensorQuantizer(QuantDescriptor())
    with pytest.raises(RuntimeError, match="^Calibrator returned None"):
        q.load_calib_amax()
    q.load_calib_amax(strict=False)
    assert q.amax is None


def test_state_dict_amax_creates_buffer_in_uncalibrated_quantizer():
    src = quant_nn.TensorQuantizer(QuantDescriptor(axis=(0,)))
    calibrate(src, torch.arange(6.0).reshape(3, 2))
    dst = quant_nn.TensorQuantizer(QuantDescriptor(axis=(0,)))
    assert dst.amax is None
    dst.load_state_dict(src.state_dict(), strict=True)
    torch.testing.assert_close(dst.amax, torch.tensor([[1.0], [3.0], [5.0]]), rtol=0, atol=0)


def test_deepcopy_and_pickle_keep_amax():
    q = quant_nn.TensorQuantizer(QuantDescriptor(amax=3.0))
    for clone in (copy.deepcopy(q), pickle.loads(pickle.dumps(q))):
        assert float(clone.amax) == 3.0


def test_learn_amax_gradient_reaches_clip_range():
    q = quant_nn.TensorQuantizer(QuantDescriptor(amax=1.0, learn_amax=True))
    x = torch.tensor([-2.0, 0.5, 3.0], requires_grad=True)
    q(x).sum().backward()
    # inside the range the STE passes gradient; elements clipped at +1 feed clip_value_max, at -1 clip_value_min
    assert x.grad.tolist() == [0.0, 1.0, 0.0]
    assert q.clip.clip_value_max.grad.item() == 1.0
    assert q.clip.clip_value_min.grad.item() == 1.0


def test_enable_clip_without_learn_amax_raises():
    with pytest.raises(ValueError, match="learn_amax"):
        quant_nn.TensorQuantizer(QuantDescriptor()).enable_clip()


def test_use_fb_fake_quant_matches_torch_native():
    torch.manual_seed(4)
    x = torch.randn(4, 3)
    q = quant_nn.TensorQuantizer(QuantDescriptor(axis=(1,), amax=[1.0, 0.5, 2.0]))
    quant_nn.TensorQuantizer.use_fb_fake_quant = True
    try:
        out = q(x)
    finally:
        quant_nn.TensorQuantizer.use_fb_fake_quant = False
    scale = torch.tensor([1.0, 0.5, 2.0]) / 127
    expected = torch.clamp(torch.round(x / scale), -128, 127) * scale
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-7)


def test_pre_quant_scale_multiplies_input_first():
    q = quant_nn.TensorQuantizer(QuantDescriptor(amax=4.0))
    q.pre_quant_scale = torch.tensor([2.0, 0.5])
    x = torch.tensor([[1.0, 3.0]])
    torch.testing.assert_close(q(x), fake_ref(x * torch.tensor([2.0, 0.5]), torch.tensor(4.0)), rtol=0, atol=0)


def test_extra_repr_describes_settings():
    q = quant_nn.TensorQuantizer(QuantDescriptor(num_bits=6, axis=(0,), narrow_range=True))
    text = repr(q)
    assert "6bit" in text and "narrow" in text and "axis=(0,)" in text and "dynamic" in text
    q.disable()
    assert "disabled" in repr(q)


def test_bad_descriptor_type():
    with pytest.raises(TypeError, match="QuantDescriptor"):
        quant_nn.TensorQuantizer({"num_bits": 8})


def test_e4m3_descriptor_routes_to_scaled_fp8_cast():
    q = quant_nn.TensorQuantizer(QuantDescriptor(num_bits=(4, 3), amax=2.0))
    x = torch.tensor([-3.0, -0.3, 0.01, 0.7, 1.9])
    scale = torch.full((), 448.0) / 2.0
    expected = (x * scale).to(torch.float8_e4m3fn).float() / scale
    torch.testing.assert_close(q(x), expected)
    assert q.maxbound == 448.0


def test_init_learn_amax_copies_fixed_amax():
    q = quant_nn.TensorQuantizer(QuantDescriptor(learn_amax=True))
    with pytest.raises(RuntimeError, match="calibrate or set amax"):
        q.init_learn_amax()
    q.amax = 0.75
    q.init_learn_amax()
    assert q.clip.clip_value_max.item() == 0.75 and q.clip.clip_value_min.item() == -0.75
    with pytest.raises(RuntimeError, match="learn_amax=False"):
        quant_nn.TensorQuantizer(QuantDescriptor()).init_learn_amax()


def test_load_calib_amax_passes_arguments_to_histogram_calibrator():
    torch.manual_seed(5)
    x = torch.rand(10000) * 4.0
    q = quant_nn.TensorQuantizer(QuantDescriptor(calib_method="histogram"))
    q.enable_calib()
    q.disable_quant()
    q(x)
    q.load_calib_amax("percentile", percentile=50.0)
    bin_width = x.max().item() / 2048
    assert abs(float(q.amax) - x.median().item()) <= 2 * bin_width


@pytest.mark.parametrize("bad, match", [(float("nan"), "must be finite"), (-1.0, "^Negative values in amax")])
def test_state_dict_amax_is_validated_when_loaded(bad, match):
    q = quant_nn.TensorQuantizer(QuantDescriptor(amax=1.0))
    with pytest.raises(ValueError, match=match):
        q.load_state_dict({"_amax": torch.tensor(bad)})
    assert float(q.amax) == 1.0  # unchanged
