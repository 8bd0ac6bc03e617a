"""CPU versions of OpenPCDet's ``iou3d_nms_utils.nms_gpu`` (rotated BEV NMS) and ``nms_normal_gpu``
(axis-aligned BEV NMS), same arguments and return value: ``(kept indices into boxes, None)``, in
descending score order; and of ``boxes_iou3d_gpu`` (rotated 3D IoU, which evaluation calls for its
recall statistics when ground truth is loaded).

Semantics follow the CUDA op: boxes are ``[x, y, z, dx, dy, dz, heading, ...]`` (only the first seven
columns are read); the BEV IoU is ``overlap / max(area_a + area_b - overlap, 1e-8)`` of the two
footprints; a box is suppressed when its IoU with a kept, higher-scored box is strictly greater than
``thresh``. ``nms_normal_gpu`` ignores the heading (axis-aligned footprints ``dx`` x ``dy``).

The rotated overlap is computed for all candidate pairs at once: the intersection polygon of two convex
quadrilaterals is made of the corners of each that lie inside the other plus the crossings of their
edges (at most 24 points); ordering the valid points by angle around their mean and applying the
shoelace formula gives its area. Only pairs whose circumscribed circles meet are evaluated.
"""
import torch

__all__ = ["bev_corners", "rotated_bev_overlap", "rotated_bev_iou", "aligned_bev_iou", "boxes_iou3d_cpu",
           "greedy_nms", "nms_rotated_cpu", "nms_aligned_cpu"]

_EPS = 1e-8
_PAIR_CHUNK = 65536


def bev_corners(boxes):
    """``(N, 4, 2)`` footprint corners of ``[x, y, z, dx, dy, dz, heading]`` boxes, counter-clockwise."""
    half = boxes[:, 3:5] / 2
    signs = boxes.new_tensor([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]])
    local = signs[None] * half[:, None, :]
    cos, sin = torch.cos(boxes[:, 6])[:, None], torch.sin(boxes[:, 6])[:, None]
    x = local[..., 0] * cos - local[..., 1] * sin + boxes[:, None, 0]
    y = local[..., 0] * sin + local[..., 1] * cos + boxes[:, None, 1]
    return torch.stack([x, y], dim=-1)


def _inside(points, boxes):
    """``(P, K)`` mask: ``points (P, K, 2)`` inside the footprint of ``boxes (P, 7)`` (border included)."""
    d = points - boxes[:, None, 0:2]
    cos, sin = torch.cos(boxes[:, 6])[:, None], torch.sin(boxes[:, 6])[:, None]
    lx = d[..., 0] * cos + d[..., 1] * sin
    ly = -d[..., 0] * sin + d[..., 1] * cos
    tol = 1e-5
    return (lx.abs() <= boxes[:, None, 3] / 2 + tol) & (ly.abs() <= boxes[:, None, 4] / 2 + tol)


def _edge_crossings(ca, cb):
    """Crossing points ``(P, 16, 2)`` of the edges of ``ca`` and ``cb`` (``(P, 4, 2)`` each) and their mask."""
    a0, a1 = ca[:, :, None, :], torch.roll(ca, -1, dims=1)[:, :, None, :]
    b0, b1 = cb[:, None, :, :], torch.roll(cb, -1, dims=1)[:, None, :, :]
    da, db, ab = a1 - a0, b1 - b0, b0 - a0

    def cross(u, v):
        return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]

    denom = cross(da, db)
    parallel = denom.abs() < _EPS
    safe = torch.where(parallel, torch.ones_like(denom), denom)
    t = cross(ab, db) / safe
    u = cross(ab, da) / safe
    valid = ~parallel & (t >= 0) & (t <= 1) & (u >= 0) & (u <= 1)
    points = a0 + t[..., None] * da
    return points.reshape(ca.shape[0], 16, 2), valid.reshape(ca.shape[0], 16)


def _polygon_area(points, valid):
    """Area of the convex polygon through the ``valid`` rows of ``points (P, K, 2)`` (0 if fewer than 3)."""
    count = valid.sum(dim=1)
    weights = valid.to(points.dtype)[..., None]
    center = (points * weights).sum(dim=1) / count.clamp(min=1)[:, None].to(points.dtype)
    rel = points - center[:, None, :]
    angle = torch.atan2(rel[..., 1], rel[..., 0])
    angle = torch.where(valid, angle, torch.full_like(angle, float("inf")))
    order = angle.argsort(dim=1)
    rel = torch.gather(rel, 1, order[..., None].expand_as(rel))
    ordered_valid = torch.gather(valid, 1, order)
    rel = torch.where(ordered_valid[..., None], rel, rel[:, :1, :].expand_as(rel))  # pad with the first point
    nxt = torch.roll(rel, -1, dims=1)
    area = 0.5 * (rel[..., 0] * nxt[..., 1] - rel[..., 1] * nxt[..., 0]).sum(dim=1).abs()
    return torch.where(count >= 3, area, torch.zeros_like(area))


def _pair_overlap(a, b):
    """Footprint overlap areas of box pairs ``a[i]``, ``b[i]`` (``(P, 7)`` each)."""
    ca, cb = bev_corners(a), bev_corners(b)
    crossings, crossing_valid = _edge_crossings(ca, cb)
    points = torch.cat([ca, cb, crossings], dim=1)
    valid = torch.cat([_inside(ca, b), _inside(cb, a), crossing_valid], dim=1)
    return _polygon_area(points, valid)


