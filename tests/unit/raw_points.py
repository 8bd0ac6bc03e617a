"""Test data shared by the auto-calibration and clipping-diagnostics tests: PFN-like raw point features."""
import torch


def raw_points(seed=0, batches=3):
    """x, y in +-8 m, small offsets, and an intensity channel whose rare tail reaches 210 (exponential, rate
    0.27): entropy calibration clips it to ~18, as it clips the real PFN input to 17.5."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batches):
        pts = torch.randn(500, 32, 10, generator=gen) * 0.3
        pts[..., 0:2] = (torch.rand(500, 32, 2, generator=gen) * 2 - 1) * 8
        pts[..., 3] = (-torch.log(torch.rand(500, 32, generator=gen)) / 0.27).clamp(max=210)
        pts[0, 0, 3] = 210.0
        out.append(pts)
    return out
