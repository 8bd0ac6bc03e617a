"""Tests of pytorch_quantization.tensor_quant against first-principles computations written here."""
import math

import numpy as np
import pytest
import torch

from pytorch_quantization import tensor_quant
from pytorch_quantization.tensor_quant import QuantDescriptor


# ----------------------------------------------------------------------------------------------- descriptors
class TestQuantDescriptor:

    @pytest.mark.parametrize("kwargs, error, match", [
        ({"num_bits": -1}, ValueError, "num_bits must be > 0"),
        ({"num_bits": 17}, ValueError, "at most 16"),
        ({"num_bits": 8.0}, TypeError, "num_bits"),
        ({"num_bits": True}, TypeError, "num_bits"),
        ({"num_bits": (5, 2)}, TypeError, r"tuple \(4,3\)"),
        ({"num_bits": (4, 3, 1)}, TypeError, r"tuple \(4,3\)"),
        ({"amax": -1.0}, ValueError, "amax"),
        ({"amax": float("nan")}, ValueError, "amax"),
        ({"amax": float("inf")}, ValueError, "amax"),
        ({"amax": [1.0, -0.5]}, ValueError, "amax"),
        ({"amax": []}, ValueError, "amax"),
        ({"amax": "1.0"}, TypeError, "amax"),
        ({"axis": 0, "learn_amax": True}, TypeError, "axis is ignored and must be None when learn_amax is true"),
        ({"axis": (0, 0)}, ValueError, "repeated"),
        ({"axis": 0.5}, TypeError, "axis"),
        ({"calib_method": "entropy"}, ValueError, "calib_method"),
        ({"scale_amax": 0}, ValueError, "scale_amax"),
        ({"name": 3}, TypeError, "name"),
        ({"bogus": 1}, TypeError, "bogus"),
    ])
    def test_validation_errors(self, kwargs, error, match):
        with pytest.raises(error, match=match):
            QuantDescriptor(**kwargs)

    def test_defaults(self):
        desc = QuantDescriptor()
        assert (desc.num_bits, desc.axis, desc.amax, desc.fake_quant, desc.unsigned, desc.narrow_range,
                desc.learn_amax, desc.calib_method, desc.scale_amax) == (8, None, None, True, False, False, False,
                                                                        "max", None)

    @pytest.mark.parametrize("kwargs", [
        {},
        {"num_bits": 4, "name": "w", "axis": (0,), "amax": [0.5, 1.5], "unsigned": True, "narrow_range": True},
        {"num_bits": (4, 3), "calib_method": "histogram", "fake_quant": False},
        {"learn_amax": True, "amax": 2.0, "scale_amax": 1.5},
        {"axis": (1, 2)},
    ])
    def test_dict_and_yaml_round_trip(self, kwargs):
        desc = QuantDescriptor(**kwargs)
        assert QuantDescriptor(**desc.dict()) == desc
        restored = QuantDescriptor.from_yaml(desc.to_yaml())
        assert restored == desc and hash(restored) == hash(desc)
        assert restored.num_bits == desc.num_bits and restored.axis == desc.axis
        if desc.amax is not None:
            np.testing.assert_array_equal(restored.amax, np.array(kwargs["amax"], dtype=np.float32))

    def test_inequality_and_yaml_errors(self):
        assert QuantDescriptor(num_bits=8) != QuantDescriptor(num_bits=7)
        assert QuantDescriptor(unsigned=True) != QuantDescriptor()
        assert QuantDescriptor() != "QuantDescriptor"
        with pytest.raises(ValueError, match="mapping"):
            QuantDescriptor.from_yaml("- 1\n- 2\n")

    def test_amax_accepts_tensor_and_ndarray(self):
        np.testing.assert_array_equal(QuantDescriptor(amax=torch.tensor([1.0, 2.0])).amax, [1.0, 2.0])
        assert QuantDescriptor(amax=np.float64(3.0)).amax == np.float32(3.0)

    def test_predefined_descriptors(self):
        assert tensor_quant.QUANT_DESC_8BIT_PER_TENSOR == QuantDescriptor(num_bits=8)
        assert tensor_quant.QUANT_DESC_UNSIGNED_8BIT_PER_TENSOR == QuantDescriptor(num_bits=8, unsigned=True)
        for name in ("CONV1D_WEIGHT_PER_CHANNEL", "CONV2D_WEIGHT_PER_CHANNEL", "CONV3D_WEIGHT_PER_CHANNEL",
                     "LINEAR_WEIGHT_PER_ROW"):
            desc = getattr(tensor_quant, f"QUANT_DESC_8BIT_{name}")
            assert desc.num_bits == 8 and desc.axis == 0 and not desc.unsigned
        for name in ("CONVTRANSPOSE1D", "CONVTRANSPOSE2D", "CONVTRANSPOSE3D"):  # weight [in, out / groups, k...]
            desc = getattr(tensor_quant, f"QUANT_DESC_8BIT_{name}_WEIGHT_PER_CHANNEL")
            assert desc.num_bits == 8 and desc.axis == 1 and not desc.unsigned
        assert tensor_quant.ScaledQuantDescriptor is QuantDescriptor

    def test_str_mentions_settings(self):
        text = str(QuantDescriptor(num_bits=4, name="act", axis=(0,), unsigned=True, narrow_range=True))
        assert "act" in text and "unsigned 4bit" in text and "axis=(0,)" in text and "narrow" in text


