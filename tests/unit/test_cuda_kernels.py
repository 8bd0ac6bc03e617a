"""The compiled CUDA ops (csrc/cuda) against the CPU definition: bit-identical for every dtype and layout."""
import math
import time

import pytest
import torch

from pytorch_quantization import _reference, ops

pytestmark = pytest.mark.skipif(not (torch.cuda.is_available() and ops.serves("cuda")),
                                reason="needs a CUDA device and the extension built with its CUDA kernels")

OPS = torch.ops.pytorch_quantization
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
INT_VIEW = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def assert_bitwise_equal(actual, expected):
    """Equal bits (checked on the CPU); NaN compared by position only."""
    actual, expected = actual.cpu(), expected.cpu()
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    nan = torch.isnan(expected)
    assert torch.equal(torch.isnan(actual), nan)
    view = INT_VIEW[expected.element_size()]
    assert torch.equal(actual[~nan].view(view), expected[~nan].view(view))


def reference(x, amax, axis, num_bits=8, unsigned=False, narrow_range=True):
    """The CPU definition of the result (``_reference``, independent of the compiled CPU op)."""
    x, amax = x.cpu(), amax.cpu()
    return _reference.fake_quant(x, _reference.broadcast_amax(amax, x.dim(), axis), num_bits, unsigned, narrow_range)


def random_input(shape, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * 2
    return x.to(dtype).cuda()


def amax_for(x, axis, seed=0):
    gen = torch.Generator().manual_seed(seed)
    n = 1 if axis is None else x.shape[axis]
    return (torch.rand(n, generator=gen) * 3 + 0.05).to(_reference.compute_dtype(x.dtype)).cuda()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1000,), (3, 4, 5, 7), (2, 3, 4, 5, 6), (33, 257)])
