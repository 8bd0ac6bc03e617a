"""The compiled CPU ops (csrc/cpu) against the numerics definition in ``_reference``.

Results must be bit-identical: compared through integer views (so -0.0 differs from 0.0), NaN by
position only (the sign and payload bits of a NaN are not part of the contract).
"""
import math

import pytest
import torch

from pytorch_quantization import _reference, kernels, ops, tensor_quant

pytestmark = pytest.mark.skipif(not ops.serves("cpu"), reason="compiled extension pytorch_quantization._C not built "
                                "(pip install -e . --no-build-isolation); the reference path is tested elsewhere")

OPS = torch.ops.pytorch_quantization
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
INT_VIEW = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def assert_bitwise_equal(actual, expected):
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    nan = torch.isnan(expected)
    assert torch.equal(torch.isnan(actual), nan), "NaN positions differ"
    view = INT_VIEW[expected.element_size()]
    a, e = actual[~nan].view(view), expected[~nan].view(view)
    if not torch.equal(a, e):
        bad = (a != e).nonzero().flatten()[:5]
        raise AssertionError(f"{(a != e).sum().item()} elements differ, e.g. {actual[~nan][bad].tolist()} "
                             f"vs {expected[~nan][bad].tolist()}")


def amax_for(x, axis, low=0.05, high=3.0, seed=0):
    """A 1-D amax (compute dtype of x): one element for axis None, one per channel otherwise."""
    gen = torch.Generator().manual_seed(seed)
    n = 1 if axis is None else x.shape[axis]
    return (torch.rand(n, generator=gen) * (high - low) + low).to(_reference.compute_dtype(x.dtype))


def reference(x, amax, axis, num_bits=8, unsigned=False, narrow_range=True):
    return _reference.fake_quant(x, _reference.broadcast_amax(amax, x.dim(), axis), num_bits, unsigned, narrow_range)