# ------------------------------------------------------------------------------------------- integer fake quant
def _first_principles(x, amax, num_bits=8, unsigned=False, narrow_range=True):
    """Fake quantization as documented: scale = bound / amax, round half to even, clamp, divide back.

    ``x`` and ``amax`` are numpy arrays in the compute dtype (float32, or float64 for float64 inputs).
    """
    bound = 2 ** (num_bits - 1 + int(unsigned)) - 1
    lo = 0 if unsigned else (-bound if narrow_range else -bound - 1)
    scale = x.dtype.type(bound) / amax.astype(x.dtype)
    return np.clip(np.round(x * scale), lo, bound) / scale


def _data(shape=(3, 4, 5), seed=0, scale=2.0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32) * scale


class TestFakeTensorQuant:

    @pytest.mark.parametrize("num_bits", [8, 4, 2])
    @pytest.mark.parametrize("narrow_range", [True, False])
    def test_per_tensor(self, num_bits, narrow_range):
        x = _data()
        amax = np.array(1.5, dtype=np.float32)
        out = tensor_quant.fake_tensor_quant(torch.from_numpy(x), torch.tensor(1.5), num_bits, False, narrow_range)
        np.testing.assert_array_equal(out.numpy(), _first_principles(x, amax, num_bits, False, narrow_range))

    def test_narrow_range_changes_only_the_negative_end(self):
        x = torch.tensor([-10.0, -1.0, 0.5, 10.0])
        amax = torch.tensor(1.0)
        narrow = tensor_quant.fake_tensor_quant(x, amax, 8, False, True)
        wide = tensor_quant.fake_tensor_quant(x, amax, 8, False, False)
        assert narrow[0].item() == pytest.approx(-1.0) and wide[0].item() == pytest.approx(-128 / 127)
        assert torch.equal(narrow[1:], wide[1:])

    def test_unsigned(self):
        x = np.abs(_data(shape=(5000,)))
        out = tensor_quant.fake_tensor_quant(torch.from_numpy(x), torch.tensor(2.0), 8, True)
        np.testing.assert_array_equal(out.numpy(), _first_principles(x, np.float32(2.0), 8, True))
        assert len(np.unique(out.numpy())) > 128  # 255 levels, finer than the signed grid

    @pytest.mark.parametrize("axis", [0, 1, 2])
    def test_per_channel(self, axis):
        x = _data()
        shape = [1, 1, 1]
        shape[axis] = x.shape[axis]
        amax = np.linspace(0.5, 3.0, x.shape[axis]).astype(np.float32).reshape(shape)
        out = tensor_quant.fake_tensor_quant(torch.from_numpy(x), torch.from_numpy(amax))
        np.testing.assert_array_equal(out.numpy(), _first_principles(x, amax))

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
    def test_half_precision_computes_in_float32(self, dtype):
        x = torch.from_numpy(_data()).to(dtype)
        out = tensor_quant.fake_tensor_quant(x, torch.tensor(1.5))
        assert out.dtype == dtype
        expected = torch.from_numpy(_first_principles(x.float().numpy(), np.float32(1.5))).to(dtype)
        assert torch.equal(out, expected)

    def test_float64(self):
        x = _data().astype(np.float64) * 1.0001
        out = tensor_quant.fake_tensor_quant(torch.from_numpy(x), torch.tensor(1.5, dtype=torch.float64))
        assert out.dtype == torch.float64
        np.testing.assert_array_equal(out.numpy(), _first_principles(x, np.float64(1.5)))

    def test_grid_and_error_bound(self):
        x = _data(shape=(1000,))
        amax = 1.5
        out = tensor_quant.fake_tensor_quant(torch.from_numpy(x), torch.tensor(amax)).numpy().astype(np.float64)
        step = amax / 127
        np.testing.assert_allclose(out / step, np.round(out / step), atol=1e-4)
        inside = np.abs(x) <= amax
        assert np.all(np.abs(out[inside] - x[inside]) <= step / 2 + 1e-6)
        np.testing.assert_allclose(out[~inside], np.sign(x[~inside]) * amax, rtol=1e-6)

    def test_ties_round_half_to_even(self):
        amax = torch.tensor(127.0)  # scale 1: inputs are the integers themselves
        out = tensor_quant.fake_tensor_quant(torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5]), amax)
        assert out.tolist() == [0.0, 2.0, 2.0, -0.0, -2.0]

    def test_special_values(self):
        out = tensor_quant.fake_tensor_quant(torch.tensor([float("inf"), -float("inf"), float("nan")]),
                                             torch.tensor(2.0))
        assert out[0].item() == pytest.approx(2.0) and out[1].item() == pytest.approx(-2.0)
        assert math.isnan(out[2].item())

    @pytest.mark.parametrize("amax", [0.0, 1e-30, 2.0 ** -24])
    def test_zero_amax_gives_zeros(self, amax):
        out = tensor_quant.fake_tensor_quant(torch.from_numpy(_data()), torch.tensor(amax))
        assert torch.equal(out, torch.zeros_like(out))

    def test_zero_amax_per_channel_only_zeroes_that_channel(self):
        x = torch.from_numpy(_data())
        amax = torch.tensor([0.0, 1.0, 2.0]).reshape(3, 1, 1)
        out = tensor_quant.fake_tensor_quant(x, amax)
        assert torch.equal(out[0], torch.zeros_like(out[0]))
        np.testing.assert_array_equal(out[1:].numpy(), _first_principles(x[1:].numpy(), amax[1:].numpy()))

    def test_straight_through_gradient(self):
        x = torch.tensor([-3.0, -1.0, -0.2, 0.0, 0.7, 1.0, 1.0001, 5.0], requires_grad=True)
        grad = torch.arange(1.0, 9.0)
        tensor_quant.fake_tensor_quant(x, torch.tensor(1.0)).backward(grad)
        expected = torch.where(x.detach().abs() <= 1.0, grad, torch.zeros_like(grad))
        assert torch.equal(x.grad, expected)

    def test_per_channel_gradient(self):
        x = torch.tensor([[0.5, 2.0], [0.5, 2.0]], requires_grad=True)
        tensor_quant.fake_tensor_quant(x, torch.tensor([[1.0], [3.0]])).sum().backward()
        assert x.grad.tolist() == [[1.0, 0.0], [1.0, 1.0]]

    def test_legacy_matches(self):
        x = torch.from_numpy(_data())
        amax = torch.tensor(1.7)
        assert torch.equal(tensor_quant.legacy_fake_tensor_quant(x, amax, 8),
                           tensor_quant.fake_tensor_quant(x, amax, 8))

    def test_bad_inputs(self):
        x = torch.ones(2, 3)
        with pytest.raises(TypeError, match="floating"):
            tensor_quant.fake_tensor_quant(torch.ones(3, dtype=torch.int32), torch.tensor(1.0))
        with pytest.raises(TypeError, match="amax"):
            tensor_quant.fake_tensor_quant(x, 1.0)
        with pytest.raises(ValueError, match="broadcast"):
            tensor_quant.fake_tensor_quant(x, torch.ones(4, 1))
        # value checks that read the data run in tensor_quant / legacy_fake_tensor_quant, as in 2.2.1
        for fn in (tensor_quant.tensor_quant, tensor_quant.legacy_fake_tensor_quant):
            with pytest.raises(ValueError, match="^Negative values in amax"):
                fn(x, torch.tensor(-1.0))
            with pytest.raises(TypeError, match="^Negative values encountered in unsigned quantization"):
                fn(-x, torch.tensor(1.0), 8, True)
        # the CPU fake-quant kernel reads the data anyway, so it raises 2.2.1's errors without an extra pass
        with pytest.raises(ValueError, match="^Negative values in amax"):
            tensor_quant.fake_tensor_quant(x, torch.tensor(-1.0))
        with pytest.raises(TypeError, match="^Negative values encountered in unsigned quantization"):
            tensor_quant.fake_tensor_quant(-x, torch.tensor(1.0), 8, True)

    def test_nan_propagates_without_raising(self):
        """2.2.1 propagates NaN (input or dynamic amax); the fake-quant forward reads no values to check."""
        x = torch.tensor([-1.0, 0.25, float("nan"), 0.5])
        out = tensor_quant.fake_tensor_quant(x, torch.tensor(1.0))
        assert torch.isnan(out[2]) and not torch.isnan(out[[0, 1, 3]]).any()
        torch.testing.assert_close(out[[0, 1, 3]], torch.round(x[[0, 1, 3]] * 127) / 127, rtol=0, atol=0)
        assert torch.isnan(tensor_quant.fake_tensor_quant(torch.ones(3), torch.tensor(float("nan")))).all()

    @pytest.mark.parametrize("fn", [tensor_quant.fake_tensor_quant, tensor_quant.tensor_quant,
                                    tensor_quant.legacy_fake_tensor_quant])
    def test_bits_without_levels_are_refused(self, fn):
        """0 bits and 1 signed bit have no non-zero level (2.2.1 returns all NaN): every entry point refuses."""
        x = torch.tensor([-1.0, -0.2, 0.0, 0.4, 1.0])
        for num_bits, unsigned in ((0, False), (1, False)):
            with pytest.raises(ValueError, match="no non-zero quantization level"):
                fn(x, torch.tensor(1.0), num_bits, unsigned)
        quant_nn = pytest.importorskip("pytorch_quantization.nn")
        with pytest.raises(ValueError, match="no non-zero quantization level"):
            quant_nn.TensorQuantizer(QuantDescriptor(num_bits=1, amax=1.0))(x)

    def test_one_bit_unsigned(self):
        """1 unsigned bit: the grid {0, amax}, rounding at amax / 2 (half to even)."""
        x = torch.tensor([0.0, 0.2, 0.5, 0.7, 1.0, 3.0])
        out = tensor_quant.fake_tensor_quant(x, torch.tensor(1.0), 1, True)
        assert out.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]


