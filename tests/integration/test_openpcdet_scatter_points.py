"""CPU stand-ins for torch_scatter (dynamic VFEs) and OpenPCDet's points-in-boxes ops, against plain loops."""
import math

import numpy as np
import pytest
import torch

from integration.backends.openpcdet.compat import points_in_boxes, scatter


def groups(n_rows=40, n_groups=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randn(n_rows, 5, generator=g)
    index = torch.randint(0, n_groups, (n_rows,), generator=g)
    index[index == 3] = 4  # group 3 stays empty
    return src, index


def test_scatter_max_matches_loop():
    src, index = groups()
    src[5] = src[2]  # a tie inside one group: argmax must be the first row
    index[5] = index[2]
    out, argmax = scatter.scatter_max(src, index, dim=0)
    size = int(index.max()) + 1
    assert out.shape == (size, 5)
    for k in range(size):
        rows = [i for i in range(len(index)) if index[i] == k]
        for c in range(5):
            if not rows:
                assert out[k, c] == 0 and argmax[k, c] == len(index)
                continue
            values = [float(src[i, c]) for i in rows]
            assert float(out[k, c]) == max(values)
            assert int(argmax[k, c]) == rows[values.index(max(values))]


def test_scatter_mean_matches_loop():
    src, index = groups(seed=1)
    out = scatter.scatter_mean(src, index, dim=0)
    for k in range(int(index.max()) + 1):
        rows = src[index == k]
        want = rows.mean(dim=0) if len(rows) else torch.zeros(5)
        assert torch.allclose(out[k], want, atol=1e-6)


def test_scatter_rejects_other_dims():
    src, index = groups()
    with pytest.raises(ValueError, match="dim"):
        scatter.scatter_mean(src, index, dim=1)
    with pytest.raises(ValueError, match="index"):
        scatter.scatter_max(src, index[:-1], dim=0)


def ref_inside(point, box, margin):
    """OpenPCDet's rule (roiaware_pool3d): |dz| <= dz/2, box-frame |x'| < dx/2 + margin and |y'| < dy/2 + margin."""
    x, y, z, dx, dy, dz, h = box
    px, py, pz = point[0] - x, point[1] - y, point[2] - z
    lx = px * math.cos(h) + py * math.sin(h)
    ly = -px * math.sin(h) + py * math.cos(h)
    return abs(pz) <= dz / 2 and abs(lx) < dx / 2 + margin and abs(ly) < dy / 2 + margin


def scene(seed=0):
    rng = np.random.RandomState(seed)
    points = rng.uniform(-6, 6, size=(300, 3)).astype(np.float32)
    points[:, 2] = rng.uniform(-1, 1, size=300)
    boxes = np.array([[0, 0, 0, 4, 2, 1.5, 0.5], [1, 0.5, 0, 3, 3, 1, -0.3], [-4, 3, 0.2, 2, 5, 2, 1.2]],
                     dtype=np.float32)
    return points, boxes


def test_points_in_boxes_mask_matches_reference():
    points, boxes = scene()
    got = points_in_boxes.points_in_boxes_mask(points, boxes)
    assert isinstance(got, np.ndarray) and got.shape == (3, 300)
    want = np.array([[int(ref_inside(p, b, 1e-2)) for p in points.tolist()] for b in boxes.tolist()])
    assert want.sum() > 20
    assert (got == want).all()


def test_points_in_boxes_batched_gives_first_box_or_minus_one():
    points, boxes = scene(1)
    got = points_in_boxes.points_in_boxes_batched(torch.from_numpy(points)[None], torch.from_numpy(boxes)[None])
    assert got.shape == (1, 300) and got.dtype == torch.int32
    for m, p in enumerate(points.tolist()):
        hits = [t for t, b in enumerate(boxes.tolist()) if ref_inside(p, b, 1e-5)]
        assert int(got[0, m]) == (hits[0] if hits else -1)


def test_points_just_past_an_edge_follow_each_ops_margin():
    """5 mm past the +x face: inside for the CPU op (1 cm margin), outside for the GPU op (1e-5)."""
    box = np.array([[0, 0, 0, 4, 2, 2, 0]], dtype=np.float32)
    points = np.array([[2.005, 0, 0], [1.99, 0, 0], [0, 0, 1.001]], dtype=np.float32)
    assert points_in_boxes.points_in_boxes_mask(points, box).tolist() == [[1, 1, 0]]
    got = points_in_boxes.points_in_boxes_batched(torch.from_numpy(points)[None], torch.from_numpy(box)[None])
    assert got.tolist() == [[-1, 0, -1]]
