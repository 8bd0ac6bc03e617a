"""save_calibration / load_calibration: exact round trip, metadata, mismatch errors, atomic write."""
import json
import re

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


def _saved(tmp_path, preset="w8a8"):
    src = _model(preset)
    calibrate(src, [torch.randn(2, 3, 6, 6) * 3 for _ in range(2)])
    path = tmp_path / "calib.json"
    save_calibration(src, path)
    return src, path, json.loads(path.read_text())


def _broken(tmp_path, doc, change):
    change(doc)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("change, message", [
    (lambda d: d["quantizers"]["3._input_quantizer"].update(amax=float("nan")),
     r"has invalid entries: 3\._input_quantizer: amax must be finite and >= 0, got nan"),
    (lambda d: d["quantizers"]["3._input_quantizer"].update(amax=float("inf")),
     r"3\._input_quantizer: amax must be finite and >= 0, got inf"),
    (lambda d: d["quantizers"]["0._input_quantizer"].update(amax=-1.0),
     r"0\._input_quantizer: amax must be finite and >= 0, got -1\.0"),
    (lambda d: d["quantizers"]["0._input_quantizer"].update(amax="2.5"),
     r"0\._input_quantizer: amax must be a number or a \(nested\) list of numbers, got \"2\.5\""),
    (lambda d: d["quantizers"]["0._input_quantizer"].update(amax=True),
     r"0\._input_quantizer: amax must be a number"),
    (lambda d: d["quantizers"]["0._weight_quantizer"].update(shape=[3, 1, 1, 1]),
     r"0\._weight_quantizer: amax has shape \[6, 1, 1, 1\] but the entry says shape \[3, 1, 1, 1\]"),
    (lambda d: d["quantizers"]["0._weight_quantizer"].update(quant_act="no"),
     r"0\._weight_quantizer: quant_act must be true or false"),
    (lambda d: d["quantizers"].update({"3._input_quantizer": [1.0]}), r"3\._input_quantizer: entry must be a mapping"),
    (lambda d: d.update(quantizers=list(d["quantizers"])), r"'quantizers' must be a mapping .* got list"),
    (lambda d: d["quantizers"].update({"extra._input_quantizer": d["quantizers"]["0._input_quantizer"]}),
     r"in the file but not in the model: extra\._input_quantizer"),
])
def test_bad_entries_raise_one_error_naming_file_and_quantizer_and_change_nothing(tmp_path, change, message):
    src, _, doc = _saved(tmp_path)
    path = _broken(tmp_path, doc, change)
    dst = _model()
    dst[3].quant_act = False
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(ValueError, match=re.escape(f"calibration file {path}") + ".*" + message):
        load_calibration(dst, path, strict=True)
    after = dst.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert not _amaxes(dst) and dst[3].quant_act is False  # nothing loaded, not even the valid entries before it
    del src


def test_damaged_entry_is_an_error_also_when_not_strict(tmp_path):
    _, _, doc = _saved(tmp_path)
    path = _broken(tmp_path, doc, lambda d: d["quantizers"]["3._input_quantizer"].update(amax=float("nan")))
    dst = _model()
    with pytest.raises(ValueError, match=r"3\._input_quantizer: amax must be finite"):
        load_calibration(dst, path, strict=False)
    assert not _amaxes(dst)


def test_weight_amax_that_does_not_fit_the_layer(tmp_path):
    """A head with 11 outputs in the file and 10 in the model: an error at load time, not at the first forward."""
    torch.manual_seed(0)
    src = nn.Sequential(nn.Linear(4, 11))
    quantize_model(src, "w8a8")
    calibrate(src, [torch.randn(3, 4)])
    path = tmp_path / "head.json"
    save_calibration(src, path)
    dst = nn.Sequential(nn.Linear(4, 10))
    quantize_model(dst, "w8a8")
    with pytest.raises(ValueError, match=r"differ: 0\._weight_quantizer \(0\._weight_quantizer: weight amax of "
                                         r"shape \[11, 1\] does not fit the weight of layer '0', of shape \[10, 4\] "
                                         r"along axis 0 \(expected \[10, 1\]\)\)"):
        load_calibration(dst, path)
    load_calibration(dst, path, strict=False)  # the input quantizer fits and loads; the weight's is left alone
    assert torch.equal(dst[0].input_quantizer.amax, src[0].input_quantizer.amax)
    assert dst[0].weight_quantizer.amax is None


def test_binary_file(tmp_path):
    path = tmp_path / "calib.json"
    path.write_bytes(bytes(range(256)))
    with pytest.raises(ValueError, match=re.escape(f"{path} is not a calibration file (not UTF-8 JSON")):
        load_calibration(_model(), path)


def test_weight_only_calibration_reloads_as_weight_only(tmp_path):
    """quant_act is not in state_dict (2.2.1 layout) but the calibration file keeps it."""
    src = _model("w8a8")
    src[3].quant_act = False  # e.g. chosen after a sensitivity run: keep the head's input in float
    calibrate(src, [torch.randn(2, 3, 6, 6)])
    path = tmp_path / "calib.json"
    save_calibration(src, path)
    entry = json.loads(path.read_text())["quantizers"]["3._input_quantizer"]
    assert entry["quant_act"] is False and entry["amax"] is None
    dst = _model("w8a8")
    assert dst[3].quant_act is True
    load_calibration(dst, path)
    assert dst[3].quant_act is False and dst[0].quant_act is True
    x = torch.randn(2, 3, 6, 6)
    assert torch.equal(dst(x), src(x))


def test_file_without_quant_act_leaves_the_switch(tmp_path):
    _, _, doc = _saved(tmp_path)
    for entry in doc["quantizers"].values():
        del entry["quant_act"]
    path = _broken(tmp_path, doc, lambda d: None)
    dst = _model()
    dst[3].quant_act = False
    load_calibration(dst, path)
    assert dst[3].quant_act is False and dst[0].input_quantizer.amax is not None


@pytest.mark.parametrize("where", ["missing/calib.json", "a_file/calib.json", "a_folder"])
def test_save_errors_name_the_given_path(tmp_path, where):
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "a_folder").mkdir()
    target = tmp_path / where
    with pytest.raises(OSError) as info:
        save_calibration(_model(), target)
    assert info.value.filename == str(target) and str(target) in str(info.value)
    assert ".tmp_" not in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "a_folder"]
    assert list((tmp_path / "a_folder").iterdir()) == []
