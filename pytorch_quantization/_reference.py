"""Pure-PyTorch implementations of every fake-quant kernel.

These functions define the numerics of the package. The compiled ops in ``csrc/`` must
reproduce them bit for bit, and they are used directly whenever the compiled extension is
not available (or does not support a case, e.g. amax broadcast over several axes).

Numerics (identical on every backend):

* compute type: float64 for float64 inputs, float32 for every other floating dtype
  (float16 / bfloat16 inputs are widened, the result is cast back to the input dtype);
* ``bound = 2**(num_bits - 1 + unsigned) - 1``; the integer range is ``[0, bound]`` when
  unsigned, ``[-bound, bound]`` with ``narrow_range`` and ``[-bound - 1, bound]`` without;
* ``scale = bound / amax`` and ``q = clamp(round_half_even(x * scale), lo, hi)``; the fake
  quantized value is ``q / scale``. This is upstream pytorch-quantization's formula
  (multiply by the reciprocal step, divide back), kept so that results match upstream;
* an ``amax <= 2**-24`` (zero or below float16 resolution) quantizes every finite input to 0;
* NaN inputs stay NaN; +-Inf saturate to the extreme integer (or become NaN when amax is 0);
* the straight-through-estimator mask is ``|x| <= amax`` (False for NaN).
"""
import torch

#: amax values at or below this are treated as zero (the smallest float16 subnormal is 2**-24).
AMAX_EPSILON = 2.0 ** -24

#: largest finite E4M3 value
E4M3_MAX = 448.0


def compute_dtype(dtype):
    """The dtype the kernels compute in for inputs of ``dtype``."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def integer_range(num_bits, unsigned, narrow_range):
    """(lo, hi) of the integer grid, as Python floats."""
    hi = float(2 ** (num_bits - 1 + int(unsigned)) - 1)
    if unsigned:
        lo = 0.0
    elif narrow_range:
        lo = -hi
    else:
        lo = -hi - 1.0
    return lo, hi


def broadcast_amax(amax, x_dim, axis):
    """Reshape a 1-D per-channel ``amax`` so that it broadcasts along ``axis`` of an ``x_dim``-D tensor."""
    if axis is None:
        return amax.reshape(())
    shape = [1] * x_dim
    shape[axis] = amax.numel()
    return amax.reshape(shape)


def _scale(amax, num_bits, unsigned, cdt):
    _, hi = integer_range(num_bits, unsigned, False)
    a = amax.to(cdt)
    tiny = a <= AMAX_EPSILON
    # full_like(a, hi) / a, not hi / a: Tensor.__rtruediv__ computes reciprocal(a) * hi, which is not bound / amax
    scale = torch.where(tiny, torch.zeros_like(a), torch.full_like(a, hi) / a)
    return scale, tiny


def quant(x, amax, num_bits=8, unsigned=False, narrow_range=True):
    """Integer quantization: returns ``(q, scale)`` with ``q`` in the compute dtype.

    ``amax`` must broadcast to ``x``. For amax <= 2**-24 the returned scale is 1 (and q is 0).
    """
    cdt = compute_dtype(x.dtype)
    lo, hi = integer_range(num_bits, unsigned, narrow_range)
    scale, tiny = _scale(amax, num_bits, unsigned, cdt)
    q = torch.clamp(torch.round(x.to(cdt) * scale), lo, hi)
    return q, torch.where(tiny, torch.ones_like(scale), scale)


def fake_quant(x, amax, num_bits=8, unsigned=False, narrow_range=True):
    """Fake quantization (quantize then dequantize) with an ``amax`` that broadcasts to ``x``."""
    q, scale = quant(x, amax, num_bits, unsigned, narrow_range)
    return (q / scale).to(x.dtype)


def ste_mask(x, amax):
    """Straight-through-estimator mask: True where the gradient passes (``|x| <= amax``)."""
    cdt = compute_dtype(x.dtype)
    return x.to(cdt).abs() <= amax.to(cdt)


def fake_quant_cachemask(x, amax, num_bits=8, unsigned=False, narrow_range=True):
    """Fake quantization plus the mask its backward needs."""
    return fake_quant(x, amax, num_bits, unsigned, narrow_range), ste_mask(x, amax)


def fake_quant_backward(grad, x, amax):
    """Straight-through estimator: ``grad`` where ``|x| <= amax``, else 0."""
    return torch.where(ste_mask(x, amax), grad, torch.zeros((), dtype=grad.dtype, device=grad.device))


def fake_e4m3(x):
    """Round to the nearest E4M3 (fn) value, ties to even, saturating at +-448; NaN stays NaN.

    Computed in float32 for every input dtype.
    """
    return x.to(torch.float32).to(torch.float8_e4m3fn).to(x.dtype)


def scaled_e4m3(x, amax):
    """E4M3 fake cast of ``x`` scaled so that ``amax`` maps to 448: ``fake_e4m3(x * s) / s`` with
    ``s = 448 / amax``, both in float32 for every input dtype (amax is cast to float32 first, the result back
    to ``x``'s dtype); inputs with ``|x| < 2**-24`` give +0.0. ``amax`` broadcasts to ``x``.
    """
    amax = amax.to(torch.float32)
    scale = torch.full_like(amax, E4M3_MAX) / amax  # not 448 / amax: rtruediv computes reciprocal(amax) * 448
    outputs = (fake_e4m3(x.to(torch.float32) * scale) / scale).to(x.dtype)
    return torch.where(x.abs() < AMAX_EPSILON, torch.zeros_like(outputs), outputs)


def abs_histogram(x, num_bins, range_max, skip_zeros=False):
    """Counts (int64, ``num_bins`` long) of ``|x|`` in equal bins over ``[0, range_max]``.

    Bin of a value v is ``floor(v * (num_bins / range_max))`` computed in float32, with
    ``v == range_max`` going to the last bin. Values above ``range_max`` and NaN are not
    counted; with ``skip_zeros`` exact zeros are not counted either.
    """
    v = x.detach().to(torch.float32).abs().flatten()
    keep = v <= range_max
    if skip_zeros:
        keep &= v != 0
    v = v[keep]
    factor = torch.tensor(num_bins, dtype=torch.float32) / torch.tensor(range_max, dtype=torch.float32)
    idx = torch.floor(v * factor.to(v.device)).to(torch.int64).clamp_(max=num_bins - 1)
    return torch.bincount(idx, minlength=num_bins)
