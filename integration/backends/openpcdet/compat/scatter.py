"""The two ``torch_scatter`` functions OpenPCDet's dynamic VFEs call (``scatter_max``, ``scatter_mean``),
written with ``torch.Tensor.scatter_reduce`` so ``DynPillarVFE`` / ``DynMeanVFE`` run where the compiled
``torch_scatter`` package is not installed (it has no wheels for every torch build). Same results as
torch_scatter for the calls pcdet makes: rows of ``src`` grouped by a 1-D ``index`` along ``dim=0``;
groups with no row give 0 (and ``argmax == src.size(0)``, torch_scatter's convention).
"""
import torch

__all__ = ["scatter_max", "scatter_mean"]


def _check(src, index, dim):
    if dim != 0:
        raise ValueError(f"dim must be 0 (rows grouped by a 1-D index, as OpenPCDet calls it), got {dim}")
    if index.dim() != 1 or index.shape[0] != src.shape[0]:
        raise ValueError(f"index must be 1-D with one entry per row of src ({src.shape[0]}), "
                         f"got shape {tuple(index.shape)}")
    size = int(index.max()) + 1 if index.numel() else 0
    expanded = index.view(-1, *([1] * (src.dim() - 1))).expand_as(src)
    return size, expanded


def scatter_max(src, index, dim=0):
    """``(out, argmax)``: per group, the element-wise maximum of its rows and the first row holding it."""
    size, expanded = _check(src, index, dim)
    out = src.new_zeros((size,) + tuple(src.shape[1:]))
    out = out.scatter_reduce(0, expanded, src, reduce="amax", include_self=False)
    rows = torch.arange(src.shape[0], device=src.device).view(-1, *([1] * (src.dim() - 1))).expand_as(src)
    candidates = torch.where(src == out.gather(0, expanded), rows, torch.full_like(rows, src.shape[0]))
    argmax = torch.full(out.shape, src.shape[0], dtype=torch.long, device=src.device)
    argmax = argmax.scatter_reduce(0, expanded, candidates, reduce="amin", include_self=True)
    return out, argmax


def scatter_mean(src, index, dim=0):
    """Per group, the mean of its rows."""
    size, expanded = _check(src, index, dim)
    out = src.new_zeros((size,) + tuple(src.shape[1:]))
    return out.scatter_reduce(0, expanded, src, reduce="mean", include_self=False)