def random_input(shape, dtype, seed=0, scale=2.0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(300,), (6, 50), (4, 5, 33), (3, 4, 5, 7), (2, 3, 4, 5, 6)])
def test_fake_quant_matches_reference_per_tensor_and_every_axis(dtype, shape):
    x = random_input(shape, dtype)
    for axis in [None] + list(range(len(shape))):
        amax = amax_for(x, axis, seed=len(shape))
        expected = reference(x, amax, axis)
        assert_bitwise_equal(OPS.fake_quant(x, amax, axis, 8, False, True), expected)
        out, mask = OPS.fake_quant_cachemask(x, amax, axis, 8, False, True)
        assert_bitwise_equal(out, expected)
        assert torch.equal(mask, _reference.ste_mask(x, _reference.broadcast_amax(amax, x.dim(), axis)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_negative_axis_equals_positive_axis(dtype):
    x = random_input((3, 4, 70), dtype)
    amax = amax_for(x, 1)
    assert_bitwise_equal(OPS.fake_quant(x, amax, -2, 8, False, True), OPS.fake_quant(x, amax, 1, 8, False, True))


@pytest.mark.parametrize("num_bits", range(2, 17))
def test_every_bit_width_and_range_kind(num_bits):
    x = random_input((5, 130), torch.float32, seed=num_bits)
    amax = amax_for(x, 0, seed=num_bits)
    for unsigned, narrow in [(False, True), (False, False), (True, False), (True, True)]:
        xx = x.abs() if unsigned else x
        expected = reference(xx, amax, 0, num_bits, unsigned, narrow)
        assert_bitwise_equal(OPS.fake_quant(xx, amax, 0, num_bits, unsigned, narrow), expected)
        # independent check of the integer grid: q = out * bound / amax is an integer within [lo, hi]
        lo, hi = _reference.integer_range(num_bits, unsigned, narrow)
        q = OPS.fake_quant(xx.double(), amax.double(), 0, num_bits, unsigned, narrow) * (hi / amax.double()[:, None])
        assert torch.allclose(q, q.round(), atol=1e-6) and q.min() >= lo - 1e-6 and q.max() <= hi + 1e-6


def test_one_bit_unsigned_is_a_threshold_at_half_amax():
    x = torch.tensor([0.0, 0.49, 0.5, 0.51, 1.0, 2.0])
    out = OPS.fake_quant(x, torch.tensor([1.0]), None, 1, True, False)
    assert out.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]  # bound 1: round-half-even puts 0.5 at 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ties_round_half_to_even_and_clamp(dtype):
    # amax 127 makes scale exactly 1, amax 127/8 makes it 8: q = round_half_even(x * scale)
    for amax_value, scale in [(127.0, 1.0), (127.0 / 8, 8.0), (127.0 * 4, 0.25)]:
        ints = torch.arange(-130, 130, dtype=torch.float64)
        x = ((ints + 0.5) / scale).to(dtype)
        amax = torch.tensor([amax_value], dtype=dtype)
        expected_q = torch.tensor([round(k + 0.5) for k in ints.tolist()],  # Python rounds half to even
                                  dtype=torch.float64).clamp(-128, 127)
        out = OPS.fake_quant(x, amax, None, 8, False, False)
        assert torch.equal(out.double() * scale, expected_q)
        assert_bitwise_equal(out, reference(x, amax, None, 8, False, False))


@pytest.mark.parametrize("dtype", DTYPES)
def test_edge_values(dtype):
    inf, nan = float("inf"), float("nan")
    values = [0.0, -0.0, 1.0, -1.0, 2.5, -2.5, 1e-30, -1e-30, 0.3, -0.3, inf, -inf, nan, 65504.0, -65504.0]
    x = torch.tensor(values, dtype=torch.float64).to(dtype)
    for amax_value in [2.5, 1.0, 2.0 ** -24, 2.0 ** -25, 2.0 ** -23, 0.0, 1e4]:
        amax = torch.tensor([amax_value], dtype=_reference.compute_dtype(dtype))
        for unsigned, narrow in [(False, True), (False, False)]:
            out, mask = OPS.fake_quant_cachemask(x, amax, None, 8, unsigned, narrow)
            assert_bitwise_equal(out, reference(x, amax, None, 8, unsigned, narrow))
            assert torch.equal(mask, _reference.ste_mask(x, amax))
        if amax_value <= 2.0 ** -24:  # scale 0: finite inputs become (signed) zero, +-Inf/NaN become NaN
            finite = torch.isfinite(x)
            assert torch.all(out[finite] == 0) and torch.isnan(out[~finite]).all()
    # exactly +-amax maps to +-amax and passes the gradient; the next float above does not
    amax = torch.tensor([2.5], dtype=_reference.compute_dtype(dtype))
    edge = torch.tensor([2.5, -2.5, math.nextafter(2.5, 3.0), nan], dtype=torch.float64).to(dtype)
    out, mask = OPS.fake_quant_cachemask(edge, amax, None, 8, False, True)
    assert out[:2].tolist() == [2.5, -2.5]
    expected_mask = [True, True, dtype != torch.float64, False]  # below float64 the nudge rounds back to 2.5
    assert mask.tolist() == expected_mask


def test_unsigned_negative_zero_and_saturation():
    x = torch.tensor([-0.0, 0.0, 0.7, 5.0, float("inf")])
    amax = torch.tensor([1.0])
    assert_bitwise_equal(OPS.fake_quant(x, amax, None, 8, True, False), reference(x, amax, None, 8, True, False))
    assert OPS.fake_quant(x, amax, None, 8, True, False)[3:].tolist() == [1.0, 1.0]


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous_inputs(dtype):
    base = random_input((40, 90), dtype, seed=3)
    views = {"transpose": base.t(), "step": base[::3, 1::2], "permute3d": base.reshape(8, 5, 90).permute(2, 0, 1)}
    for name, view in views.items():
        assert not view.is_contiguous(), name
        for axis in (None, 0, view.dim() - 1):
            amax = amax_for(view, axis, seed=7)
            out, mask = OPS.fake_quant_cachemask(view, amax, axis, 8, False, True)
            assert_bitwise_equal(out, reference(view.contiguous(), amax, axis))
            assert torch.equal(mask, _reference.ste_mask(view, _reference.broadcast_amax(amax, view.dim(), axis)))


@pytest.mark.parametrize("channels,inner", [(7, 3), (5, 100), (1, 1), (3, 64)])
def test_large_tensors_split_across_threads(channels, inner):
    # enough elements that parallel chunks start inside channels and inside the tiled period
    outer = 300_000 // (channels * inner) + 1
    x = random_input((outer, channels, inner), torch.float32, seed=channels)
    amax = amax_for(x, 1, seed=inner)
    assert_bitwise_equal(OPS.fake_quant(x, amax, 1, 8, False, True), reference(x, amax, 1))


@pytest.mark.parametrize("dtype", DTYPES)
def test_in_place_updates_every_view(dtype):
    base = random_input((12, 20), dtype, seed=5)
    original = base.clone()
    alias = base.view(-1)  # another view of the same storage
    view = base[1::2, ::3].t()  # non-contiguous, strided both ways
    amax = amax_for(view, 1, seed=2)
    expected = reference(view.contiguous(), amax, 1)
    OPS.fake_quant_(view, amax, 1, 8, False, True)
    assert_bitwise_equal(view.contiguous(), expected)
    touched = torch.zeros_like(base, dtype=torch.bool)
    touched[1::2, ::3] = True
    assert torch.equal(base[~touched], original[~touched])  # elements outside the view untouched
    assert_bitwise_equal(alias.view(12, 20)[1::2, ::3].t().contiguous(), expected)
    # a contiguous tensor is updated in place as well
    flat = original.clone()
    OPS.fake_quant_(flat, amax_for(flat, None), None, 4, False, False)
    assert_bitwise_equal(flat, reference(original, amax_for(flat, None), None, 4, False, False))


def test_empty_and_zero_dim_inputs():
    empty = torch.empty(0, 3)
    assert OPS.fake_quant(empty, torch.ones(3), 1, 8, False, True).shape == (0, 3)
    assert OPS.fake_e4m3(empty).shape == (0, 3)
    assert torch.equal(OPS.abs_histogram(empty, 4, 1.0, False), torch.zeros(4, dtype=torch.int64))
    scalar = torch.tensor(0.37)
    assert_bitwise_equal(OPS.fake_quant(scalar, torch.tensor([1.0]), None, 8, False, True),
                         reference(scalar, torch.tensor([1.0]), None))


def test_bad_input_errors_name_the_problem():
    x = torch.randn(4, 5)
    with pytest.raises(RuntimeError, match="x must be float32"):
        OPS.fake_quant(torch.ones(3, dtype=torch.int32), torch.ones(1), None, 8, False, True)
    with pytest.raises(RuntimeError, match="amax must be float32 or float64"):
        OPS.fake_quant(x, torch.ones(1, dtype=torch.int64), None, 8, False, True)
    with pytest.raises(RuntimeError, match="amax has 3 elements but x has 5 along axis 1"):
        OPS.fake_quant(x, torch.ones(3), 1, 8, False, True)
    with pytest.raises(RuntimeError, match="one-element amax"):
        OPS.fake_quant_cachemask(x, torch.ones(4), None, 8, False, True)
    for bits in (0, 17):
        with pytest.raises(RuntimeError, match="num_bits must be in 1..16"):
            OPS.fake_quant_(x, torch.ones(1), None, bits, False, True)
    with pytest.raises(RuntimeError, match="axis 2 is out of range"):
        OPS.fake_quant(x, torch.ones(4), 2, 8, False, True)
    with pytest.raises(RuntimeError, match="x must be float32"):
        OPS.fake_e4m3(torch.ones(2, dtype=torch.int8))
    with pytest.raises(RuntimeError, match="num_bins must be >= 1"):
        OPS.abs_histogram(x, 0, 1.0, False)
    with pytest.raises(RuntimeError, match="range_max must be positive"):
        OPS.abs_histogram(x, 8, 1e-50, False)  # 0 in float32
    with pytest.raises(RuntimeError, match="internal overlap|single memory location"):
        OPS.fake_quant_(torch.ones(1).expand(4), torch.ones(1), None, 8, False, True)


def e4m3_probe_values():
    """All 256 codes, midpoints between neighbouring codes, around the maximum, beyond it, subnormals."""
    codes = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).float()
    finite = codes[torch.isfinite(codes)].unique()
    midpoints = (finite[1:] + finite[:-1]) / 2
    nudged = torch.cat([torch.nextafter(midpoints, torch.full_like(midpoints, math.inf)),
                        torch.nextafter(midpoints, torch.full_like(midpoints, -math.inf))])
    special = torch.tensor([448.0, 448.5, 463.9, 464.0, 464.1, 479.0, 480.0, 1e6, 3e38, math.inf, -math.inf, math.nan,
                            2.0 ** -9, 2.0 ** -10, 3 * 2.0 ** -11, 2.0 ** -11, 2.0 ** -12, 1e-45, 2.0 ** -6,
                            2.0 ** -6 - 2.0 ** -10])
    values = torch.cat([codes, midpoints, nudged, special])
    return torch.cat([values, -values])


