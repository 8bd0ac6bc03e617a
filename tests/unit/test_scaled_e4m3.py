"""The one-pass scaled E4M3 op (``scaled_e4m3``: ``e4m3(x * s) / s``, ``s = 448 / amax``, tiny inputs to 0)
against its composite definition ``_reference.scaled_e4m3`` (float32 multiply, torch's float8 cast, divide,
select), bit for bit, and against closed forms where the scale is a power of two.
"""
import math

import pytest
import torch
from test_kernels import assert_bitwise_equal, e4m3_probe_values

from pytorch_quantization import _reference, kernels, ops, tensor_quant

pytestmark = pytest.mark.skipif(not ops.serves("cpu"), reason="compiled extension pytorch_quantization._C not built "
                                "(pip install -e . --no-build-isolation); the reference path is tested elsewhere")

OPS = torch.ops.pytorch_quantization
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
# amax values: unscaled (448), ordinary, tiny and huge, zero (every finite input to 0), below the 2**-24 floor,
# infinite (scale 0: 0 / 0 gives NaN everywhere) and negative (a negative scale)
AMAXES = [448.0, 1.0, 3.7, 1e-3, 1e4, 0.0, 2.0 ** -26, math.inf, -2.5]


def probe_inputs(amax, dtype):
    """Every E4M3 code, the midpoints between neighbours and the special values, mapped onto ``amax``'s range,
    plus the values around the 2**-24 zeroing threshold."""
    values = e4m3_probe_values() * (abs(amax) / 448 if math.isfinite(amax) and amax != 0 else 1.0)
    threshold = torch.tensor([2.0 ** -24, 2.0 ** -25, 2.0 ** -24 * 1.5, 0.0, -0.0, 1e-30])
    return torch.cat([values, threshold, -threshold]).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("amax", AMAXES)
def test_per_tensor_matches_composite_bit_for_bit(dtype, amax):
    x = probe_inputs(amax, dtype)
    amax_t = torch.tensor([amax])
    expected = _reference.scaled_e4m3(x, amax_t)
    assert_bitwise_equal(OPS.scaled_e4m3(x, amax_t, None), expected)
    assert_bitwise_equal(OPS.scaled_e4m3(x[::3], amax_t, None), expected[::3])  # non-contiguous
    assert_bitwise_equal(tensor_quant.scaled_e4m3(x, amax), expected)  # the autograd Function uses the op


@pytest.mark.parametrize("dtype", DTYPES)
def test_power_of_two_scale_closed_form(dtype):
    """With amax = 448 * 2**k the scale is exact, so every (representable) E4M3 code times 2**k comes back."""
    codes = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).float()
    codes = codes[torch.isfinite(codes)]
    for k in (-3, 0, 5):
        x = (codes * 2.0 ** k).to(dtype)
        expected = torch.where(x.double().abs() < 2.0 ** -24, 0.0, x.double()).to(dtype)
        assert_bitwise_equal(OPS.scaled_e4m3(x, torch.tensor([448.0 * 2.0 ** k]), None), expected)


def test_edge_values():
    out = OPS.scaled_e4m3(torch.tensor([math.nan, math.inf, -math.inf, 1e30, -0.0]), torch.tensor([2.0]), None)
    assert math.isnan(out[0]) and out[1:4].tolist() == [2.0, -2.0, 2.0]  # saturates at amax
    assert out[4].view(torch.int32).item() == 0  # +0.0
    # with amax = 2**-20 the grid reaches far below 2**-24: 2**-24 is kept, anything smaller becomes +0.0
    fine = OPS.scaled_e4m3(torch.tensor([2.0 ** -24, 2.0 ** -25, -2.0 ** -25, -2.0 ** -24]),
                           torch.tensor([2.0 ** -20]), None)
    assert fine.tolist() == [2.0 ** -24, 0.0, 0.0, -2.0 ** -24] and fine[1:3].view(torch.int32).tolist() == [0, 0]
    zero_amax = OPS.scaled_e4m3(torch.tensor([1.0, -3.0, math.nan]), torch.tensor([0.0]), None)
    assert zero_amax[:2].tolist() == [0.0, 0.0] and math.isnan(zero_amax[2])


def test_float64_threshold_decided_in_float64():
    """Just below 2**-24 in float64 rounds up to 2**-24 in float32; the composite zeroes it (its test is in
    float64), and so must the op."""
    x = torch.tensor([2.0 ** -24 * (1 - 2.0 ** -40), 2.0 ** -24], dtype=torch.float64)
    amax = torch.tensor([2.0 ** -20])  # fine enough a grid to keep 2**-24
    out = OPS.scaled_e4m3(x, amax, None)
    assert out.tolist() == [0.0, 2.0 ** -24]
    assert_bitwise_equal(out, _reference.scaled_e4m3(x, amax))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis", [((8, 3, 5, 5), 0), ((4, 6, 70), 1), ((3, 5, 17), 2), ((40, 3), -1),
                                        ((1, 200000), 0)])
