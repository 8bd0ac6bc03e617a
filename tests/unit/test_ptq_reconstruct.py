"""ptq.reconstruct: AdaRound / BRECQ / QDrop lower the output error against round-to-nearest, learned integers are
exact on the calibrated grid, survive save/load bit for bit, and bad input leaves the model unchanged."""
import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pytorch_quantization import ptq
from pytorch_quantization import _reference


def _correlated(kind, gen, n=4):
    """Calibration batches with correlated inputs (with white inputs round-to-nearest is already optimal)."""
    if kind == "linear":
        mix = torch.randn(8, 32, generator=gen)
        return [torch.randn(64, 8, generator=gen) @ mix + 0.1 * torch.randn(64, 32, generator=gen) for _ in range(n)]
    return [F.interpolate(torch.randn(16, 4, 4, 4, generator=gen), size=(8, 8), mode="bilinear") for _ in range(n)]


def _setup(model, data, preset="w4", **kwargs):
    float_model = copy.deepcopy(model)
    ptq.quantize_model(model, preset, **kwargs)
    ptq.calibrate(model, data)
    return float_model


def _mse(model, float_model, data):
    with torch.no_grad():
        return sum(float(((model(x) - float_model(x)) ** 2).mean()) for x in data) / len(data)


def _integers(quantizer, weight):
    lo, hi = _reference.integer_range(quantizer.num_bits, quantizer.unsigned, quantizer.narrow_range)
    scale = _reference.integer_range(quantizer.num_bits, quantizer.unsigned, False)[1] / quantizer.amax.double()
    return torch.clamp(torch.round(weight.double() * scale), lo, hi)


@pytest.mark.parametrize("kind", ["linear", "conv2d", "conv_transpose2d"])
def test_adaround_beats_round_to_nearest(kind):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    layer = {"linear": nn.Linear(32, 16), "conv2d": nn.Conv2d(4, 8, 3),
             "conv_transpose2d": nn.ConvTranspose2d(4, 6, 3, stride=2)}[kind]
    model = nn.Sequential(layer)
    data = _correlated("linear" if kind == "linear" else "image", gen)
    held_out = _correlated("linear" if kind == "linear" else "image", torch.Generator().manual_seed(1), n=6)[4:]
    # a transposed conv's output channels are weight axis 1: quantize per channel along it
    axis = {"weight": {"axis": 1}} if kind == "conv_transpose2d" else None
    float_model = _setup(model, data, overrides={"*": axis} if axis else None)
    quantizer = model[0]._weight_quantizer
    if kind == "conv_transpose2d":
        assert quantizer.amax.shape == (1, 6, 1, 1)
    rtn_int = _integers(quantizer, model[0].weight.detach())
    rtn_mse, rtn_held = _mse(model, float_model, data), _mse(model, float_model, held_out)
    table = ptq.reconstruct(model, float_model, data, iters=300, progress=False)
    assert table.column("status") == ["learned"] and table.column("binary")[0] > 0.95
    assert _mse(model, float_model, data) < 0.8 * rtn_mse
    assert _mse(model, float_model, held_out) < rtn_held
    # the weight now sits exactly on the calibrated grid: fake quantization reproduces it bit for bit
    weight = model[0].weight.detach()
    assert torch.equal(quantizer(weight), weight)
    learned = _integers(quantizer, weight)
    assert float((weight.double() * 7 / quantizer.amax.double() - learned).abs().max()) < 1e-4
    assert float((learned - rtn_int).abs().max()) == 1.0  # some weights rounded the other way, by one step only
    assert quantizer.learned_rounding == "adaround"


def _blocks_model():
    torch.manual_seed(0)

    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x):
            return F.relu(x + self.conv2(F.relu(self.conv1(x))))

    return nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), Res(), nn.Conv2d(8, 3, 1))


@pytest.mark.parametrize("method", ["brecq", "qdrop"])
def test_block_methods_with_learned_steps(method):
    data = _correlated("image", torch.Generator().manual_seed(2))
    model = _blocks_model()
    float_model = _setup(model, data, "w4a8")
    start = copy.deepcopy(model.state_dict())
    rtn = _mse(model, float_model, data)
    table = ptq.reconstruct(model, float_model, data, method=method, iters=200, learn_act=True, progress=False)
    assert table.column("block") == ["0", "1", "2"]  # the residual block is one block of two layers
    assert table.column("layers") == [1, 2, 1]
    assert _mse(model, float_model, data) < 0.8 * rtn
    # deterministic under the seed: a second run from the same start gives the same weights and ranges
    again = _blocks_model()
    ptq.quantize_model(again, "w4a8")
    again.load_state_dict(start)
    ptq.reconstruct(again, float_model, data, method=method, iters=200, learn_act=True, progress=False)
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key


def test_quantized_inputs_compensate_earlier_layers():
    data = _correlated("image", torch.Generator().manual_seed(9))
    model = _blocks_model()
    float_model = _setup(model, data, "w4a8")
    fed_float = copy.deepcopy(model)
    rtn = _mse(model, float_model, data)
    ptq.reconstruct(fed_float, float_model, data, iters=150, inputs="float", progress=False)
    table = ptq.reconstruct(model, float_model, data, iters=150, progress=False)  # inputs="quant" by default
    assert table.column("status") == ["learned"] * 4
    assert _mse(model, float_model, data) < _mse(fed_float, float_model, data) < rtn
    with pytest.raises(ValueError, match="inputs must be"):
        ptq.reconstruct(model, float_model, data, inputs="mixed", progress=False)