@pytest.mark.parametrize("dtype", DTYPES)
def test_fake_e4m3_matches_torch_float8_cast(dtype):
    x = e4m3_probe_values().to(dtype)
    expected = x.float().to(torch.float8_e4m3fn).to(dtype)  # torch's own (saturating) cast
    assert_bitwise_equal(OPS.fake_e4m3(x), expected)
    assert_bitwise_equal(OPS.fake_e4m3(x[::3]), expected[::3])  # non-contiguous


def test_fake_e4m3_closed_form_properties():
    x = torch.tensor([500.0, -1e30, math.inf, 464.0, 2.0 ** -10, 3 * 2.0 ** -10, 0.3125 + 2 ** -6])
    out = OPS.fake_e4m3(x)
    # saturation to +-448; ties to even on the subnormal grid (2**-9 steps) and on the normal grid
    assert out.tolist() == [448.0, -448.0, 448.0, 448.0, 0.0, 2 * 2.0 ** -9, 0.3125]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("skip_zeros", [False, True])
def test_abs_histogram_matches_reference(dtype, skip_zeros):
    x = random_input((300, 70), dtype, seed=11)
    x[::5] = 0
    x[1, :3] = math.nan
    x[2, :3] = math.inf
    for num_bins, range_max in [(2048, 3.0), (7, 0.1), (1, 100.0), (20000, 5.5)]:
        expected = _reference.abs_histogram(x, num_bins, range_max, skip_zeros)
        assert torch.equal(OPS.abs_histogram(x, num_bins, range_max, skip_zeros), expected)
    assert torch.equal(OPS.abs_histogram(x.t(), 64, 3.0, skip_zeros), _reference.abs_histogram(x, 64, 3.0, skip_zeros))