class TestTensorQuant:

    def test_integers_and_scale(self):
        x = _data()
        outputs, scale = tensor_quant.tensor_quant(torch.from_numpy(x), torch.tensor(1.5))
        assert outputs.dtype == torch.float32
        np.testing.assert_array_equal(outputs.numpy(), np.round(outputs.numpy()))
        assert outputs.abs().max().item() <= 127
        assert scale.item() == pytest.approx(127 / 1.5)
        np.testing.assert_array_equal((outputs / scale).numpy(), _first_principles(x, np.float32(1.5)))

    def test_per_channel_unsigned_and_gradient(self):
        x = torch.tensor([[0.1, 0.9, 2.0], [0.1, 0.9, 2.0]], requires_grad=True)
        outputs, scale = tensor_quant.tensor_quant(x, torch.tensor([[1.0], [4.0]]), 8, True)
        assert outputs.tolist() == [[round(0.1 * 255), round(0.9 * 255), 255.0],
                                    [round(0.1 * 255 / 4), round(0.9 * 255 / 4), round(2.0 * 255 / 4)]]
        assert scale.flatten().tolist() == pytest.approx([255.0, 255.0 / 4])
        outputs.sum().backward()
        assert x.grad.tolist() == [[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]

    def test_zero_amax(self):
        outputs, scale = tensor_quant.tensor_quant(torch.ones(3), torch.tensor(0.0))
        assert torch.equal(outputs, torch.zeros(3)) and torch.isfinite(scale).all()


class TestFakeAffineTensorQuant:

    @pytest.mark.parametrize("low, high, num_bits", [(-1.0, 3.0, 8), (0.5, 2.0, 4), (-2.0, -0.25, 8)])
    def test_against_reference(self, low, high, num_bits):
        x = np.random.default_rng(1).uniform(low - 1, high + 1, size=2000).astype(np.float32)
        out = tensor_quant.fake_affine_tensor_quant(torch.from_numpy(x), low, high, num_bits)
        step = np.float32((high - low) / (2 ** num_bits - 1))
        first = np.round(np.float32(low) / step)  # the grid: integer multiples of step, 2**num_bits of them
        expected = np.clip(np.round(x / step), first, first + 2 ** num_bits - 1) * step
        np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-6)
        assert len(np.unique(out.numpy())) <= 2 ** num_bits

    def test_gradient_inside_range(self):
        x = torch.tensor([-2.0, -1.0, 0.0, 3.0, 3.5], requires_grad=True)
        tensor_quant.fake_affine_tensor_quant(x, -1.0, 3.0).sum().backward()
        assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]

    def test_bad_range(self):
        with pytest.raises(ValueError, match="max_range"):
            tensor_quant.fake_affine_tensor_quant(torch.ones(3), 1.0, 1.0)


