"""ptq.mixed_precision: the most sensitive layers go to 8 bits (or float) while the parameter-weighted average
weight bits stays within the budget."""
import pytest
import torch
from torch import nn

from pytorch_quantization import ptq


def _model():
    torch.manual_seed(0)
    # parameters: 0 -> 100 * 10, 1 -> 10 * 10, 2 -> 10 * 50, 3 -> 50 * 400 (biases are not weights)
    model = nn.Sequential(nn.Linear(10, 100), nn.Linear(10, 10), nn.Linear(50, 10), nn.Linear(400, 50))
    ptq.quantize_model(model, "w4")
    return model


def _average(model, float_bits=32):
    total = bits = 0
    for layer in model:
        q = layer._weight_quantizer
        n = layer.weight.numel()
        total += n
        bits += n * (float_bits if q._disabled else q.num_bits)
    return bits / total


def test_promotes_in_rank_order_within_budget():
    model = _model()
    ranking = ["3", "1", "0", "2"]
    # all at 4 bits: 21600 params * 4; each promotion to 8 bits adds 4 * params
    budget = 4 + 4 * (100 + 1000) / 21600 + 1e-9  # fits layers 1 and 0 but not 3
    table = ptq.mixed_precision(model, ranking, budget)
    assert [model[i]._weight_quantizer.num_bits for i in range(4)] == [8, 8, 4, 4]
    assert _average(model) <= budget
    assert table.column("promoted") == [True, True, False, False]
    assert f"-> {_average(model):.3f}" in table.title


def test_float_promotion_and_sensitivity_table():
    model = _model()
    table = ptq.Table(["rank", "layer"])
    for rank, name in enumerate(["2", "0"], 1):
        table.add([rank, name])
    budget = 4 + 28 * 500 / 21600 + 1e-9  # room for layer 2 in float (32 bits) only
    ptq.mixed_precision(model, table, budget, high_bits=None)
    assert model[2]._weight_quantizer._disabled and not model[0]._weight_quantizer._disabled
    assert _average(model) <= budget


@pytest.mark.parametrize("ranking, budget, message", [
    (["9"], 6, "without a weight quantizer"),
    (["0"], 3, "below the model's current average"),
    (["0"], 0, "positive number"),
])
def test_bad_input(ranking, budget, message):
    model = _model()
    with pytest.raises(ValueError, match=message):
        ptq.mixed_precision(model, ranking, budget)
    assert all(layer._weight_quantizer.num_bits == 4 for layer in model)
