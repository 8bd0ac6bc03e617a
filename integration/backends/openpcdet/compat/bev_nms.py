"""CPU versions of OpenPCDet's ``iou3d_nms_utils.nms_gpu`` (rotated BEV NMS) and ``nms_normal_gpu``
(axis-aligned BEV NMS), same arguments and return value: ``(kept indices into boxes, None)``, in
descending score order; and of ``boxes_iou3d_gpu`` (rotated 3D IoU, which evaluation calls for its
recall statistics when ground truth is loaded).

Semantics follow OpenPCDet's op (``iou3d_nms_kernel.cu`` / ``iou3d_cpu.cpp``), computed in float32 as there:
boxes are ``[x, y, z, dx, dy, dz, heading]`` (only the first seven columns are read); footprint corners are the
axis-aligned corners ``x +- dx/2, y +- dy/2`` rotated about the centre; the overlap polygon is made of

* the crossings of an edge of one box with an edge of the other, counted only when the segments' bounding
  boxes meet and each segment's ends lie STRICTLY on both sides of the other's line (touching or collinear
  edges give no crossing);
* the corners of each box that lie inside the other, where inside means ``|local x| < dx/2 + 0.01`` and
  ``|local y| < dy/2 + 0.01`` (a corner up to 1 cm past an edge counts);

its points are ordered by angle around their mean and its area is the fan sum from the first point. The BEV IoU
is ``overlap / max(area_a + area_b - overlap, 1e-8)``; a box is suppressed when its IoU with a kept,
higher-scored box (that box first) is strictly greater than ``thresh``. ``nms_normal_gpu`` ignores the heading
(axis-aligned footprints ``dx`` x ``dy``). ``boxes_iou3d_gpu`` = BEV overlap x height overlap /
``max(volume_a + volume_b - overlap, 1e-6)``.

All candidate pairs are evaluated at once (at most 24 points each); only pairs whose circumscribed circles
(grown by the corner margin) meet are evaluated, the others have no overlap.
"""
import torch

__all__ = ["bev_corners", "rotated_bev_overlap", "rotated_bev_iou", "aligned_bev_iou", "boxes_iou3d_cpu",
           "greedy_nms", "nms_rotated_cpu", "nms_aligned_cpu"]

_EPS = 1e-8
_CORNER_MARGIN = 1e-2
_PAIR_CHUNK = 65536


def bev_corners(boxes):
    """``(N, 4, 2)`` footprint corners of float32 ``[x, y, z, dx, dy, dz, heading]`` boxes, counter-clockwise:
    the axis-aligned corners rotated about the centre, in the op's order of operations."""
    cx, cy = boxes[:, 0:1], boxes[:, 1:2]
    hx, hy = boxes[:, 3:4] / 2, boxes[:, 4:5] / 2
    x = torch.cat([cx - hx, cx + hx, cx + hx, cx - hx], dim=1)
    y = torch.cat([cy - hy, cy - hy, cy + hy, cy + hy], dim=1)
    cos, sin = torch.cos(boxes[:, 6:7]), torch.sin(boxes[:, 6:7])
    rx = (x - cx) * cos + (y - cy) * (-sin) + cx
    ry = (x - cx) * sin + (y - cy) * cos + cy
    return torch.stack([rx, ry], dim=-1)


def _inside(points, boxes):
    """``(P, K)`` mask: ``points (P, K, 2)`` inside the footprint of ``boxes (P, 7)`` with the op's 1 cm margin."""
    cos, sin = torch.cos(-boxes[:, 6:7]), torch.sin(-boxes[:, 6:7])
    dx, dy = points[..., 0] - boxes[:, 0:1], points[..., 1] - boxes[:, 1:2]
    lx = dx * cos + dy * (-sin)
    ly = dx * sin + dy * cos
    return (lx.abs() < boxes[:, 3:4] / 2 + _CORNER_MARGIN) & (ly.abs() < boxes[:, 4:5] / 2 + _CORNER_MARGIN)


def _cross3(p1x, p1y, p2x, p2y, p0x, p0y):
    return (p1x - p0x) * (p2y - p0y) - (p2x - p0x) * (p1y - p0y)


