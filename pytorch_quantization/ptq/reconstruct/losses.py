"""Reconstruction losses.

* ``output_loss``: relative squared error ``sum (out - ref)^2 / sum ref^2`` over every floating tensor of a block
  output; a spconv tensor contributes its features only, i.e. the active sites (empty space never enters).
* ``centerpoint_task_loss``: LiDAR-PTQ's task-guided loss for CenterPoint heads, distilling the float model's
  heatmap at its positives (per class, the top-k local peaks above a score) and the box regression maps at
  those locations.
"""
import torch
import torch.nn.functional as F

from pytorch_quantization.ptq.layer_types import is_sparse_tensor

__all__ = ["output_loss", "centerpoint_task_loss", "head_dicts"]

_HEATMAP_KEYS = ("heatmap", "hm")


def _pairs(out, ref):
    if is_sparse_tensor(ref):
        if not is_sparse_tensor(out) or out.features.shape != ref.features.shape:
            raise ValueError("a sparse block output has other active sites than the float model's")
        return [(out.features, ref.features)]
    if isinstance(ref, torch.Tensor):
        return [(out, ref)] if ref.is_floating_point() else []
    if isinstance(ref, dict):
        return [p for key in ref for p in _pairs(out[key], ref[key])]
    if isinstance(ref, (list, tuple)):
        return [p for a, b in zip(out, ref) for p in _pairs(a, b)]
    return []


def output_loss(out, ref):
    """Relative squared error of a block output against the float one (see the module docstring)."""
    pairs = _pairs(out, ref)
    if not pairs:
        raise ValueError("the block output holds no floating tensor to compare; choose other blocks")
    err = sum(((a.float() - b.float()) ** 2).sum() for a, b in pairs)
    power = sum((b.float() ** 2).sum() for _, b in pairs)
    return err / power.clamp_min(1e-12)


def head_dicts(output):
    """The CenterPoint head dicts in a (nested) output: dicts holding ``heatmap`` (MMDetection3D ``CenterHead``:
    a list per task of dicts) or ``hm`` (OpenPCDet ``CenterHead`` ``pred_dicts``), in traversal order."""
    if isinstance(output, dict):
        if any(k in output for k in _HEATMAP_KEYS):
            return [output]
        return [d for key in output for d in head_dicts(output[key])]
    if isinstance(output, (list, tuple)):
        return [d for item in output for d in head_dicts(item)]
    return []


def _positives(heat, score, top_k):
    """Mask ``[B, C, H, W]`` of the per-class top-k local maxima of ``heat`` (probabilities) above ``score``."""
    peaks = heat == F.max_pool2d(heat, 3, stride=1, padding=1)
    candidates = torch.where(peaks & (heat > score), heat, torch.zeros_like(heat)).flatten(2)
    k = min(top_k, candidates.shape[-1])
    values, index = candidates.topk(k, dim=-1)
    mask = torch.zeros_like(candidates, dtype=torch.bool).scatter_(-1, index, values > 0)
    return mask.view_as(heat)


def centerpoint_task_loss(quant_output, float_output, *, score=0.1, top_k=100, heatmap_weight=1.0,
                          reg_weight=1.0):
    """Task-guided distillation loss for CenterPoint heads (``loss="task"`` of ``reconstruct``).

    Args:
        quant_output / float_output: outputs of the quantized and float models holding the head dicts
            (see ``head_dicts``); each dict's heatmap (logits) is ``[B, classes, H, W]``, every other
            ``[B, C, H, W]`` floating map of the same H, W is a regression map (reg / center, height /
            center_z, dim, rot, vel, iou ...).
        score: a float peak counts as positive above this probability (sigmoid of the float heatmap).
        top_k: at most this many positives per class and sample.

    Returns:
        ``heatmap_weight * mean squared error of the sigmoid heatmaps at the positives (per class)
        + reg_weight * mean squared error of the regression maps at the positive locations``; 0 when the
        float model has no positive.
    """
    quant, ref = head_dicts(quant_output), head_dicts(float_output)
    if not ref:
        raise ValueError("centerpoint_task_loss found no CenterPoint head output (a dict with 'heatmap' or 'hm'); "
                         "pass a forward_fn that returns the head's raw outputs, or a task_loss_fn of your own")
    if len(quant) != len(ref):
        raise ValueError(f"the quantized output has {len(quant)} head dicts, the float output {len(ref)}")
    total = torch.zeros((), device=_heatmap(ref[0]).device)
    for q, f in zip(quant, ref):
        f_heat = torch.sigmoid(_heatmap(f).float())
        positive = _positives(f_heat, score, top_k)
        where = positive.any(dim=1, keepdim=True)
        count = positive.sum().clamp_min(1)
        diff = (torch.sigmoid(_heatmap(q).float()) - f_heat) ** 2
        total = total + heatmap_weight * (diff * positive).sum() / count
        for key, f_map in f.items():
            if key in _HEATMAP_KEYS or not _is_map(f_map, f_heat):
                continue
            err = ((q[key].float() - f_map.float()) ** 2 * where).sum()
            total = total + reg_weight * err / (where.sum() * f_map.shape[1]).clamp_min(1)
    return total


def _heatmap(head):
    return next(head[k] for k in _HEATMAP_KEYS if k in head)


def _is_map(value, heat):
    return (isinstance(value, torch.Tensor) and value.is_floating_point() and value.dim() == 4
            and value.shape[0] == heat.shape[0] and value.shape[2:] == heat.shape[2:])