# ------------------------------------------------------------------------------------------------------- E4M3
def _e4m3_table():
    """(value, code) of every non-negative finite E4M3 (fn) code: bias 7, no infinities, S.1111.111 is NaN."""
    table = []
    for exponent in range(16):
        for mantissa in range(8):
            if exponent == 15 and mantissa == 7:
                continue
            if exponent == 0:
                value = mantissa / 8 * 2.0 ** -6
            else:
                value = (1 + mantissa / 8) * 2.0 ** (exponent - 7)
            table.append((value, exponent * 8 + mantissa))
    return table


def _e4m3_reference(x):
    """Round each value to the nearest table entry, ties to the even code, saturating at +-448; NaN stays NaN."""
    table = _e4m3_table()
    values = np.array([v for v, _ in table])
    codes = np.array([c for _, c in table])
    out = np.empty_like(x, dtype=np.float64)
    for i, v in enumerate(x.astype(np.float64).ravel()):
        if np.isnan(v):
            out.flat[i] = np.nan
            continue
        distance = np.abs(values - min(abs(v), values.max()))
        nearest = np.flatnonzero(distance == distance.min())
        pick = nearest[0] if len(nearest) == 1 else nearest[codes[nearest] % 2 == 0][0]
        out.flat[i] = math.copysign(values[pick], v)
    return out