def _edge_crossings(ca, cb):
    """Crossing points ``(P, 16, 2)`` of the edges of ``ca`` and ``cb`` (``(P, 4, 2)`` each) and their mask, edge
    pairs in the op's order (edge i of a, then edge j of b)."""
    p0, p1 = ca[:, :, None, :], torch.roll(ca, -1, dims=1)[:, :, None, :]
    q0, q1 = cb[:, None, :, :], torch.roll(cb, -1, dims=1)[:, None, :, :]
    p0, p1, q0, q1 = torch.broadcast_tensors(p0, p1, q0, q1)
    (p0x, p0y), (p1x, p1y) = p0.unbind(-1), p1.unbind(-1)
    (q0x, q0y), (q1x, q1y) = q0.unbind(-1), q1.unbind(-1)
    boxes_meet = ((torch.minimum(p0x, p1x) <= torch.maximum(q0x, q1x))
                  & (torch.minimum(q0x, q1x) <= torch.maximum(p0x, p1x))
                  & (torch.minimum(p0y, p1y) <= torch.maximum(q0y, q1y))
                  & (torch.minimum(q0y, q1y) <= torch.maximum(p0y, p1y)))
    s1 = _cross3(q0x, q0y, p1x, p1y, p0x, p0y)
    s2 = _cross3(p1x, p1y, q1x, q1y, p0x, p0y)
    s3 = _cross3(p0x, p0y, q1x, q1y, q0x, q0y)
    s4 = _cross3(q1x, q1y, p1x, p1y, q0x, q0y)
    valid = boxes_meet & (s1 * s2 > 0) & (s3 * s4 > 0)
    s5 = _cross3(q1x, q1y, p1x, p1y, p0x, p0y)
    denom = s5 - s1
    general = denom.abs() > _EPS
    safe = torch.where(general, denom, torch.ones_like(denom))
    gx, gy = (s5 * q0x - s1 * q1x) / safe, (s5 * q0y - s1 * q1y) / safe
    a0, b0, c0 = p0y - p1y, p1x - p0x, p0x * p1y - p1x * p0y  # near-degenerate: intersect the two lines
    a1, b1, c1 = q0y - q1y, q1x - q0x, q0x * q1y - q1x * q0y
    d = a0 * b1 - a1 * b0
    d = torch.where(d == 0, torch.ones_like(d), d)
    lx, ly = (b0 * c1 - b1 * c0) / d, (a1 * c0 - a0 * c1) / d
    points = torch.stack([torch.where(general, gx, lx), torch.where(general, gy, ly)], dim=-1)
    return points.reshape(ca.shape[0], 16, 2), valid.reshape(ca.shape[0], 16)


def _polygon_area(points, valid):
    """Area of the polygon through the ``valid`` rows of ``points (P, K, 2)``: ordered by angle around their mean
    (stable for equal angles), fan sum from the first one; 0 with fewer than 3 points."""
    count = valid.sum(dim=1)
    weights = valid.to(points.dtype)[..., None]
    center = (points * weights).sum(dim=1) / count.clamp(min=1)[:, None].to(points.dtype)
    angle = torch.atan2(points[..., 1] - center[:, None, 1], points[..., 0] - center[:, None, 0])
    angle = torch.where(valid, angle, torch.full_like(angle, float("inf")))
    order = angle.sort(dim=1, stable=True)[1]
    ordered = torch.gather(points, 1, order[..., None].expand_as(points))
    ordered_valid = torch.gather(valid, 1, order)
    first = ordered[:, :1, :]
    ordered = torch.where(ordered_valid[..., None], ordered, first.expand_as(ordered))  # padding adds nothing
    rel = ordered - first
    nxt = torch.roll(rel, -1, dims=1)
    area = (rel[..., 0] * nxt[..., 1] - rel[..., 1] * nxt[..., 0]).sum(dim=1).abs() / 2
    return torch.where(count >= 3, area, torch.zeros_like(area))


def _pair_overlap(a, b):
    """Footprint overlap areas of float32 box pairs ``a[i]``, ``b[i]`` (``(P, 7)`` each), points in the op's
    order: edge crossings, then per corner k: b's corner k inside a, a's corner k inside b."""
    ca, cb = bev_corners(a), bev_corners(b)
    crossings, crossing_valid = _edge_crossings(ca, cb)
    corners = torch.stack([cb, ca], dim=2).reshape(a.shape[0], 8, 2)
    corner_valid = torch.stack([_inside(cb, a), _inside(ca, b)], dim=2).reshape(a.shape[0], 8)
    points = torch.cat([crossings, corners], dim=1)
    valid = torch.cat([crossing_valid, corner_valid], dim=1)
    return _polygon_area(points, valid)