def test_fake_quant_matches_cpu_definition(dtype, shape):
    x = random_input(shape, dtype)
    for axis in [None] + list(range(len(shape))):
        amax = amax_for(x, axis)
        for num_bits, unsigned, narrow in [(8, False, True), (8, False, False), (4, True, False), (16, False, True)]:
            xx = x.abs() if unsigned else x
            expected = reference(xx, amax, axis, num_bits, unsigned, narrow)
            assert_bitwise_equal(OPS.fake_quant(xx, amax, axis, num_bits, unsigned, narrow), expected)
            out, mask = OPS.fake_quant_cachemask(xx, amax, axis, num_bits, unsigned, narrow)
            assert_bitwise_equal(out, expected)
            assert torch.equal(mask.cpu(), _reference.ste_mask(xx.cpu(), _reference.broadcast_amax(
                amax.cpu(), x.dim(), axis)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_edge_values_and_unaligned_views(dtype):
    values = [0.0, -0.0, 2.5, -2.5, 0.3, -0.3, 1e-30, math.inf, -math.inf, math.nan, 1.0 / 254, 3.0 / 254]
    x = torch.tensor(values * 7, dtype=torch.float64).to(dtype).cuda()
    for amax_value in [2.5, 1.0, 2.0 ** -24, 0.0]:
        amax = torch.tensor([amax_value], dtype=_reference.compute_dtype(dtype)).cuda()
        for view in (x, x[1:], x[3:-2]):  # offsets defeat the 16-byte vector path
            assert_bitwise_equal(OPS.fake_quant(view, amax, None, 8, False, True), reference(view, amax, None))


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous_and_in_place(dtype):
    base = random_input((40, 90), dtype, seed=3)
    view = base[::3, 1::2].t()
    amax = amax_for(view, 1, seed=5)
    expected = reference(view, amax, 1)
    assert_bitwise_equal(OPS.fake_quant(view, amax, 1, 8, False, True), expected)
    untouched = base.clone()
    OPS.fake_quant_(view, amax, 1, 8, False, True)
    assert_bitwise_equal(view, expected)
    mask = torch.ones_like(base, dtype=torch.bool)
    mask[::3, 1::2] = False
    assert torch.equal(base[mask], untouched[mask])


@pytest.mark.parametrize("dtype", DTYPES)
def test_fake_e4m3_matches_torch_cast(dtype):
    codes = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).float()
    finite = codes[torch.isfinite(codes)].unique()
    special = torch.tensor([448.5, 464.0, 480.0, 1e9, math.inf, math.nan, 2.0 ** -10, 3 * 2.0 ** -11, 1e-45])
    x = torch.cat([codes, (finite[1:] + finite[:-1]) / 2, special])
    x = torch.cat([x, -x]).to(dtype)
    expected = x.float().to(torch.float8_e4m3fn).to(dtype)
    assert_bitwise_equal(OPS.fake_e4m3(x.cuda()), expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_abs_histogram_matches_cpu_definition(dtype):
    x = random_input((500, 300), dtype, seed=9)
    x[::4] = 0
    x[1, :5] = math.nan
    for num_bins, range_max, skip in [(2048, 3.0, False), (2048, 3.0, True), (30000, 5.0, False), (3, 0.5, True)]:
        expected = _reference.abs_histogram(x.cpu(), num_bins, range_max, skip)
        assert torch.equal(OPS.abs_histogram(x, num_bins, range_max, skip).cpu(), expected)


def test_amax_on_another_device_is_rejected():
    x = random_input((4, 4), torch.float32)
    with pytest.raises(RuntimeError, match="amax is on cpu but x is on cuda"):
        OPS.fake_quant(x, torch.ones(1), None, 8, False, True)


def test_more_than_2_pow_31_elements():
    n = 2 ** 31 + 4099
    free, _ = torch.cuda.mem_get_info()
    if free < 3 * 2 * n + (1 << 30):
        pytest.skip(f"needs about {3 * 2 * n / 2**30:.1f} GiB of free GPU memory (float16 input, output, mask)")
    period = 1000  # a repeating ramp, so any slice's expectation is easy to compute on the CPU
    ramp = torch.linspace(-3, 3, period, dtype=torch.float32).half().cuda()
    x = ramp.repeat(n // period + 1)[:n]
    amax = torch.tensor([2.0]).cuda()
    out, mask = OPS.fake_quant_cachemask(x, amax, None, 8, False, True)
    tail = slice(n - 3 * period, n)  # beyond 2**31: wrong 32-bit indexing would leave these unwritten
    assert_bitwise_equal(out[tail], reference(x[tail], amax, None))
    assert torch.equal(mask[tail].cpu(), x[tail].cpu().float().abs() <= 2.0)
    del out, mask
    hist = OPS.abs_histogram(x, 16, 4.0, False)
    assert hist.sum().item() == n


def test_speed_smoke_large_tensor():
    x = random_input((64, 1024, 1024), torch.float32, seed=1)  # 256 MiB
    amax = amax_for(x, 0)
    OPS.fake_quant(x, amax, 0, 8, False, True)  # warm up
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(5):
        out = OPS.fake_quant(x, amax, 0, 8, False, True)
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / 5
    print(f"per-channel fake_quant of 256 MiB float32: {seconds * 1e3:.2f} ms, "
          f"{2 * x.numel() * 4 / seconds / 1e9:.0f} GB/s")
    assert_bitwise_equal(out[-1], reference(x[-1:], amax[-1:], 0)[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_ste_grad_selects_grad_where_mask(dtype):
    grad = random_input((37, 29), dtype, seed=4)
    mask = random_input((37, 29), torch.float32, seed=5) > 0
    out = OPS.ste_grad(grad, mask)
    expected = torch.where(mask.cpu(), grad.cpu(), torch.zeros((), dtype=dtype))
    assert_bitwise_equal(out, expected)


def _sync_free_cases():
    """(name, quantizer, input) on the GPU: every descriptor kind a quantizer forward serves."""
    from pytorch_quantization import tensor_quant  # pylint: disable=import-outside-toplevel
    from pytorch_quantization.nn import TensorQuantizer  # pylint: disable=import-outside-toplevel
    x = random_input((8, 64), torch.float32, seed=6)
    cases = []
    for name, desc, amax in [("per-tensor", {}, 2.0), ("per-channel", {"axis": (0,)}, torch.rand(8, 1) + 0.5),
                             ("unsigned", {"unsigned": True}, 2.0), ("dynamic", {}, None),
                             ("e4m3", {"num_bits": (4, 3)}, 2.0), ("e4m3 dynamic", {"num_bits": (4, 3)}, None)]:
        q = TensorQuantizer(tensor_quant.QuantDescriptor(**desc)).cuda()
        if amax is not None:
            q.amax = amax
            q.cuda()
        cases.append((name, q, x.abs() if desc.get("unsigned") else x))
    return cases


def test_quantizer_forward_and_backward_do_not_sync():
    from pytorch_quantization.nn import QuantConv2d  # pylint: disable=import-outside-toplevel
    cases = _sync_free_cases()
    conv = QuantConv2d(3, 8, 3).cuda()
    conv.input_quantizer.amax = 3.0
    conv.weight_quantizer.amax = torch.rand(8, 1, 1, 1) + 0.1
    conv.cuda()
    image = random_input((2, 3, 16, 16), torch.float32, seed=7)
    leaf = image.clone().requires_grad_()

    def run_all():
        outs = [q(x) for _, q, x in cases]
        with torch.no_grad():
            outs += [conv(image), conv(image)]  # the second call reuses the cached weight
        conv(leaf).sum().backward()
        return outs

    expected = run_all()  # warm-up: lazy initialisation may synchronise once
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        outs = run_all()
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    for (name, _, _), out, ref in zip(cases, outs, expected):
        assert torch.equal(out, ref), name
