"""Clipping diagnostics: clipped fraction against a direct count, and the warning for raw-coordinate inputs."""
import warnings

import pytest
import torch
from torch import nn

from pytorch_quantization import ptq
from pytorch_quantization.calib import HistogramCalibrator
from pytorch_quantization.ptq.diagnostics import clipped_fraction
from raw_points import raw_points

PFN = "pts_voxel_encoder.pfn_layers.0.linear"


class _PFNLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(10, 16)


class _Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.pfn_layers = nn.ModuleList([_PFNLayer()])


class _Pillars(nn.Module):
    """The raw points go through a PFN-named Linear first, then a dense head."""

    def __init__(self):
        super().__init__()
        self.pts_voxel_encoder = _Encoder()
        self.head = nn.Linear(16, 4)

    def forward(self, points):
        return self.head(torch.relu(self.pts_voxel_encoder.pfn_layers[0].linear(points)).amax(1))


def _model():
    torch.manual_seed(0)
    model = _Pillars()
    ptq.quantize_model(model, "w8a8")
    return model


def _calibrate(model, method):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = ptq.calibrate(model, raw_points(), method=method)
    return table, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def test_entropy_on_raw_coordinates_warns_naming_the_layer():
    model = _model()
    table, messages = _calibrate(model, "entropy")
    amax = float(model.pts_voxel_encoder.pfn_layers[0].linear._input_quantizer.amax)
    assert 10 < amax < 30  # entropy clips the 210 tail to ~17.5, as on the real PFN
    pfn = [m for m in messages if PFN in m]
    assert len(pfn) == 1 and "\n" not in pfn[0]
    assert "input-geometry" in pfn[0] and f"--skip-layers '{PFN}'" in pfn[0] and "--calib-method auto" in pfn[0]
    row = next(r for r in table.diagnostics.table.records() if r["layer"] == PFN)
    assert row["input_layer"] and row["data_max"] == 210.0
    assert row["amax_over_max"] == pytest.approx(amax / 210.0)


def test_max_calibration_clips_nothing_and_does_not_warn():
    model = _model()
    table, messages = _calibrate(model, "max")
    assert messages == []
    rows = table.diagnostics.table.records()
    assert [r["clipped_fraction"] for r in rows] == [0.0, 0.0]
    assert all(r["amax_over_max"] == 1.0 for r in rows)


def test_clipped_fraction_matches_a_direct_count():
    data = torch.cat([x.flatten() for x in raw_points()])
    hist = HistogramCalibrator(8, None, False)
    hist.collect(data)
    bin_width = hist.calib_range / 2048
    for amax in (0.7, 3.0, 17.5, 100.0, 209.0):
        exact = float((data.abs() > amax).double().mean())
        in_bin = float(((data.abs() - amax).abs() <= bin_width).double().mean())  # the one ambiguous bin
        assert abs(clipped_fraction(hist, amax) - exact) <= in_bin + 1e-12
    assert clipped_fraction(hist, 1000.0) == 0.0


def test_input_layers_and_thresholds_are_configurable():
    model = _model()
    _calibrate(model, "entropy")
    only_head = ptq.clipping_diagnostics(model, input_layers="head", threshold=0.5, method="entropy")
    assert [r["input_layer"] for r in only_head.table.records()] == [False, True]
    assert not any(PFN in line for line in only_head.warnings)  # now an ordinary layer below the 50% threshold
    stats = ptq.collect_statistics(model, raw_points(), skip_zeros=False)
    with_stats = ptq.clipping_diagnostics(model, stats, method="entropy")
    assert any(PFN in line for line in with_stats.warnings)
    with pytest.raises(ValueError, match="input_threshold"):
        ptq.clipping_diagnostics(model, input_threshold=2)
