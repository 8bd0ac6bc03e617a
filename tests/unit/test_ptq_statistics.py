"""collect_statistics / compute_amax / apply_amax: one pass equals a separate calibrate() per method, bit for bit."""
import copy
import warnings

import pytest
import torch
from torch import nn

from pytorch_quantization import ptq
from pytorch_quantization.ptq.statistics import _shrink


class _TwoLayer(nn.Module):
    """Linear -> ReLU -> Linear whose second layer runs before the first in module order is reversed."""

    def __init__(self):
        super().__init__()
        self.late = nn.Linear(8, 4)   # registered first, executed second
        self.early = nn.Linear(16, 8)

    def forward(self, x):
        return self.late(torch.relu(self.early(x)))


def _model():
    torch.manual_seed(0)
    model = _TwoLayer()
    ptq.quantize_model(model, "w8a8")
    return model


def _data(seed=0, batches=3):
    """Heavy tails and many exact zeros, so every method and both skip_zeros variants give different amaxes."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batches):
        x = torch.randn(128, 16, generator=gen)
        x[torch.rand(128, 16, generator=gen) < 0.5] = 0
        x.view(-1)[torch.randint(0, x.numel(), (3,), generator=gen)] = 30.0
        out.append(x)
    return out


def _act_amaxes(model):
    return {r.name: r.quantizer.amax for r in ptq.find_quantizers(model) if r.role == "input"}


CASES = [("max", False, None), ("percentile", False, 99.9), ("percentile", True, 99.0), ("mse", False, None),
         ("mse", True, None), ("entropy", False, None), ("entropy", True, None)]


def test_one_pass_equals_separate_calibration_bit_for_bit():
    data = _data()
    model = _model()
    stats = ptq.collect_statistics(model, data)  # both skip_zeros variants
    assert stats.batches == 3 and stats.skip_zeros == (False, True)
    outputs = set()
    for method, skip_zeros, percentile in CASES:
        separate = copy.deepcopy(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # clipping warnings of the narrow methods
            ptq.calibrate(separate, data, method=method, skip_zeros=skip_zeros, percentile=percentile or 99.99)
        amaxes = ptq.compute_amax(stats, method, skip_zeros=skip_zeros, percentile=percentile or 99.99)
        expected = _act_amaxes(separate)
        assert set(amaxes) == set(expected)
        for name, amax in amaxes.items():
            assert amax.dtype == expected[name].dtype and torch.equal(amax, expected[name]), (method, name)
        one_pass = copy.deepcopy(model)
        table = ptq.apply_amax(one_pass, amaxes, method)
        assert table.column("status") == ["ok"] * 4
        with torch.no_grad():
            out_one, out_sep = one_pass(data[0]), separate(data[0])
        assert torch.equal(out_one, out_sep)
        outputs.add(tuple(float(a) for a in amaxes.values()))
    assert len(outputs) >= 4  # the methods really differ here, so the equalities above are not vacuous


def test_collect_statistics_leaves_the_model_as_it_was():
    model = _model()
    before = [(r.quantizer._if_quant, r.quantizer._if_calib, r.quantizer._calibrator, r.quantizer.amax)
              for r in ptq.find_quantizers(model)]
    ptq.collect_statistics(model, _data(), skip_zeros=False)
    after = [(r.quantizer._if_quant, r.quantizer._if_calib, r.quantizer._calibrator, r.quantizer.amax)
             for r in ptq.find_quantizers(model)]
    assert after == before


def test_execution_order_and_max_match_the_data():
    model = _model()
    data = _data()
    stats = ptq.collect_statistics(model, data, skip_zeros=True)
    assert stats.order == ["early._input_quantizer", "late._input_quantizer"]  # not module order
    assert stats.data_max("early._input_quantizer") == max(float(x.abs().max()) for x in data)


def test_input_cache_keeps_batches_within_budget():
    model = _model()
    data = _data(batches=4)
    stats = ptq.collect_statistics(model, data, cache_batches=2, cache_values=16 * 40)
    cached = stats.inputs["early"]
    assert len(cached) == 2
    for (args, kwargs), x in zip(cached, data):
        assert kwargs == {} and torch.equal(args[0], x[:40])  # leading rows of the batch


def test_shrink_takes_rows_then_a_central_crop():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    small = _shrink(x, 3 * 4 * 4)
    assert small.shape == (1, 3, 4, 4)
    assert torch.equal(small, x[:1, :, 2:6, 2:6])
    assert _shrink(x, x.numel()) is x


def test_errors_name_the_fix():
    model = _model()
    stats = ptq.collect_statistics(model, _data(), skip_zeros=False)
    with pytest.raises(ValueError, match="skip_zeros='both'"):
        ptq.compute_amax(stats, "entropy", skip_zeros=True)
    with pytest.raises(ValueError, match="auto_amax"):
        ptq.compute_amax(stats, "auto")
    with pytest.raises(ValueError, match="skip_zeros must be"):
        ptq.collect_statistics(model, _data(), skip_zeros="yes")
    weight_only = nn.Sequential(nn.Linear(4, 4))
    ptq.quantize_model(weight_only, "w8")
    with pytest.raises(ValueError, match="no active activation quantizers"):
        ptq.collect_statistics(weight_only, [torch.zeros(1, 4)])
    with pytest.raises(ValueError, match="no batches"):
        ptq.collect_statistics(model, [])


def test_per_channel_activation_quantizers_get_maxima_only():
    model = nn.Sequential(nn.Linear(16, 8))
    ptq.quantize_model(model, ptq.PTQConfig(input={"num_bits": 8, "axis": 1}))
    data = _data()
    stats = ptq.collect_statistics(model, data)
    expected = torch.stack([x.abs().amax(0) for x in data]).amax(0)
    assert torch.equal(ptq.compute_amax(stats, "max")["0._input_quantizer"].flatten(), expected)
    with pytest.raises(ValueError, match="per channel"):
        ptq.compute_amax(stats, "entropy")
