"""sensitivity, keep_float and report on a small CNN where one layer is made deliberately fragile."""
import importlib.util
import math

import pytest
import torch
from torch import nn

from pytorch_quantization.ptq import (calibrate, keep_float, quantize_model, report, sensitivity, sqnr_db,
                                      find_quantizers)


def _model_and_data():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.Flatten(), nn.Linear(8 * 6 * 6, 4)).eval()
    data = [torch.randn(4, 3, 6, 6) for _ in range(2)]
    float_out = model(data[0])
    # weights-only 8 bits, except layer "2" with a 2-bit grid {-amax, 0, amax}: by far the most harmful layer
    quantize_model(model, "w8", overrides={"2": {"weight": {"num_bits": 2}}})
    calibrate(model, data)
    return model, data, float_out


def test_one_quantized_ranks_the_fragile_layer_first():
    model, data, float_out = _model_and_data()
    eval_fn = lambda m: -float(((m(data[0]) - float_out) ** 2).mean())  # noqa: E731  (higher is better)
    states_before = [q.quantizer._disabled for q in find_quantizers(model)]
    table = sensitivity(model, eval_fn, sample=data[0])
    assert table.column("layer")[0] == "2" and table.column("rank") == [1, 2, 3]
    assert table.float_metric == 0.0  # all quantizers off: exactly the float model
    assert [q.quantizer._disabled for q in find_quantizers(model)] == states_before  # restored
    first = table.records()[0]
    assert first["delta"] == first["metric"] < 0
    assert first["output_sqnr_db"] == min(table.column("output_sqnr_db"))
    # the SQNR column is the output SQNR with only that layer quantized, checked by hand for layer "2"
    keep_float(model, ["0", "5"])
    assert first["output_sqnr_db"] == pytest.approx(sqnr_db(float_out, model(data[0])))


def test_one_float_and_keep_float():
    model, data, float_out = _model_and_data()
    eval_fn = lambda m: sqnr_db(float_out, m(data[0]))  # noqa: E731
    table = sensitivity(model, eval_fn, mode="one_float")
    assert table.column("layer")[0] == "2"
    gain = table.records()[0]["delta"]
    assert gain > 0
    before = eval_fn(model)
    assert keep_float(model, ["2"]) == ["2"]
    assert eval_fn(model) == pytest.approx(before + gain)
    with pytest.raises(ValueError, match="matches no quantized layer"):
        keep_float(model, ["backbone.*"])


def test_sensitivity_errors():
    model, data, _ = _model_and_data()
    with pytest.raises(ValueError, match="mode must be one of"):
        sensitivity(model, lambda m: 0.0, mode="leave_one_out")
    with pytest.raises(ValueError, match="pass eval_fn"):
        sensitivity(model)
    with pytest.raises(ValueError, match="matches none of the quantized layers"):
        sensitivity(model, lambda m: 0.0, layers="head.*")


def test_report_values_and_files(tmp_path):
    model, data, _ = _model_and_data()
    rep = report(model, data, num_batches=2)
    rows = {r["layer"]: r for r in rep.table.records()}
    assert list(rows) == ["0", "2", "5"]
    w = model[0].weight.detach()
    amax = w.abs().amax(dim=(1, 2, 3), keepdim=True)
    w_q = torch.clamp(torch.round(w * 127 / amax), -127, 127) * amax / 127  # 8-bit narrow range
    assert rows["0"]["weight_sqnr_db"] == pytest.approx(sqnr_db(w, w_q))
    assert rows["0"]["weight_amax"] == pytest.approx(float(amax.max()))
    assert math.isnan(rows["0"]["input_sqnr_db"])  # w8 leaves inputs float (quant_act=False)
    assert rows["2"]["weight_sqnr_db"] < rows["0"]["weight_sqnr_db"]
    paths = rep.save(tmp_path)
    assert (tmp_path / "ptq_report.md").read_text().startswith("### PTQ report")
    assert (tmp_path / "ptq_report.csv").read_text().splitlines()[0] == \
        "layer,weight_sqnr_db,weight_amax,input_sqnr_db,input_amax"
    if importlib.util.find_spec("matplotlib") is None:
        assert len(paths) == 2  # the plot is skipped with a message
    else:
        assert (tmp_path / "ptq_report.png").read_bytes()[:4] == b"\x89PNG"


def test_report_input_sqnr_matches_direct_computation():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 3))
    quantize_model(model, "w8a8")
    data = [torch.randn(7, 5)]
    calibrate(model, data)
    rep = report(model, data)
    amax = data[0].abs().max()
    x_q = torch.clamp(torch.round(data[0] * 127 / amax), -127, 127) * amax / 127
    assert rep.table.records()[0]["input_sqnr_db"] == pytest.approx(sqnr_db(data[0], x_q))
    with pytest.raises(ValueError, match="data yielded no batches"):
        report(model, [])
