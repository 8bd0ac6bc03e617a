"""CPU BEV NMS fallback (integration.backends.openpcdet.compat.bev_nms) against a reference written here: polygon
clipping (Sutherland-Hodgman) + shoelace for the rotated IoU, a plain greedy loop for NMS."""
import math

import pytest
import torch

from integration.backends.openpcdet.compat import bev_nms


def ref_corners(box):
    x, y, _, dx, dy, _, h = [float(v) for v in box[:7]]
    c, s = math.cos(h), math.sin(h)
    return [(x + c * px - s * py, y + s * px + c * py)
            for px, py in ((dx / 2, dy / 2), (-dx / 2, dy / 2), (-dx / 2, -dy / 2), (dx / 2, -dy / 2))]


def clip(subject, clipper):
    """Sutherland-Hodgman: ``subject`` polygon clipped by the convex counter-clockwise ``clipper``."""
    def inside(p, a, b):
        return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0]) >= 0

    def cross_point(p, q, a, b):
        x1, y1, x2, y2 = p[0], p[1], q[0], q[1]
        x3, y3, x4, y4 = a[0], a[1], b[0], b[1]
        den = (x1 - x2) * (y3 - y4) - (y1 - y2) * (x3 - x4)
        t = ((x1 - x3) * (y3 - y4) - (y1 - y3) * (x3 - x4)) / den
        return (x1 + t * (x2 - x1), y1 + t * (y2 - y1))

    out = subject
    for i in range(len(clipper)):
        a, b = clipper[i], clipper[(i + 1) % len(clipper)]
        src, out = out, []
        for j in range(len(src)):
            p, q = src[j], src[(j + 1) % len(src)]
            if inside(q, a, b):
                if not inside(p, a, b):
                    out.append(cross_point(p, q, a, b))
                out.append(q)
            elif inside(p, a, b):
                out.append(cross_point(p, q, a, b))
        if not out:
            return []
    return out


def shoelace(poly):
    return 0.5 * abs(sum(poly[i][0] * poly[(i + 1) % len(poly)][1] - poly[(i + 1) % len(poly)][0] * poly[i][1]
                         for i in range(len(poly)))) if len(poly) >= 3 else 0.0


def ref_iou(a, b):
    inter = shoelace(clip(ref_corners(a), ref_corners(b)))
    union = float(a[3] * a[4] + b[3] * b[4]) - inter
    return inter / max(union, 1e-8)


def ref_nms(boxes, scores, thresh):
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    keep = []
    for i in order:
        if all(ref_iou(boxes[i], boxes[k]) <= thresh for k in keep):
            keep.append(i)
    return keep


