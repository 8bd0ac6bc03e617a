"""centerpoint_task_loss: the float heatmap's positives (per-class top-k peaks above a score) and the box maps at
those locations, on MMDetection3D and OpenPCDet head outputs; reconstruct(loss="task")."""
import copy

import pytest
import torch
from torch import nn

from pytorch_quantization import ptq
from pytorch_quantization.ptq.reconstruct import centerpoint_task_loss


def _float_head():
    heat = torch.full((1, 2, 8, 8), -10.0)
    heat[0, 0, 2, 3] = 2.0   # class 0 peak
    heat[0, 0, 2, 4] = 1.0   # beside it, lower: not a local peak
    heat[0, 0, 6, 6] = 0.5   # a second, weaker class-0 peak
    heat[0, 1, 5, 5] = 0.0   # class 1 peak (probability 0.5)
    gen = torch.Generator().manual_seed(0)
    maps = {key: torch.randn(1, ch, 8, 8, generator=gen) for key, ch in
            (("reg", 2), ("height", 1), ("dim", 3), ("rot", 2), ("vel", 2))}
    return {"heatmap": heat, **maps}


def _perturbed(head, seed):
    gen = torch.Generator().manual_seed(seed)
    return {k: v + 0.3 * torch.randn(v.shape, generator=gen) for k, v in head.items()}


def _reference(quant, ref, positives):
    """The loss written out for explicit positives [(class, y, x)]."""
    sig = torch.sigmoid
    heat = sum(float((sig(quant["heatmap"][0, c, y, x]) - sig(ref["heatmap"][0, c, y, x])) ** 2)
               for c, y, x in positives) / len(positives)
    where = sorted({(y, x) for _, y, x in positives})
    reg = 0.0
    for key in ("reg", "height", "dim", "rot", "vel"):
        err = sum(float(((quant[key][0, :, y, x] - ref[key][0, :, y, x]) ** 2).sum()) for y, x in where)
        reg += err / (len(where) * ref[key].shape[1])
    return heat + reg


def test_loss_uses_positives_only_mmdet3d_layout():
    ref = _float_head()
    quant = _perturbed(ref, 1)
    mmdet_out = lambda head: ([head],)  # noqa: E731 - CenterHead: tuple over tasks of per-level lists of dicts
    loss = float(centerpoint_task_loss(mmdet_out(quant), mmdet_out(ref), score=0.3, top_k=5))
    expected = _reference(quant, ref, [(0, 2, 3), (0, 6, 6), (1, 5, 5)])
    assert loss == pytest.approx(expected, rel=1e-5)
    # top_k=1 keeps the strongest peak per class; a higher score drops class 1 (p = 0.5) and the weak peak
    assert float(centerpoint_task_loss(mmdet_out(quant), mmdet_out(ref), score=0.3, top_k=1)) == pytest.approx(
        _reference(quant, ref, [(0, 2, 3), (1, 5, 5)]), rel=1e-5)
    assert float(centerpoint_task_loss(mmdet_out(quant), mmdet_out(ref), score=0.7)) == pytest.approx(
        _reference(quant, ref, [(0, 2, 3)]), rel=1e-5)
    # anything away from the positives does not count
    changed = {k: v.clone() for k, v in quant.items()}
    for value in changed.values():
        value[..., 0, :] += 5.0
    assert float(centerpoint_task_loss(mmdet_out(changed), mmdet_out(ref), score=0.3, top_k=5)) == loss


def test_openpcdet_layout_gives_the_same_loss():
    ref = _float_head()
    quant = _perturbed(ref, 2)
    rename = {"heatmap": "hm", "reg": "center", "height": "center_z", "dim": "dim", "rot": "rot", "vel": "vel"}
    pcdet = lambda head: [{rename[k]: v for k, v in head.items()}]  # noqa: E731 - pred_dicts
    expected = float(centerpoint_task_loss(([quant],), ([ref],)))
    assert float(centerpoint_task_loss(pcdet(quant), pcdet(ref))) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="no CenterPoint head output"):
        centerpoint_task_loss(torch.zeros(3), torch.zeros(3))


class _TinyCenterNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                                      nn.ReLU())
        self.heatmap = nn.Conv2d(8, 2, 3, padding=1)
        self.reg = nn.Conv2d(8, 2, 3, padding=1)

    def forward(self, x):
        feats = self.backbone(x)
        return ([{"heatmap": self.heatmap(feats), "reg": self.reg(feats)}],)


def test_reconstruct_with_task_loss():
    torch.manual_seed(0)
    model = _TinyCenterNet()
    gen = torch.Generator().manual_seed(3)
    data = [torch.nn.functional.interpolate(torch.randn(2, 3, 4, 4, generator=gen), size=(12, 12)) for _ in range(2)]
    float_model = copy.deepcopy(model)
    ptq.quantize_model(model, "w4")
    ptq.calibrate(model, data)

    def task_error(m):
        with torch.no_grad():
            return sum(float(centerpoint_task_loss(m(x), float_model(x))) for x in data)

    rtn = task_error(model)
    table = ptq.reconstruct(model, float_model, data, method="brecq", loss="task", iters=60, progress=False)
    assert "loss task" in table.title and len(table.rows) >= 3
    assert task_error(model) < rtn
