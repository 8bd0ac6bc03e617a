"""save_calibration / load_calibration: exact round trip, metadata, mismatch errors, atomic write."""
import json

import pytest
import torch
from torch import nn

from pytorch_quantization.ptq import calibrate, load_calibration, quantize_model, save_calibration


def _model(preset="w8a8", seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 4 * 4, 5))
    quantize_model(model, preset)
    return model


def _amaxes(model):
    return {k: v for k, v in model.state_dict().items() if k.endswith("_amax")}


def test_round_trip_is_exact(tmp_path):
    src = _model()
    calibrate(src, [torch.randn(2, 3, 6, 6) * 3 for _ in range(2)], method="percentile")
    path = tmp_path / "calib.json"
    save_calibration(src, path, metadata={"method": "percentile", "frames": 2})
    dst = _model(seed=0)
    assert not _amaxes(dst)
    assert load_calibration(dst, path) == {"method": "percentile", "frames": 2}
    saved = _amaxes(src)
    loaded = _amaxes(dst)
    assert saved.keys() == loaded.keys() and len(saved) == 4
    for key, value in saved.items():
        assert loaded[key].shape == value.shape and torch.equal(loaded[key], value), key
    x = torch.randn(2, 3, 6, 6)
    assert torch.equal(src(x), dst(x))
    doc = json.loads(path.read_text())
    assert doc["format"] == "pytorch_quantization.ptq.calibration" and doc["torch_version"] == torch.__version__
    assert doc["quantizers"]["0._weight_quantizer"]["shape"] == [6, 1, 1, 1]
    assert [p.name for p in tmp_path.iterdir()] == ["calib.json"]  # no temp file left behind


def test_mismatch_names_the_quantizers(tmp_path):
    src = _model()
    calibrate(src, [torch.randn(2, 3, 6, 6)])
    path = tmp_path / "calib.json"
    save_calibration(src, path)
    other = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(96, 5), nn.Linear(5, 2))
    quantize_model(other, "w8a8")
    with pytest.raises(ValueError, match=r"in the model but not in the file: 4\._input_quantizer, "
                                         r"4\._weight_quantizer"):
        load_calibration(other, path)
    load_calibration(other, path, strict=False)  # the matching ones load
    assert torch.equal(other[0]._input_quantizer.amax, src[0]._input_quantizer.amax)
    torch.manual_seed(0)
    four_bit = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 4 * 4, 5))
    quantize_model(four_bit, "w8a8", overrides={"*": {"weight": {"num_bits": 4}}})
    with pytest.raises(ValueError, match=r"settings or amax shape differ: 0\._weight_quantizer, 3\._weight_quantizer"):
        load_calibration(four_bit, path)


def test_bad_files(tmp_path):
    model = _model()
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not a calibration file"):
        load_calibration(model, bad)
    bad.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="not a calibration file written by save_calibration"):
        load_calibration(model, bad)
    with pytest.raises(ValueError, match="model has no quantizers"):
        save_calibration(nn.Linear(2, 2), tmp_path / "x.json")
    with pytest.raises(ValueError, match="JSON serialisable"):
        save_calibration(model, tmp_path / "x.json", metadata={"x": object()})
    assert not (tmp_path / "x.json").exists()
