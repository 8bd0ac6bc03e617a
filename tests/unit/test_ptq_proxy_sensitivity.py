"""sensitivity(mode='proxy'): each layer's own output SQNR from one float pass, against a direct computation."""
import warnings

import pytest
import torch
from torch import nn

from pytorch_quantization import ptq


def _model_and_data():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    ptq.quantize_model(model, "w8a8")
    gen = torch.Generator().manual_seed(0)
    data = [torch.randn(64, 8, generator=gen) for _ in range(3)]
    data[0][0, 0] = 500.0  # one outlier: max calibration leaves layer 0 a coarse input grid
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ptq.calibrate(model, data, method="max")
    return model, data


def _direct_layer_sqnr(model, batches, index):
    """Float model; layer ``index`` alone re-run with its quantizers on, on the input it received."""
    refs = ptq.find_quantizers(model)
    for r in refs:
        r.quantizer.disable()
    signal = noise = 0.0
    with torch.no_grad():
        for x in batches:
            h = x
            for i, layer in enumerate(model):
                if i == index:
                    ref = layer(h)
                    for r in refs:
                        if r.layer is layer:
                            r.quantizer.enable()
                    out = layer(h)
                    for r in refs:
                        r.quantizer.disable()
                    signal += float((ref.double() ** 2).sum())
                    noise += float(((ref - out).double() ** 2).sum())
                    h = ref
                else:
                    h = layer(h)
    for r in refs:
        r.quantizer.enable()
    return 10 * torch.log10(torch.tensor(signal / noise)).item()


def test_proxy_values_match_a_direct_computation_and_rank_worst_first():
    model, data = _model_and_data()
    before = model(data[1]).detach()
    table = ptq.sensitivity(model, mode="proxy", samples=data[1:])
    by_layer = dict(zip(table.column("layer"), table.column("layer_sqnr_db")))
    for index in (0, 2, 4):
        assert by_layer[str(index)] == pytest.approx(_direct_layer_sqnr(model, data[1:], index), abs=1e-6)
    assert table.column("layer")[0] == "0"  # the coarse grid of the outlier-calibrated input
    assert table.column("layer_sqnr_db") == sorted(table.column("layer_sqnr_db"))
    assert torch.equal(model(data[1]).detach(), before)  # quantizers restored


def test_proxy_needs_batches_and_respects_layers():
    model, data = _model_and_data()
    with pytest.raises(ValueError, match="samples"):
        ptq.sensitivity(model, mode="proxy")
    table = ptq.sensitivity(model, mode="proxy", sample=data[1], layers=["2", "4"])
    assert sorted(table.column("layer")) == ["2", "4"]