def test_random_data_per_tensor_and_per_channel(dtype, shape, axis):
    gen = torch.Generator().manual_seed(sum(shape))
    x = (torch.randn(shape, generator=gen) * torch.rand(shape, generator=gen).pow(8) * 50).to(dtype)
    channels = shape[axis]
    amax_1d = torch.rand(channels, generator=gen) * 20 + 0.01
    amax = _reference.broadcast_amax(amax_1d, x.dim(), axis % x.dim())
    assert_bitwise_equal(OPS.scaled_e4m3(x, amax_1d, axis), _reference.scaled_e4m3(x, amax))
    assert_bitwise_equal(tensor_quant.scaled_e4m3(x, amax), _reference.scaled_e4m3(x, amax))
    per_tensor = amax_1d[:1]
    assert_bitwise_equal(OPS.scaled_e4m3(x, per_tensor, None), _reference.scaled_e4m3(x, per_tensor))


def test_amax_shapes_the_op_cannot_take_use_the_reference():
    x = torch.randn(3, 4, 5) * 4
    several_axes = torch.rand(3, 4, 1) + 0.5
    assert_bitwise_equal(kernels.scaled_e4m3(x, several_axes), _reference.scaled_e4m3(x, several_axes))
    more_dims = torch.tensor([[[[2.0]]]])  # broadcasting makes the composite's result 4-D
    assert kernels.scaled_e4m3(x, more_dims).shape == (1, 3, 4, 5)
    float64_amax = torch.tensor(3.0000001, dtype=torch.float64)  # cast to float32 first, as the composite does
    assert_bitwise_equal(kernels.scaled_e4m3(x, float64_amax), _reference.scaled_e4m3(x, float64_amax))


def test_backward_is_the_straight_through_estimator():
    x = torch.tensor([-5.0, -2.0, -1.0, 0.0, 0.5, 2.0, 2.5], requires_grad=True)
    amax = torch.tensor(2.0)
    tensor_quant.scaled_e4m3(x, amax).backward(torch.arange(7.0))
    assert torch.equal(x.grad, torch.where(x.detach().abs() <= amax, torch.arange(7.0), 0.0))
    y = torch.tensor([-500.0, 1.0, 447.0, 449.0], requires_grad=True)
    tensor_quant.scaled_e4m3(y, None).sum().backward()  # unscaled: the mask is |x| <= 448
    assert y.grad.tolist() == [0.0, 1.0, 1.0, 0.0]


@pytest.mark.parametrize("axis,amax", [(None, torch.tensor([1.5])), (1, torch.rand(6) + 0.5)])
def test_opcheck(axis, amax):
    x = (torch.randn(4, 6, 5, generator=torch.Generator().manual_seed(3)) * 2).requires_grad_()
    torch.library.opcheck(OPS.scaled_e4m3.default, (x, amax, axis))


def test_compile_fullgraph_through_scaled_e4m3():
    amax = torch.tensor([[1.0], [2.0], [0.5], [1.5]]).reshape(4, 1, 1)

    def quantize(x):
        return tensor_quant.scaled_e4m3(x, amax) * 2

    compiled = torch.compile(quantize, fullgraph=True, backend="aot_eager")
    x = (torch.randn(4, 6, 5, generator=torch.Generator().manual_seed(4)) * 2).requires_grad_()
    out = compiled(x)
    assert_bitwise_equal(out, _reference.scaled_e4m3(x.detach(), amax) * 2)
    out.sum().backward()
    assert torch.equal(x.grad, 2 * (x.detach().abs() <= amax).float())


def test_bad_arguments():
    x = torch.randn(4, 6)
    with pytest.raises(RuntimeError, match="amax has 3 elements but x has 6 along axis 1"):
        OPS.scaled_e4m3(x, torch.ones(3), 1)
    with pytest.raises(RuntimeError, match="per-tensor quantization .* needs a one-element amax"):
        OPS.scaled_e4m3(x, torch.ones(2), None)
    with pytest.raises(RuntimeError, match="x must be float32"):
        OPS.scaled_e4m3(torch.ones(3, dtype=torch.int32), torch.ones(1), None)
    with pytest.raises(TypeError, match="amax must be a floating point tensor"):
        kernels.scaled_e4m3(x, torch.ones(1, dtype=torch.int64))


@pytest.mark.skipif(not (torch.cuda.is_available() and ops.serves("cuda")),
                    reason="needs a CUDA device and the extension built with CUDA")
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_matches_composite(dtype):
    x = probe_inputs(3.7, dtype)
    for amax in (torch.tensor([3.7]), torch.tensor([0.0]), torch.tensor([math.inf])):
        expected = _reference.scaled_e4m3(x, amax)
        assert_bitwise_equal(OPS.scaled_e4m3(x.cuda(), amax.cuda(), None).cpu(), expected)
    y = (torch.randn(6, 5, 33) * 9).to(dtype)
    amax = torch.rand(5) * 10 + 0.1
    assert_bitwise_equal(OPS.scaled_e4m3(y.cuda(), amax.cuda(), 1).cpu(),
                         _reference.scaled_e4m3(y, amax.reshape(1, 5, 1)))
