"""calibrate / load_amax: amax per method against references computed here, skip_zeros, errors."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from pytorch_quantization.ptq import calibrate, load_amax, quantize_model


def _linear_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 8))
    quantize_model(model, "w8a8")
    return model


def _heavy_tailed(seed=0, batches=4):
    """Gaussian data with a few large outliers: max calibration wastes the grid on them."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batches):
        x = torch.randn(256, 16, generator=gen)
        x.view(-1)[torch.randint(0, x.numel(), (4,), generator=gen)] = 40.0 * torch.rand(4, generator=gen) + 20
        out.append(x)
    return out


def _bev_like(seed=0):
    """BEV-map-like activations: ~90% exact zeros, the rest |N(0, 1)| scaled."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(3):
        x = torch.randn(512, 16, generator=gen).abs() * 2
        x[torch.rand(512, 16, generator=gen) < 0.9] = 0
        out.append(x)
    return out


def _mse(x, amax):
    bound = 127.0
    q = torch.clamp(torch.round(x * (bound / amax)), -bound, bound) * (amax / bound)
    return float(((q - x) ** 2).mean())


def test_max_method_is_abs_max_and_weights_from_tensors():
    model = _linear_model()
    data = _heavy_tailed()
    table = calibrate(model, data, method="max")
    layer = model[0]
    assert float(layer._input_quantizer.amax) == max(float(x.abs().max()) for x in data)
    torch.testing.assert_close(layer._weight_quantizer.amax, layer.weight.abs().amax(dim=1, keepdim=True))
    assert table.column("status") == ["ok", "ok"]
    assert layer._input_quantizer._if_quant and not layer._input_quantizer._if_calib


def test_percentile_within_one_bin_of_numpy():
    model = _linear_model()
    data = _heavy_tailed()
    calibrate(model, data, method="percentile", percentile=99.0)
    values = torch.cat([x.flatten() for x in data]).abs().numpy()
    expected = np.percentile(values, 99.0)
    # the histogram range is a power of two below 2 * max * (1 + 2**-11); one bin of 2048 bins over it
    bin_width = 2 ** math.ceil(math.log2(values.max() * (1 + 2 ** -11))) / 2048
    assert abs(float(model[0]._input_quantizer.amax) - expected) <= bin_width


def test_skip_zeros_ignores_the_empty_bev_cells():
    data = _bev_like()
    values = torch.cat([x.flatten() for x in data]).numpy()
    nonzero = values[values != 0]
    bin_width = 2 ** math.ceil(math.log2(values.max() * (1 + 2 ** -11))) / 2048
    model = _linear_model()
    calibrate(model, data, method="percentile", percentile=95.0, skip_zeros=True)
    assert abs(float(model[0]._input_quantizer.amax) - np.percentile(nonzero, 95.0)) <= bin_width
    model = _linear_model()
    calibrate(model, data, method="percentile", percentile=95.0)
    assert abs(float(model[0]._input_quantizer.amax) - np.percentile(values, 95.0)) <= bin_width


def test_mse_close_to_brute_force_optimum():
    model = _linear_model()
    data = _heavy_tailed()
    calibrate(model, data, method="mse")
    x = torch.cat([d.flatten() for d in data]).double()
    candidates = torch.linspace(0.5, float(x.abs().max()), 600, dtype=torch.float64)
    errors = [_mse(x, float(a)) for a in candidates]
    best = min(errors)
    chosen = float(model[0]._input_quantizer.amax)
    assert _mse(x, chosen) <= 1.05 * best


def test_entropy_clips_outliers_and_methods_switch_without_new_pass():
    model = _linear_model()
    data = _heavy_tailed()
    calibrate(model, data, method="entropy")
    entropy = float(model[0]._input_quantizer.amax)
    data_max = max(float(x.abs().max()) for x in data)
    assert 0 < entropy < 0.5 * data_max
    # the histogram is kept: percentile from it equals a fresh percentile calibration
    load_amax(model, "percentile", percentile=99.0)
    fresh = _linear_model()
    calibrate(fresh, data, method="percentile", percentile=99.0)
    assert float(model[0]._input_quantizer.amax) == float(fresh[0]._input_quantizer.amax)
    with pytest.raises(ValueError, match="statistics are histograms"):
        load_amax(model, "max")


def test_num_batches_and_mode_restored():
    model = _linear_model().train()
    model.append(nn.Dropout(0.5).eval())  # a submodule deliberately in another mode keeps it
    data = _heavy_tailed(batches=4)
    calibrate(model, data, num_batches=2)
    assert float(model[0]._input_quantizer.amax) == max(float(x.abs().max()) for x in data[:2])
    assert model.training and model[0].training and not model[1].training


def test_layer_not_reached_warns():
    model = nn.ModuleDict({"used": nn.Linear(4, 4), "unused": nn.Linear(4, 4)})
    quantize_model(model, "w8a8")
    with pytest.warns(UserWarning, match="1 activation quantizers saw no data.*unused"):
        table = calibrate(model, [torch.randn(2, 4)], forward_fn=lambda m, x: m["used"](x))
    assert "not reached by the data" in table.column("status")


def test_errors():
    model = _linear_model()
    with pytest.raises(ValueError, match="data yielded no batches"):
        calibrate(model, [])
    assert model[0]._input_quantizer._if_quant and not model[0]._input_quantizer._if_calib  # flags restored
    with pytest.raises(ValueError, match="model has no quantizers; run quantize_model"):
        calibrate(nn.Sequential(nn.Linear(2, 2)), [torch.randn(1, 2)])
    with pytest.raises(ValueError, match="method must be one of"):
        calibrate(model, [torch.randn(1, 16)], method="kl")
    with pytest.raises(ValueError, match="percentile must be a number in"):
        calibrate(model, [torch.randn(1, 16)], method="percentile", percentile=120)
    with pytest.raises(ValueError, match="num_batches must be None or an int"):
        calibrate(model, [torch.randn(1, 16)], num_batches=0)