def test_abs_histogram_closed_form_counts():
    # 4 bins over [0, 2]: bin width 0.5 (all values exact in float32)
    x = torch.tensor([0.0, -0.0, 0.25, -0.5, 0.75, 1.0, -1.5, 1.99, 2.0, -2.0, 2.01, math.nan, -math.inf])
    assert OPS.abs_histogram(x, 4, 2.0, False).tolist() == [3, 2, 1, 4]
    assert OPS.abs_histogram(x, 4, 2.0, True).tolist() == [1, 2, 1, 4]


def test_kernels_dispatch_uses_compiled_ops_and_matches_reference():
    assert kernels.kernel_backend()["cpu"] == "compiled"
    x = random_input((8, 3, 5, 5), torch.float32, seed=4)
    amax = amax_for(x, 0).reshape(8, 1, 1, 1)
    out, mask = kernels.fake_quant_cachemask(x, amax)
    assert_bitwise_equal(out, _reference.fake_quant(x, amax))
    assert torch.equal(mask, _reference.ste_mask(x, amax))
    x64 = x.double()  # float64 inputs keep a float64 amax, as the reference does
    amax64 = torch.full((8, 1, 1, 1), 1.0 / 3.0, dtype=torch.float64)
    assert_bitwise_equal(kernels.fake_quant(x64, amax64), _reference.fake_quant(x64, amax64))


def _ste_surrogate(quantize, x, amax):
    """Values of clamp(x, -amax, amax) but gradients of ``quantize``: the finite differences gradcheck
    takes are those of the clamp (1 inside the range, 0 outside), the analytical gradient is the op's."""
    clamped = torch.maximum(torch.minimum(x, amax), -amax)
    return quantize(x) + (clamped - quantize(x)).detach()


def _gradcheck_inputs(shape, amax_value):
    """float64 inputs at least 1e-3 away from +-amax so that the clamp is differentiable at each."""
    x = random_input(shape, torch.float64, seed=9, scale=1.5)
    near = (x.abs() - amax_value).abs() < 1e-3
    x[near] += 0.01
    return x.requires_grad_()


