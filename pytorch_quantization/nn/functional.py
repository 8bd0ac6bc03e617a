"""Differentiable helpers used by the quantized modules."""
import torch
from torch.autograd import Function

__all__ = ["clip", "ClipFunction"]


class ClipFunction(Function):
    """``min(max(input, clip_value_min), clip_value_max)`` with broadcasting tensor bounds.

    Gradient (as in the PACT paper and TensorFlow's ``clip_by_value``): the input receives the
    incoming gradient where ``clip_value_min < input < clip_value_max``; a bound that requires grad
    receives the sum of the incoming gradient over the elements it clipped. Learnable bounds must be
    scalars (checked in backward, as in 2.2.1).
    """

    @staticmethod
    def forward(ctx, input, clip_value_min, clip_value_max):  # pylint: disable=redefined-builtin
        lo = torch.as_tensor(clip_value_min, dtype=input.dtype, device=input.device)
        hi = torch.as_tensor(clip_value_max, dtype=input.dtype, device=input.device)
        ctx.save_for_backward(input, lo, hi)
        ctx.grad_min = isinstance(clip_value_min, torch.Tensor) and clip_value_min.requires_grad
        ctx.grad_max = isinstance(clip_value_max, torch.Tensor) and clip_value_max.requires_grad
        ctx.bound_dtypes = (getattr(clip_value_min, "dtype", None), getattr(clip_value_max, "dtype", None))
        return torch.max(torch.min(input, hi), lo)

    @staticmethod
    def backward(ctx, grad_output):
        input, lo, hi = ctx.saved_tensors  # pylint: disable=redefined-builtin
        if (ctx.grad_min or ctx.grad_max) and (lo.numel() != 1 or hi.numel() != 1):
            raise ValueError(f"Learnable min/max can only be scalar, got size {tuple(lo.shape)} and "
                             f"{tuple(hi.shape)}; set requires_grad=False on per-element bounds")
        above_min = input > lo
        below_max = input < hi
        zero = torch.zeros((), dtype=grad_output.dtype, device=grad_output.device)
        grad_input = torch.where(above_min & below_max, grad_output, zero)
        grad_min = grad_max = None
        if ctx.grad_min:
            grad_min = torch.where(above_min, zero, grad_output).sum().to(ctx.bound_dtypes[0])
        if ctx.grad_max:
            grad_max = torch.where(below_max, zero, grad_output).sum().to(ctx.bound_dtypes[1])
        return grad_input, grad_min, grad_max


clip = ClipFunction.apply
