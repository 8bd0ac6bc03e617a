"""method='auto': the per-quantizer amax minimising the layer output error, on cases with a known answer."""
import copy
import os
import socket
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from pytorch_quantization import ptq
from pytorch_quantization.ptq.calibrate import AUTO_CACHE_BATCHES
from raw_points import raw_points


def _sparse_outliers(batches=4):
    """Channel 0 ~ U(-1, 1); channel 1 is 0 except 0.5% of rows at +-100."""
    gen = torch.Generator().manual_seed(1)
    out = []
    for _ in range(batches):
        x = torch.zeros(4096, 2)
        x[:, 0] = torch.rand(4096, generator=gen) * 2 - 1
        rows = torch.rand(4096, generator=gen) < 0.005
        x[rows, 1] = 100 * torch.sign(torch.randn(int(rows.sum()), generator=gen))
        out.append(x)
    return out


def _probe(weight):
    model = nn.Sequential(nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([weight]))  # +-1 and 0: exact under 8-bit per-channel quantization
    ptq.quantize_model(model, "w8a8")
    return model


def _output_mse(weight, data, amax):
    """Layer output error with the input quantized by the narrow-range 8-bit formula at ``amax`` (reference)."""
    w = torch.tensor(weight, dtype=torch.float64)
    total = 0.0
    for x in data:
        x = x.double()
        q = torch.clamp(torch.round(x * (127 / amax)), -127, 127) * (amax / 127)
        total += float(((q @ w - x @ w) ** 2).sum())
    return total


def _calibrate(model, data, method):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ptq.calibrate(model, data, method=method)


def test_layer_that_ignores_the_outlier_channel_gets_the_clipping_amax():
    # The output depends on channel 0 only, so the best amax is ~1 (U(-1, 1): clipping the top (1 - a) costs
    # (1 - a)**3 / 6, rounding costs ~ a**2 / (3 * 127**2); the minimum is at 1 - a ~ 0.5%). Max calibration
    # would take 100 from the ignored channel.
    data = _sparse_outliers()
    model = _probe([1.0, 0.0])
    table = _calibrate(model, data, "auto")
    chosen = float(model[0]._input_quantizer.amax)
    assert 0.95 <= chosen <= 1.05
    assert table.column("method")[0].startswith("auto: ")
    cached = data[:AUTO_CACHE_BATCHES]
    scan = min(_output_mse([1.0, 0.0], cached, a / 1000) for a in range(900, 1101))
    assert _output_mse([1.0, 0.0], cached, chosen) <= 1.05 * scan
    assert _output_mse([1.0, 0.0], cached, chosen) < 1e-3 * _output_mse([1.0, 0.0], cached, 100.0)


def test_layer_that_uses_the_outlier_channel_keeps_the_range():
    # Same data, but the outliers reach the output: clipping 100 to a costs (100 - a)**2 per outlier, far more
    # than the rounding error of a step of 100 / 127, so the best amax is the max (or within a step of it).
    data = _sparse_outliers()
    model = _probe([1.0, 1.0])
    _calibrate(model, data, "auto")
    assert float(model[0]._input_quantizer.amax) >= 100 - 100 / 127


def _layer_error(model, data):
    refs = ptq.find_quantizers(model)
    with torch.no_grad():
        quant = [model(x) for x in data]
        for r in refs:
            r.quantizer.disable()
        ref = [model(x) for x in data]
        for r in refs:
            r.quantizer.enable()
    return sum(float(((a - b).double() ** 2).sum()) for a, b in zip(quant, ref))


def test_auto_is_at_least_as_good_as_every_single_method_and_never_collapses():
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(10, 32))
    ptq.quantize_model(base, "w8a8")
    data = raw_points()
    cached = data[:AUTO_CACHE_BATCHES]
    errors = {}
    for method in ("max", "percentile", "mse", "entropy", "auto"):
        model = copy.deepcopy(base)
        _calibrate(model, data, method)
        errors[method] = _layer_error(model, cached)
    for method in ("max", "percentile", "mse", "entropy"):
        assert errors["auto"] <= errors[method] * (1 + 1e-9), (method, errors)
    assert errors["auto"] < 0.9 * errors["entropy"]  # entropy clips the tail of the raw inputs


def test_choices_go_into_the_calibration_file(tmp_path):
    data = _sparse_outliers(2)
    model = _probe([1.0, 0.0])
    table = _calibrate(model, data, "auto")
    name = "0._input_quantizer"
    assert set(table.choices) == {name}
    assert table.choices[name]["amax"] == float(model[0]._input_quantizer.amax)
    path = tmp_path / "calib.json"
    ptq.save_calibration(model, path, metadata={"calib_method": "auto", "auto_choices": table.choices})
    fresh = _probe([1.0, 0.0])
    meta = ptq.load_calibration(fresh, path)
    assert meta["auto_choices"] == table.choices
    assert torch.equal(fresh[0]._input_quantizer.amax, model[0]._input_quantizer.amax)


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.add = ptq.QuantAdd()

    def forward(self, x):
        return self.add(self.conv(x), x)


def test_layers_with_two_operands_and_conv_inputs():
    torch.manual_seed(0)
    model = _Residual()
    ptq.quantize_model(model, "w8a8")
    data = [torch.randn(1, 4, 16, 16) for _ in range(3)]
    table = _calibrate(model, data, "auto")
    for ref in ptq.find_quantizers(model):
        ref.quantizer.disable()
    with torch.no_grad():  # the float operands the shared add quantizer saw
        stats_max = max(float(torch.maximum(x.abs().max(), model.conv(x).abs().max())) for x in data)
    add_amax = float(model.add._input_quantizer.amax)
    assert 0 < add_amax <= stats_max
    assert all(status == "ok" for status in table.column("status"))


def test_auto_amax_needs_cached_inputs():
    model = _probe([1.0, 0.0])
    stats = ptq.collect_statistics(model, _sparse_outliers(1))
    with pytest.raises(ValueError, match="cache_batches"):
        ptq.auto_amax(model, stats)
    with pytest.raises(ValueError, match="load_amax cannot choose method='auto'"):
        ptq.load_amax(model, "auto")


def _conv_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
    ptq.quantize_model(model, "w8a8")
    return model


def _conv_data():
    gen = torch.Generator().manual_seed(1)
    out = [torch.randn(2, 2, 8, 8, generator=gen) * (1 + 3 * i) for i in range(4)]
    out[1][0, 0, 0, 0] = 80.0
    return out


def _auto_worker(rank, world, port, out_dir):
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = _conv_model()
        stats = ptq.collect_statistics(model, _conv_data()[rank::world], cache_batches=2)
        torch.save(ptq.auto_amax(model, stats).choices, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="this torch build has no torch.distributed")
def test_two_ranks_choose_what_one_process_with_all_data_chooses(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_auto_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    model = _conv_model()
    single = ptq.auto_amax(model, ptq.collect_statistics(model, _conv_data(), cache_batches=4)).choices
    assert ranks[0] == ranks[1]
    assert {k: v["amax"] for k, v in ranks[0].items()} == {k: v["amax"] for k, v in single.items()}