def test_gradcheck_fake_tensor_quant_straight_through():
    amax = torch.tensor(1.2, dtype=torch.float64)
    x = _gradcheck_inputs((4, 6), 1.2)
    assert ((x.abs() > 1.2).any() and (x.abs() < 1.2).any()), "inputs must cover both sides of amax"
    assert torch.autograd.gradcheck(
        lambda t: _ste_surrogate(lambda u: tensor_quant.fake_tensor_quant(u, amax, 8), t, amax), (x,))


@pytest.mark.parametrize("cachemask", [False, True])
def test_gradcheck_raw_op_autograd_per_channel(cachemask):
    amax = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    x = _gradcheck_inputs((3, 5), 1.0)
    x.data[0] += (((x.data[0].abs() - 0.5).abs() < 1e-3) * 0.01)
    x.data[2] += (((x.data[2].abs() - 2.0).abs() < 1e-3) * 0.01)

    def quantize(u):
        if cachemask:
            return OPS.fake_quant_cachemask(u, amax, 0, 8, False, True)[0]
        return OPS.fake_quant(u, amax, 0, 8, False, True)

    assert torch.autograd.gradcheck(lambda t: _ste_surrogate(quantize, t, amax[:, None]), (x,))


def test_backward_is_grad_times_mask():
    x = random_input((6, 40), torch.float32, seed=8).requires_grad_()
    amax = amax_for(x, 0, low=0.5, high=2.0)
    grad = random_input((6, 40), torch.float32, seed=10)
    for quantize in (lambda u: OPS.fake_quant(u, amax, 0, 8, False, True),
                     lambda u: OPS.fake_quant_cachemask(u, amax, 0, 8, False, True)[0],
                     lambda u: tensor_quant.fake_tensor_quant(u, amax[:, None], 8)):
        (actual,) = torch.autograd.grad(quantize(x), x, grad)
        inside = x.detach().abs() <= amax[:, None]  # written out here, not taken from the package
        assert torch.equal(actual, torch.where(inside, grad, torch.zeros(())))


@pytest.mark.parametrize("dtype", DTYPES)
def test_ste_grad_selects_grad_where_mask_in_one_op(dtype):
    grad = random_input((37, 29), dtype, seed=11)
    grad[0, :4] = torch.tensor([float("nan"), float("inf"), -0.0, -1.0], dtype=dtype)
    mask = random_input((37, 29), torch.float32, seed=12) > 0
    mask[0, :4] = False
    expected = torch.where(mask, grad, torch.zeros((), dtype=dtype))  # +0.0 where masked, NaN/Inf dropped
    assert_bitwise_equal(OPS.ste_grad(grad, mask), expected)
    view = grad.t()  # non-contiguous gradient
    assert_bitwise_equal(OPS.ste_grad(view, mask.t()), torch.where(mask.t(), view, torch.zeros((), dtype=dtype)))


def test_ste_grad_bad_arguments():
    with pytest.raises(RuntimeError, match="mask must be bool"):
        OPS.ste_grad(torch.ones(3), torch.ones(3))
    with pytest.raises(RuntimeError, match="shape"):
        OPS.ste_grad(torch.ones(3), torch.ones(4, dtype=torch.bool))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", ["fake_quant", "fake_quant_cachemask", "fake_quant_"])
def test_upstream_value_errors_from_the_cpu_kernels(dtype, op):
    x = random_input((3, 40), dtype, seed=13)
    original = x.clone()
    with pytest.raises(ValueError, match="^Negative values in amax"):
        getattr(OPS, op)(x, torch.tensor([1.0, -0.5, 1.0], dtype=_reference.compute_dtype(dtype)), 0, 8, False, True)
    with pytest.raises(TypeError, match="^Negative values encountered in unsigned quantization"):
        getattr(OPS, op)(x, torch.tensor([1.0], dtype=_reference.compute_dtype(dtype)), None, 8, True, False)
    assert torch.equal(x, original)  # the in-place op checks before writing
    nan_amax = torch.tensor([float("nan")], dtype=_reference.compute_dtype(dtype))
    assert_bitwise_equal(OPS.fake_quant(x, nan_amax, None, 8, False, True), reference(x, nan_amax, None))