class TestScaledE4M3:

    def _inputs(self):
        values = np.array([v for v, _ in _e4m3_table()])
        midpoints = (values[1:] + values[:-1]) / 2
        rng = np.random.default_rng(2)
        mixed = np.concatenate([values, midpoints, rng.uniform(0, 460, 500), 2.0 ** rng.uniform(-10, 8, 500),
                                [500.0, 1e6, 449.0, 463.9]])
        return np.concatenate([mixed, -mixed]).astype(np.float32)

    def test_table_has_the_format_extremes(self):
        values = sorted(v for v, _ in _e4m3_table())
        assert len(values) == 127 and values[-1] == 448 and values[1] == 2.0 ** -9 and values[8] == 2.0 ** -6

    def test_unscaled_against_table(self):
        x = self._inputs()
        out = tensor_quant.scaled_e4m3(torch.from_numpy(x), None)
        np.testing.assert_array_equal(out.numpy(), _e4m3_reference(x).astype(np.float32))

    def test_scaled_against_table(self):
        amax = 3.0
        x = self._inputs() * np.float32(amax / 448)
        out = tensor_quant.scaled_e4m3(torch.from_numpy(x), amax).numpy()
        scale = np.float32(448) / np.float32(amax)
        expected = _e4m3_reference(x * scale).astype(np.float32) / scale
        np.testing.assert_array_equal(out, expected)

    def test_nan_and_tiny(self):
        out = tensor_quant.scaled_e4m3(torch.tensor([float("nan"), 1e-30, 0.0]), None)
        assert math.isnan(out[0].item()) and out[1:].tolist() == [0.0, 0.0]

    def test_float16_input(self):
        x = torch.tensor([0.3, -7.1, 100.0], dtype=torch.float16)
        out = tensor_quant.scaled_e4m3(x, None)
        assert out.dtype == torch.float16
        np.testing.assert_array_equal(out.float().numpy(), _e4m3_reference(x.float().numpy()).astype(np.float32))

    def test_gradient(self):
        x = torch.tensor([-5.0, -1.0, 0.5, 2.0, 2.5], requires_grad=True)
        tensor_quant.scaled_e4m3(x, 2.0).sum().backward()
        assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]

    def test_errors(self):
        with pytest.raises(NotImplementedError, match="^Only support E=4 & M=3 for now"):
            tensor_quant.scaled_e4m3(torch.ones(3), 1.0, 5, 2)

    def test_per_channel_amax_matches_per_row_calls(self):
        """A per-channel amax (2.2.1 accepts any broadcastable shape) equals one per-tensor call per channel."""
        torch.manual_seed(0)
        x = torch.randn(3, 8)
        amax = x.abs().amax(dim=1, keepdim=True) * torch.tensor([[1.0], [0.5], [2.0]])
        out = tensor_quant.scaled_e4m3(x, amax)
        rows = torch.stack([tensor_quant.scaled_e4m3(x[i], amax[i, 0]) for i in range(3)])
        torch.testing.assert_close(out, rows, rtol=0, atol=0)
