"""Absolute maximum of a tensor over some axes (numpy-style ``axis`` / ``keepdims``)."""
import numbers

import torch

__all__ = ["reduce_amax"]


def _normalize_axes(axis, ndim):
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    if len(axes) > max(ndim, 1):
        raise ValueError(f"Cannot reduce more axes than tensor's dim. axis={axis!r} for a tensor with {ndim} dims")
    out = []
    for a in axes:
        if isinstance(a, bool) or not isinstance(a, numbers.Integral):
            raise TypeError(f"axis must be None, an int or a tuple of ints, got {axis!r}")
        if not -ndim <= a < max(ndim, 1):
            raise ValueError(f"axis {a} is out of range for a tensor with {ndim} dims; use -{ndim}..{ndim - 1}")
        out.append(int(a) % max(ndim, 1))
    if len(set(out)) != len(out):
        raise ValueError(f"axis has repeated entries: {axis!r}")
    return tuple(out)


def reduce_amax(input, axis=None, keepdims=True):  # pylint: disable=redefined-builtin
    """Absolute maximum of ``input`` reduced over ``axis``, without gradient.

    Args:
        input: a tensor.
        axis: None (reduce every dim, the result is 0-d whatever ``keepdims`` says, as upstream), an int, or a
            tuple/list of ints (the dims to reduce; an empty tuple reduces nothing and returns ``|input|``).
        keepdims: keep the reduced dims with length 1 (default True).

    Unlike upstream, a tuple ``axis`` with ``keepdims=True`` always keeps the dims, also when the result has a
    single element (upstream squeezed that case to 0-d), so a per-channel amax of a 1-channel weight keeps the
    shape ``[1, 1, 1, 1]``.
    """
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(input).__name__}")
    if input.numel() == 0:
        raise ValueError("input is empty; reduce_amax needs at least one element")
    with torch.no_grad():
        magnitude = input.detach().abs()
        if axis is None:
            return torch.amax(magnitude)
        axes = _normalize_axes(axis, input.dim())
        if not axes:
            return magnitude
        return torch.amax(magnitude, dim=axes, keepdim=bool(keepdims))
