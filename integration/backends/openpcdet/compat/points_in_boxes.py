"""CPU versions of OpenPCDet's ``roiaware_pool3d_utils.points_in_boxes_gpu`` and ``points_in_boxes_cpu``
(info generation calls them when writing the ground-truth database), with the compiled ops' rule
(``roiaware_pool3d_kernel.cu`` / ``roiaware_pool3d.cpp``), in float32: a point is inside a box
``[x, y, z, dx, dy, dz, heading]`` (z = box centre) when ``|z - cz| <= dz / 2`` and, rotated into the box frame,
``|x'| < dx / 2 + margin`` and ``|y'| < dy / 2 + margin``, where the margin is 1e-5 in the GPU op and 1e-2 (1 cm)
in the CPU op. As in the compiled op, a point inside several boxes gets the first.
"""
import numpy as np
import torch

__all__ = ["GPU_MARGIN", "CPU_MARGIN", "inside_mask", "points_in_boxes_batched", "points_in_boxes_mask"]

GPU_MARGIN = 1e-5  # roiaware_pool3d_kernel.cu
CPU_MARGIN = 1e-2  # roiaware_pool3d.cpp


def inside_mask(points, boxes, margin):
    """``(T, M)`` bool: point ``m`` (``points (M, 3+)``) inside box ``t`` (``boxes (T, 7+)``), float32."""
    points, boxes = points.float(), boxes.float()
    d = points[None, :, 0:3] - boxes[:, None, 0:3]
    cos, sin = torch.cos(-boxes[:, 6])[:, None], torch.sin(-boxes[:, 6])[:, None]
    local_x = d[..., 0] * cos + d[..., 1] * (-sin)
    local_y = d[..., 0] * sin + d[..., 1] * cos
    return ((d[..., 2].abs() <= boxes[:, None, 5] / 2) & (local_x.abs() < boxes[:, None, 3] / 2 + margin)
            & (local_y.abs() < boxes[:, None, 4] / 2 + margin))


def points_in_boxes_batched(points, boxes):
    """Drop-in for ``points_in_boxes_gpu``: ``points (B, M, 3)``, ``boxes (B, T, 7)`` -> ``(B, M)`` int32
    index of the first box holding each point, -1 for none."""
    if points.dim() != 3 or boxes.dim() != 3 or points.shape[0] != boxes.shape[0]:
        raise ValueError(f"points must be (B, M, 3) and boxes (B, T, 7) with the same B, got "
                         f"{tuple(points.shape)} and {tuple(boxes.shape)}")
    out = torch.full(points.shape[:2], -1, dtype=torch.int32, device=points.device)
    for b in range(points.shape[0]):
        mask = inside_mask(points[b], boxes[b], GPU_MARGIN)
        if mask.shape[0] == 0:
            continue
        hit = mask.any(dim=0)
        first = mask.int().argmax(dim=0).int()
        out[b] = torch.where(hit, first, out[b])
    return out


def points_in_boxes_mask(points, boxes):
    """Drop-in for ``points_in_boxes_cpu``: ``(T, M)`` int32 0/1 (numpy in, numpy out)."""
    is_numpy = isinstance(points, np.ndarray)
    pts = torch.from_numpy(points) if is_numpy else points
    bxs = torch.from_numpy(boxes) if isinstance(boxes, np.ndarray) else boxes
    mask = inside_mask(pts, bxs, CPU_MARGIN).int()
    return mask.numpy() if is_numpy else mask