def test_resume_skips_finished_blocks(tmp_path):
    data = _correlated("image", torch.Generator().manual_seed(3), n=2)
    model = _blocks_model()
    float_model = _setup(model, data, "w4a8")
    fresh = copy.deepcopy(model)
    ptq.reconstruct(model, float_model, data, method="brecq", iters=30, resume_dir=tmp_path, progress=False)
    table = ptq.reconstruct(fresh, float_model, data, method="brecq", iters=30, resume_dir=tmp_path, progress=False)
    assert table.column("status") == ["resumed"] * 3
    for key, value in model.state_dict().items():
        assert torch.equal(value, fresh.state_dict()[key]), key
    with pytest.raises(ValueError, match="other settings"):
        ptq.reconstruct(copy.deepcopy(fresh), float_model, data, method="brecq", iters=31, resume_dir=tmp_path,
                        progress=False)


def test_spill_to_disk_matches_memory_and_subsample_warns(tmp_path):
    data = _correlated("image", torch.Generator().manual_seed(4), n=3)
    model = _blocks_model()
    float_model = _setup(model, data)
    spilled, subsampled = copy.deepcopy(model), copy.deepcopy(model)
    ptq.reconstruct(model, float_model, data, iters=20, progress=False)
    ptq.reconstruct(spilled, float_model, data, iters=20, cache_mb=0, cache_dir=tmp_path, progress=False)
    for key, value in model.state_dict().items():
        assert torch.equal(value, spilled.state_dict()[key]), key
    assert list(tmp_path.iterdir()) == []  # spill files are removed once their block is done
    with pytest.warns(UserWarning, match="after 1 of 3 batches"):
        table = ptq.reconstruct(subsampled, float_model, data, iters=20, cache_mb=0, progress=False)
    assert "3 batches" in table.title


def test_skip_keep_float_and_keep_are_untouched():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32),
                          nn.Linear(32, 8))
    data = _correlated("linear", torch.Generator().manual_seed(5))
    float_model = _setup(model, data, skip="0")
    ptq.keep_float(model, "2")
    before = {n: model[i].weight.detach().clone() for i, n in enumerate(["0", "1", "2", "3", "4", "5"])
              if hasattr(model[i], "weight")}
    table = ptq.reconstruct(model, float_model, data, iters=50, keep="4", progress=False)
    assert table.column("block") == ["5"]
    for name in ("0", "2", "4"):
        assert torch.equal(model[int(name)].weight, before[name]), name
    assert not torch.equal(model[5].weight, before["5"])


def test_save_load_reproduces_outputs_bit_for_bit(tmp_path):
    data = _correlated("image", torch.Generator().manual_seed(6), n=2)
    model = _blocks_model()
    float_model = _setup(model, data, "w4a8")
    ptq.reconstruct(model, float_model, data, method="brecq", iters=50, learn_act=True, progress=False)
    path = tmp_path / "calib.json"
    ptq.save_calibration(model, path)
    doc = json.loads(path.read_text())
    assert doc["version"] == 2 and doc["weights"]["layers"] == ["0", "1.conv1", "1.conv2", "2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib.json", "calib.weights.pt"]
    loaded = copy.deepcopy(float_model)
    ptq.quantize_model(loaded, "w4a8")
    ptq.load_calibration(loaded, path)
    x = _correlated("image", torch.Generator().manual_seed(7), n=1)[0]
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    (tmp_path / "calib.weights.pt").write_bytes(b"stale")
    with pytest.raises(ValueError, match="sha256 differs"):
        ptq.load_calibration(copy.deepcopy(loaded), path)


def _bad_calls(model, float_model, data):
    other = nn.Sequential(nn.Conv2d(4, 9, 3, padding=1), nn.ReLU())
    plain = copy.deepcopy(float_model)
    return [
        (lambda: ptq.reconstruct(model, float_model, [], progress=False), "no batches"),
        (lambda: ptq.reconstruct(model, float_model, data, iters=0, progress=False), "iters must be an int >= 1"),
        (lambda: ptq.reconstruct(plain, float_model, data, progress=False), "no quantizers"),
        (lambda: ptq.reconstruct(model, other, data, progress=False), "does not match"),
        (lambda: ptq.reconstruct(model, model, data, progress=False), "separate module"),
        (lambda: ptq.reconstruct(model, float_model, data, method="gptq", progress=False), "method must be one of"),
    ]


def test_bad_input_is_a_clear_error_and_changes_nothing():
    data = _correlated("image", torch.Generator().manual_seed(8), n=2)
    model = _blocks_model()
    float_model = _setup(model, data, "w4a8")
    before = copy.deepcopy(model.state_dict())
    for call, message in _bad_calls(model, float_model, data):
        with pytest.raises(ValueError, match=message):
            call()
        for key, value in model.state_dict().items():
            assert torch.equal(value, before[key]), (message, key)
    uncalibrated = copy.deepcopy(float_model)
    ptq.quantize_model(uncalibrated, "w4")
    with pytest.raises(ValueError, match="run ptq.calibrate before reconstruct"):
        ptq.reconstruct(uncalibrated, float_model, data, progress=False)