def rotated_bev_overlap(boxes_a, boxes_b):
    """``(N, M)`` float64 footprint overlap areas of ``boxes_a (N, 7+)`` and ``boxes_b (M, 7+)``."""
    a, b = boxes_a[:, :7].double(), boxes_b[:, :7].double()
    radius_a, radius_b = a[:, 3:5].norm(dim=1) / 2, b[:, 3:5].norm(dim=1) / 2
    dist = torch.cdist(a[:, 0:2], b[:, 0:2])
    ia, ib = torch.nonzero(dist < radius_a[:, None] + radius_b[None, :], as_tuple=True)
    overlap = torch.zeros(a.shape[0], b.shape[0], dtype=torch.float64, device=a.device)
    for start in range(0, ia.numel(), _PAIR_CHUNK):
        sa, sb = ia[start:start + _PAIR_CHUNK], ib[start:start + _PAIR_CHUNK]
        overlap[sa, sb] = _pair_overlap(a[sa], b[sb])
    return overlap


def rotated_bev_iou(boxes_a, boxes_b):
    """``(N, M)`` rotated BEV IoU between ``boxes_a (N, 7+)`` and ``boxes_b (M, 7+)``."""
    overlap = rotated_bev_overlap(boxes_a, boxes_b)
    area_a = (boxes_a[:, 3] * boxes_a[:, 4]).double()
    area_b = (boxes_b[:, 3] * boxes_b[:, 4]).double()
    union = (area_a[:, None] + area_b[None, :] - overlap).clamp(min=_EPS)
    return (overlap / union).to(boxes_a.dtype)


def boxes_iou3d_cpu(boxes_a, boxes_b):
    """Drop-in for ``boxes_iou3d_gpu``: ``(N, M)`` 3D IoU = BEV overlap x height overlap / union volume."""
    a, b = boxes_a[:, :7].double(), boxes_b[:, :7].double()
    top = torch.minimum((a[:, 2] + a[:, 5] / 2)[:, None], (b[:, 2] + b[:, 5] / 2)[None, :])
    bottom = torch.maximum((a[:, 2] - a[:, 5] / 2)[:, None], (b[:, 2] - b[:, 5] / 2)[None, :])
    inter = rotated_bev_overlap(a, b) * (top - bottom).clamp(min=0)
    volume_a, volume_b = a[:, 3] * a[:, 4] * a[:, 5], b[:, 3] * b[:, 4] * b[:, 5]
    union = (volume_a[:, None] + volume_b[None, :] - inter).clamp(min=1e-6)
    return (inter / union).to(boxes_a.dtype)


def aligned_bev_iou(boxes_a, boxes_b):
    """``(N, M)`` BEV IoU of the axis-aligned ``dx`` x ``dy`` footprints (heading ignored)."""
    a, b = boxes_a[:, :6].double(), boxes_b[:, :6].double()
    lo_a, hi_a = a[:, 0:2] - a[:, 3:5] / 2, a[:, 0:2] + a[:, 3:5] / 2
    lo_b, hi_b = b[:, 0:2] - b[:, 3:5] / 2, b[:, 0:2] + b[:, 3:5] / 2
    side = (torch.minimum(hi_a[:, None], hi_b[None]) - torch.maximum(lo_a[:, None], lo_b[None])).clamp(min=0)
    overlap = side[..., 0] * side[..., 1]
    union = (a[:, 3] * a[:, 4])[:, None] + (b[:, 3] * b[:, 4])[None, :] - overlap
    return (overlap / union.clamp(min=_EPS)).to(boxes_a.dtype)


def greedy_nms(iou, thresh):
    """Indices kept by greedy NMS over rows already sorted by descending score."""
    suppressed = torch.zeros(iou.shape[0], dtype=torch.bool)
    over = (iou > thresh).cpu()
    keep = []
    for i in range(iou.shape[0]):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= over[i]
    return torch.tensor(keep, dtype=torch.long)


def _nms(boxes, scores, thresh, pre_maxsize, iou_fn):
    if boxes.dim() != 2 or boxes.shape[1] < 7:
        raise ValueError(f"boxes must be (N, 7) [x, y, z, dx, dy, dz, heading], got shape {tuple(boxes.shape)}")
    if scores.shape != boxes.shape[:1]:
        raise ValueError(f"scores must be (N,) with N = {boxes.shape[0]}, got shape {tuple(scores.shape)}")
    order = scores.sort(0, descending=True)[1]
    if pre_maxsize is not None:
        order = order[:pre_maxsize]
    ordered = boxes[order]
    keep = greedy_nms(iou_fn(ordered, ordered), float(thresh))
    return order[keep.to(order.device)].contiguous(), None


def nms_rotated_cpu(boxes, scores, thresh, pre_maxsize=None, **kwargs):
    """Drop-in for ``iou3d_nms_utils.nms_gpu`` on CPU tensors (extra keyword arguments are ignored, as there)."""
    return _nms(boxes, scores, thresh, pre_maxsize, rotated_bev_iou)


def nms_aligned_cpu(boxes, scores, thresh, **kwargs):
    """Drop-in for ``iou3d_nms_utils.nms_normal_gpu`` on CPU tensors."""
    return _nms(boxes, scores, thresh, None, aligned_bev_iou)