def rotated_bev_overlap(boxes_a, boxes_b):
    """``(N, M)`` float32 footprint overlap areas of ``boxes_a (N, 7+)`` and ``boxes_b (M, 7+)``."""
    a, b = boxes_a[:, :7].float(), boxes_b[:, :7].float()
    radius_a, radius_b = a[:, 3:5].norm(dim=1) / 2, b[:, 3:5].norm(dim=1) / 2
    dist = torch.cdist(a[:, 0:2].double(), b[:, 0:2].double())
    reach = (radius_a[:, None] + radius_b[None, :]).double() + 2 * _CORNER_MARGIN
    ia, ib = torch.nonzero(dist < reach, as_tuple=True)
    overlap = torch.zeros(a.shape[0], b.shape[0], dtype=torch.float32, device=a.device)
    for start in range(0, ia.numel(), _PAIR_CHUNK):
        sa, sb = ia[start:start + _PAIR_CHUNK], ib[start:start + _PAIR_CHUNK]
        overlap[sa, sb] = _pair_overlap(a[sa], b[sb])
    return overlap


def rotated_bev_iou(boxes_a, boxes_b):
    """``(N, M)`` rotated BEV IoU between ``boxes_a (N, 7+)`` and ``boxes_b (M, 7+)``."""
    overlap = rotated_bev_overlap(boxes_a, boxes_b)
    area_a = boxes_a[:, 3].float() * boxes_a[:, 4].float()
    area_b = boxes_b[:, 3].float() * boxes_b[:, 4].float()
    union = (area_a[:, None] + area_b[None, :] - overlap).clamp(min=_EPS)
    return (overlap / union).to(boxes_a.dtype)


def boxes_iou3d_cpu(boxes_a, boxes_b):
    """Drop-in for ``boxes_iou3d_gpu``: ``(N, M)`` 3D IoU = BEV overlap x height overlap / union volume."""
    a, b = boxes_a[:, :7].float(), boxes_b[:, :7].float()
    top = torch.minimum((a[:, 2] + a[:, 5] / 2)[:, None], (b[:, 2] + b[:, 5] / 2)[None, :])
    bottom = torch.maximum((a[:, 2] - a[:, 5] / 2)[:, None], (b[:, 2] - b[:, 5] / 2)[None, :])
    inter = rotated_bev_overlap(a, b) * (top - bottom).clamp(min=0)
    volume_a, volume_b = a[:, 3] * a[:, 4] * a[:, 5], b[:, 3] * b[:, 4] * b[:, 5]
    union = (volume_a[:, None] + volume_b[None, :] - inter).clamp(min=1e-6)
    return (inter / union).to(boxes_a.dtype)


def aligned_bev_iou(boxes_a, boxes_b):
    """``(N, M)`` BEV IoU of the axis-aligned ``dx`` x ``dy`` footprints (heading ignored)."""
    a, b = boxes_a[:, :6].float(), boxes_b[:, :6].float()
    lo_a, hi_a = a[:, 0:2] - a[:, 3:5] / 2, a[:, 0:2] + a[:, 3:5] / 2
    lo_b, hi_b = b[:, 0:2] - b[:, 3:5] / 2, b[:, 0:2] + b[:, 3:5] / 2
    side = (torch.minimum(hi_a[:, None], hi_b[None]) - torch.maximum(lo_a[:, None], lo_b[None])).clamp(min=0)
    overlap = side[..., 0] * side[..., 1]
    union = (a[:, 3] * a[:, 4])[:, None] + (b[:, 3] * b[:, 4])[None, :] - overlap
    return (overlap / union.clamp(min=_EPS)).to(boxes_a.dtype)


def greedy_nms(iou, thresh):
    """Indices kept by greedy NMS over rows already sorted by descending score (``iou[i, j]``: kept box i first;
    IoU and threshold compared in float32)."""
    suppressed = torch.zeros(iou.shape[0], dtype=torch.bool)
    over = (iou.float() > torch.tensor(thresh, dtype=torch.float32)).cpu()  # float32 compare, as in the op
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