def random_boxes(n, seed, spread=12.0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * spread
    z = torch.rand(n, 1, generator=g)
    size = torch.rand(n, 3, generator=g) * 3 + 0.5
    heading = (torch.rand(n, 1, generator=g) - 0.5) * 4 * math.pi
    return torch.cat([xy, z, size, heading], dim=1)


def test_rotated_iou_closed_forms():
    square = [0.0, 0.0, 0.0, 2.0, 2.0, 1.0, 0.0]
    turned = [0.0, 0.0, 0.0, 2.0, 2.0, 1.0, math.pi / 4]
    shifted = [1.0, 0.0, 0.0, 2.0, 2.0, 1.0, 0.0]
    far = [10.0, 0.0, 0.0, 2.0, 2.0, 1.0, 0.3]
    iou = bev_nms.rotated_bev_iou(torch.tensor([square]), torch.tensor([square, turned, shifted, far]))[0]
    octagon = 8 * (math.sqrt(2) - 1)  # overlap of a square of side 2 and the same square turned 45 degrees
    expected = [1.0, octagon / (8 - octagon), 2.0 / 6.0, 0.0]
    assert iou.tolist() == pytest.approx(expected, abs=1e-5)


def test_rotated_iou_matches_polygon_clipping():
    boxes = random_boxes(40, seed=1)
    got = bev_nms.rotated_bev_iou(boxes, boxes)
    want = torch.tensor([[ref_iou(a, b) for b in boxes.tolist()] for a in boxes.tolist()])
    assert (want > 0.01).sum() > 40  # the test set has real overlaps besides the diagonal
    assert torch.allclose(got, want, atol=1e-4)


def test_aligned_iou_ignores_heading():
    a = torch.tensor([[0.0, 0.0, 0.0, 4.0, 2.0, 1.0, 1.0]])
    b = torch.tensor([[1.0, 1.0, 5.0, 2.0, 2.0, 1.0, -0.4]])
    # footprints [-2, 2] x [-1, 1] and [0, 2] x [0, 2]: overlap 2 x 1
    assert bev_nms.aligned_bev_iou(a, b).item() == pytest.approx(2.0 / (8 + 4 - 2))


@pytest.mark.parametrize("thresh", [0.1, 0.3, 0.7])
def test_rotated_nms_matches_greedy_reference(thresh):
    boxes = random_boxes(60, seed=2)
    scores = torch.rand(60, generator=torch.Generator().manual_seed(3))
    keep, extra = bev_nms.nms_rotated_cpu(boxes, scores, thresh)
    assert extra is None and keep.dtype == torch.long
    assert keep.tolist() == ref_nms(boxes.tolist(), scores.tolist(), thresh)


def test_nms_pre_maxsize_keeps_only_top_scores():
    boxes = random_boxes(30, seed=4, spread=100.0)  # almost no overlaps
    scores = torch.rand(30, generator=torch.Generator().manual_seed(5))
    keep, _ = bev_nms.nms_rotated_cpu(boxes, scores, 0.2, pre_maxsize=10)
    top10 = set(scores.argsort(descending=True)[:10].tolist())
    assert set(keep.tolist()) <= top10
    assert scores[keep].tolist() == sorted(scores[keep].tolist(), reverse=True)


def test_nms_suppresses_only_strictly_above_threshold():
    a = [0.0, 0.0, 0.0, 2.0, 2.0, 1.0, 0.0]
    b = [1.0, 0.0, 0.0, 2.0, 2.0, 1.0, 0.0]  # IoU exactly 1/3 with a
    boxes, scores = torch.tensor([a, b], dtype=torch.float64), torch.tensor([0.9, 0.8], dtype=torch.float64)
    assert bev_nms.nms_rotated_cpu(boxes, scores, 1.0 / 3.0 + 1e-9)[0].tolist() == [0, 1]
    assert bev_nms.nms_rotated_cpu(boxes, scores, 0.3)[0].tolist() == [0]


def test_aligned_nms_matches_reference():
    boxes = random_boxes(50, seed=6)
    scores = torch.rand(50, generator=torch.Generator().manual_seed(7))
    axis = boxes.clone()
    axis[:, 6] = 0.0  # with heading 0 the rotated reference is the axis-aligned IoU
    keep, _ = bev_nms.nms_aligned_cpu(boxes, scores, 0.25)
    assert keep.tolist() == ref_nms(axis.tolist(), scores.tolist(), 0.25)


def test_nms_rejects_bad_shapes():
    with pytest.raises(ValueError, match="boxes"):
        bev_nms.nms_rotated_cpu(torch.zeros(3, 5), torch.zeros(3), 0.5)
    with pytest.raises(ValueError, match="scores"):
        bev_nms.nms_rotated_cpu(torch.zeros(3, 7), torch.zeros(4), 0.5)


# ---- OpenPCDet's own rules (iou3d_nms_kernel.cu), encoded independently ---------------------------------------

def op_rule_overlap(a, b, margin=1e-2):
    """Overlap by the op's definition, in float64: strict edge crossings (touching / collinear edges give none),
    corners inside the other box up to ``margin`` past its edges, convex hull + shoelace of those points."""
    ca, cb = ref_corners(a), ref_corners(b)

    def inside(p, box):
        x, y, _, dx, dy, _, h = [float(v) for v in box[:7]]
        lx = (p[0] - x) * math.cos(h) + (p[1] - y) * math.sin(h)
        ly = -(p[0] - x) * math.sin(h) + (p[1] - y) * math.cos(h)
        return abs(lx) < dx / 2 + margin and abs(ly) < dy / 2 + margin

    def side(o, p, q):
        return (p[0] - o[0]) * (q[1] - o[1]) - (p[1] - o[1]) * (q[0] - o[0])

    points = [p for p in cb if inside(p, a)] + [p for p in ca if inside(p, b)]
    for i in range(4):
        p0, p1 = ca[i], ca[(i + 1) % 4]
        for j in range(4):
            q0, q1 = cb[j], cb[(j + 1) % 4]
            if side(p0, p1, q0) * side(p0, p1, q1) < 0 and side(q0, q1, p0) * side(q0, q1, p1) < 0:
                t = side(q0, q1, p0) / (side(q0, q1, p0) - side(q0, q1, p1))
                points.append((p0[0] + t * (p1[0] - p0[0]), p0[1] + t * (p1[1] - p0[1])))
    pts = sorted(set(points))
    if len(pts) < 3:
        return 0.0

    def half(seq):
        hull = []
        for p in seq:
            while len(hull) >= 2 and side(hull[-2], hull[-1], p) <= 0:
                hull.pop()
            hull.append(p)
        return hull[:-1]

    return shoelace(half(pts) + half(pts[::-1]))


def test_rotated_overlap_matches_the_op_rules_on_clustered_boxes():
    boxes = random_boxes(60, seed=11, spread=5.0)
    got = bev_nms.rotated_bev_overlap(boxes, boxes)
    assert got.dtype == torch.float32
    worst = max(abs(float(got[i, j]) - op_rule_overlap(boxes[i], boxes[j])) for i in range(60) for j in range(60))
    assert worst < 2e-4  # float32 arithmetic, as in the op


def test_corner_within_one_centimetre_counts_as_inside():
    a = [0.0, 0.0, 0.0, 2.0, 2.0, 1.0, 0.0]
    b = [2.005, 0.0, 0.0, 2.0, 2.0, 1.0, 0.0]  # 5 mm gap: no geometric overlap, but the op sees a 5 mm sliver
    got = float(bev_nms.rotated_bev_iou(torch.tensor([a]), torch.tensor([b]))[0, 0])
    want = 0.005 * 2.0 / (8.0 - 0.01)
    assert got == pytest.approx(want, rel=1e-3) and op_rule_overlap(a, b) == pytest.approx(0.01, rel=1e-6)
    far = [2.02, 0.0, 0.0, 2.0, 2.0, 1.0, 0.0]  # 2 cm gap: nothing
    assert float(bev_nms.rotated_bev_iou(torch.tensor([a]), torch.tensor([far]))[0, 0]) == 0.0


def test_identical_boxes_have_iou_one_without_collinear_crossings():
    box = torch.tensor([[1.0, 2.0, 0.0, 4.0, 2.0, 1.5, 0.7]])
    assert float(bev_nms.rotated_bev_iou(box, box)[0, 0]) == pytest.approx(1.0, abs=1e-6)


def rule_nms(boxes, scores, thresh):
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    keep = []
    for i in order:
        ious = []
        for k in keep:
            inter = op_rule_overlap(boxes[k], boxes[i])
            ious.append(inter / max(float(boxes[k, 3] * boxes[k, 4] + boxes[i, 3] * boxes[i, 4]) - inter, 1e-8))
        if all(iou <= thresh for iou in ious):
            keep.append(i)
    return keep


@pytest.mark.parametrize("thresh", [0.2, 0.001])
def test_rotated_nms_keeps_the_set_the_op_rules_keep_on_clustered_boxes(thresh):
    """Random clusters, and rows of boxes side by side with 0-2 cm gaps (where the 1 cm corner margin and the
    touching-edge rule decide)."""
    for trial in range(30):
        g = torch.Generator().manual_seed(trial)
        if trial % 2:
            boxes = random_boxes(12, seed=100 + trial, spread=3.0)
        else:
            size = torch.rand(12, 3, generator=g) + 1.0
            gaps = torch.rand(12, generator=g) * 0.02
            x = torch.cumsum(size[:, 0] + gaps, 0) - size[:, 0] / 2
            heading = (torch.rand(12, generator=g) < 0.5).float() * math.pi
            boxes = torch.cat([x[:, None], torch.zeros(12, 2), size, heading[:, None]], dim=1)
        scores = torch.rand(12, generator=g)
        assert bev_nms.nms_rotated_cpu(boxes, scores, thresh)[0].tolist() == rule_nms(boxes, scores, thresh), trial
